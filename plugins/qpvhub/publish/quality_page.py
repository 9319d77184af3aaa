"""The region's quality page (`quality/<region>/index.html`): for each source behind the region's
extracts, its last load, what was checked, and a link to that run's GX Data Docs."""

from __future__ import annotations

import datetime as dt
from html import escape

from qpvhub.catalog import Region, Source


def render(region: Region, runs: list[dict], sources: dict[str, Source], docs_links: dict[str, str]) -> str:
    """HTML of the page; `docs_links` maps run_id to a link relative to the page."""
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
<p><small>Page générée par qpvhub le {now}.</small></p>
</body></html>
"""


def write(env, region: Region, runs: list[dict], sources: dict) -> str:
    """Write quality/<region>/index.html, linking each run's GX Data Docs; return its key."""
    from qpvhub.pipeline import docs_prefix

    links = {}
    for r in runs:
        index = f"{docs_prefix(r['source_id'], r['run_id'])}/index.html"
        if env.store.exists(index):
            links[r["run_id"]] = "../" + index[len("quality/"):]
    key = f"quality/{region.code}/index.html"
    env.store.put_bytes(key, render(region, runs, sources, links).encode(), "text/html; charset=utf-8")
    return key
