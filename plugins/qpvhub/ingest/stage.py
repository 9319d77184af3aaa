"""The stage step: a file read, converted and COPYed into a staging table shaped like the live one,
geometries reprojected and repaired, the table indexed and checked before anything is swapped in.

Analysts never see a partial table: everything is built in `staging`; `qpvhub.ingest.promote` swaps it in.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from qpvhub.catalog.model import COLUMN_TYPES, Source
from qpvhub.catalog.qpv_lists import load_qpv_lists
from qpvhub.catalog.regions import region_bboxes, region_departements
from qpvhub.ingest import cog
from qpvhub.ingest.convert import RegionScope, check_columns, convert_batch, points_from_xy, srid_of
from qpvhub.ingest.copy import binary_kinds, copy_batches, copy_batches_parallel, frozen_heap
from qpvhub.ingest.readers import get_reader
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.platform.errors import InputError, NothingForRegions

log = logging.getLogger(__name__)


GEOM_EXTRACT = {"Point": None, "MultiPoint": 1, "MultiLineString": 2, "MultiPolygon": 3}


@dataclass
class StageResult:
    table: str  # staging table name (schema staging)
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_repaired: int
    period: tuple | None = None  # (first, last) day the data is valid for, when the reader tells (GTFS)
    translation: dict | None = None  # commune codes moved to the deployment's COG (qpvhub.ingest.cog)


def _pg_type(source: Source, name: str) -> str:
    return COLUMN_TYPES[source.columns[name].type]


def staging_names(source: Source, run_id: str) -> tuple[str, str]:
    """Names of the raw and the final staging tables of a run (≤ 63 characters)."""
    suffix = re.sub(r"[^a-z0-9]", "", run_id.lower())[-16:]
    # a series' release is not known where a failure is cleaned up: the table name, the run id tells apart
    base = (source.target.table if source.series else source.target.physical_table)[:40]
    return f"{base}__{suffix}_raw", f"{base}__{suffix}"


def is_direct(source: Source) -> bool:
    """Sources COPYed straight into their final staging table (no geometry repair to do)."""
    return source.geometry is None or source.geometry.from_columns


def staging_storage(source: Source) -> sql.Composable:
    """Storage options of a staging table, reset by promote (`STAGING_OPTIONS`).

    - autovacuum_enabled = false: the pipeline runs ANALYZE itself, and a worker that starts on a freshly
      COPYed table makes CREATE INDEX (or the promote's ALTER TABLE) wait deadlock_timeout (1 s) before it is
      cancelled;
    - parallel_workers = 0 where a spatial index will be built: GX scans the table beside that build, which is
      one process and the validate step's critical path; parallel workers of GX's scan took the core it needs
      (2 cores, 1M points: CREATE INDEX 1.9–2.25 s beside GX, 1.42 s alone; the step 2.2–2.3 → 1.8–1.9 s).
      A table setting rather than a session one: it also holds behind a connection pooler."""
    opts = [sql.SQL("autovacuum_enabled = false")]
    if source.geometry:
        opts.append(sql.SQL("parallel_workers = 0"))
    return sql.SQL(", ").join(opts)


STAGING_OPTIONS = ("autovacuum_enabled", "parallel_workers")  # live, the table is autovacuum's and the planner's


def create_raw_staging(conn: psycopg.Connection, source: Source, raw_table: str) -> list[str]:
    """Raw staging table of file geometries (typed columns, WKB in the source CRS); return COPY columns."""
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_pg_type(source, n))) for n in source.columns]
    cols.append(sql.SQL("source_run_id text"))
    cols.append(sql.SQL("__feature bigint NOT NULL"))
    names = [*source.columns, "source_run_id", "__feature", "__geom"]
    cols.append(sql.SQL("__geom geometry"))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", raw_table)))
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
        sql.Identifier("staging", raw_table), sql.SQL(", ").join(cols)))
    return names


def create_final_staging(conn: psycopg.Connection, source: Source, table: str, run_id: str) -> list[str]:
    """The staging table in its final shape (typed columns, source_run_id, Point geometry); COPY columns.

    source_run_id is the column's default, not sent: the same text on every row cost the client 0.1 s and the
    server 0.05 s of CPU per million rows. Promote drops the default."""
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_pg_type(source, n))) for n in source.columns]
    cols.append(sql.SQL("source_run_id text DEFAULT {}").format(sql.Literal(run_id)))
    names = list(source.columns)
    if source.geometry:
        g = source.geometry
        cols.append(sql.SQL("{} geometry(Point, {})").format(sql.Identifier(g.column), sql.Literal(g.srid)))
        names.append(g.column)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", table)))
    conn.execute(sql.SQL("CREATE TABLE {} ({}) WITH ({})").format(
        sql.Identifier("staging", table), sql.SQL(", ").join(cols), staging_storage(source)))
    return names


def record_rejects(conn: psycopg.Connection, source: Source, run_id: str, rejected: list[pd.DataFrame],
                   reason: str) -> int:
    """Rows a run could not load go to meta.rejected_rows with the reason and their values."""
    rows = pd.concat(rejected) if rejected else pd.DataFrame()
    if rows.empty:
        return 0
    records = rows.drop(columns=[c for c in ("__x", "__y", "__crs", "__geom", "__wkb") if c in rows.columns])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meta.rejected_rows (run_id, source_id, feature, reason, record) VALUES (%s, %s, %s, %s, %s)",
            [(run_id, source.id, int(r["__feature"]), reason,
              Jsonb({k: (None if pd.isna(v) else v) for k, v in r.items()}, dumps=_json_dumps))
             for r in records.to_dict("records")])
    return len(records)


def _json_dumps(obj) -> str:

    return json.dumps(obj, default=str, ensure_ascii=False)


def build_final(conn: psycopg.Connection, source: Source, raw_table: str, final_table: str,
                source_srid: int | None, run_id: str) -> StageResult:
    """File geometries: reproject, repair (ST_MakeValid), reject rows with nothing left; count everything."""
    raw = sql.Identifier("staging", raw_table)
    final = sql.Identifier("staging", final_table)
    cols = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(n)) for n in source.columns)
    g = source.geometry
    if g is None or g.from_columns:
        raise ValueError(f"source {source.id}: build_final is for file geometries; use the direct path")
    rows_read = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(raw)).fetchone()[0]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(final))
    placed = sql.SQL("ST_Transform(ST_SetSRID(__geom, {}), {})").format(
        sql.Literal(source_srid), sql.Literal(g.srid))
    repaired_expr = sql.SQL("ST_MakeValid({})").format(placed)
    extract = GEOM_EXTRACT[g.type]
    if extract:
        repaired_expr = sql.SQL("ST_Multi(ST_CollectionExtract({}, {}))").format(
            repaired_expr, sql.Literal(extract))
    # One pass: the repaired geometry and whether the input needed repair.
    conn.execute("SAVEPOINT geom_fix")
    try:
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE _geom_fix ON COMMIT DROP AS "
            "SELECT __feature, CASE WHEN __geom IS NULL THEN NULL ELSE {} END AS g, "
            "(__geom IS NOT NULL AND NOT ST_IsValid(__geom)) AS was_invalid FROM {}"
        ).format(repaired_expr, raw))
    except (psycopg.errors.DataException, psycopg.errors.InternalError_) as exc:  # PROJ refused: which feature?
        conn.execute("ROLLBACK TO SAVEPOINT geom_fix")
        raise _unprojectable(conn, source, raw_table, source_srid, g.srid, exc) from None
    repaired = conn.execute("SELECT count(*) FROM _geom_fix WHERE was_invalid").fetchone()[0]
    rejected = conn.execute(sql.SQL(
        "INSERT INTO meta.rejected_rows (run_id, source_id, feature, reason, record) "
        "SELECT {run}, {src}, r.__feature, "
        "CASE WHEN r.__geom IS NULL THEN 'no geometry' "
        "WHEN ST_IsEmpty(r.__geom) THEN 'empty geometry' "
        "ELSE 'geometry empty after repair (ST_MakeValid) or of another type' END, "
        "to_jsonb(r) - '__geom' "
        "FROM {} r JOIN _geom_fix f USING (__feature) WHERE f.g IS NULL OR ST_IsEmpty(f.g)"
    ).format(raw, run=sql.Literal(run_id), src=sql.Literal(source.id))).rowcount
    conn.execute(sql.SQL(
        "CREATE TABLE {final} WITH ({storage}) AS "
        "SELECT {cols}, r.source_run_id, f.g::geometry({gtype}, {gsrid}) AS {gcol} "
        "FROM {raw} r JOIN _geom_fix f USING (__feature) WHERE f.g IS NOT NULL AND NOT ST_IsEmpty(f.g) "
        "ORDER BY r.__feature"
    ).format(final=final, cols=cols, raw=raw, gtype=sql.SQL(g.type), gsrid=sql.Literal(g.srid),
             gcol=sql.Identifier(g.column), storage=staging_storage(source)))
    loaded = rows_read - rejected
    conn.execute(sql.SQL("DROP TABLE {}").format(raw))
    return StageResult(final_table, rows_read, loaded, rejected, repaired)


def _unprojectable(conn: psycopg.Connection, source: Source, raw_table: str, src: int | None, dst: int,
                   exc: Exception) -> InputError:
    """The first feature whose coordinates cannot be reprojected (latitude beyond 90°, 1e300…), found by trying
    them one by one once the set-based statement failed."""
    conn.execute("""CREATE OR REPLACE FUNCTION pg_temp.qpvhub_projects(g geometry, s int, t int) RETURNS boolean
                    LANGUAGE plpgsql AS $$ BEGIN PERFORM ST_Transform(ST_SetSRID(g, s), t); RETURN true;
                    EXCEPTION WHEN OTHERS THEN RETURN false; END $$""")
    row = conn.execute(sql.SQL(
        "SELECT __feature, ST_XMin(__geom), ST_YMin(__geom), ST_XMax(__geom), ST_YMax(__geom) FROM {} "
        "WHERE __geom IS NOT NULL AND NOT pg_temp.qpvhub_projects(__geom, %s, %s) ORDER BY __feature LIMIT 1").format(
        sql.Identifier("staging", raw_table)), (src, dst)).fetchone()
    if row is None:
        return InputError(f"geometries cannot be reprojected from EPSG:{src} to EPSG:{dst}: {str(exc).strip()}",
                          source=source.id)
    feature, *box = row
    return InputError(f"coordinates cannot be reprojected from EPSG:{src} to EPSG:{dst} (extent {box[0]:.6g}, "
                      f"{box[1]:.6g} – {box[2]:.6g}, {box[3]:.6g}): wrong CRS, swapped axes or corrupt values?",
                      source=source.id, feature=feature)


def index_staging(conn: psycopg.Connection, source: Source, final_table: str) -> None:
    """Spatial index built on the staging table, so that the promote transaction is only a swap.

    (For a partition the parent's GiST index adopts it at ATTACH instead of building one.)
    """
    if source.geometry:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gist ({})").format(
            sql.Identifier(f"{final_table}_geom_idx"[:63]), sql.Identifier("staging", final_table),
            sql.Identifier(source.geometry.column)))


def run_transform(conn: psycopg.Connection, sql_text: str, final_table: str) -> None:
    """Run a source's transform SQL on its staging table (`{{staging}}` stands for the table)."""
    ident = sql.Identifier("staging", final_table).as_string(conn)
    conn.execute(sql_text.replace("{{staging}}", ident))


def create_check_view(conn: psycopg.Connection, source: Source, final_table: str,
                      bboxes: list[tuple[float, float, float, float]] | None = None) -> str:
    """A view exposing geometry checks as plain columns, for GX (SQLAlchemy has no PostGIS type).

    With `bboxes` (EPSG:4326 boxes of the deployment's regions), `_geom_in_region` says whether each
    geometry's box overlaps one of theirs (`&&`, cheap on millions of rows): swapped lon/lat or a wrong
    CRS lands hundreds of kilometres away and is caught; it is a plausibility check, not a clip.
    """
    view = check_view_name(final_table)
    cols = [sql.Identifier(n) for n in source.columns]
    extra = sql.SQL("")
    if source.geometry:
        gc = sql.Identifier(source.geometry.column)
        extra = sql.SQL(", ST_IsValid({g}) AS _geom_valid, ST_IsEmpty({g}) AS _geom_empty, "
                        "ST_SRID({g}) AS _geom_srid, GeometryType({g}) AS _geom_type").format(g=gc)
        if bboxes:
            tests = sql.SQL(" OR ").join(
                sql.SQL("{g} && ST_Transform(ST_Segmentize(ST_MakeEnvelope({a}, {b}, {c}, {d}, 4326), 0.05), {s})")
                .format(g=gc, s=sql.Literal(source.geometry.srid), a=sql.Literal(float(b[0])),
                        b=sql.Literal(float(b[1])), c=sql.Literal(float(b[2])), d=sql.Literal(float(b[3])))
                for b in bboxes)
            extra += sql.SQL(", coalesce({}, false) AS _geom_in_region, "
                             "ST_AsText(ST_Transform(ST_PointOnSurface({g}), 4326), 4) AS _geom_where").format(
                tests, g=gc)
    conn.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT {}{} FROM {}").format(
        sql.Identifier("staging", view), sql.SQL(", ").join(cols), extra, sql.Identifier("staging", final_table)))
    return view


def check_view_name(final_table: str) -> str:
    return final_table[:55] + "__check"


def drop_check_view(conn: psycopg.Connection, final_table: str) -> None:
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier("staging", check_view_name(final_table))))


def analyze(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Fresh planner statistics (taken on staging, they stay with the table when it is promoted)."""
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


def drop_staging(conn: psycopg.Connection, source: Source, run_id: str) -> None:
    """Remove what a run left in staging (after promote, or after a failure)."""
    raw, final = staging_names(source, run_id)
    drop_check_view(conn, final)
    for t in (raw, final):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", t)))


def stage_file(env: Env, source: Source, run_id: str, path: Path) -> StageResult:
    """Read a local file with the format's reader, COPY into staging, repair, transform, add the check view."""
    declared_crs = source.geometry.source_crs if source.geometry else None
    store = source.target.part_of  # the dataset a shared store's partition holds, for the reader's messages
    options = {**source.reader, **({"crs": declared_crs} if declared_crs else {}),
               **({"release": source.release} if source.release is not None else {}),
               **({store.column: source.columns[store.column].constant} if store else {})}
    reader = get_reader(source.format)(path, source.id, options)
    info = reader.open()
    check_columns(source, info.columns, path.name)
    reader.keep_only(source.file_columns())  # BPE24 has 89 columns, the entry reads 10
    srid = srid_of(declared_crs or info.crs, source.id) if source.geometry else None
    scope = RegionScope(region_departements(env.settings), load_qpv_lists(env.settings.qpv_lists_path).any_code_pattern
                        ) if source.region_filter else None
    raw_table, final_table = staging_names(source, run_id)
    in_file = [0]

    def counted(dfs):
        for df in dfs:
            in_file[0] += len(df)
            yield df

    # a collection's feed (a national catalogue's) keeps the stops inside the regions' boxes
    boxes = (region_bboxes(env.settings) if source.collection and source.geometry and source.geometry.from_columns
             else [])

    def in_regions(dfs):
        for df in dfs:
            if boxes:
                keep = np.zeros(len(df), dtype=bool)
                x, y = df["__x"].astype("float64").to_numpy(), df["__y"].astype("float64").to_numpy()
                for x0, y0, x1, y1 in boxes:
                    keep |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
                df = df[keep]
            yield df

    with connect(env.uri) as conn, frozen_heap():
        batches = in_regions(convert_batch(b, source, path.name, run_id, scope) for b in counted(reader.batches()))
        if is_direct(source):
            # attribute tables and x/y points: straight into the final staging table
            names = create_final_staging(conn, source, final_table, run_id)
            conn.commit()  # visible to the COPY workers' connections
            rejected: list = []
            kinds = binary_kinds(source, names)  # COPY's binary format where every column has an encoder

            def with_points(dfs):
                for df in dfs:
                    if source.geometry:
                        df, rej = points_from_xy(df, source, srid, raw=kinds is not None)
                        rejected.append(rej)
                    yield df

            loaded = copy_batches_parallel(env.uri, final_table, names, with_points(batches), kinds=kinds)
            n_rej = record_rejects(conn, source, run_id, rejected, "no coordinates")
            result = StageResult(final_table, loaded + n_rej, loaded, n_rej, 0)
        else:
            names = create_raw_staging(conn, source, raw_table)
            copy_batches(conn, raw_table, names, batches)
            result = build_final(conn, source, raw_table, final_table, srid, run_id)
        result.period = reader.period
        if (scope is not None or boxes) and in_file[0] and not result.rows_read:
            conn.rollback()
            where = (f"départements {', '.join(sorted(scope.departements))}" if scope is not None
                     else "their bounding boxes")
            raise NothingForRegions(
                f"source {source.id}: none of the {in_file[0]} rows of {path.name} is in the deployment's regions "
                f"({where}); nothing loaded, the previous load stays")
        if source.transform:  # before the COG translation: a transform may fill the codes it translates
            sql_path = env.settings.sql_dir / "transforms" / source.transform
            run_transform(conn, sql_path.read_text(encoding="utf-8"), final_table)
        result.translation = cog.translate(conn, source, final_table)
        if result.translation and result.translation.get("columns"):  # aggregation merges rows: count what is left
            result.rows_loaded = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier("staging", final_table))).fetchone()[0]
        create_check_view(conn, source, final_table, region_bboxes(env.settings))
        conn.commit()
    return result
