"""The region's quality page (`quality/<region>/index.html`): for each source behind the region's
extracts, its last load, what was checked, and a link to that run's GX Data Docs."""

from __future__ import annotations

import datetime as dt
from html import escape

from qpvhub.catalog.model import Source
from qpvhub.catalog.regions import Region

QUALITY_FR = {"1": "sûr", "2": "probable", "3": "aléatoire ou indéterminé", "_Z": "sans objet"}


def assignment_section(checks: list[dict], disagreements: list[tuple]) -> str:
    """The BPE's own QPV assignment against the hub's join (qpvhub.indicators.checks), in French: the rate, per
    quality flag, and the disagreeing facilities of the region."""
    if not checks:
        return ""
    parts = []
    for c in checks:
        rate = f"{100 * c['rate']:.1f}".replace(".", ",") if c["rate"] is not None else "—"
        per = "".join(f"<tr><td>{escape(q)} ({escape(QUALITY_FR.get(q, q))})</td><td class=n>{v['agreeing']}</td>"
                      f"<td class=n>{v['compared']}</td></tr>" for q, v in sorted(c["by_quality"].items()))
        parts.append(
            f"<p>Équipements de la BPE ({escape(c['source_id'])}) des départements "
            f"{escape(', '.join(c['departements']))} "
            f"comparés le {escape(str(c['computed_at'])[:16])} UTC : l'INSEE (colonne QP2024) et le croisement du "
            f"point avec les périmètres de la liste {c['generation']} les rattachent au même quartier — ou à aucun — "
            f"pour <strong>{c['agreeing']} sur {c['compared']} ({rate} %)</strong>.</p>"
            "<table><thead><tr><th>Qualité du rattachement selon l'INSEE (QUALI_QP2024)</th><th>Concordants</th>"
            f"<th>Comparés</th></tr></thead><tbody>{per}</tbody></table>")
    rows = "".join(
        f"<tr><td>{escape(com or '')}</td><td>{escape(typ or '')}</td><td>{escape(pub or 'aucun')}</td>"
        f"<td>{escape(hub or 'aucun')}</td><td>{escape(q or '')} ({escape(QUALITY_FR.get(q or '', q or ''))})</td>"
        f"<td>{escape(xy or '')}</td><td class=n>{'' if d is None else f'{d:.0f} m'}</td></tr>"
        for com, typ, pub, hub, q, xy, d in disagreements)
    table = ("<p>Aucun équipement de la région n'est rattaché différemment.</p>" if not disagreements else
             "<table><thead><tr><th>Commune</th><th>Type</th><th>QPV selon l'INSEE</th><th>QPV selon le hub</th>"
             "<th>Qualité INSEE</th><th>Qualité XY</th><th>Distance au QPV INSEE</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    return ("<h2>Rattachement des équipements aux quartiers : contrôle indépendant</h2>"
            "<p>L'INSEE rattache lui-même chaque équipement de la BPE à un quartier prioritaire. Le hub compare ce "
            "rattachement avec le sien (le point dans le périmètre) à chaque calcul des indicateurs : un écart "
            "signale un périmètre, une position ou un rattachement à vérifier. Un rattachement « aléatoire » de "
            "l'INSEE (qualité 3) n'est pas une erreur du hub.</p>" + "".join(parts) + table)


def render(region: Region, runs: list[dict], sources: dict[str, Source], docs_links: dict[str, str],
           assignment: str = "") -> str:
    """HTML of the page; `docs_links` maps run_id to a link relative to the page; `assignment`, the section of
    the publisher's QPV assignment check (assignment_section)."""
    rows = []
    for r in runs:
        v = r.get("validation") or {}
        src = sources.get(r["source_id"])
        ok = v.get("success")
        status = "conforme" if ok else ("chargé avec avertissements" if v.get("policy") == "warn" else "non conforme")
        link = docs_links.get(r["run_id"])
        detail = f'<a href="{escape(link)}">rapport Great Expectations</a>' if link else "—"
        title = escape(src.title if src else r["source_id"])
        rows.append(
            "<tr>"
            f"<td><strong>{title}</strong><br><code>{escape(r['source_id'])}</code></td>"
            f"<td>{escape(src.publisher if src else '')}</td>"
            f"<td>{escape(str(r.get('finished_at') or '')[:16].replace('T', ' '))} UTC</td>"
            f"<td class=n>{r.get('rows_loaded') or 0}</td>"
            f"<td class=n>{v.get('evaluated', 0) - v.get('failed', 0)}/{v.get('evaluated', 0)}</td>"
            f"<td>{status}</td>"
            f"<td>{detail}</td>"
            "</tr>")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<title>Qualité des données — {escape(region.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:.4rem;text-align:left;vertical-align:top}}.n{{text-align:right}}</style>
</head><body>
<h1>Qualité des données — {escape(region.name)} ({escape(region.code)})</h1>
<p>Chaque source des extraits publiés est vérifiée à chaque chargement par une suite Great Expectations
exécutée dans PostGIS (formats des codes, clés, valeurs plausibles, géométries, nombre de lignes). Une
source qui échoue n'est pas chargée : la version précédente reste en service.</p>
<table><thead><tr><th>Source</th><th>Producteur</th><th>Dernier chargement</th><th>Lignes</th>
<th>Vérifications réussies</th><th>Statut</th><th>Détail</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
{assignment}
<p><small>Page générée par qpvhub le {now}.</small></p>
</body></html>
"""


def write(env, region: Region, runs: list[dict], sources: dict) -> str:
    """Write quality/<region>/index.html, linking each run's GX Data Docs; return its key."""
    from qpvhub.quality.gx import docs_prefix

    links = {}
    for r in runs:
        index = f"{docs_prefix(r['source_id'], r['run_id'])}/index.html"
        if env.store.exists(index):
            links[r["run_id"]] = "../" + index[len("quality/"):]
    key = f"quality/{region.code}/index.html"
    env.store.put_bytes(key, render(region, runs, sources, links, _assignment(env, region)).encode(),
                        "text/html; charset=utf-8")
    return key


def _assignment(env, region: Region) -> str:
    """The last QPV assignment check of each source and list, and the region's disagreeing facilities."""
    from qpvhub.platform.db import connect

    with connect(env.uri) as conn:
        cur = conn.execute(
            "SELECT DISTINCT ON (source_id, generation) source_id, generation, computed_at, departements, compared, "
            "agreeing, rate, by_quality FROM meta.qpv_assignment_check WHERE departements && %s::text[] "
            "ORDER BY source_id, generation, computed_at DESC", (region.departements,))
        names = [d.name for d in cur.description or []]
        checks = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        rows = conn.execute(
            "SELECT insee_com, typequ, code_qp_publisher, code_qp_hub, quality, qualite_xy, distance_m "
            "FROM meta.qpv_assignment_disagreement "
            "WHERE (CASE WHEN insee_com LIKE '97%%' THEN left(insee_com, 3) ELSE left(insee_com, 2) END) = ANY(%s) "
            "ORDER BY quality, insee_com, typequ LIMIT 500", (region.departements,)).fetchall()
    return assignment_section(checks, rows)
