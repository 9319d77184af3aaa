"""The partners' portal page of a region and the map picture of each product, rendered server side.

`published/<region>/index.html` lists every product of `catalog.json` with its latest version, files,
sizes, data dictionary, licence, quality link and map. The map is an SVG choropleth drawn here from the
Lambert-93 perimeters (no tiles, no internet, no plotting library), deterministic for the same data.
"""

from __future__ import annotations

import html
import json
import math

import geopandas as gpd
import shapely

from qpvhub.publish.secrecy import PUBLIC_FLAG

PALETTE = ["#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c"]  # ColorBrewer Blues, 5 classes
MISSING = "#d9d9d9"
SECRET = "#8073ac"  # purple: hidden by statistical secrecy, told apart from absent (grey)
MAP_PREFERENCE = ["taux_pauvrete", "filosofi_taux_pauvrete", "part_surface_300m_arret", "population", "superficie_ha"]
# maps of the region page, one SVG each, chosen by the reader without a server
# (SIG Ville's poverty rate describes the 2015 list, INSEE's `filosofi_` one the 2024 list: a product has one)
KEY_MAPS = ["taux_pauvrete", "filosofi_taux_pauvrete", "taux_emploi", "part_moins_25", "part_surface_300m_arret",
            "equipements_pour_1000_hab", "part_surface_inondable", "population"]


def map_indicator(gdf: gpd.GeoDataFrame) -> str | None:
    """The indicator mapped for a product: the first of MAP_PREFERENCE with a value, else None."""
    return next((c for c in MAP_PREFERENCE if c in gdf.columns and gdf[c].notna().any()), None)


def _classes(values: list[float]) -> list[float]:
    """Upper bounds of up to five quantile classes."""
    vals = sorted(values)
    bounds = sorted({vals[min(len(vals) - 1, math.ceil(len(vals) * k / 5) - 1)] for k in range(1, 6)})
    return bounds


def _fmt(v: float) -> str:
    return f"{v:,.1f}".replace(",", "\u202f").replace(".", ",")


def key_maps(gdf: gpd.GeoDataFrame) -> list[str]:
    """The indicators the region page offers as maps: those of KEY_MAPS with a value, in that order."""
    return [c for c in KEY_MAPS if c in gdf.columns and gdf[c].notna().any()]


def _place_labels(anchors: list[tuple[float, float, str]], size: float = 10) -> list[tuple[float, float] | None]:
    """A position for each label beside its point where it overlaps no marker and no label already placed (right,
    left, above, below, then further out); None when every candidate overlaps: the marker keeps its tooltip, the text
    is left out rather than drawn over another."""
    placed = [(cx - 7, cy - 7, cx + 7, cy + 7) for cx, cy, _ in anchors]  # every marker: no label over one
    out: list[tuple[float, float] | None] = []
    for cx, cy, text in anchors:
        w, h = 0.62 * size * len(text), size
        spot = None
        near = [(8, 4), (-8 - w, 4), (-w / 2, -9), (-w / 2, 4 + h + 4), (8, -8), (8, 16), (-8 - w, -8), (-8 - w, 16)]
        far = [(dx * r, dy * r) for r in (20, 32, 44) for dx, dy in ((1, 0), (-1, 0), (0, -1), (0, 1), (1, -1),
                                                                      (-1, -1), (1, 1), (-1, 1))]
        for dx, dy in near + [(x if x > 0 else x - w if x < 0 else -w / 2, y + 4) for x, y in far]:
            x0, y1 = cx + dx, cy + dy  # text's baseline-left corner
            box = (x0 - 1, y1 - h, x0 + w + 1, y1 + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                spot = (x0, y1)
                placed.append(box)
                break
        out.append(spot)
    return out


def choropleth_svg(gdf: gpd.GeoDataFrame, column: str, title: str, unit: str = "", width: int = 560,
                   communes: gpd.GeoDataFrame | None = None, departements: gpd.GeoDataFrame | None = None) -> str:
    """An SVG map of `column` per QPV (quantile classes; grey where absent or under statistical secrecy),
    over the outlines of `communes` (insee_com, nom, geometry) and of the `departements` (dep, geometry: the
    frame, the region's shape) when given; labels that do not overlap."""
    g = gdf.to_crs(2154)
    frame = next((x for x in (departements, communes) if x is not None and not x.empty), None)
    minx, miny, maxx, maxy = g.total_bounds if frame is None else frame.to_crs(2154).total_bounds
    pad = max(maxx - minx, maxy - miny) * 0.05 + 200
    minx, miny, maxx, maxy = minx - pad, miny - pad, maxx + pad, maxy + pad
    scale = min(width / (maxx - minx), width / (maxy - miny))  # fits a square of `width`
    width = int((maxx - minx) * scale) + 1
    height = int((maxy - miny) * scale) + 1
    legend_h = 146
    width = max(width, 600)  # room for the legend and the title
    values = [float(v) for v in g[column] if v == v and v is not None]
    bounds = _classes(values) if values else []

    flags = gdf[column + "__secret"] if column + "__secret" in gdf.columns else None

    def colour(v, secret: bool = False) -> str:
        if secret:
            return SECRET
        if v is None or v != v:
            return MISSING
        return PALETTE[next(i for i, b in enumerate(bounds) if v <= b) * (len(PALETTE) - 1) // max(len(bounds) - 1, 1)]

    def path(geom, view: tuple[float, float, float, float, float] | None = None) -> str:
        """SVG path of a polygon in the main map, or in an inset (`view`: its x0, y0 in pixels, minx, maxy, scale)."""
        ox, oy, mx, my, k = view or (0.0, 0.0, minx, maxy, scale)
        parts = []
        for poly in getattr(geom, "geoms", [geom]):
            for ring in [poly.exterior, *poly.interiors]:
                xy = shapely.get_coordinates(ring)
                pts = " L".join(f"{ox + (x - mx) * k:.1f} {oy + (my - y) * k:.1f}" for x, y in xy)
                parts.append(f"M{pts} Z")
        return " ".join(parts)

    # A commune with three QPV or more that the regional scale squeezes into a few pixels gets an inset under the
    # map, at a scale where its perimeters show (two at most: the densest)
    insets = []
    if departements is not None and not departements.empty and "insee_com" in g.columns:
        per = g.groupby("insee_com").size().sort_values(ascending=False, kind="stable")
        for com, n in per[per >= 3].items():
            b = g[g["insee_com"] == com].total_bounds
            if max(b[2] - b[0], b[3] - b[1]) < 0.1 * (maxx - minx) and len(insets) < 2:
                insets.append((str(com), int(n), b))
    inset_w, inset_h = 280, 210
    map_h = height + (inset_h + 34 if insets else 0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{map_h + legend_h}" '
           f'viewBox="0 0 {width} {map_h + legend_h}" font-family="sans-serif" font-size="12">',
           f"<title>{html.escape(title)}</title>",
           f'<rect width="{width}" height="{height}" fill="#ffffff" stroke="#999999"/>']
    for _, c in (communes.to_crs(2154).sort_values("insee_com").iterrows() if communes is not None else []):
        out.append(f'<path d="{path(c.geometry)}" fill="#f7f7f7" fill-rule="evenodd" stroke="#8c8c8c" '
                   f'stroke-width="0.5" data-commune="{html.escape(str(c["insee_com"]))}"><title>'
                   f'{html.escape(str(c["nom"]))}</title></path>')
    for _, d in (departements.to_crs(2154).sort_values("dep").iterrows() if departements is not None else []):
        out.append(f'<path d="{path(d.geometry)}" fill="none" stroke="#4d4d4d" stroke-width="1.2" '
                   f'data-departement="{html.escape(str(d["dep"]))}"><title>Département {html.escape(str(d["dep"]))}'
                   "</title></path>")
    if departements is not None and len(departements) > 1:  # the region's outline, over its départements'
        out.append(f'<path d="{path(departements.to_crs(2154).union_all())}" fill="none" stroke="#1a1a1a" '
                   'stroke-width="2" data-region="1"/>')
    ordered = g.sort_values("code_qp")
    anchors = [((pt.x - minx) * scale, (maxy - pt.y) * scale, str(code)) for pt, code in
               zip(ordered.geometry.representative_point(), ordered["code_qp"], strict=True)]
    spots = _place_labels(sorted(anchors, key=lambda a: (a[1], a[0])))
    label_at = {a[2]: s for a, s in zip(sorted(anchors, key=lambda a: (a[1], a[0])), spots, strict=True)}
    for i, row in ordered.iterrows():
        v = row[column]
        secret = flags is not None and isinstance(flags.loc[i], str) and bool(flags.loc[i])
        label = f"{row['code_qp']} {row.get('lib_qp', '')} : " + (
            "secret statistique" if secret else _fmt(float(v)) + f" {unit}" if v == v else "non disponible")
        out.append(f'<path d="{path(row.geometry)}" fill="{colour(v, secret)}" fill-rule="evenodd" stroke="#333333" '
                   f'stroke-width="0.6" data-code="{html.escape(row["code_qp"])}"><title>{html.escape(label)}'
                   "</title></path>")
        # QPV are small at regional scale: a marker of the same class at a point inside each keeps them visible
        pt = row.geometry.representative_point()
        cx, cy = (pt.x - minx) * scale, (maxy - pt.y) * scale
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{colour(v, secret)}" stroke="#333333" '
                   f'stroke-width="1"><title>{html.escape(label)}</title></circle>')
        spot = label_at.get(str(row["code_qp"]))
        if spot is not None:
            lx, ly = min(max(cx, spot[0]), spot[0] + 0.62 * 10 * len(str(row["code_qp"]))), spot[1] - 4
            if abs(lx - cx) + abs(ly - cy) > 18:  # placed away from a crowded spot: a leader line to its marker
                out.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{lx:.1f}" y2="{ly:.1f}" stroke="#666666" '
                           'stroke-width="0.6"/>')
            out.append(f'<text x="{spot[0]:.1f}" y="{spot[1]:.1f}" font-size="10" paint-order="stroke" '
                       f'stroke="#ffffff" stroke-width="2.5">{html.escape(row["code_qp"])}</text>')
    names = {} if communes is None else dict(zip(communes["insee_com"].astype(str), communes["nom"], strict=True))
    for k_inset, (com, n, b) in enumerate(insets):
        ix, iy = 8 + k_inset * (inset_w + 16), height + 24
        pad_m = max(b[2] - b[0], b[3] - b[1]) * 0.08 + 150
        bx0, by0, bx1, by1 = b[0] - pad_m, b[1] - pad_m, b[2] + pad_m, b[3] + pad_m
        k = min(inset_w / (bx1 - bx0), inset_h / (by1 - by0))
        view = (ix, iy, bx0, by1, k)
        name = names.get(com, com)
        # where the inset is, on the map: a dashed box with its number
        out.append(f'<rect x="{(bx0 - minx) * scale:.1f}" y="{(maxy - by1) * scale:.1f}" '
                   f'width="{(bx1 - bx0) * scale:.1f}" height="{(by1 - by0) * scale:.1f}" fill="none" '
                   f'stroke="#b35806" stroke-dasharray="3 2"/>')
        out.append(f'<text x="{ix}" y="{iy - 6}" font-weight="bold">Zoom {k_inset + 1} : {html.escape(name)} '
                   f"({n} QPV)</text>"
                   f'<rect x="{ix}" y="{iy}" width="{inset_w}" height="{inset_h}" fill="#ffffff" stroke="#b35806" '
                   f'data-inset="{html.escape(com)}"/>'
                   f'<clipPath id="zoom{k_inset + 1}"><rect x="{ix}" y="{iy}" width="{inset_w}" height="{inset_h}"/>'
                   f'</clipPath><g clip-path="url(#zoom{k_inset + 1})">')  # the commune's outline stays inside
        if communes is not None:
            for _, c in communes[communes["insee_com"].astype(str) == com].to_crs(2154).iterrows():
                out.append(f'<path d="{path(c.geometry, view)}" fill="#f7f7f7" stroke="#8c8c8c" stroke-width="0.5"/>')
        mine = ordered[ordered["insee_com"].astype(str) == com]
        pts = [(ix + (p.x - bx0) * k, iy + (by1 - p.y) * k, str(c)) for p, c in
               zip(mine.geometry.representative_point(), mine["code_qp"], strict=True)]
        for i, row in mine.iterrows():
            v = row[column]
            secret = flags is not None and isinstance(flags.loc[i], str) and bool(flags.loc[i])
            out.append(f'<path d="{path(row.geometry, view)}" fill="{colour(v, secret)}" fill-rule="evenodd" '
                       f'stroke="#333333" stroke-width="0.8" data-inset-code="{html.escape(row["code_qp"])}"/>')
        for (_, _, code), spot in zip(pts, _place_labels(pts), strict=True):
            if spot is not None:
                out.append(f'<text x="{spot[0]:.1f}" y="{spot[1]:.1f}" font-size="10" paint-order="stroke" '
                           f'stroke="#ffffff" stroke-width="2.5">{html.escape(code)}</text>')
        out.append("</g>")
        bar = 1000 * k  # 1 km
        out.append(f'<line x1="{ix + inset_w - 10 - bar:.1f}" y1="{iy + inset_h - 8}" x2="{ix + inset_w - 10}" '
                   f'y2="{iy + inset_h - 8}" stroke="#000000" stroke-width="2"/><text x="{ix + inset_w - 10 - bar:.1f}"'
                   f' y="{iy + inset_h - 13}">1 km</text>')
    y = map_h + 18
    out.append(f'<text x="8" y="{y}" font-weight="bold">{html.escape(title)}</text>')
    lower = min(values) if values else 0.0
    for i, b in enumerate(bounds):
        c = PALETTE[i * (len(PALETTE) - 1) // max(len(bounds) - 1, 1)]
        out.append(f'<rect x="8" y="{y + 8 + 16 * i}" width="14" height="12" fill="{c}" stroke="#333333"/>'
                   f'<text x="28" y="{y + 18 + 16 * i}">{_fmt(lower)} – {_fmt(b)} {html.escape(unit)}</text>')
        lower = b
    k = len(bounds)
    out.append(f'<rect x="8" y="{y + 8 + 16 * k}" width="14" height="12" fill="{SECRET}" stroke="#333333"/>'
               f'<text x="28" y="{y + 18 + 16 * k}">secret statistique</text>'
               f'<rect x="8" y="{y + 24 + 16 * k}" width="14" height="12" fill="{MISSING}" stroke="#333333"/>'
               f'<text x="28" y="{y + 34 + 16 * k}">non disponible</text>')
    bar = 5000 * scale  # a 5 km scale bar
    out.append(f'<line x1="{width - 20 - bar:.1f}" y1="{height - 12}" x2="{width - 20}" y2="{height - 12}" '
               f'stroke="#000000" stroke-width="2"/><text x="{width - 20 - bar:.1f}" y="{height - 18}">5 km</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _maps_section(maps: list[dict]) -> list[str]:
    """Key indicators as maps: one SVG each, picked with a list (all shown without JavaScript), each with the
    table it draws as its text alternative."""
    e = html.escape
    if not maps:
        return []
    out = ['<section aria-labelledby="carte"><h2 id="carte">Carte de la région</h2>',
           '<p class="js-only"><label for="choix-carte">Indicateur représenté :</label> <select id="choix-carte">'
           + "".join(f'<option value="{e(m["id"])}">{e(m["label"])}</option>' for m in maps) + "</select></p>"]
    for m in maps:
        src = f'{e(m["product"])}/latest/{e(m["product"])}_{e(m["region"])}_carte_indicateur_{e(m["id"])}.svg'
        out.append(f'<figure class="carte" id="carte-{e(m["id"])}"><img src="{src}" alt="Carte des QPV : '
                   f'{e(m["label"])} ; valeurs dans le tableau qui suit."><figcaption><details><summary>Tableau des '
                   f'valeurs : {e(m["label"])} ({e(m["unit"])})</summary><table><thead><tr><th scope="col">QPV</th>'
                   '<th scope="col">Nom</th><th scope="col">Commune</th><th scope="col">Valeur</th></tr></thead>'
                   "<tbody>" + "".join(f"<tr><td>{e(c)}</td><td>{e(n)}</td><td>{e(com)}</td><td>{e(v)}</td></tr>"
                                       for c, n, com, v in m["rows"]) + "</tbody></table></details></figcaption>"
                   "</figure>")
    out.append("""<script>
(function () {
  var s = document.getElementById("choix-carte");
  function show() { document.querySelectorAll("figure.carte").forEach(function (f) {
    f.hidden = f.id !== "carte-" + s.value; }); }
  s.addEventListener("change", show); show();
})();
</script></section>""")
    return out


def _fiches_section(catalog: dict, packages: dict[str, dict]) -> list[str]:
    """Links to every fiche quartier of the region product, with a search box (name, code, commune)."""
    e = html.escape
    main = next((p["product"] for p in catalog["products"] if "_dep" not in p["product"] and any(
        r.get("qpvhub:format") == "html" for r in packages.get(p["product"], {}).get("resources", []))), None)
    if main is None:
        return []
    res = packages[main]["resources"]
    pdfs = {r["path"][:-4] for r in res if r.get("qpvhub:format") == "pdf"}
    out = ['<section aria-labelledby="fiches"><h2 id="fiches">Fiches quartier</h2>',
           "<p>Une page par quartier, imprimable (PDF) : chiffres clés du quartier, de sa commune et de la commune "
           "hors QPV, sources et carte.</p>",
           '<p class="js-only"><label for="recherche">Rechercher un quartier (nom, code ou commune) :</label> '
           '<input id="recherche" type="search" autocomplete="off"> <span id="n-fiches" aria-live="polite"></span></p>',
           '<ul id="liste-fiches">']
    for r in sorted((r for r in res if r.get("qpvhub:format") == "html"), key=lambda r: r.get("title", r["path"])):
        title = r.get("title", r["path"]).removesuffix(" — fiche quartier")
        href = f"{main}/latest/{r['path']}"
        pdf = f' — <a href="{e(href[:-5])}.pdf">PDF<span class="sr"> de {e(title)}</span></a>' \
            if r["path"][:-5] in pdfs else ""
        out.append(f'<li data-search="{e(title.lower())}"><a href="{e(href)}">{e(title)}</a>{pdf}</li>')
    out.append("""</ul><script>
(function () {
  var q = document.getElementById("recherche"), n = document.getElementById("n-fiches");
  var items = document.querySelectorAll("#liste-fiches li");
  function norm(t) { return t.toLowerCase().normalize("NFD").replace(/[\u0300-\u036f]/g, ""); }
  q.addEventListener("input", function () {
    var k = 0, v = norm(q.value.trim());
    items.forEach(function (li) { var ok = norm(li.dataset.search).indexOf(v) >= 0; li.hidden = !ok; if (ok) k++; });
    n.textContent = k + " quartier(s)";
  });
})();
</script></section>""")
    return out


def _api_section(region, api_url: str | None) -> list[str]:
    """How GIS users reach the same layers over the OGC API (QGIS, web maps), when it is served."""
    e = html.escape
    layer = f"pub.qpv_profil_{region.code}"
    if not api_url:
        return ['<section aria-labelledby="api"><h2 id="api">Accès pour les SIG (OGC API)</h2><p>Ces couches '
                "(secret statistique appliqué) peuvent aussi être servies en OGC API – Features et – Tiles pour QGIS "
                "et les cartes web : l'adresse est à demander au pôle de données régional.</p></section>"]
    base = api_url.rstrip("/")
    return [f'<section aria-labelledby="api"><h2 id="api">Accès pour les SIG (OGC API)</h2>'
            f'<p>Les mêmes couches, secret statistique appliqué, en OGC API – Features et – Tiles : '
            f'<a href="{e(base)}/">{e(base)}/</a> (<a href="{e(base)}/collections">collections</a>).</p>'
            "<p>Dans QGIS : menu Couche › Ajouter une couche › Ajouter une couche WFS / OGC API – Features, "
            f"nouvelle connexion avec l'adresse ci-dessus, puis la couche <code>{e(layer)}</code> (profil des QPV), "
            "<code>pub.arrets_transport</code> ou <code>pub.equipements</code>. Tuiles vectorielles : Couche › "
            "Ajouter une couche › Tuiles vectorielles, adresse "
            f"<code>{e(base)}/collections/{e(layer)}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}</code>.</p></section>"]


def _coverage_and_secrecy(region, catalog: dict, packages: dict[str, dict]) -> list[str]:
    """Two sentences a partner needs before reading the page: which départements the loaded data covers (a
    département without QPV loaded has no product), and the statistical secrecy rule the files apply."""
    with_product = sorted(p["product"].rsplit("_dep", 1)[1] for p in catalog["products"] if "_dep" in p["product"])
    missing = [d for d in region.departements if d not in with_product]
    out = []
    if missing and with_product:
        out.append(f"Les données chargées couvrent {len(with_product)} des {len(region.departements)} départements "
                   f"de la région ({', '.join(with_product)}) : pas de produit pour {', '.join(missing)}, où aucun "
                   "QPV de la liste publiée n'est chargé.")
    secrecy = next((pkg["qpvhub"]["statistical_secrecy"] for pkg in packages.values()
                    if pkg.get("qpvhub", {}).get("statistical_secrecy")), None)
    if secrecy:
        out.append(f"Secret statistique : un effectif de moins de {secrecy['threshold']} personnes n'est pas diffusé, "
                   "ni aucune valeur calculée sur lui ou qui permettrait de le retrouver ; la cellule est vide et sa "
                   f"colonne <colonne>__secret dit « {secrecy['flag']} ».")
    return out


def portal_html(region, catalog: dict, packages: dict[str, dict], quality_href: str | None,
                maps: list[dict] | None = None, api_url: str | None = None) -> str:
    """The region's portal page from its catalog.json and each product's latest datapackage.json: the map of
    the region by key indicator, the fiches quartier, then every product and its files."""
    e = html.escape
    parts = [f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>Données QPV — {e(region.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;color:#1a1a1a}}
table{{border-collapse:collapse}}a{{color:#0b4f9c}}a:focus,select:focus,input:focus{{outline:3px solid #b35806}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}.note{{color:#3a3a3a}}
figure img{{max-width:100%;height:auto}}.sr{{position:absolute;left:-9999px}}</style>
<script>document.documentElement.className = "js";</script>
<style>html:not(.js) .js-only{{display:none}}</style>
</head><body>
<header><h1>Quartiers prioritaires — {e(region.name)} ({e(region.code)})</h1>
<p class="note">{e(catalog.get("note", ""))}</p>
<p>Licence : {e(catalog.get("licence", ""))}. Catalogue machine : <a href="catalog.json">catalog.json</a>.
""" + (f' Qualité des données : <a href="{e(quality_href)}">rapport de contrôle</a>.' if quality_href else "")
             + "</p>" + "".join(f'<p class="note">{e(t)}</p>' for t in _coverage_and_secrecy(region, catalog, packages))
             + "</header><main>"]
    parts += _maps_section([{**m, "region": region.code} for m in maps or []])
    parts += _fiches_section(catalog, packages)
    parts += _api_section(region, api_url)
    parts.append('<h2 id="produits">Fichiers à télécharger</h2>')
    for prod in catalog["products"]:
        name = prod["product"]
        pkg = packages.get(name, {})
        latest = next((v for v in prod["versions"] if v["version"] == prod["latest"]), None)
        if latest is None:
            continue
        parts.append(f'<h3 id="{e(name)}">{e(prod.get("title") or name)}</h3>')
        parts.append(f"<p>Dernière version : <code>{e(latest['version'])}</code>, publiée le "
                     f"{e((latest.get('created') or '')[:10])} ; {len(prod['versions'])} version(s) conservée(s). "
                     f"Sommes de contrôle : <a href=\"{e(name)}/latest/SHA256SUMS\">SHA256SUMS</a>, "
                     f"description : <a href=\"{e(name)}/latest/datapackage.json\">datapackage.json</a>.</p>")
        quality = pkg.get("qpvhub", {}).get("quality", [])
        ok = all(q.get("success", False) for q in quality) if quality else None
        parts.append(f"<p>Contrôles qualité des sources : {'tous réussis' if ok else 'voir le rapport'}"
                     f" ({len(quality)} source(s)).</p>")
        svg = next((f for f in latest["files"] if f["path"].endswith("_carte.svg")), None)  # the product's map
        if svg:
            parts.append(f'<p><img src="{e(name)}/latest/{e(svg["path"])}" alt="carte {e(name)}"></p>')
        parts.append('<table><tr><th scope="col">fichier</th><th scope="col">format</th><th scope="col">taille</th>'
                     "</tr>")
        for f in latest["files"]:
            if f["path"].startswith("qpv/") or "_carte_" in f["path"]:  # fiches and per-QPV maps: listed above
                continue
            parts.append(f'<tr><td><a href="{e(name)}/latest/{e(f["path"])}">{e(f["path"])}</a></td>'
                         f"<td>{e(f['format'])}</td><td>{f['bytes'] / 1024:.1f} Kio</td></tr>")
        parts.append("</table>")
        fields = next((r["schema"]["fields"] for r in pkg.get("resources", []) if r.get("format") == "csv"), [])
        if fields:
            parts.append("<details><summary>Dictionnaire des données</summary><table>"
                         '<tr><th scope="col">colonne</th><th scope="col">unité</th><th scope="col">description</th>'
                         "</tr>")
            for fd in fields:
                parts.append(f"<tr><td><code>{e(fd['name'])}</code></td><td>{e(str(fd.get('unit', '')))}</td>"
                             f"<td>{e(fd.get('description', ''))}</td></tr>")
            parts.append("</table></details>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _points(conn, table: str, where: str, codes: list[str]) -> dict[str, list[tuple[float, float, str]]]:
    """code_qp → (x, y, label) of a point table's rows within 500 m of each of these QPV, when the table exists."""
    from psycopg import sql

    schema, name = table.split(".")
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
        return {}
    label = sql.SQL("p.stop_name" if name == "gtfs_stops" else "p.typequ")
    out: dict[str, list[tuple[float, float, str]]] = {}
    for code, x, y, text in conn.execute(sql.SQL(
        "SELECT q.code_qp, ST_X(p.geom), ST_Y(p.geom), {label} FROM ref.qpv q JOIN {t} p "
        "ON ST_DWithin(p.geom, q.geom, 500) WHERE q.code_qp = ANY(%s) AND {where} ORDER BY 1, 2, 3, 4"
    ).format(t=sql.Identifier(schema, name), label=label, where=sql.SQL(where)), (codes,)):
        out.setdefault(code, []).append((x, y, text))
    return out


def qpv_maps_svg(conn, gdf: gpd.GeoDataFrame, width: int = 480) -> dict[str, str]:
    """One SVG per QPV: its perimeter, the neighbouring QPV (grey) and commune limits (dashed) in the frame,
    the transit stops (blue dots) and BPE facilities (orange squares) within 500 m, a 200 m scale bar.
    Indicative: not a regulatory map."""
    # the region's QPV only, grouped by QPV: every region's page read the points near every QPV of the country and
    # scanned them for each of its own (a 200-QPV region: 20 M comparisons)
    codes = sorted(gdf["code_qp"])
    stops = _points(conn, "src.gtfs_stops", "coalesce(p.location_type, 0) = 0", codes)
    facilities = _points(conn, "src.bpe", "true", codes)
    communes = [(c, n, shapely.from_wkb(bytes(w))) for c, n, w in conn.execute(
        "SELECT insee_com, nom, ST_AsBinary(ST_Boundary(geom)) FROM ref.commune_contour WHERE insee_com = ANY(%s) "
        "ORDER BY 1", (sorted(set(gdf["insee_com"])) if "insee_com" in gdf.columns else [],)).fetchall()]
    g = gdf.to_crs(2154)
    maps = {}
    for _, row in g.sort_values("code_qp").iterrows():
        code = row["code_qp"]
        frame = row.geometry.buffer(520)
        minx, miny, maxx, maxy = frame.bounds
        scale = width / max(maxx - minx, maxy - miny)
        h = int((maxy - miny) * scale)

        def xy(x: float, y: float, minx=minx, maxy=maxy, scale=scale) -> str:
            return f"{(x - minx) * scale:.1f} {(maxy - y) * scale:.1f}"

        def d(geom, closed: bool = True) -> str:
            parts = []
            for part in getattr(geom, "geoms", [geom]):
                rings = [part.exterior, *part.interiors] if hasattr(part, "exterior") else [part]
                for ring in rings:
                    parts.append("M" + " L".join(xy(x, y) for x, y in shapely.get_coordinates(ring))
                                 + (" Z" if closed else ""))
            return " ".join(parts)

        box = shapely.box(minx, miny, maxx, maxy)
        # context: the commune limits crossing the frame, and the neighbouring QPV
        context = []
        for _com, n, line in communes:
            cut = line.intersection(box)
            if not cut.is_empty:
                context.append(f'<path d="{d(cut, closed=False)}" fill="none" stroke="#595959" stroke-width="1" '
                               f'stroke-dasharray="5 3"><title>limite de la commune {html.escape(n)}</title></path>')
        near = g.iloc[g.sindex.query(box, predicate="intersects")]  # the spatial index, not every QPV of the region
        others = [(r["code_qp"], r.get("lib_qp", ""), r.geometry.intersection(box)) for _, r in near.iterrows()
                  if r["code_qp"] != code]
        for c, n, geom in sorted(others, key=lambda t: t[0]):
            context.append(f'<path d="{d(geom)}" fill="#e0e0e0" fill-rule="evenodd" stroke="#737373" '
                           f'stroke-width="0.8" data-neighbour="{html.escape(c)}"><title>{html.escape(c)} '
                           f"{html.escape(str(n))} (quartier voisin)</title></path>")
        title = f"{code} {row.get('lib_qp', '')} — arrêts et équipements à moins de 500 m (indicatif)"
        # the legend in 17 px type under a 480 px map: about 5 pt when the fiche prints the map 58 mm high
        leg = 17
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 6 * leg + 30}" '
               f'viewBox="0 0 {width} {h + 6 * leg + 30}" font-family="sans-serif" font-size="11">',
               f"<title>{html.escape(title)}</title>",
               f'<rect width="{width}" height="{h}" fill="#ffffff" stroke="#999999"/>', *context,
               f'<path d="{d(row.geometry)}" fill="#fde0c5" fill-rule="evenodd" stroke="#b35806" stroke-width="1.2"/>']
        n_f = n_s = 0
        for x, y, label in facilities.get(code, []):
            p = xy(x, y).split()
            out.append(f'<rect x="{float(p[0]) - 3:.1f}" y="{float(p[1]) - 3:.1f}" width="6" height="6" '
                       f'fill="#e08214" data-kind="facility"><title>{html.escape(str(label))}</title></rect>')
            n_f += 1
        for x, y, label in stops.get(code, []):
            p = xy(x, y).split()
            out.append(f'<circle cx="{p[0]}" cy="{p[1]}" r="3" fill="#2166ac" data-kind="stop">'
                       f"<title>{html.escape(str(label))}</title></circle>")
            n_s += 1
        bar = 200 * scale
        out.append(f'<line x1="10" y1="{h - 10}" x2="{10 + bar:.1f}" y2="{h - 10}" stroke="#000" stroke-width="2"/>'
                   f'<text x="10" y="{h - 14}" font-size="{leg}">200 m</text>')
        rows = [('<circle cx="14" cy="{y}" r="5" fill="#2166ac"/>', f"{n_s} arrêt(s) de transport en commun"),
                ('<rect x="9" y="{y5}" width="10" height="10" fill="#e08214"/>', f"{n_f} équipement(s) BPE"),
                ('<rect x="8" y="{y6}" width="12" height="12" fill="#e0e0e0" stroke="#737373"/>',
                 f"{len(others)} quartier(s) voisin(s)"),
                ('<line x1="4" y1="{y}" x2="24" y2="{y}" stroke="#595959" stroke-dasharray="5 3"/>',
                 "limite communale"),
                ('<rect x="8" y="{y6}" width="12" height="12" fill="#fde0c5" stroke="#b35806"/>',
                 "périmètre du quartier")]
        out.append(f'<text x="8" y="{h + leg + 6}" font-weight="bold" font-size="{leg - 3}">arrêts et équipements '
                   "à moins de 500 m (indicatif)</text>")
        for k, (mark, text) in enumerate(rows):
            y = h + leg + 14 + (k + 1) * leg  # the row's middle
            out.append(mark.format(y=y, y5=y - 5, y6=y - 6)
                       + f'<text x="32" y="{y + leg // 3}" font-size="{leg}">{html.escape(text)}</text>')
        out[-1] += "</svg>"
        maps[code] = "\n".join(out) + "\n"
    return maps


def map_tables(gdf: gpd.GeoDataFrame, fields: list[dict], product: str) -> list[dict]:
    """The region page's maps: for each key indicator, its SVG (in the region product) and the table it draws
    (its text alternative), with the same words as the map for hidden and absent cells."""
    from qpvhub.publish.fiche import fmt

    out = []
    for ind in key_maps(gdf):
        fd = next((f for f in fields if f["name"] == ind), {})
        rows = []
        for r in gdf.sort_values("code_qp").itertuples():
            v, flag = getattr(r, ind), getattr(r, ind + "__secret", None)
            text = (PUBLIC_FLAG if isinstance(flag, str) and flag else
                    "non disponible" if v != v or v is None else fmt(float(v), fd.get("unit", "")))
            rows.append((r.code_qp, r.lib_qp, r.lib_com or "", text))
        out.append({"id": ind, "label": fd.get("description", ind).split(". ")[0], "unit": fd.get("unit", ""),
                    "product": product, "rows": rows})
    return out


def write_portal(env, region, catalog_doc: dict, quality_key: str, maps: list[dict] | None = None) -> str:
    """`published/<region>/index.html`: the partners' page, links relative to it."""
    packages = {p["product"]: json.loads(env.store.get_bytes(
        f"published/{region.code}/{p['product']}/latest/datapackage.json")) for p in catalog_doc["products"]
        if env.store.exists(f"published/{region.code}/{p['product']}/latest/datapackage.json")}
    key = f"published/{region.code}/index.html"
    page = portal_html(region, catalog_doc, packages, f"../../{quality_key}", maps or [],
                       api_url=env.settings.api.url)  # the OGC API's public address, if served
    env.store.put_bytes(key, page.encode(), "text/html; charset=utf-8")
    return key
