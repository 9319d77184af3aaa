"""Fiche quartier: one static page per QPV (`qpv/<code_qp>.html` in each product version), printable.

For each theme, the QPV's indicators beside its commune and the commune outside its QPV, with unit,
millésime, source and the registry's one-line definition. A hidden cell says « secret statistique », an
absent one « non disponible » with the registry's reason — never 0 or a blank. Rendered from the published
(secrecy-applied) table only, with no clock and no randomness: the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from qpvhub import __version__
from qpvhub.publish.secrecy import PUBLIC_FLAG

# print order: the short themes fill the first page, since a theme table is never cut across pages
THEMES = ["socio-démographie", "emploi", "éducation", "logement", "mobilité", "climat", "géographie", "services"]
SCOPES = [("", "Quartier"), ("__commune", "Commune"), ("__hors_qpv", "Commune hors QPV")]
WHOLE_UNITS = {"€", "m", "départs par jour"}  # shown without decimals, like counts


@dataclass(frozen=True)
class Doc:
    """What the fiche says about one indicator, from its registry entry and family."""

    id: str
    label: str
    unit: str
    theme: str
    definition: str
    millesime: str
    sources: tuple[str, ...]
    absent: str
    is_count: bool


def docs_of(families, millesimes: Mapping[str, str] | None = None, generation: int | None = None) -> dict[str, Doc]:
    """Every registry indicator, in registry order — for a `generation`'s fiches, without the families that only
    describe the other QPV list (their rows could never be filled); `millesimes` (the values' own, from the
    mart) replace the registry's generic wording where known."""
    out = {}
    millesimes = millesimes or {}
    for fam in families:
        if generation is not None and fam.header.generation not in (None, generation):
            continue
        for ind in fam.header.indicators:
            out[ind.id] = Doc(ind.id, ind.label_fr, ind.unit, ind.theme, first_sentence(ind.method),
                              millesimes.get(ind.id, ind.millesime),
                              tuple(fam.header.sources), fam.header.absent_fr, bool(ind.secrecy == "count"
                                                                                    or ind.is_count))
    return out


def first_sentence(text: str, limit: int = 140) -> str:
    """The definition's first sentence (the registry's `method`), cut at a word if long."""
    one = " ".join(text.split())
    m = re.match(r"(.+?[.;])(\s|$)", one)
    s = m.group(1).rstrip(";.") + "." if m else one
    if len(s) > limit:
        s = s[:limit].rsplit(" ", 1)[0] + " …"
    return s


def fmt(v: float, unit: str, is_count: bool = False) -> str:
    """A value the French way: narrow no-break space between thousands, decimal comma; decimals by unit."""
    if is_count or unit in WHOLE_UNITS or unit in ("habitants", "personnes", "arrêts", "offres", "équipements",
                                                   "communes"):
        digits = 0
    elif unit in ("%", "ha"):
        digits = 1
    else:
        digits = 2
    return f"{v:,.{digits}f}".replace(",", "\u202f").replace(".", ",")  # the unit is in the row's label


def publisher_short(source) -> str:
    """`INSEE`, `ANCT`, `RésO Villes`…: the catalogue publisher up to its first dash or bracket."""
    return re.split(r" — | \(|,", source.publisher)[0].strip() if source is not None else ""


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _cell(row: Mapping, col: str, doc: Doc, columns: set[str]) -> tuple[str, str]:
    """(HTML, CSS class) of one cell: value, secret, absent with its reason, or not computed at this scale."""
    if col not in columns:
        return "—", "na"
    flag = row.get(col + "__secret")
    if _present(flag) and str(flag):
        return f'<span class="secret">{html.escape(PUBLIC_FLAG)}</span><sup><a href="#secret">*</a></sup>', "secret"
    v = row.get(col)
    if _present(v):
        return fmt(float(v), doc.unit, doc.is_count), "v"
    return '<span class="absent">non disponible</span>', "absent"  # the reason is said once, under the label


def render(row: Mapping, docs: dict[str, Doc], columns: set[str], *, region, generation: int, threshold: int,
           runs: list[dict], sources: dict, stamp: str, map_svg: str | None, same_commune: list[tuple[str, str]],
           note: str, past: pd.DataFrame | None = None, networks: list[str] | None = None,
           earlier: list[dict] | None = None, earlier_docs: dict[str, Doc] | None = None) -> str:
    """The fiche of one QPV (`row`: its published values and flags; `columns`: the table's columns;
    `earlier`: the quartiers of the 2015 list it replaces, with their history, shown apart)."""
    e = html.escape
    code, name, com = str(row["code_qp"]), str(row["lib_qp"]), str(row["lib_com"])
    by_theme: dict[str, list[Doc]] = {}
    for d in docs.values():
        by_theme.setdefault(d.theme, []).append(d)
    themes = [t for t in THEMES if t in by_theme] + sorted(t for t in by_theme if t not in THEMES)
    liste = f"liste {generation} des QPV"
    day = stamp[:10]
    out = [f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(name)} ({e(code)}) — fiche quartier, {e(com)}</title>
<style>{CSS}</style></head><body>
<header><p class="nav"><a href="../../../index.html">Données QPV — {e(region.name)}</a></p>
<h1>{e(name)} <span class="code">{e(code)}</span></h1>
<p class="sub">Quartier prioritaire de la politique de la ville, {e(liste)} — commune principale : {e(com)}
(INSEE {e(str(row["insee_com"]))}), département {e(str(row["dep"]))}, région {e(region.name)}.
Fiche publiée le {e(french_date(day))} ; la date des données est donnée pour chaque indicateur.</p></header>
<main>
<section class="notice" aria-labelledby="avertissement"><h2 id="avertissement">À lire avant d'utiliser ces chiffres</h2>
<p>{e(note)} Chaque valeur est une statistique sur un territoire, pas une information sur une personne.
<span id="secret">* « {e(PUBLIC_FLAG)} » : valeur non diffusée parce qu'elle porte sur moins de {threshold}
personnes, ou parce qu'elle permettrait de recalculer une valeur ainsi cachée.</span>
« non disponible » : la source ne donne pas de valeur ici (la raison est indiquée) ; « — » : indicateur
non calculé à cette échelle.</p></section>
"""]
    for theme in themes:
        rows = by_theme[theme]
        tid = "t-" + re.sub(r"[^a-z]+", "-", theme.lower().replace("é", "e").replace("è", "e")).strip("-")
        out.append(f'<section class="theme" aria-labelledby="{tid}"><h2 id="{tid}">{e(theme.capitalize())}</h2>')
        out.append('<table><colgroup><col class="c-ind"><col class="c-v"><col class="c-v"><col class="c-v">'
                   '</colgroup><thead><tr><th scope="col">Indicateur (unité) — définition, source, millésime</th>'
                   + "".join(f'<th scope="col">{e(label)}</th>' for _, label in SCOPES) + "</tr></thead><tbody>")
        for d in rows:
            why, shown = "", False
            if not any(d.id + suf in columns for suf, _ in SCOPES):
                srcs = ", ".join(d.sources)
                cells = (f'<td colspan="3" class="absent"><span class="absent">non disponible</span>'
                         f'<span class="why"> : aucune valeur dans la région (source non chargée : {e(srcs)})</span>'
                         "</td>")
            else:
                cells = ""
                for suf, _ in SCOPES:
                    text, cls = _cell(row, d.id + suf, d, columns)
                    cells += f'<td class="{cls}">{text}</td>'
                    shown |= cls in ("v", "secret")
                    if cls == "absent":
                        reason = d.absent or "valeur non calculée pour ce quartier"
                        why = f'<span class="why"> Non disponible : {e(reason)}.</span>'
            src = ", ".join(dict.fromkeys(publisher_short(sources.get(s)) or s for s in d.sources))
            # the data's date where the row has a figure: a row with none has no date to give
            dated = f" ; millésime : {e(d.millesime)}" if shown else ""
            out.append(f'<tr><th scope="row">{e(d.label)} <span class="unit">({e(d.unit)})</span>'
                       f'<span class="def{" ref" if d.definition.startswith("Comme ") else ""}">'
                       f'{e(d.definition)} Source : {e(src)}{dated}.'
                       f"{why}</span></th>{cells}</tr>")
        out.append("</tbody></table>")
        if theme == "mobilité" and networks:
            out.append(f'<p class="net">Réseaux desservant le quartier (un arrêt à moins de 300 m) : '
                       f"{e(', '.join(networks))}.</p>")
        out.append("</section>")
    out.append(_evolution(past, docs))
    if earlier:
        out.append(_continuity(earlier, earlier_docs or {}))
    out.append('<div class="pair">')  # printed side by side: the map, and what goes with it
    if map_svg:
        svg = map_svg.replace("<svg ", f'<svg role="img" aria-labelledby="map-{e(code)}" ', 1)
        svg = re.sub(r"<title>", f'<title id="map-{e(code)}">', svg, count=1)
        out.append(f'<section class="map" aria-labelledby="t-carte"><h2 id="t-carte">Carte</h2><figure>{svg}'
                   f"<figcaption>{e(_map_caption(map_svg))}</figcaption></figure></section>")
    out.append("<div>")
    if same_commune:
        links = ", ".join(f'<a href="{e(c)}.html">{e(n)} ({e(c)})</a>' for c, n in same_commune)
        out.append(f'<section aria-labelledby="t-voisins"><h2 id="t-voisins">Autres quartiers de {e(com)}</h2>'
                   f"<p>{links}.</p></section>")
    out.append('<section aria-labelledby="t-citer"><h2 id="t-citer">Citer cette fiche</h2>')
    out.append(f'<p class="cite">qpvhub, « {e(name)} ({e(code)}) — fiche '
               f"quartier », {e(region.name)}, {e(liste)}, publiée le {e(french_date(day))}, d'après "
               f"{e(', '.join(sorted({publisher_short(sources.get(r['source_id'])) or r['source_id'] for r in runs})))}"
               f". Licence Ouverte 2.0 (Etalab). Version : qpvhub {e(__version__)}, secret statistique seuil "
               f"{threshold} ; les empreintes SHA-256 des sources (ci-dessous) identifient les fichiers exacts.</p>")
    out.append("</section></div></div>")
    out.append('<section class="sources" aria-labelledby="t-sources"><h2 id="t-sources">Sources et version des '
               'données</h2><ul class="runs">')
    for r in sorted(runs, key=lambda r: r["source_id"]):
        s = sources.get(r["source_id"])
        title = s.title if s is not None else r["source_id"]
        who = (f'<span class="pub"> — {e(s.publisher)}</span> ; licence : {e(s.licence)}') if s is not None else ""
        dates = data_dates(r, stamp[:10])
        out.append(f"<li>{e(title)}{who} ; {e(dates) + ' ; ' if dates else ''}chargé le "
                   f"{e(french_date((r.get('finished_at') or '')[:10]))}, SHA-256 "
                   f"<code>{e((r.get('sha256') or '')[:12])}…</code></li>")
    out.append("</ul>")
    out.append("</section></main></body></html>\n")
    return "\n".join(out)


def french_date(iso: str) -> str:
    """2016-05-09 → 09/05/2016 (as French readers write dates); anything else unchanged."""
    parts = iso[:10].split("-")
    return "/".join(reversed(parts)) if len(parts) == 3 else iso


def data_dates(run: Mapping, today: str) -> str:
    """What a source run's data is dated by, in French: a GTFS feed's timetable period (« expirés » when it ended
    before `today`), else its millésime, else nothing (the source states none). Never the load date."""
    start, end = run.get("data_from"), run.get("data_until")
    if start and end:
        return f"horaires du {french_date(start)} au {french_date(end)}" + (", expirés" if end < today else "")
    if run.get("millesime"):
        return f"millésime {run['millesime']}"
    return ""  # the source states none: the line gives only the load date, named as such


def _spark(values: list[float | None], label: str) -> str:
    """A small line of the values over the releases (drawn here, no library); the table beside it is its
    text alternative."""
    pts = [(k, v) for k, v in enumerate(values) if v is not None]
    if len(pts) < 2:
        return ""
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    w, h, n = 84, 18, max(len(values) - 1, 1)

    def xy(k: int, v: float) -> str:
        y = h / 2 if hi == lo else h - 2 - (v - lo) / (hi - lo) * (h - 4)
        return f"{2 + k * (w - 4) / n:.1f},{y:.1f}"

    line = " ".join(xy(k, v) for k, v in pts)
    dots = "".join(f'<circle cx="{xy(k, v).split(",")[0]}" cy="{xy(k, v).split(",")[1]}" r="1.6"/>' for k, v in pts)
    return (f'<svg class="spark" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="'
            f'{html.escape(label)}"><polyline points="{line}" fill="none" stroke="#0b4f9c" stroke-width="1.4"/>'
            f'<g fill="#0b4f9c">{dots}</g></svg>')


def _evolution(past: pd.DataFrame | None, docs: dict[str, Doc]) -> str:
    """The QPV's indicators over the loaded releases (published values: secrecy applied per year), the last
    evolution or why there is none, and a small chart per indicator."""
    head = '<section class="evolution" aria-labelledby="t-evolution"><h2 id="t-evolution">Évolution</h2>'
    rows = past[past["scope"] == "qpv"] if past is not None and not past.empty else None
    if rows is None or rows.empty:
        return head + ("<p>Une seule édition des sources est chargée pour ce quartier : pas encore d'évolution.</p>"
                       "</section>")
    return (head + "<p>Valeurs du quartier dans chaque édition chargée des sources (« = » : l'édition reprend les "
            "chiffres de la précédente, ce n'est pas une absence d'évolution).</p>" + _history_table(rows, docs)
            + "</section>")


def _continuity(earlier: list[dict], docs: dict[str, Doc]) -> str:
    """The quartiers of the 2015 list this QPV replaces and their history: another perimeter, so another
    series — shown apart, never joined to this quartier's evolution."""
    e = html.escape
    out = ['<section class="evolution" aria-labelledby="t-avant"><h2 id="t-avant">Avant 2024 : quartiers de la '
           "liste 2015 (périmètre différent)</h2><p>Ce quartier reprend tout ou partie de quartiers de la liste "
           "2015. Leurs chiffres décrivent un autre périmètre : ils ne prolongent pas les valeurs ci-dessus et aucune "
           "évolution n'est calculée entre les deux listes.</p>"]
    for p in earlier:
        share24 = fmt(100 * p["share_of_2024"], "%")
        share15 = fmt(100 * p["share_of_2015"], "%")
        out.append(f'<h3>{e(str(p["lib_qp"]))} <span class="code">{e(p["code_qp"])}</span> — liste 2015, périmètre '
                   f"différent</h3><p>Recouvrement : {share24} % de ce quartier, {share15} % du quartier "
                   "de 2015.</p>")
        rows = p["past"][p["past"]["scope"] == "qpv"] if p["past"] is not None and not p["past"].empty else None
        out.append("<p>Aucune série de la liste 2015 n'est chargée pour ce quartier.</p>" if rows is None
                   or rows.empty else _history_table(rows, docs))
    out.append("</section>")
    return "".join(out)


def _history_table(rows: pd.DataFrame, docs: dict[str, Doc]) -> str:
    """One row per indicator, one column per release, the last evolution and a small chart."""
    years = sorted({int(y) for rs in rows["releases"] for y in str(rs).split()})
    out = ['<table class="evo"><colgroup><col class="e-ind">' + '<col>' * len(years)
           + '<col class="e-evo"><col class="e-sp"></colgroup><thead><tr><th scope="col">Indicateur</th>'
           + "".join(f'<th scope="col">{y}</th>' for y in years)
           + '<th scope="col">Dernière évolution</th><th scope="col">Tendance</th></tr></thead><tbody>']
    for ind in [i for i in docs if i in set(rows["indicator_id"])]:
        d = docs[ind]
        g = rows[rows["indicator_id"] == ind].sort_values("release")
        cells: dict[int, str] = {}
        values: dict[int, float | None] = {}
        for r in g.itertuples():
            first, *rest = [int(y) for y in str(r.releases).split()]
            secret = isinstance(r.value__secret, str) and r.value__secret
            text = (f'<span class="secret">{PUBLIC_FLAG}</span>' if secret else
                    fmt(float(r.value), d.unit, d.is_count) if _present(r.value) else '<span class="absent">non '
                    "publié</span>")
            cells[first] = text
            values[first] = None if secret or not _present(r.value) else float(r.value)
            for y in rest:
                cells[y] = f'<span class="same">= {first}</span>'
                values[y] = values[first]
        last = g.iloc[-1]
        if _present(last["evolution"]):
            sign = "+" if float(last["evolution"]) > 0 else ""
            unit = "points" if last["evolution_unit"] == "points" else "%"
            evo = f"{sign}{fmt(float(last['evolution']), '%')}\u00a0{unit} depuis {int(last['release_previous'])}"
        elif isinstance(last["evolution_note"], str) and last["evolution_note"]:
            evo = f'<span class="why">non calculée : {html.escape(last["evolution_note"])}</span>'
        else:
            evo = "—"
        series = [values.get(y) for y in years]
        label = f"{d.label} : " + ", ".join(f"{y} {'—' if v is None else fmt(v, d.unit, d.is_count)}"
                                           for y, v in zip(years, series, strict=True))
        out.append(f'<tr><th scope="row">{html.escape(d.label)} <span class="unit">({html.escape(d.unit)})</span>'
                   "</th>" + "".join(f'<td class="v">{cells.get(y, "—")}</td>' for y in years)
                   + f"<td>{evo}</td><td>{_spark(series, label)}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _map_caption(svg: str) -> str:
    """The map's text alternative: what it draws and how many stops and facilities (from its own legend)."""
    counts = re.findall(r"<text[^>]*>(\d+ [^<]{4,})</text>", svg)  # the counts, not the scale bar (« 200 m »)
    title = re.search(r"<title>([^<]+)</title>", svg)
    what = html.unescape(title.group(1)) if title else "Carte du quartier"
    return what + (" : " + ", ".join(html.unescape(c) for c in counts) if counts else "") + "."


CSS = """
:root{color:#1a1a1a;background:#fff;font-family:"DejaVu Sans",Arial,sans-serif}
body{max-width:60em;margin:auto;padding:1em;font-size:15px;line-height:1.35}
a{color:#0b4f9c}a:focus{outline:3px solid #b35806;outline-offset:2px}
h1{font-size:1.6em;margin:.2em 0}.code{font-size:.7em;color:#3a3a3a;font-weight:normal}
h2{font-size:1.15em;margin:.8em 0 .3em;border-bottom:2px solid #0b4f9c}
.sub,.nav{color:#3a3a3a;margin:.2em 0}
.notice{border:1px solid #b35806;background:#fff7ef;padding:.2em .8em;margin:.6em 0}
.notice h2{border:0;margin-top:.3em}
table{border-collapse:collapse;width:100%;table-layout:fixed}
col.c-ind{width:58%}col.c-v{width:14%}
th,td{overflow-wrap:anywhere}
th,td{border:1px solid #c8c8c8;padding:.15em .4em;text-align:left;vertical-align:top}
thead th{background:#eef3fa}
td.v{text-align:right;white-space:nowrap}
.unit{color:#3a3a3a;font-weight:normal}
.def{display:block;font-weight:normal;font-size:.82em;color:#3a3a3a}
.secret{font-style:italic;color:#6b3000}.absent{font-style:italic;color:#3a3a3a}
.why{font-size:.82em;color:#6b3000;font-weight:normal}
figure{margin:0}figure svg{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#3a3a3a}
.cite{font-size:.9em}
.same{color:#3a3a3a;font-size:.85em}
.net{margin:.2em 0;font-size:.9em}
table.evo td.v{text-align:right}
col.e-ind{width:27%}col.e-evo{width:20%}col.e-sp{width:12%}
@page{size:A4;margin:7mm 9mm}
@media print{
 body{font-size:7pt;max-width:none;padding:0;line-height:1.1}
 .nav{display:none}
 h1{font-size:13pt}h2{font-size:9pt;margin:.35em 0 .15em;break-after:avoid}
 .notice{padding:0 .5em;margin:.3em 0}
 th,td{padding:0 .3em}
 .def{font-size:6pt}.why{font-size:6pt}td.m{font-size:6pt}
 figure,tr,.pair{break-inside:avoid}  /* a theme may continue on the next page, row by row */
 section.map figure svg{max-height:58mm;width:auto}
 .pub{display:none}
 .def.ref{display:none}
 ul.runs{columns:2;column-gap:6mm;font-size:6pt;padding-left:1em;margin:.2em 0}
 a{color:#1a1a1a;text-decoration:none}
 .pair{display:grid;grid-template-columns:48% 50%;column-gap:2%;break-inside:avoid}
 .notice p{margin:.2em 0}
}
"""
