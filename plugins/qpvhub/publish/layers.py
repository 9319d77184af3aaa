"""The OGC API's layers: published-grade tables in schema `pub`, rewritten by each publication.

`pub.qpv_profil_<region>` holds exactly the rows of the region's extract (statistical secrecy applied,
`…__secret` flags), so that no count the files hide can be read through the API; `pub.arrets_transport`
and `pub.equipements` are national snapshots of the loaded public point layers (GTFS stops, BPE facilities),
rebuilt only when their source has had a new load (meta.pub_layer_builds). Each table is built beside the
live one and swapped in one transaction, documented from the extract's field descriptions. The API server's
role reads this schema only (migration 011).
"""

from __future__ import annotations

import logging

import geopandas as gpd
import shapely
from psycopg import sql

log = logging.getLogger(__name__)

POINTS = {  # layer → (source table, columns, filter, order, comment)
    "arrets_transport": ("src.gtfs_stops",
                         "feed_id, network, stop_id, stop_name, departures_weekday_avg, reference_week, geom",
                         "coalesce(location_type, 0) = 0", "feed_id, stop_id",
                         "Arrêts de transport en commun de tous les réseaux chargés (GTFS), départs moyens par jour "
                         "ouvré de la semaine de référence de chaque flux ; Lambert-93 (EPSG:2154) en base, WGS84 "
                         "(CRS84) dans l'API OGC"),
    "equipements": ("src.bpe", "typequ, insee_com, dep, annee, geom", "true", "typequ, insee_com, geom",
                    "Équipements de la Base permanente des équipements (INSEE) chargés ; Lambert-93 (EPSG:2154) en "
                    "base, WGS84 (CRS84) dans l'API OGC"),
}


# which loads a layer copies: the source's relation and its partitions' (a load swaps them in: new oid, new file)
LOADS = ("SELECT string_agg(c.oid::text || ':' || c.relfilenode::text, ',' ORDER BY c.oid) FROM pg_class c "
         "WHERE c.oid = to_regclass(%s) "
         "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))")


def _replace(conn, name: str, comment: str) -> None:
    """`pub.<name>__next` (built and filled) replaces `pub.<name>`: indexed, documented, analysed."""
    nxt, live = sql.Identifier("pub", f"{name}__next"), sql.Identifier("pub", name)
    conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(nxt))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(nxt, sql.Literal(comment)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(nxt, sql.Identifier(name)))
    conn.execute(sql.SQL("ANALYZE {}").format(live))


def write_layers(conn, region, gdf: gpd.GeoDataFrame, fields: list[dict], title: str) -> list[str]:
    """Write the region's published-grade layers in `pub` (in the caller's transaction); return their names."""
    name = f"qpv_profil_{region.code}"
    doc = {f["name"]: f for f in fields}
    columns = [c for c in gdf.columns if c != "geometry"]

    def pg_type(c: str) -> str:
        t = doc.get(c, {}).get("type", "string")
        return {"number": "double precision", "integer": "integer"}.get(t, "text")

    nxt = sql.Identifier("pub", f"{name}__next")
    build = sql.SQL("CREATE TABLE {} ({}, geom geometry(MultiPolygon, 2154) NOT NULL, PRIMARY KEY (code_qp))").format(
        nxt, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(pg_type(c))) for c in columns))
    rows = []
    for rec, geom in zip(gdf[columns].to_dict("records"), gdf.geometry, strict=True):
        vals = [None if v is None or (isinstance(v, float) and v != v) or v is gpd.pd.NA else v
                for v in rec.values()]
        rows.append([*vals, shapely.to_wkb(shapely.force_2d(geom))])
    insert = sql.SQL("INSERT INTO {} ({}, geom) VALUES ({}, ST_Multi(ST_GeomFromWKB(%s, 2154)))").format(
        nxt, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(columns)))

    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(nxt))
    conn.execute(build)
    with conn.cursor() as cur:
        cur.executemany(insert, rows)
    for c in columns:
        if c in doc:
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(nxt, sql.Identifier(c),
                                                                         sql.Literal(doc[c]["description"])))
    conn.execute(sql.SQL("COMMENT ON COLUMN {}.geom IS {}").format(nxt, sql.Literal(
        "Périmètre du QPV, à titre indicatif : Lambert-93 (EPSG:2154) en base, WGS84 (CRS84) dans l'API OGC")))
    _replace(conn, name, f"{title} — mêmes lignes que l'extrait publié (secret statistique appliqué). "
                         "Périmètres et indicateurs à titre indicatif.")
    names = [name]
    for layer, (table, cols, where, order, comment) in POINTS.items():
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            continue
        # national layers: one region's publication builds them, the others (running beside it, or after) wait for
        # it and keep what it built while their source has had no new load
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pub.{layer}",))
        loads = conn.execute(LOADS, (table, table)).fetchone()[0]
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL AND EXISTS (SELECT 1 FROM meta.pub_layer_builds "
                        "WHERE layer = %s AND source_loads = %s)", (f"pub.{layer}", layer, loads)).fetchone()[0]:
            log.info("pub.%s: %s has had no new load since it was built, kept", layer, table)
            names.append(layer)
            continue
        schema, tname = table.split(".")
        nxt = sql.Identifier("pub", f"{layer}__next")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(nxt))
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT row_number() OVER (ORDER BY {}) AS fid, {} FROM {} WHERE {}"
                             ).format(nxt, sql.SQL(order), sql.SQL(cols), sql.Identifier(schema, tname),
                                      sql.SQL(where)))
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (fid)").format(nxt))
        # each column says what it is, as in its source table (the catalogue's descriptions)
        described = conn.execute(
            "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped", (table,)).fetchall()
        texts = {"fid": "Identifiant de l'objet (numéro de ligne, stable pour un même chargement)",
                 **{c: d for c, d in described if d}}
        for c in [x.strip() for x in cols.split(",")] + ["fid"]:
            if texts.get(c):
                conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(nxt, sql.Identifier(c),
                                                                             sql.Literal(texts[c])))
        _replace(conn, layer, comment)
        conn.execute(sql.SQL("INSERT INTO meta.pub_layer_builds (layer, source_table, source_loads, rows) "
                             "SELECT %s, %s, %s, count(*) FROM {} ON CONFLICT (layer) DO UPDATE SET "
                             "source_table = excluded.source_table, source_loads = excluded.source_loads, "
                             "built_at = now(), rows = excluded.rows").format(sql.Identifier("pub", layer)),
                     (layer, table, loads))
        names.append(layer)
    return names
