"""Load a source into PostGIS: typed COPY into staging, reproject and repair, atomic promote.

Analysts never see a partial table: everything is built in `staging`, then one transaction swaps the
new table in (rename, or DETACH/ATTACH for one partition of a table such as `ref.qpv`) and keeps the
old one as `<table>__previous`. A failure at any step leaves the live table as it was.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from pyproj import CRS

from qpvhub.catalog import COLUMN_TYPES, Source
from qpvhub.errors import InputError, QpvhubError

log = logging.getLogger(__name__)

GEOM_EXTRACT = {"Point": None, "MultiPoint": 1, "MultiLineString": 2, "MultiPolygon": 3}
THOUSANDS = re.compile(r"[\s\u00a0\u202f]")


@dataclass
class StageResult:
    table: str  # staging table name (schema staging)
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_repaired: int


def srid_of(crs: str | None, source: str) -> int:
    """EPSG code of a CRS string as GDAL reports it (EPSG:4326, OGC:CRS84, WKT…)."""
    if not crs:
        raise InputError("no CRS for the geometries", source=source)
    try:
        c = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError, and others on malformed WKT
        raise InputError(f"unknown CRS {crs!r}: {exc}", source=source) from None
    if c.to_epsg() is None and c.equals(CRS.from_user_input("OGC:CRS84")):
        return 4326
    epsg = c.to_epsg(min_confidence=70)
    if epsg is None:
        raise InputError(f"CRS {crs!r} has no EPSG code; declare reader.crs in the catalogue", source=source)
    return epsg


def check_columns(source: Source, available: list[str], filename: str) -> None:
    """Every mapped source column must exist in the file: name all missing ones at once."""
    wanted = [c.source for c in source.columns.values() if c.source] + list(source.row_filter)
    if source.geometry and source.geometry.from_columns:
        wanted += [source.geometry.x, source.geometry.y]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(
            f"missing column(s) {missing}; the file has {available}",
            source=source.id, file=filename, column=missing[0],
        )


def _parse_numbers(values: pd.Series, decimal: str) -> pd.Series:
    s = values.astype("string").str.replace(THOUSANDS, "", regex=True)
    if decimal == ",":
        s = s.str.replace(",", ".", regex=False)
    return pd.to_numeric(s, errors="coerce")


def departement_of(values: pd.Series, level: str) -> pd.Series:
    """Département code of INSEE commune/IRIS codes, QPV codes (QP035001 → 35, QP02A001 → 2A) or itself."""
    s = values.astype("string").str.strip()
    if level == "departement":
        return s
    if level in ("commune", "iris"):
        return s.where(~s.str.startswith("97"), s.str[:3]).where(s.str.startswith("97"), s.str[:2])
    three = s.str[2:5]  # qpv: QP/QN + 3-character département
    return three.where(~three.str.startswith("0"), three.str[1:])


def convert_batch(df: pd.DataFrame, source: Source, filename: str, run_id: str,
                  departements: frozenset[str] | None = None) -> pd.DataFrame:
    """Map source columns to target columns with their declared types; a bad value names line and column.

    Rows outside `row_filter` and, with a `region_filter`, outside `departements` are left out here.
    """
    for col, allowed in source.row_filter.items():
        df = df[df[col].isin(allowed)]
    rf = source.region_filter
    if rf and departements is not None:
        src_col = source.columns[rf.column].source or rf.column
        df = df[departement_of(df[src_col], rf.level).isin(departements).fillna(False).to_numpy()]
    out = pd.DataFrame(index=df.index)
    decimal = source.reader.get("decimal", ".")
    where_kind = "line" if source.format == "csv" else "feature"
    for name, col in source.columns.items():
        if col.derived:
            out[name] = None
            continue
        if col.source is None:
            out[name] = col.constant
            continue
        raw = df[col.source]
        if col.type == "text":
            s = raw.astype("string").str.strip()
            out[name] = s.where(s != "", None)
        elif col.type == "boolean":
            s = raw.astype("string").str.strip().str.lower()
            mapped = s.map({"true": True, "1": True, "oui": True, "false": False, "0": False, "non": False})
            bad = s.notna() & (s != "") & mapped.isna()
            _raise_first(bad, df, raw, source, filename, col.source, where_kind, "not a boolean")
            out[name] = mapped
        elif col.type in ("integer", "bigint", "smallint", "double", "numeric"):
            if pd.api.types.is_numeric_dtype(raw):
                num = raw.astype("Float64")
            else:
                num = _parse_numbers(raw, decimal)
                bad = raw.notna() & (raw.astype("string").str.strip() != "") & num.isna()
                _raise_first(bad, df, raw, source, filename, col.source, where_kind, f"not a number ({col.type})")
            if col.type in ("integer", "bigint", "smallint"):
                frac = num.notna() & (num != np.floor(num.fillna(0)))
                _raise_first(frac, df, raw, source, filename, col.source, where_kind, "not a whole number")
                out[name] = num.round().astype("Int64")
            else:
                out[name] = num
        elif col.type == "date":
            parsed = pd.to_datetime(raw, errors="coerce", dayfirst=True)
            bad = raw.notna() & parsed.isna()
            _raise_first(bad, df, raw, source, filename, col.source, where_kind, "not a date")
            out[name] = parsed.dt.date
    out["source_run_id"] = run_id
    out["__feature"] = df["__feature"].to_numpy()
    g = source.geometry
    if g and g.from_columns:
        for axis, col in (("__x", g.x), ("__y", g.y)):
            raw = df[col]
            num = raw.astype("Float64") if pd.api.types.is_numeric_dtype(raw) else _parse_numbers(raw, decimal)
            bad = raw.notna() & (raw.astype("string").str.strip() != "") & num.isna()
            _raise_first(bad, df, raw, source, filename, col, where_kind, "not a coordinate")
            out[axis] = num
    elif g:
        wkb = df["__wkb"]
        out["__geom"] = [w.hex() if isinstance(w, bytes | bytearray) else None for w in wkb]
    return out


def _raise_first(mask: pd.Series, df: pd.DataFrame, raw: pd.Series, source: Source, filename: str,
                 column: str, where_kind: str, what: str) -> None:
    if mask.any():
        i = mask.to_numpy().nonzero()[0][0]
        n = int(df["__feature"].iloc[i])
        raise InputError(f"{what}: {raw.iloc[i]!r}", source=source.id, file=filename, column=column,
                         **{where_kind: n})


def _pg_type(source: Source, name: str) -> str:
    return COLUMN_TYPES[source.columns[name].type]


def staging_names(source: Source, run_id: str) -> tuple[str, str]:
    """Names of the raw and the final staging tables of a run (≤ 63 characters)."""
    suffix = re.sub(r"[^a-z0-9]", "", run_id.lower())[-16:]
    base = source.target.physical_table[:40]
    return f"{base}__{suffix}_raw", f"{base}__{suffix}"


def create_raw_staging(conn: psycopg.Connection, source: Source, raw_table: str) -> list[str]:
    """Create the raw staging table (typed columns, geometry in the source CRS); return COPY columns."""
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(_pg_type(source, n))) for n in source.columns]
    cols.append(sql.SQL("source_run_id text"))
    cols.append(sql.SQL("__feature bigint NOT NULL"))
    names = [*source.columns, "source_run_id", "__feature"]
    if source.geometry and source.geometry.from_columns:
        cols += [sql.SQL("__x double precision"), sql.SQL("__y double precision")]
        names += ["__x", "__y"]
    elif source.geometry:
        cols.append(sql.SQL("__geom geometry"))
        names.append("__geom")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", raw_table)))
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
        sql.Identifier("staging", raw_table), sql.SQL(", ").join(cols)))
    return names


def copy_batches(conn: psycopg.Connection, raw_table: str, names: list[str], batches: Iterable[pd.DataFrame]) -> int:
    """COPY typed batches (CSV format, empty unquoted = NULL) into the raw staging table."""
    total = 0
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier("staging", raw_table), sql.SQL(", ").join(sql.Identifier(n) for n in names))
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for df in batches:
            buf = io.StringIO()
            df[names].to_csv(buf, header=False, index=False, na_rep="")
            copy.write(buf.getvalue())
            total += len(df)
    return total


def build_final(conn: psycopg.Connection, source: Source, raw_table: str, final_table: str,
                source_srid: int | None, run_id: str) -> StageResult:
    """Reproject to the target SRID, repair geometries, reject rows with nothing left; count everything."""
    raw = sql.Identifier("staging", raw_table)
    final = sql.Identifier("staging", final_table)
    cols = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(n)) for n in source.columns)
    rows_read = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(raw)).fetchone()[0]
    repaired = rejected = 0
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(final))
    g = source.geometry
    if g is None:
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {}, r.source_run_id FROM {} r ORDER BY r.__feature").format(
            final, cols, raw))
    elif g.from_columns:
        # Points from coordinates: no repair to do; rows without both coordinates are rejected.
        rejected = conn.execute(sql.SQL(
            "INSERT INTO meta.rejected_rows (run_id, source_id, feature, reason, record) "
            "SELECT {run}, {src}, r.__feature, 'no coordinates', to_jsonb(r) - '__x' - '__y' "
            "FROM {raw} r WHERE r.__x IS NULL OR r.__y IS NULL").format(
                raw=raw, run=sql.Literal(run_id), src=sql.Literal(source.id))).rowcount
        conn.execute(sql.SQL(
            "CREATE TABLE {final} AS SELECT {cols}, r.source_run_id, "
            "ST_Transform(ST_SetSRID(ST_MakePoint(r.__x, r.__y), {s}), {t})::geometry(Point, {t}) AS {gcol} "
            "FROM {raw} r WHERE r.__x IS NOT NULL AND r.__y IS NOT NULL ORDER BY r.__feature").format(
                final=final, cols=cols, raw=raw, s=sql.Literal(source_srid), t=sql.Literal(g.srid),
                gcol=sql.Identifier(g.column)))
    else:
        placed = sql.SQL("ST_Transform(ST_SetSRID(__geom, {}), {})").format(
            sql.Literal(source_srid), sql.Literal(g.srid))
        repaired_expr = sql.SQL("ST_MakeValid({})").format(placed)
        extract = GEOM_EXTRACT[g.type]
        if extract:
            repaired_expr = sql.SQL("ST_Multi(ST_CollectionExtract({}, {}))").format(
                repaired_expr, sql.Literal(extract))
        # One pass: the repaired geometry and whether the input needed repair.
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE _geom_fix ON COMMIT DROP AS "
            "SELECT __feature, CASE WHEN __geom IS NULL THEN NULL ELSE {} END AS g, "
            "(__geom IS NOT NULL AND NOT ST_IsValid(__geom)) AS was_invalid FROM {}"
        ).format(repaired_expr, raw))
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
            "CREATE TABLE {final} AS SELECT {cols}, r.source_run_id, f.g::geometry({gtype}, {gsrid}) AS {gcol} "
            "FROM {raw} r JOIN _geom_fix f USING (__feature) WHERE f.g IS NOT NULL AND NOT ST_IsEmpty(f.g) "
            "ORDER BY r.__feature"
        ).format(final=final, cols=cols, raw=raw, gtype=sql.SQL(g.type), gsrid=sql.Literal(g.srid),
                 gcol=sql.Identifier(g.column)))
    loaded = rows_read - rejected
    conn.execute(sql.SQL("DROP TABLE {}").format(raw))
    return StageResult(final_table, rows_read, loaded, rejected, repaired)


def run_transform(conn: psycopg.Connection, sql_text: str, final_table: str) -> None:
    """Run a source's transform SQL on its staging table (`{{staging}}` stands for the table)."""
    ident = sql.Identifier("staging", final_table).as_string(conn)
    conn.execute(sql_text.replace("{{staging}}", ident))


def create_check_view(conn: psycopg.Connection, source: Source, final_table: str,
                      bboxes: list[tuple[float, float, float, float]] | None = None) -> str:
    """A view exposing geometry checks as plain columns, for GX (SQLAlchemy has no PostGIS type).

    With `bboxes` (EPSG:4326 boxes of the deployment's regions), `_geom_in_region` says whether each
    geometry touches one of them: swapped lon/lat or a wrong CRS lands far away and is caught.
    """
    view = check_view_name(final_table)
    cols = [sql.Identifier(n) for n in source.columns]
    extra = sql.SQL("")
    if source.geometry:
        gc = sql.Identifier(source.geometry.column)
        extra = sql.SQL(", ST_IsValid({g}) AS _geom_valid, ST_IsEmpty({g}) AS _geom_empty, "
                        "ST_SRID({g}) AS _geom_srid, GeometryType({g}) AS _geom_type").format(g=gc)
        if bboxes:
            envs = sql.SQL(", ").join(
                sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(*(sql.Literal(float(v)) for v in b))
                for b in bboxes)
            extra += sql.SQL(", ST_Intersects({g}, ST_Transform(ST_Segmentize(ST_Union(ARRAY[{e}]), 0.05), {s})) "
                             "AS _geom_in_region").format(g=gc, e=envs, s=sql.Literal(source.geometry.srid))
    conn.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT {}{} FROM {}").format(
        sql.Identifier("staging", view), sql.SQL(", ").join(cols), extra, sql.Identifier("staging", final_table)))
    return view


def check_view_name(final_table: str) -> str:
    return final_table[:55] + "__check"


def drop_check_view(conn: psycopg.Connection, final_table: str) -> None:
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier("staging", check_view_name(final_table))))


def analyze(conn: psycopg.Connection, source: Source) -> None:
    """Fresh planner statistics for the promoted table (outside the swap transaction)."""
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(source.target.schema_, source.target.physical_table)))


def drop_staging(conn: psycopg.Connection, source: Source, run_id: str) -> None:
    """Remove what a run left in staging (after promote, or after a failure)."""
    raw, final = staging_names(source, run_id)
    drop_check_view(conn, final)
    for t in (raw, final):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", t)))


class PromoteError(QpvhubError):
    """The new table does not fit the live one (columns or types differ): nothing was changed."""


def _columns_of(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped", (schema, table)
    ).fetchall()
    return dict(rows)


def _exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]


def promote(conn: psycopg.Connection, source: Source, final_table: str, run_id: str) -> None:
    """Swap the staging table in, in the current transaction; the caller commits (or rolls back)."""
    t = source.target
    schema, live = t.schema_, t.physical_table
    previous = f"{live}__previous"
    new = sql.Identifier("staging", final_table)
    conn.execute("SET LOCAL lock_timeout = '60s'")
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"promote:{schema}.{live}",))
    parent_cols = _columns_of(conn, schema, t.table) if _exists(conn, schema, t.table) else None
    new_cols = _columns_of(conn, "staging", final_table)
    if parent_cols is not None and parent_cols != new_cols:
        diff = sorted(set(parent_cols.items()) ^ set(new_cols.items()))
        raise PromoteError(f"source {source.id}: staging table does not match {schema}.{t.table}: {diff}")

    # Constraints of the live table (NOT NULL, CHECK) go onto the new one before it replaces it.
    for name in source.columns:
        if source.columns[name].required or name in source.keys:
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(new, sql.Identifier(name)))
    if source.geometry:
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
            new, sql.Identifier(source.geometry.column)))
    if parent_cols is not None:
        checks = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype = 'c' AND NOT coninhcount > 0",
            (sql.Identifier(schema, t.table).as_string(conn),)).fetchall()
        for conname, condef in checks:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                new, sql.Identifier(conname), sql.SQL(condef)))

    if t.partition:
        (pcol, pval), = t.partition.items()
        # A matching CHECK lets ATTACH skip its validation scan.
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL AND {} = {})").format(
            new, sql.Identifier(f"{live}_partition_bound"), sql.Identifier(pcol), sql.Identifier(pcol),
            sql.Literal(pval)))
    else:
        if source.keys:
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                new, sql.SQL(", ").join(sql.Identifier(k) for k in source.keys)))
        if source.geometry:
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gist ({})").format(
                new, sql.Identifier(source.geometry.column)))

    if _exists(conn, schema, previous):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, previous)))
    if t.partition:
        (pcol, pval), = t.partition.items()
        if _exists(conn, schema, live):
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                sql.Identifier(schema, t.table), sql.Identifier(schema, live)))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, live), sql.Identifier(previous)))
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(new, sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, final_table), sql.Identifier(live)))
        conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            sql.Identifier(schema, t.table), sql.Identifier(schema, live), sql.Literal(pval)))
    else:
        if _exists(conn, schema, live):
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, live), sql.Identifier(previous)))
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(new, sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, final_table), sql.Identifier(live)))

    target = sql.Identifier(schema, live)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO qpvhub_analyst").format(target))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(
        f"{source.title} — {source.publisher}; licence: {source.licence}; loaded by run {run_id}")))
    for name, col in source.columns.items():
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            target, sql.Identifier(name), sql.Literal(col.description)))
    conn.execute(sql.SQL("COMMENT ON COLUMN {}.source_run_id IS {}").format(
        target, sql.Literal("meta.source_runs.run_id of the load")))
    if source.geometry:
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            target, sql.Identifier(source.geometry.column), sql.Literal(source.geometry.description)))
