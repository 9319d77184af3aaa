"""Publish QPV-level extracts of a region to the object store, immutable versions then `latest/`.

Layout (docs/architecture.md, object store): `published/<region>/<product>/<version>/…` written once, each
file read back and its SHA-256 checked, then copied to `latest/`, whose `SHA256SUMS` and `datapackage.json` are
written last. The version is content-addressed: unchanged data publishes nothing new.

`publish_region` is the entry point; each part has its module: `profile` (the secrecy-applied table),
`product` (one product's files, package and version), `fiches` and `fiche` (the fiches quartier), `portal`
and `quality_page` (the region's pages), `series` (history), `writers`, `layers` (the OGC API's tables).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import shapely

from qpvhub.catalog.loader import load_catalog
from qpvhub.catalog.qpv_lists import load_qpv_lists
from qpvhub.catalog.regions import Region
from qpvhub.indicators.families import load_families
from qpvhub.platform.db import connect
from qpvhub.publish import fiche, fiches, pdf, quality_page
from qpvhub.publish import series as history
from qpvhub.publish.portal import map_tables, qpv_maps_svg, write_portal
from qpvhub.publish.product import PRODUCT, PublishResult, package_digest, publish_product, write_catalog
from qpvhub.publish.profile import check_secrecy, generations, read_profile, secrecy_rules

__all__ = ["PublishResult", "check_secrecy", "generations", "package_digest", "publish_region", "read_profile",
           "secrecy_rules"]

log = logging.getLogger(__name__)


def publish_region(env, region: Region, *, airflow_run_id: str | None = None, keep: int = 10,
                   threshold: int | None = None, generation: int | None = None) -> PublishResult:
    """Publish the region's QPV profile, then one product per département with QPV; write catalog.json.

    The products describe one QPV list: the newest loaded for the region (2024 wherever it is loaded),
    as `qpv_profil…`; an older list asked for by `generation` is published as `qpv_profil_liste<year>…`.
    Secrecy is applied once on the whole region, so every product hides the same cells. Returns the
    region product's result, with the départements' in `parts`.
    """
    threshold = env.settings.publication.secrecy_threshold if threshold is None else threshold
    families = load_families(env.settings.sql_dir)
    lists = load_qpv_lists(env.settings.qpv_lists_path)
    with connect(env.uri) as conn:
        loaded = generations(conn, region)
        gdf, fields, runs = read_profile(conn, region, families, threshold, lists, generation)
    generation = int(gdf["generation"].iloc[0])
    product_base = PRODUCT if generation == loaded[-1] else f"{PRODUCT}_liste{generation}"
    liste = lists.get(generation).label_fr
    check_secrecy(gdf, secrecy_rules(families), threshold, f"{PRODUCT}_{region.code}")
    sources = load_catalog(env.settings.sources_dir)
    quality_key = quality_page.write(env, region, runs, sources)
    with connect(env.uri) as conn:
        qpv_maps = qpv_maps_svg(conn, gdf)
        rows = conn.execute("SELECT insee_com, nom, ST_AsBinary(geom) FROM ref.commune_contour "
                            "WHERE insee_com = ANY(%s) ORDER BY 1", (sorted(set(gdf["insee_com"])),)).fetchall()
        # the region's départements dissolved from the commune outlines loaded (generalised to 50 m: a map's line)
        dep_rows = conn.execute("SELECT dep, ST_AsBinary(ST_SimplifyPreserveTopology(ST_Union(geom), 50)) "
                                "FROM ref.commune_contour WHERE dep = ANY(%s) GROUP BY dep ORDER BY dep",
                                (region.departements,)).fetchall()
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
    departements = gpd.GeoDataFrame({"dep": [r[0] for r in dep_rows]},
                                    geometry=shapely.from_wkb([bytes(r[1]) for r in dep_rows]), crs=2154)
    rules = secrecy_rules(families)
    past = history.published(series_rows, evo_rows, rules, threshold)
    history.check(past, rules, threshold, f"{PRODUCT}_{region.code}_series")
    earlier = None
    if generation == 2024:  # the 2015-list history of the quartiers each QPV replaces, shown apart
        with connect(env.uri) as conn:
            earlier = history.earlier_list(conn, region.departements, list(gdf["code_qp"]), rules, threshold)
    fiche_dir = Path(tempfile.mkdtemp(prefix="qpvhub-fiches-"))
    try:
        pages = fiches.render_all(gdf, fiche.docs_of(families, millesimes, generation), region, generation, threshold,
                                  runs, sources, qpv_maps, fiche_dir, past, networks,
                                  pdf.Printed(env.store, f"published/{region.code}/{product_base}"),
                                  chromium=env.settings.publication.chromium,
                                  earlier=earlier, earlier_docs=fiche.docs_of(families, None, 2015))
        common = {"lists": lists, "fields": fields, "runs": runs, "sources": sources, "airflow_run_id": airflow_run_id,
                  "keep": keep,
                  "threshold": threshold, "quality_key": quality_key, "qpv_maps": qpv_maps, "generation": generation,
                  "fiches": pages, "communes": communes, "departements": departements, "past": past}
        result = publish_product(env, region, product_base, gdf,
                                 f"Profil des QPV de la région {region.name} ({region.code}), {liste}", **common)
        for dep in region.departements:
            part = gdf[gdf["dep"] == dep].reset_index(drop=True)
            if part.empty:
                log.info("region %s: no QPV in département %s, no product for it", region.code, dep)
                continue
            result.parts.append(publish_product(env, region, f"{product_base}_dep{dep}", part,
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
    for r in [result, *result.parts]:
        r.generation = generation
    catalog_doc = write_catalog(env, region)
    write_portal(env, region, catalog_doc, quality_key, map_tables(gdf, fields, result.product))
    return result
