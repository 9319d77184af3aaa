"""Values as the catalogue declares them: a file's columns mapped to typed target columns (French numbers,
dates, booleans, secrecy markers), rows outside the deployment's regions left out, points built from x/y.

A bad value is an InputError naming the source, file, line (or feature) and column.
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyproj import CRS
from pyproj.exceptions import CRSError

from qpvhub.catalog.model import CODE_PATTERNS, Source
from qpvhub.ingest.copy import fixed_width
from qpvhub.platform.errors import InputError


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
                        "iris": CODE_PATTERNS["iris"]}


@dataclass(frozen=True)
class RegionScope:
    """What a region filter keeps: the deployment's départements; a well-formed QPV code (of any list of the
    registry, `QpvLists.any_code_pattern`) names its département in characters 3–5."""

    departements: frozenset[str]
    qpv_pattern: str = "^Q[A-Z]([0-9]{3}|02[AB])[0-9A-Z]{3}$"

    def pattern(self, level: str) -> str:
        return self.qpv_pattern if level == "qpv" else REGION_LEVEL_PATTERN[level]


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
                  scope: RegionScope | None = None) -> pd.DataFrame:
    """Map source columns to target columns with their declared types; a bad value names line and column.

    Rows outside `row_filter`, in `row_exclude` and, with a `region_filter`, outside the `scope`'s départements are left
    out here.
    """
    for col, allowed in source.row_filter.items():
        df = df[df[col].isin(allowed)]
    for col, dropped in source.row_exclude.items():
        df = df[~df[col].isin(dropped)]
    rf = source.region_filter
    if rf and scope is not None and rf.level == "any":
        codes = pc.utf8_trim_whitespace(_arrow_text(df[source.columns[rf.column].source or rf.column]))
        deps = pa.array(sorted(scope.departements), pa.string())
        keep = None
        for level in ("qpv", "commune"):
            shaped = pc.fill_null(pc.match_substring_regex(codes, scope.pattern(level)), False)
            inside = pc.fill_null(pc.is_in(_departement_codes(codes, level), value_set=deps), False)
            mine = pc.or_(pc.invert(shaped), inside)
            keep = mine if keep is None else pc.and_(keep, mine)
        df = df[keep.to_numpy(zero_copy_only=False)]
    elif rf and scope is not None:
        src_col = source.columns[rf.column].source or rf.column
        codes = pc.utf8_trim_whitespace(_arrow_text(df[src_col]))
        pattern = scope.pattern(rf.level)
        well_formed = pc.fill_null(pc.match_substring_regex(codes, pattern), False).to_numpy(zero_copy_only=False)
        inside = pc.fill_null(pc.is_in(_departement_codes(codes, rf.level), value_set=pa.array(
            sorted(scope.departements), pa.string())), False).to_numpy(zero_copy_only=False)
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
        if g.crs_column:  # each row's CRS (BPE 2025's EPSG); empty: the entry's source_crs
            raw = df[g.crs_column]
            num = raw.astype("Float64") if pd.api.types.is_numeric_dtype(raw) else _parse_numbers(raw, ".")
            bad = (_filled(raw) & num.isna()) | (num.notna() & ((num % 1 != 0) | (num <= 0))).fillna(False)
            _raise_first(bad, df, raw, source, filename, g.crs_column, where_kind, "not an EPSG code")
            out["__crs"] = num.astype("Int64")
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
    where = "line" if source.format == "csv" else "feature"
    if "__crs" in kept.columns:  # a CRS per row: each group of rows reprojected from its own
        srids = kept["__crs"].fillna(source_srid).to_numpy(dtype="int64")
        x, y = x.copy(), y.copy()
        for srid in np.unique(srids):
            rows = srids == srid
            if srid == g.srid:
                continue
            try:
                transformer = _transformer(int(srid), g.srid)
            except Exception as exc:  # pyproj's CRSError: a code PROJ does not know
                i = int(np.flatnonzero(rows)[0])
                raise InputError(f"EPSG code {int(srid)} is not a coordinate system PROJ knows ({exc})",
                                 source=source.id, column=g.crs_column,
                                 **{where: int(kept["__feature"].iloc[i])}) from None
            x[rows], y[rows] = transformer.transform(x[rows], y[rows])
            _check_projected(x, y, rows, kept, source, int(srid), where)
    elif source_srid != g.srid:
        x, y = _transformer(source_srid, g.srid).transform(x, y)
        _check_projected(x, y, np.ones(len(x), dtype=bool), kept, source, source_srid, where)
    rec = np.empty(len(x), dtype=EWKB_POINT)
    rec["order"], rec["type"], rec["srid"], rec["x"], rec["y"] = 1, 0x20000001, g.srid, x, y  # LE, Point|SRID
    if raw:
        ewkb = fixed_width(rec, EWKB_POINT.itemsize)
    else:
        ewkb = fixed_width(np.frombuffer(binascii.hexlify(rec.tobytes()), dtype="S50"), 50).cast(pa.string())
    kept[g.column] = pd.Series(pd.arrays.ArrowExtensionArray(ewkb), index=kept.index)
    return kept, rejected


def _check_projected(x: np.ndarray, y: np.ndarray, rows: np.ndarray, kept: pd.DataFrame, source: Source, srid: int,
                     where: str) -> None:
    """PROJ answers inf for coordinates outside its domain (a latitude of 1e5…): an error naming the row."""
    bad = rows & ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        g = source.geometry
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"coordinates ({kept['__x'].iloc[i]}, {kept['__y'].iloc[i]}) cannot be reprojected from "
                         f"EPSG:{srid} to EPSG:{g.srid}: wrong CRS, swapped axes or corrupt values?",
                         source=source.id, column=f"{g.x}/{g.y}", **{where: int(kept["__feature"].iloc[i])})


@functools.lru_cache(maxsize=8)
def _transformer(src: int, dst: int):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)
