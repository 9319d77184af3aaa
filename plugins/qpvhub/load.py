"""Load a source into PostGIS: typed COPY into staging, reproject and repair, atomic promote.

Analysts never see a partial table: everything is built in `staging`, then one transaction swaps the
new table in (rename, or DETACH/ATTACH for one partition of a table such as `ref.qpv`) and keeps the
old one as `<table>__previous`. A failure at any step leaves the live table as it was.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import gc
import io
import logging
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.types.json import Jsonb
from pyproj import CRS
from pyproj.exceptions import CRSError

from qpvhub.catalog import CODE_PATTERNS, COLUMN_TYPES, Source
from qpvhub.errors import InputError, QpvhubError

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
    translation: dict | None = None  # commune codes moved to the deployment's COG (qpvhub.cog)


def srid_of(crs: str | None, source: str) -> int:
    """EPSG code of a CRS string as GDAL reports it (EPSG:4326, OGC:CRS84, WKT…)."""
    if not crs:
        raise InputError("no CRS for the geometries", source=source)
    try:
        c = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"unknown CRS {crs!r}: {exc}", source=source) from None
    if c.to_epsg() is None and c.equals(CRS.from_user_input("OGC:CRS84")):
        return 4326
    epsg = c.to_epsg(min_confidence=70)
    if epsg is None:
        raise InputError(f"CRS {crs!r} has no EPSG code; declare reader.crs in the catalogue", source=source)
    return epsg


def check_columns(source: Source, available: list[str], filename: str) -> None:
    """Every mapped source column must exist in the file: name all missing ones at once."""
    missing = [c for c in source.file_columns() if c not in available]
    if missing:
        raise InputError(
            f"missing column(s) {missing}; the file has {available}",
            source=source.id, file=filename, column=missing[0],
        )


NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _arrow_text(values: pd.Series) -> pa.Array:
    """A column as an Arrow string array (zero-copy when it already is one; numbers rendered as text)."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string(values.dtype.pyarrow_dtype):
        return pa.array(values.array)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        values = values.astype("string")
    return pa.array(values.to_numpy(dtype=object, na_value=None), type=pa.string(), from_pandas=True)


def _parse_numbers(values: pd.Series, decimal: str) -> pd.Series:
    """Text → Float64 with Arrow kernels; French forms (`6\u202f206`, `43,2`) handled; bad values → NA."""
    arr = pc.utf8_trim_whitespace(_arrow_text(values))
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    try:
        out = pc.cast(arr, pa.float64())  # fast path: plain numbers
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        cleaned = pc.replace_substring_regex(arr, "[\\s\u00a0\u202f]", "")
        if decimal == ",":
            cleaned = pc.replace_substring(cleaned, ",", ".")
        ok = pc.match_substring_regex(cleaned, NUMBER_RE)
        out = pc.cast(pc.if_else(ok, cleaned, pa.scalar(None, pa.string())), pa.float64())
    result = out.to_pandas(types_mapper={pa.float64(): pd.Float64Dtype()}.get)
    result.index = values.index  # positional: do not align on labels (filtered batches keep theirs)
    return result


INTEGER_LIMITS = {"smallint": 2.0**15, "integer": 2.0**31, "bigint": 2.0**63}  # PostgreSQL's: -limit ≤ v < limit
REGION_LEVEL_PATTERN = {"departement": CODE_PATTERNS["departement"], "commune": CODE_PATTERNS["insee_commune"],
                        "iris": CODE_PATTERNS["iris"],
                        "qpv": f"{CODE_PATTERNS['qpv_2015'][:-1]}|{CODE_PATTERNS['qpv_2024'][1:]}"}


def _departement_codes(s: pa.Array, level: str) -> pa.Array:
    """Département code of trimmed INSEE commune/IRIS codes, QPV codes (QP035001 → 35, QP02A001 → 2A) or itself."""
    if level == "departement":
        dep = s
    elif level in ("commune", "iris"):
        dep = pc.if_else(pc.starts_with(s, "97"), pc.utf8_slice_codeunits(s, 0, 3), pc.utf8_slice_codeunits(s, 0, 2))
    else:  # qpv: QP/QN + 3-character département, leading zero dropped (035 → 35, 02A → 2A, 971)
        three = pc.utf8_slice_codeunits(s, 2, 5)
        dep = pc.if_else(pc.starts_with(three, "0"), pc.utf8_slice_codeunits(three, 1, 3), three)
    return dep


def _filled(values: pd.Series) -> pd.Series:
    """True where a cell holds something other than blanks."""
    arr = pc.utf8_trim_whitespace(_arrow_text(values))
    mask = pc.fill_null(pc.not_equal(arr, ""), False)
    return pd.Series(mask.to_numpy(zero_copy_only=False), index=values.index)


def convert_batch(df: pd.DataFrame, source: Source, filename: str, run_id: str,
                  departements: frozenset[str] | None = None) -> pd.DataFrame:
    """Map source columns to target columns with their declared types; a bad value names line and column.

    Rows outside `row_filter`, in `row_exclude` and, with a `region_filter`, outside `departements` are left
    out here.
    """
    for col, allowed in source.row_filter.items():
        df = df[df[col].isin(allowed)]
    for col, dropped in source.row_exclude.items():
        df = df[~df[col].isin(dropped)]
    rf = source.region_filter
    if rf and departements is not None:
        src_col = source.columns[rf.column].source or rf.column
        codes = pc.utf8_trim_whitespace(_arrow_text(df[src_col]))
        pattern = REGION_LEVEL_PATTERN[rf.level]
        well_formed = pc.fill_null(pc.match_substring_regex(codes, pattern), False).to_numpy(zero_copy_only=False)
        inside = pc.fill_null(pc.is_in(_departement_codes(codes, rf.level), value_set=pa.array(
            sorted(departements), pa.string())), False).to_numpy(zero_copy_only=False)
        # A malformed code (`1001` for 01001) is not "another region": it stays, and the suite's format
        # check blocks it with the offending value, instead of the row vanishing silently.
        df = df[inside | ~well_formed]
    out: dict[str, object] = {}  # one DataFrame at the end: inserting column by column costs pandas more
    decimal = source.reader.get("decimal", ".")
    markers = [str(m) for m in source.reader.get("null_values", [])]
    where_kind = "line" if source.format == "csv" else "feature"
    for name, col in source.columns.items():
        if col.derived:
            out[name] = None
            continue
        if col.source is None:
            out[name] = col.constant
            continue
        raw = _without_markers(df[col.source], markers) if markers else df[col.source]
        if col.type == "text":
            arr = pc.utf8_trim_whitespace(_arrow_text(raw))
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
            out[name] = pd.Series(pd.arrays.ArrowExtensionArray(arr), index=df.index)
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
                if num.hasnans:  # blank cells, or text that is not a number: which?
                    bad = _filled(raw) & num.isna()
                    _raise_first(bad, df, raw, source, filename, col.source, where_kind, f"not a number ({col.type})")
            if col.type in ("integer", "bigint", "smallint"):
                values = num.to_numpy(dtype="float64", na_value=np.nan)
                missing = np.isnan(values)
                whole = np.where(missing, 0.0, values)
                frac = pd.Series(~missing & (whole != np.floor(whole)), index=df.index)
                _raise_first(frac, df, raw, source, filename, col.source, where_kind, "not a whole number")
                limit = INTEGER_LIMITS[col.type]
                outside = pd.Series(~missing & ((whole < -limit) | (whole >= limit)), index=df.index)
                _raise_first(outside, df, raw, source, filename, col.source, where_kind, f"out of range for {col.type}")
                out[name] = pd.arrays.IntegerArray(np.round(whole).astype("int64"), missing)
            else:
                out[name] = num
        elif col.type == "date":
            text = raw.astype("string").str.strip()
            iso = text.dropna().str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()  # ISO dates are not day-first
            parsed = (pd.to_datetime(text, errors="coerce", format="%Y-%m-%d") if iso else
                      pd.to_datetime(raw, errors="coerce", dayfirst=True))
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
            if num.hasnans:
                bad = _filled(raw) & num.isna()
                _raise_first(bad, df, raw, source, filename, col, where_kind, "not a coordinate")
            out[axis] = num
    elif g:
        wkb = df["__wkb"]
        out["__geom"] = [w.hex() if isinstance(w, bytes | bytearray) else None for w in wkb]
    return pd.DataFrame(out, index=df.index)


def _without_markers(values: pd.Series, markers: list[str]) -> pd.Series:
    """The column with the publisher's "not released" codes (`reader.null_values`, INSEE's `ns`, `nd`, `s`,
    `so`) made NULL: a cell under secrecy is missing, not a bad number."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    arr = pc.utf8_trim_whitespace(_arrow_text(values))
    arr = pc.if_else(pc.is_in(arr, value_set=pa.array(markers, pa.string())), pa.scalar(None, pa.string()), arr)
    return pd.Series(pd.arrays.ArrowExtensionArray(arr), index=values.index)


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
    # a series' release is not known where a failure is cleaned up: the table name, the run id tells apart
    base = (source.target.table if source.series else source.target.physical_table)[:40]
    return f"{base}__{suffix}_raw", f"{base}__{suffix}"


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


# COPY's binary format: signature, flags, header extension; then per row a field count and, per field, its
# length (-1 for NULL) and its bytes in the type's binary form. The server parses it with less work than CSV
# (no quoting, numbers and points as they are stored): PostgreSQL's CPU for a whole 1M-row bench ingest
# 5.3 → 4.6 s (medians of 3, the same run).
PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_NUMBERS = {"integer": (pa.int32(), ">i4"), "smallint": (pa.int16(), ">i2"), "bigint": (pa.int64(), ">i8"),
                   "double": (pa.float64(), ">f8")}
_PG_EPOCH_DAYS = dt.date(2000, 1, 1).toordinal() - dt.date(1970, 1, 1).toordinal()
BINARY_KINDS = ("text", "geometry", "boolean", "date", *_BINARY_NUMBERS)


def binary_kinds(source: Source, names: list[str]) -> list[str] | None:
    """The binary-COPY kind of each COPY column of a direct staging table, or None when one has no binary
    encoder here (`numeric`: those entries keep CSV)."""
    geom = source.geometry.column if source.geometry else None
    kinds = ["geometry" if n == geom else "text" if n == "source_run_id" else source.columns[n].type for n in names]
    return kinds if all(k in BINARY_KINDS for k in kinds) else None


def _fixed(values: np.ndarray, width: int) -> pa.Array:
    """Equal-width byte strings from a numpy array's memory, as an Arrow binary array."""
    buf = pa.py_buffer(np.ascontiguousarray(values).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buf]).cast(pa.binary())


def _binary_field(values: pa.Array, kind: str, column: str) -> list[pa.Array]:
    """One column as two binary arrays: each row's 4-byte length (-1 for NULL), then its bytes."""
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    try:
        if kind in ("text", "geometry"):
            payload = values.cast(pa.binary())
            lengths = pc.binary_length(payload).fill_null(0).to_numpy()
        else:
            if kind in _BINARY_NUMBERS:
                typ, big_endian = _BINARY_NUMBERS[kind]
                nums = values.cast(typ).fill_null(0).to_numpy().astype(big_endian)
            elif kind == "boolean":
                nums = values.cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False).astype("u1")
            else:  # date: days since 2000-01-01
                days = values.cast(pa.date32()).cast(pa.int32()).fill_null(0).to_numpy()
                nums = (days - _PG_EPOCH_DAYS).astype(">i4")
            payload, lengths = _fixed(nums, nums.dtype.itemsize), np.full(len(nums), nums.dtype.itemsize)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"column {column}: a value does not fit PostgreSQL's {kind} ({exc})") from None
    if not valid.all():  # a NULL is its length (-1) alone: no bytes after it
        payload = pc.if_else(pa.array(valid), payload, pa.scalar(b"", pa.binary()))
    return [_fixed(np.where(valid, lengths, -1).astype(">i4"), 4), payload]


def _arrow_column(values: pd.Series) -> pa.Array:
    """A column as one Arrow array, without a pass through pandas' table conversion (zero-copy for Arrow-backed
    columns; masked integers, floats and Python dates converted by Arrow)."""
    arr = pa.array(values.array if isinstance(values.dtype, pd.api.extensions.ExtensionDtype) else values,
                   from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _binary_bytes(df: pd.DataFrame, names: list[str], kinds: list[str]) -> memoryview:
    """A batch as COPY binary rows (without the signature), assembled by Arrow: no Python loop over rows."""
    n = len(df)
    parts = [_fixed(np.full(n, len(names), dtype=">i2"), 2)]
    for name, kind in zip(names, kinds, strict=True):
        parts += _binary_field(_arrow_column(df[name]), kind, name)
    rows = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]


def _csv_bytes(df: pd.DataFrame, names: list[str]) -> bytes:
    """A batch as COPY CSV, written by Arrow (nulls unquoted-empty, text quoted, so '' stays '')."""
    buf = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pandas(df[names], preserve_index=False), buf,
                    pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def _copy_stmt(table: str, names: list[str], binary: bool = False) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {})").format(
        sql.Identifier("staging", table), sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL("binary" if binary else "csv"))


def copy_batches(conn: psycopg.Connection, table: str, names: list[str], batches: Iterable[pd.DataFrame]) -> int:
    """COPY typed batches into a staging table through `conn` (in its transaction)."""
    total = 0
    with conn.cursor() as cur, cur.copy(_copy_stmt(table, names)) as copy:
        for df in batches:
            if not df.empty:
                copy.write(_csv_bytes(df, names))
                total += len(df)
    return total


@contextmanager
def frozen_heap() -> Iterator[None]:
    """While a file streams through, the objects already alive (GX, SQLAlchemy, pandas: ~300,000) stay out of
    the cyclic collector's sight: every full collection triggered by the batches' allocations would walk them
    all (9 % of the reader thread's time on the bench file). Only the transient batches are collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def copy_batches_parallel(uri: str, table: str, names: list[str], batches: Iterable[pd.DataFrame],
                          workers: int = 2, kinds: list[str] | None = None) -> int:
    """COPY with `workers` connections fed from this thread: the server parses on several cores while
    Python reads and converts the next batches. The table must be committed; each worker commits its
    share, and a failure anywhere fails the whole (disposable) staging table. With `kinds` (see
    `binary_kinds`) the rows go in COPY's binary format, else as CSV.
    """
    from qpvhub.db import connect

    work: queue.Queue = queue.Queue(maxsize=2 * workers)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with connect(uri) as conn:
                with conn.cursor() as cur, cur.copy(_copy_stmt(table, names, kinds is not None)) as copy:
                    if kinds is not None:
                        copy.write(PGCOPY_SIGNATURE)  # psycopg ends the stream with the trailer
                    while (data := work.get()) is not None:
                        copy.write(data)
                conn.commit()
        except BaseException as exc:  # handed to the producer, which re-raises it
            errors.append(exc)

    def put(item: bytes | None) -> bool:
        """Queue an item unless every writer is gone (never block on dead writers)."""
        while any(th.is_alive() for th in threads):
            try:
                work.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    threads = [threading.Thread(target=writer, name=f"copy-{i}", daemon=True) for i in range(workers)]
    for th in threads:
        th.start()
    total = 0
    try:
        for df in batches:
            if errors:
                break
            data = None if df.empty else _binary_bytes(df, names, kinds) if kinds else _csv_bytes(df, names)
            if data is not None and put(data):
                total += len(df)
    finally:
        for _ in threads:
            put(None)
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
    return total


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


EWKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"), ("y", "<f8")])


def points_from_xy(df: pd.DataFrame, source: Source, source_srid: int, *, raw: bool = False
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """EWKB points from `__x`/`__y` (reprojected with PROJ), built with numpy: 25 bytes each, as bytes for a
    binary COPY (`raw`) or hex for a CSV one.

    Rows without finite coordinates are split off (returned second) to be rejected with the reason.
    """
    g = source.geometry
    x = df["__x"].to_numpy(dtype="float64", na_value=np.nan)
    y = df["__y"].to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    # rejected: taken, never sliced (the caller keeps it to the end: a slice would keep the whole batch alive)
    rejected = df[~ok]
    if ok.all():  # the usual case: no row copied (a lazy copy under copy-on-write)
        kept = df.copy(deep=False)
    else:
        kept = df[ok].copy()
        x, y = x[ok], y[ok]
    if source_srid != g.srid:
        x, y = _transformer(source_srid, g.srid).transform(x, y)
    rec = np.empty(len(x), dtype=EWKB_POINT)
    rec["order"], rec["type"], rec["srid"], rec["x"], rec["y"] = 1, 0x20000001, g.srid, x, y  # LE, Point|SRID
    if raw:
        ewkb = _fixed(rec, EWKB_POINT.itemsize)
    else:
        ewkb = _fixed(np.frombuffer(binascii.hexlify(rec.tobytes()), dtype="S50"), 50).cast(pa.string())
    kept[g.column] = pd.Series(pd.arrays.ArrowExtensionArray(ewkb), index=kept.index)
    return kept, rejected


@functools.lru_cache(maxsize=8)
def _transformer(src: int, dst: int):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def record_rejects(conn: psycopg.Connection, source: Source, run_id: str, rejected: list[pd.DataFrame],
                   reason: str) -> int:
    """Rows a run could not load go to meta.rejected_rows with the reason and their values."""
    rows = pd.concat(rejected) if rejected else pd.DataFrame()
    if rows.empty:
        return 0
    records = rows.drop(columns=[c for c in ("__x", "__y", "__geom", "__wkb") if c in rows.columns])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meta.rejected_rows (run_id, source_id, feature, reason, record) VALUES (%s, %s, %s, %s, %s)",
            [(run_id, source.id, int(r["__feature"]), reason,
              Jsonb({k: (None if pd.isna(v) else v) for k, v in r.items()}, dumps=_json_dumps))
             for r in records.to_dict("records")])
    return len(records)


def _json_dumps(obj) -> str:
    import json

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
        "CREATE TABLE {final} WITH ({storage}) AS "
        "SELECT {cols}, r.source_run_id, f.g::geometry({gtype}, {gsrid}) AS {gcol} "
        "FROM {raw} r JOIN _geom_fix f USING (__feature) WHERE f.g IS NOT NULL AND NOT ST_IsEmpty(f.g) "
        "ORDER BY r.__feature"
    ).format(final=final, cols=cols, raw=raw, gtype=sql.SQL(g.type), gsrid=sql.Literal(g.srid),
             gcol=sql.Identifier(g.column), storage=staging_storage(source)))
    loaded = rows_read - rejected
    conn.execute(sql.SQL("DROP TABLE {}").format(raw))
    return StageResult(final_table, rows_read, loaded, rejected, repaired)


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


class PromoteError(QpvhubError):
    """The new table does not fit the live one (columns or types differ): nothing was changed."""


def columns_of(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """A table's columns and their SQL types, in order."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", (schema, table)
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
    if t.partition and not _exists(conn, schema, t.table):
        # the first release of a series: its parent, partitioned by the release column, shaped like staging
        (pcol, _), = t.partition.items()
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS) PARTITION BY LIST ({})").format(
            sql.Identifier(schema, t.table), new, sql.Identifier(pcol)))
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN source_run_id DROP DEFAULT").format(
            sql.Identifier(schema, t.table)))  # staging's default names this run only
        conn.execute(sql.SQL("GRANT SELECT ON {} TO qpvhub_analyst").format(sql.Identifier(schema, t.table)))
    parent_cols = columns_of(conn, schema, t.table) if _exists(conn, schema, t.table) else None
    new_cols = columns_of(conn, "staging", final_table)
    if parent_cols is not None and parent_cols != new_cols:
        diff = sorted(set(parent_cols.items()) ^ set(new_cols.items()))
        raise PromoteError(f"source {source.id}: staging table does not match {schema}.{t.table}: {diff}")

    # Constraints of the live table (NOT NULL, CHECK) go onto the new one before it replaces it, in one
    # ALTER TABLE: PostgreSQL checks them all in a single scan.
    actions = [sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(name))
               for name, col in source.columns.items() if col.required or name in source.keys]
    if source.geometry:
        actions.append(sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(source.geometry.column)))
    actions.append(sql.SQL("RESET ({})").format(sql.SQL(", ").join(map(sql.SQL, STAGING_OPTIONS))))
    actions.append(sql.SQL("ALTER COLUMN source_run_id DROP DEFAULT"))  # a staging convenience only
    if parent_cols is not None:
        checks = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype = 'c' AND NOT coninhcount > 0",
            (sql.Identifier(schema, t.table).as_string(conn),)).fetchall()
        actions += [sql.SQL("ADD CONSTRAINT {} {}").format(sql.Identifier(conname), sql.SQL(condef))
                    for conname, condef in checks]
    conn.execute(sql.SQL("ALTER TABLE {} {}").format(new, sql.SQL(", ").join(actions)))

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
