"""Publish QPV-level extracts of a region to the object store, immutable versions then `latest/`.

Layout (DESIGN.md §5): `published/<region>/<product>/<version>/…` written once, each file read back
and its SHA-256 checked, then copied to `latest/`, whose `SHA256SUMS` and `datapackage.json` are
written last. The version is content-addressed: unchanged data publishes nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from psycopg.types.json import Jsonb

from qpvhub import __version__
from qpvhub.catalog import Region, load_catalog
from qpvhub.db import connect
from qpvhub.errors import QpvhubError
from qpvhub.indicators import SCOPE_SUFFIX, load_families, theme_view_name
from qpvhub.publish import fiche, latest, pdf
from qpvhub.publish import series as history
from qpvhub.publish.portal import choropleth_svg, key_maps, map_indicator, portal_html, qpv_maps_svg
from qpvhub.publish.secrecy import METHOD, PUBLIC_FLAG, Rule, apply_secrecy, describe, disclosures, table_from_published
from qpvhub.publish.writers import WRITERS
from qpvhub.store import sha256_file

log = logging.getLogger(__name__)

PRODUCT = "qpv_profil"
INDICATIVE_NOTE = (
    "Périmètres et indicateurs à titre indicatif : seule l'attestation du service SIG Ville "
    "(sig.ville.gouv.fr) fait foi pour savoir si une adresse est en QPV."
)


@dataclass
class PublishResult:
    region: str
    product: str
    version: str
    status: str  # published | unchanged
    prefix: str
    files: list[dict] = field(default_factory=list)
    parts: list[PublishResult] = field(default_factory=list)  # per-département products
    withdrawn: list[str] = field(default_factory=list)  # kept versions removed: published under a weaker rule


LIST_NOTE = {2024: "liste 2024 des QPV (décret 2023-1314, en vigueur depuis le 1er janvier 2024)",
             2015: "liste 2015 des QPV (décret 2014-1750), remplacée par la liste 2024 au 1er janvier 2024"}
SECRECY_THRESHOLD = int(os.environ.get("QPVHUB_SECRECY_THRESHOLD", "11"))
TABLE_FORMATS = ("csv", "csv_fr", "geojson", "gpkg", "parquet")  # resources described by a Table Schema
SCOPE_LABEL = {"commune": " — commune entière (comparaison)", "commune_hors_qpv": " — commune hors QPV (comparaison)"}


def secrecy_rules(families) -> dict[str, Rule]:
    """Secrecy rules from the indicator headers (`secrecy: count` or `{rate_of: <count>}`)."""
    rules = {}
    for fam in families:
        for ind in fam.header.indicators:
            if ind.secrecy == "count":
                rules[ind.id] = Rule("count")
            elif ind.secrecy is not None:
                s = ind.secrecy
                rules[ind.id] = Rule("rate", s.rate_of, s.numerator, s.denominator, s.per)
    return rules


def generations(conn, region: Region) -> list[int]:
    """QPV lists loaded for the region's départements, oldest first (2015, 2024)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT generation FROM ref.qpv WHERE dep = ANY(%s) ORDER BY 1",
                                       (region.departements,)).fetchall()]


def read_profile(conn, region: Region, families, threshold: int = SECRECY_THRESHOLD, generation: int | None = None
                 ) -> tuple[gpd.GeoDataFrame, list[dict], list[dict]]:
    """QPV outlines of one list (default: the newest loaded for the region) with every indicator (QPV, then
    commune comparisons), statistical secrecy applied; the field documentation; the source runs used."""
    loaded = generations(conn, region)
    if not loaded:
        raise QpvhubError(f"region {region.code}: no QPV in ref.qpv for départements {region.departements}")
    generation = loaded[-1] if generation is None else generation
    if generation not in loaded:
        raise QpvhubError(f"region {region.code}: the {generation} QPV list is not loaded for départements "
                          f"{region.departements} (loaded: {loaded})")
    base = conn.execute(
        "SELECT code_qp, generation, lib_qp, insee_com, lib_com, dep, ST_AsBinary(geom) FROM ref.qpv "
        "WHERE dep = ANY(%s) AND generation = %s ORDER BY code_qp", (region.departements, generation)).fetchall()
    catalog = {r[0]: r for r in conn.execute(
        "SELECT indicator_id, label_fr, unit, method, millesime, theme FROM mart.indicator_catalog").fetchall()}
    long = pd.DataFrame(conn.execute(
        "SELECT i.code_qp, i.generation, i.indicator_id, i.scope, i.value, q.insee_com "
        "FROM mart.qpv_indicator i JOIN ref.qpv q USING (code_qp, generation) WHERE q.dep = ANY(%s) "
        "AND i.generation = %s ORDER BY i.code_qp, i.indicator_id, i.scope",  # secrecy sees one order
        (region.departements, generation)).fetchall(),
        columns=["code_qp", "generation", "indicator_id", "scope", "value", "insee_com"])
    rules = secrecy_rules(families)
    long = apply_secrecy(long, rules, threshold)
    long["col"] = long["indicator_id"] + long["scope"].map(SCOPE_SUFFIX)
    order = {s: k for k, s in enumerate(SCOPE_SUFFIX)}
    cols = (long[["indicator_id", "scope", "col"]].drop_duplicates()
            .assign(theme=lambda d: d["indicator_id"].map(lambda i: catalog[i][5] if i in catalog else ""),
                    so=lambda d: d["scope"].map(order))
            .sort_values(["theme", "indicator_id", "so"]))
    df = pd.DataFrame(base, columns=["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep", "__wkb"])
    values = long.set_index(["code_qp", "generation", "col"])["value"].unstack("col")
    # one flag for every hidden cell: a reason per cell would say which are under the threshold
    public_flag = long["secret"].where(long["secret"].isna(), PUBLIC_FLAG)
    flags = (long.assign(secret=public_flag)[long["indicator_id"].isin(rules)]
             .set_index(["code_qp", "generation", "col"])["secret"].unstack("col"))
    ordered: list[str] = []
    for c, ind in zip(cols["col"], cols["indicator_id"], strict=True):
        ordered.append(c)
        if ind in rules:
            ordered.append(c + "__secret")
    wide = values.join(flags.add_suffix("__secret"), how="left") if not flags.empty else values
    for c in ordered:
        if c not in wide.columns:
            wide[c] = pd.NA
    df = df.join(wide[ordered].astype({c: "float64" for c in ordered if not c.endswith("__secret")}),
                 on=["code_qp", "generation"])
    geom = shapely.from_wkb([bytes(w) for w in df.pop("__wkb")])
    gdf = gpd.GeoDataFrame(df, geometry=geom, crs=2154)
    base_doc = {
        "code_qp": ("string", "Code du QPV (QP… liste 2015, QN… liste 2024)"),
        "generation": ("integer", "Liste des QPV : 2015 ou 2024"),
        "lib_qp": ("string", "Nom du QPV"),
        "insee_com": ("string", "Code INSEE de la commune principale"),
        "lib_com": ("string", "Nom de la commune principale"),
        "dep": ("string", "Code du département"),
    }
    fields = [{"name": c, "type": t, "description": d} for c, (t, d) in base_doc.items()]
    for c, ind, scope in zip(cols["col"], cols["indicator_id"], cols["scope"], strict=True):
        if ind not in catalog:
            continue
        _, label, unit, method, mill, _ = catalog[ind]
        theme = catalog[ind][5]
        fields.append({"name": c, "type": "number", "description": f"{label}{SCOPE_LABEL.get(scope, '')}. {method}",
                       "unit": unit, "millesime": mill, "theme": theme})
        if ind in rules:
            fields.append({"name": c + "__secret", "type": "string", "theme": theme,
                           "description": f"« {PUBLIC_FLAG} » si {c} n'est pas diffusé (effectif inférieur au "
                                          f"seuil de {threshold}, valeur calculée sur un tel effectif, ou secret "
                                          "secondaire qui empêche de le recalculer) ; vide si la valeur est diffusée"})
    run_ids = sorted({rid for rid in conn.execute(
        "SELECT DISTINCT unnest(source_run_ids) FROM mart.qpv_indicator i JOIN ref.qpv q "
        "USING (code_qp, generation) WHERE q.dep = ANY(%s) AND i.generation = %s",
        (region.departements, generation)).fetchall() for rid in rid if rid})
    qpv_run = conn.execute("SELECT DISTINCT source_run_id FROM ref.qpv WHERE dep = ANY(%s) AND generation = %s",
                           (region.departements, generation)).fetchall()
    run_ids = sorted(set(run_ids) | {r[0] for r in qpv_run if r[0]})  # the perimeters, even with no indicator
    runs = [dict(zip(("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded", "validation"), r,
                     strict=True))
            for r in conn.execute(
                "SELECT run_id, source_id, urls, sha256, finished_at, rows_loaded, validation FROM meta.source_runs "
                "WHERE run_id = ANY(%s) ORDER BY source_id", (run_ids,)).fetchall()]
    for r in runs:
        r["finished_at"] = r["finished_at"].isoformat() if r["finished_at"] else None
    return gdf, fields, runs


def check_secrecy(gdf: gpd.GeoDataFrame, rules: dict[str, Rule], threshold: int, suite: str) -> None:
    """The extract's final check, refusing the version: a GX suite (every count cell, in every scope, at
    or above the threshold) and no value left beside a secrecy flag."""
    from qpvhub.quality import validate_frame

    def base(c: str) -> str:
        return next((c[: -len(suf)] for suf in ("__commune", "__hors_qpv") if c.endswith(suf)), c)

    counts = [c for c in gdf.columns if rules.get(base(c), Rule("none")).kind == "count"]
    leaks = [c[: -len("__secret")] for c in gdf.columns if c.endswith("__secret")
             and (gdf[c].notna() & gdf[c[: -len("__secret")]].notna()).any()]
    report = None
    if counts:
        report = validate_frame(pd.DataFrame(gdf[counts]), suite, [
            ("expect_column_values_to_be_between", {"column": c, "min_value": threshold}) for c in counts])
    # the attacker: bounds every hidden count from the published cells alone (identities, rate formulas)
    recoverable = disclosures(table_from_published(pd.DataFrame(gdf.drop(columns="geometry", errors="ignore")),
                                                   rules), rules, threshold)
    if (report and not report.success) or leaks or recoverable:
        raise QpvhubError(f"{suite}: statistical secrecy check failed (threshold {threshold}), nothing published"
                          + (f"\n{report.text()}" if report and not report.success else "")
                          + (f"\nvalues published beside a secrecy flag: {leaks}" if leaks else "")
                          + (f"\nhidden cells recoverable from the published ones: {describe(recoverable)}"
                             if recoverable else ""))


def publish_region(env, region: Region, *, airflow_run_id: str | None = None, keep: int = 10,
                   threshold: int | None = None, generation: int | None = None) -> PublishResult:
    """Publish the region's QPV profile, then one product per département with QPV; write catalog.json.

    The products describe one QPV list: the newest loaded for the region (2024 wherever it is loaded),
    as `qpv_profil…`; an older list asked for by `generation` is published as `qpv_profil_liste<year>…`.
    Secrecy is applied once on the whole region, so every product hides the same cells. Returns the
    region product's result, with the départements' in `parts`.
    """
    threshold = SECRECY_THRESHOLD if threshold is None else threshold
    families = load_families(env.settings.sql_dir)
    with connect(env.uri) as conn:
        loaded = generations(conn, region)
        gdf, fields, runs = read_profile(conn, region, families, threshold, generation)
    generation = int(gdf["generation"].iloc[0])
    product_base = PRODUCT if generation == loaded[-1] else f"{PRODUCT}_liste{generation}"
    liste = f"liste {generation} des QPV"
    check_secrecy(gdf, secrecy_rules(families), threshold, f"{PRODUCT}_{region.code}")
    sources = load_catalog(env.settings.sources_dir)
    quality_key = _quality_page(env, region, runs, sources)
    with connect(env.uri) as conn:
        qpv_maps = qpv_maps_svg(conn, gdf)
        rows = conn.execute("SELECT insee_com, nom, ST_AsBinary(geom) FROM ref.commune_contour "
                            "WHERE insee_com = ANY(%s) ORDER BY 1", (sorted(set(gdf["insee_com"])),)).fetchall()
        series_rows, evo_rows = history.read(conn, list(gdf["code_qp"]), generation)
        networks: dict[str, list[str]] = {}
        if conn.execute("SELECT to_regclass('mart.qpv_networks') IS NOT NULL").fetchone()[0]:
            for code, name in conn.execute("SELECT code_qp, network FROM mart.qpv_networks WHERE code_qp = ANY(%s) "
                                           "AND generation = %s ORDER BY 1, 2", (list(gdf["code_qp"]), generation)):
                networks.setdefault(code, []).append(name)
        # each indicator's millésime(s) as its values carry them, for the fiches
        millesimes = dict(conn.execute(
            "SELECT indicator_id, string_agg(DISTINCT millesime, ' ; ' ORDER BY millesime) FROM mart.qpv_indicator i "
            "JOIN ref.qpv q USING (code_qp, generation) WHERE q.dep = ANY(%s) AND i.generation = %s GROUP BY 1",
            (region.departements, generation)).fetchall())
    communes = gpd.GeoDataFrame({"insee_com": [r[0] for r in rows], "nom": [r[1] for r in rows]},
                                geometry=shapely.from_wkb([bytes(r[2]) for r in rows]), crs=2154)
    rules = secrecy_rules(families)
    past = history.published(series_rows, evo_rows, rules, threshold)
    history.check(past, rules, threshold, f"{PRODUCT}_{region.code}_series")
    fiche_dir = Path(tempfile.mkdtemp(prefix="qpvhub-fiches-"))
    try:
        fiches = _fiches(gdf, fiche.docs_of(families, millesimes, generation), region, generation, threshold, runs,
                         sources, qpv_maps, fiche_dir, past, networks,
                         pdf.Printed(env.store, f"published/{region.code}/{product_base}"))
        common = {"fields": fields, "runs": runs, "sources": sources, "airflow_run_id": airflow_run_id, "keep": keep,
                  "threshold": threshold, "quality_key": quality_key, "qpv_maps": qpv_maps, "generation": generation,
                  "fiches": fiches, "communes": communes, "past": past}
        result = _publish_product(env, region, product_base, gdf,
                                  f"Profil des QPV de la région {region.name} ({region.code}), {liste}", **common)
        for dep in region.departements:
            part = gdf[gdf["dep"] == dep].reset_index(drop=True)
            if part.empty:
                log.info("region %s: no QPV in département %s, no product for it", region.code, dep)
                continue
            result.parts.append(_publish_product(env, region, f"{product_base}_dep{dep}", part,
                                                 f"Profil des QPV du département {dep} ({region.name}), {liste}",
                                                 **common))
    finally:
        shutil.rmtree(fiche_dir, ignore_errors=True)
    if generation == loaded[-1]:  # the OGC API serves the current list's published rows
        from qpvhub.publish.layers import write_layers

        with connect(env.uri) as conn:
            write_layers(conn, region, gdf, fields, f"Profil des QPV de la région {region.name} ({region.code}), "
                                                     f"{liste}")
            conn.commit()
    catalog_doc = _write_catalog(env, region)
    _write_portal(env, region, catalog_doc, quality_key, _map_tables(gdf, fields, result.product))
    return result


def _map_tables(gdf: gpd.GeoDataFrame, fields: list[dict], product: str) -> list[dict]:
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
            rows.append((r.code_qp, r.lib_qp, r.lib_com, text))
        out.append({"id": ind, "label": fd.get("description", ind).split(". ")[0], "unit": fd.get("unit", ""),
                    "product": product, "rows": rows})
    return out


def _stamp(runs: list[dict]) -> str:
    """The data's date (the newest source run's day): the only date written into published files."""
    day = max((r["finished_at"] or "") for r in runs)[:10] if runs else ""
    return f"{day or '2000-01-01'}T00:00:00Z"


def _fiches(gdf: gpd.GeoDataFrame, docs: dict[str, fiche.Doc], region: Region, generation: int, threshold: int,
            runs: list[dict], sources: dict, qpv_maps: dict[str, str], out: Path,
            past: pd.DataFrame | None = None, networks: dict[str, list[str]] | None = None,
            printed: pdf.Printed | None = None) -> list[dict]:
    """Render every QPV's fiche (HTML, and its PDF when Chromium is there) once for the region; each product
    ships those of its QPV. An unchanged fiche keeps its published PDF (`printed`), others are printed.
    Returns one entry per file: code_qp, name (`qpv/<code>.<ext>`), path, title."""
    columns = set(gdf.columns)
    stamp = _stamp(runs)
    rows = gdf.drop(columns="geometry").to_dict("records")
    pages: dict[str, Path] = {}
    entries = []
    for row in rows:
        code = row["code_qp"]
        same = [(r["code_qp"], r["lib_qp"]) for r in rows
                if r["insee_com"] == row["insee_com"] and r["code_qp"] != code]
        page = fiche.render(row, docs, columns, region=region, generation=generation, threshold=threshold, runs=runs,
                            sources=sources, stamp=stamp, map_svg=qpv_maps.get(code), same_commune=same,
                            note=INDICATIVE_NOTE,
                            past=past[past["code_qp"] == code] if past is not None and not past.empty else None,
                            networks=(networks or {}).get(code, []))
        path = out / f"{code}.html"
        path.write_text(page, encoding="utf-8")
        pages[code] = path
        title = f"{row['lib_qp']} ({code}), {row['lib_com']} — fiche quartier"
        entries.append({"code_qp": code, "name": f"qpv/{code}.html", "path": path, "title": title,
                        "format": "html", "mediatype": "text/html; charset=utf-8"})
    pdfs: dict[str, Path] = {}
    for code, page in pages.items():
        before = printed.get(page.read_bytes()) if printed else None
        if before is not None:
            pdfs[code] = out / f"{code}.pdf"
            pdfs[code].write_bytes(before)
    to_print = {code: page for code, page in pages.items() if code not in pdfs}
    if to_print and pdf.browser() is None:
        log.warning("region %s: no Chromium on this machine, fiches published without their PDF "
                    "(install Debian's chromium or set QPVHUB_CHROMIUM)", region.code)
        return entries
    if to_print:
        pdfs.update(pdf.print_pdfs(to_print, out, stamp))
    log.info("region %s: %d fiche(s) printed to PDF, %d unchanged kept their published PDF",
             region.code, len(to_print), len(pages) - len(to_print))
    for code, path in sorted(pdfs.items()):
        title = next(e["title"] for e in entries if e["code_qp"] == code)
        entries.append({"code_qp": code, "name": f"qpv/{code}.pdf", "path": path, "title": title + " (PDF)",
                        "format": "pdf", "mediatype": "application/pdf"})
    return entries


def _write_portal(env, region: Region, catalog_doc: dict, quality_key: str, maps: list[dict] | None = None) -> str:
    """`published/<region>/index.html`: the partners' page, links relative to it."""
    packages = {p["product"]: json.loads(env.store.get_bytes(
        f"published/{region.code}/{p['product']}/latest/datapackage.json")) for p in catalog_doc["products"]
        if env.store.exists(f"published/{region.code}/{p['product']}/latest/datapackage.json")}
    key = f"published/{region.code}/index.html"
    page = portal_html(region, catalog_doc, packages, f"../../{quality_key}", maps or [],
                       api_url=os.environ.get("QPVHUB_API_URL"))  # the OGC API's public address, if served
    env.store.put_bytes(key, page.encode(), "text/html; charset=utf-8")
    return key


def _publish_product(env, region: Region, product: str, gdf: gpd.GeoDataFrame, title: str, *, fields, runs,
                     sources, airflow_run_id, keep: int, threshold: int, quality_key: str,
                     qpv_maps: dict[str, str] | None = None, generation: int = 2015,
                     fiches: list[dict] | None = None, communes: gpd.GeoDataFrame | None = None,
                     past: pd.DataFrame | None = None) -> PublishResult:
    """Write one product's files, verify them, flip `latest/`; skip when the content is unchanged."""
    stamp = _stamp(runs)
    layer = f"{product}_{region.code}" if "_dep" not in product else product
    description = f"{title}. {INDICATIVE_NOTE}"
    work = Path(tempfile.mkdtemp(prefix="qpvhub-publish-"))
    try:
        files = []
        for fmt, (ext, media, writer) in WRITERS.items():
            path = work / f"{layer}.{ext}"
            writer(gdf, path, layer=layer, description=description, stamp=stamp)
            files.append({"name": path.name, "format": fmt, "mediatype": media, "bytes": path.stat().st_size,
                          "sha256": sha256_file(path), "path": path})
        # per-theme tables: the same rows, the theme's columns only (CSV and French CSV)
        base_cols = ["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep"]
        for theme in sorted({fd["theme"] for fd in fields if fd.get("theme")}):
            cols = [fd["name"] for fd in fields if fd.get("theme") == theme and fd["name"] in gdf.columns]
            sub = gdf[[*base_cols, *cols, "geometry"]]
            slug = theme_view_name(theme).removeprefix("theme_")
            for fmt in ("csv", "csv_fr"):
                ext, media, writer = WRITERS[fmt]
                path = work / f"{layer}_theme_{slug}.{ext}"
                writer(sub, path, layer=layer, description=description, stamp=stamp)
                files.append({"name": path.name, "format": fmt, "mediatype": media, "bytes": path.stat().st_size,
                              "sha256": sha256_file(path), "path": path, "theme": theme, "columns": cols})
        for code, svg in qpv_maps.items() if qpv_maps else []:
            if code not in set(gdf["code_qp"]):
                continue
            path = work / f"{layer}_carte_{code}.svg"
            path.write_text(svg, encoding="utf-8")
            files.append({"name": path.name, "format": "svg", "mediatype": "image/svg+xml",
                          "bytes": path.stat().st_size, "sha256": sha256_file(path), "path": path})
        codes = set(gdf["code_qp"])
        mine = past[past["code_qp"].isin(codes)] if past is not None else None
        if mine is not None and not mine.empty:  # the history: every release, evolutions, secrecy per year
            for fmt, ext in (("csv", "csv"), ("csv_fr", "fr.csv")):
                path = work / f"{layer}_series.{ext}"
                history.write(mine, path, french=fmt == "csv_fr")
                files.append({"name": path.name, "format": fmt, "mediatype": "text/csv", "path": path,
                              "bytes": path.stat().st_size, "sha256": sha256_file(path), "schema": history.FIELDS,
                              "title": "Historique des indicateurs par édition, avec évolutions"})
        for f in fiches or []:  # rendered once for the region: the product's QPV only
            if f["code_qp"] in codes:
                files.append({"name": f["name"], "format": f["format"], "mediatype": f["mediatype"],
                              "bytes": f["path"].stat().st_size, "sha256": sha256_file(f["path"]),
                              "path": f["path"], "title": f["title"]})
        column = map_indicator(gdf)
        mine = None if communes is None else communes[communes["insee_com"].isin(set(gdf["insee_com"]))]
        # the product's map (a choropleth of one indicator), then one per key indicator for the region page
        for ind, name in ([(column, f"{layer}_carte.svg")] if column else []) + [
                (k, f"{layer}_carte_indicateur_{k}.svg") for k in key_maps(gdf)]:
            label = next((f"{fd['description'].split('. ')[0]}" for fd in fields if fd["name"] == ind), ind)
            unit = next((fd.get("unit", "") for fd in fields if fd["name"] == ind), "")
            path = work / name
            path.write_text(choropleth_svg(gdf, ind, f"{label} — {title}", unit, communes=mine), encoding="utf-8")
            files.append({"name": path.name, "format": "svg", "mediatype": "image/svg+xml",
                          "bytes": path.stat().st_size, "sha256": sha256_file(path), "path": path})
        sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in files)
        package = _datapackage(region, product, title, "", files, fields, runs, sources, airflow_run_id, layer,
                               threshold)
        package["qpvhub"]["qpv_generation"] = {
            "list": generation, "codes": "QN…" if generation == 2024 else "QP…",
            "note": LIST_NOTE.get(generation, f"liste {generation} des QPV")}
        package["qpvhub"]["data_docs"] = {"key": quality_key, "relative_path": f"../../../../{quality_key}"}
        # The package is part of the version: new lineage or rules make a new version even with the same files.
        digest = package_digest(package)
        package["qpvhub"]["package_digest"] = digest
        content_hash = hashlib.sha256((sums + digest).encode()).hexdigest()[:12]
        base = f"published/{region.code}/{product}"
        if env.store.exists(f"{base}/latest/SHA256SUMS"):
            current = env.store.get_bytes(f"{base}/latest/SHA256SUMS").decode()
            data_lines = "".join(line + "\n" for line in current.splitlines() if not line.endswith("datapackage.json"))
            current_pkg = json.loads(env.store.get_bytes(f"{base}/latest/datapackage.json"))
            if data_lines == sums and current_pkg.get("qpvhub", {}).get("package_digest") == digest:
                version = current_pkg["version"]
                log.info("%s/%s: extracts unchanged, still version %s", region.code, product, version)
                latest.repair(env.store, base, version, current, {f["name"]: Path(f["path"]) for f in files},
                              {f["name"]: f["mediatype"] for f in files} | {"datapackage.json": "application/json",
                                                                            "SHA256SUMS": "text/plain"})
                _record(env, region, product, version, "unchanged", [], None, airflow_run_id)
                withdrawn = _withdraw(env, region, product, base, threshold, airflow_run_id)
                return PublishResult(region.code, product, version, "unchanged", f"{base}/{version}/",
                                     withdrawn=withdrawn)
        version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + content_hash
        package["version"] = version
        (work / "datapackage.json").write_text(json.dumps(package, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
        pkg_sha = sha256_file(work / "datapackage.json")
        all_sums = sums + f"{pkg_sha}  datapackage.json\n"
        (work / "SHA256SUMS").write_text(all_sums, encoding="utf-8")
        # (name in the version, local file): names may have a folder (qpv/<code>.html)
        upload = [*((f["name"], Path(f["path"])) for f in files), ("datapackage.json", work / "datapackage.json"),
                  ("SHA256SUMS", work / "SHA256SUMS")]
        media = {f["name"]: f["mediatype"] for f in files} | {"datapackage.json": "application/json",
                                                              "SHA256SUMS": "text/plain"}
        vprefix = f"{base}/{version}"
        for name, p in upload:
            env.store.put_file(f"{vprefix}/{name}", p, media[name])
        # Read every object back before anyone is pointed at it.
        expected = latest.read_sums(all_sums)
        for name, digest in expected.items():
            got = hashlib.sha256(env.store.get_bytes(f"{vprefix}/{name}")).hexdigest()
            if got != digest:
                raise QpvhubError(f"published object {vprefix}/{name} reads back with sha256 {got}, expected {digest}")
        # latest/: data files first, then the manifest; files the version does not have are removed;
        # SHA256SUMS last (the marker a reader checks), so latest/ equals the version.
        for name, p in upload[:-1]:
            env.store.put_file(f"{base}/latest/{name}", p, media[name])
        names = {name for name, _ in upload}
        for key in env.store.list(f"{base}/latest/"):
            if key[len(f"{base}/latest/"):] not in names:
                env.store.delete(key)
                log.info("%s/%s: %s is not in version %s, removed from latest/", region.code, product, key, version)
        env.store.put_file(f"{base}/latest/SHA256SUMS", upload[-1][1], media["SHA256SUMS"])
        public_files = [{k: v for k, v in f.items() if k not in ("path", "columns", "title", "schema")} for f in files]
        _record(env, region, product, version, "published", public_files, f"{vprefix}/datapackage.json",
                airflow_run_id)
        withdrawn = _withdraw(env, region, product, base, threshold, airflow_run_id)
        _prune(env, base, keep)
        log.info("%s/%s: published version %s (%d files) under %s", region.code, product, version, len(upload),
                 vprefix)
        return PublishResult(region.code, product, version, "published", vprefix + "/", public_files,
                             withdrawn=withdrawn)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_catalog(env, region: Region) -> dict:
    """`published/<region>/catalog.json`: every product, its versions, files and latest version."""
    root = f"published/{region.code}/"
    products: dict[str, dict] = {}
    for key in env.store.list(root):
        parts = key[len(root):].split("/")
        if len(parts) == 3 and parts[1] != "latest" and parts[2] == "datapackage.json":
            pkg = json.loads(env.store.get_bytes(key))
            entry = products.setdefault(parts[0], {"product": parts[0], "title": pkg.get("title"), "versions": []})
            entry["versions"].append({
                "version": pkg["version"], "created": pkg.get("created"), "path": f"{parts[0]}/{parts[1]}/",
                "files": [{"path": r["path"], "format": r.get("qpvhub:format", r["format"]), "bytes": r["bytes"],
                           "hash": r["hash"]} for r in pkg["resources"]]})
    for entry in products.values():
        entry["versions"].sort(key=lambda v: v["version"])
        entry["latest"] = entry["versions"][-1]["version"] if entry["versions"] else None
    doc = {"region": region.code, "name": region.name, "licence": "etalab-2.0 (see each source)",
           "note": INDICATIVE_NOTE, "products": sorted(products.values(), key=lambda e: e["product"])}
    key = root + "catalog.json"
    env.store.put_bytes(key, (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode(), "application/json")
    return doc


def _datapackage(region, product, title, version, files, fields, runs, sources, airflow_run_id, layer,
                 threshold) -> dict:
    """Frictionless Data Package: resources with Table Schema, licences, sources, lineage, quality."""
    used = sorted({r["source_id"] for r in runs})
    csv_point = [
        {"name": "lon", "type": "number", "description": "Longitude (EPSG:4326) d'un point intérieur au QPV"},
        {"name": "lat", "type": "number", "description": "Latitude (EPSG:4326) d'un point intérieur au QPV"},
    ]
    resources = []
    for f in files:
        if f["format"] in ("csv", "csv_fr"):
            extra = csv_point
        else:
            crs = "EPSG:2154 (Lambert-93)" if f["format"] == "gpkg" else "EPSG:4326"
            extra = [{"name": "geometry", "type": "geojson" if f["format"] == "geojson" else "any",
                      "description": f"Périmètre du QPV, {crs}"}]
        if f.get("schema"):  # a table of its own (the history)
            schema = list(f["schema"])
        else:
            schema = [fd for fd in fields if "columns" not in f or fd["name"] in f["columns"] or not fd.get("theme")]
            schema += extra
        if f["format"] == "csv_fr":  # Table Schema says the decimal comma per number field
            schema = [{**fd, "decimalChar": ","} if fd["type"] == "number" else fd for fd in schema]
        resources.append({
            # unique, lower-case names as the Data Package spec requires (the file name says which table)
            "name": re.sub(r"[^a-z0-9._-]", "-", f["name"].lower()),
            "path": f["name"],
            # the French CSV is CSV with another dialect; `qpvhub:format` keeps the finer kind
            "format": "csv" if f["format"] == "csv_fr" else f["format"],
            "qpvhub:format": f["format"],
            # frictionless reads Parquet as a table but cannot count its bytes: declared as a file, its
            # bytes and hash are still checked (the schema documents its columns all the same)
            **({"type": "table"} if f["format"] in ("csv", "csv_fr") else
               {"type": "file"} if f["format"] != "geojson" else {}),
            **({"title": f["title"]} if f.get("title") else {}),
            "mediatype": f["mediatype"],
            "bytes": f["bytes"],
            "hash": f"sha256:{f['sha256']}",
            **({"schema": {"fields": schema}} if f["format"] in TABLE_FORMATS else {}),
            **({"dialect": {"delimiter": ";", "header": True}, "encoding": "utf-8-sig"}
               if f["format"] == "csv_fr" else {}),
        })
    return {
        "profile": "data-package",
        "name": f"qpvhub-{region.code}-{product}".replace("_", "-"),
        "title": title,
        "description": INDICATIVE_NOTE,
        "version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "licenses": [{"name": "etalab-2.0", "title": "Licence Ouverte / Open Licence 2.0 (qpvhub's own work); "
                      "see each source for its licence"}],
        "sources": [{"title": sources[s].title if s in sources else s,
                     "publisher": sources[s].publisher if s in sources else None,
                     "licence": sources[s].licence if s in sources else None,
                     "path": sources[s].landing_page if s in sources else None,
                     "millesime": sources[s].millesime if s in sources else None} for s in used],
        "resources": resources,
        "qpvhub": {
            "region": region.code,
            "product": product,
            "statistical_secrecy": {
                "threshold": threshold,
                "method": METHOD,
                "flag": PUBLIC_FLAG,
                "rule": "counts below the threshold, and every value computed on a hidden count, are empty with "
                        f"'{PUBLIC_FLAG}' in the <column>__secret column; further cells are hidden until no hidden "
                        "count can be bounded within less than the threshold's range from the published cells "
                        "(commune = commune hors QPV + sum of its QPV; value = per x numerator / denominator)"},
            "csv_fr": "the .fr.csv file is the same table for French spreadsheets: ';', UTF-8 with BOM, "
                      "decimal comma",
            "code_version": __version__,
            "airflow_run_id": airflow_run_id,
            "lineage": [{k: r[k] for k in ("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded")}
                        for r in runs],
            "quality": [{"source_id": r["source_id"], "run_id": r["run_id"], **(r["validation"] or {})} for r in runs],
            "csv_geometry": "no geometry column; lon/lat of a point inside each QPV (EPSG:4326)",
            "crs": {"geojson": "EPSG:4326", "parquet": "EPSG:4326", "gpkg": "EPSG:2154"},
        },
    }


def _quality_page(env, region: Region, runs: list[dict], sources: dict) -> str:
    """Write quality/<region>/index.html, linking each run's GX Data Docs; return its key."""
    from qpvhub.pipeline import docs_prefix
    from qpvhub.publish.quality_page import render

    links = {}
    for r in runs:
        index = f"{docs_prefix(r['source_id'], r['run_id'])}/index.html"
        if env.store.exists(index):
            links[r["run_id"]] = "../" + index[len("quality/"):]
    key = f"quality/{region.code}/index.html"
    env.store.put_bytes(key, render(region, runs, sources, links).encode(), "text/html; charset=utf-8")
    return key


def _record(env, region, product, version, status, files, manifest_key, airflow_run_id) -> None:
    with connect(env.uri) as conn:
        conn.execute(
            "INSERT INTO meta.publications (region, product, version, status, files, manifest_key, airflow_run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (region.code, product, version, status, Jsonb(files), manifest_key, airflow_run_id))
        conn.commit()


def package_digest(package: dict) -> str:
    """SHA-256 of the package without what changes at every publication (version, date, Airflow run)."""
    stable = {k: v for k, v in package.items() if k not in ("version", "created")}
    stable["qpvhub"] = {k: v for k, v in package["qpvhub"].items() if k not in ("airflow_run_id", "package_digest")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _withdraw(env, region: Region, product: str, base: str, threshold: int, airflow_run_id: str | None) -> list[str]:
    """Delete kept versions published under a weaker rule (a lower threshold, an older method): their
    files would disclose cells the current rule hides. Recorded as `withdrawn` in meta.publications."""
    versions = sorted({k[len(base) + 1:].split("/", 1)[0] for k in env.store.list(base + "/")} - {"latest"})
    withdrawn = []
    for v in versions:
        key = f"{base}/{v}/datapackage.json"
        rule = (json.loads(env.store.get_bytes(key)).get("qpvhub", {}).get("statistical_secrecy", {})
                if env.store.exists(key) else {})
        if rule.get("method") == METHOD and int(rule.get("threshold", 0)) >= threshold:
            continue
        for k in env.store.list(f"{base}/{v}/"):
            env.store.delete(k)
        _record(env, region, product, v, "withdrawn", [], None, airflow_run_id)
        withdrawn.append(v)
        log.warning("%s/%s: version %s withdrawn: published with threshold %s and method %s, weaker than the "
                    "current rule (threshold %s, %s)", region.code, product, v, rule.get("threshold"),
                    rule.get("method"), threshold, METHOD)
    return withdrawn


def _prune(env, base: str, keep: int) -> None:
    """Delete versions beyond the newest `keep` (never `latest/`)."""
    versions = sorted({k[len(base) + 1:].split("/", 1)[0] for k in env.store.list(base + "/")} - {"latest"})
    for old in versions[:-keep] if keep > 0 else []:
        for key in env.store.list(f"{base}/{old}/"):
            env.store.delete(key)
