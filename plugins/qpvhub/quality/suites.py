"""A source's suite: the expectations every source gets (row-count floor, keys, required columns, geometry
checks, the regions' boxes) and the catalogue's own, expanded into GX Core expectations; checked before
any run so a misspelt expectation fails with the file and key."""

from __future__ import annotations

import math
from pathlib import Path

from qpvhub.catalog.model import CODE_PATTERNS, Check, Source
from qpvhub.catalog.qpv_lists import QpvLists
from qpvhub.platform.errors import ConfigError
from qpvhub.platform.settings import quiet_libraries
from qpvhub.quality.gx import camel

# Geometry type as PostGIS' GeometryType() spells it.
PG_GEOMETRY_TYPE = {"Point": "POINT", "MultiPoint": "MULTIPOINT", "MultiLineString": "MULTILINESTRING",
                    "MultiPolygon": "MULTIPOLYGON"}


def build_expectations(source: Source, previous_rows: int | None, *, in_region: bool = False,
                       lists: QpvLists) -> list[tuple[str, dict]]:
    """The suite as (expectation name, kwargs): automatic checks first, then the catalogue's own."""
    exps: list[tuple[str, dict]] = []
    q = source.quality
    floor = q.min_rows
    if previous_rows:
        floor = max(floor, math.ceil(previous_rows * (1 - q.max_drop_ratio)))
    exps.append(("expect_table_row_count_to_be_between", {"min_value": floor}))
    for name, col in source.columns.items():
        if col.required or name in source.keys:
            exps.append(("expect_column_values_to_not_be_null", {"column": name}))
    if len(source.keys) == 1:
        exps.append(("expect_column_values_to_be_unique", {"column": source.keys[0]}))
    elif len(source.keys) > 1:
        exps.append(("expect_compound_columns_to_be_unique", {"column_list": list(source.keys)}))
    if source.geometry:
        g = source.geometry
        if not g.from_columns:
            # Points built here from finite x/y are valid and non-empty by construction, and every staging
            # geometry column is typed geometry(<type>, <srid>): these checks matter for file geometries.
            exps.append(("expect_column_values_to_be_in_set", {"column": "_geom_valid", "value_set": [True]}))
            exps.append(("expect_column_values_to_be_in_set", {"column": "_geom_empty", "value_set": [False]}))
            exps.append(("expect_column_values_to_be_in_set", {"column": "_geom_srid", "value_set": [g.srid]}))
            exps.append(("expect_column_values_to_be_in_set",
                         {"column": "_geom_type", "value_set": [PG_GEOMETRY_TYPE[g.type]]}))
        if in_region:
            # rows named by their key (or first column) and a WGS84 point, so the report says which and where
            # A column check, so that GX folds it into the one scan of every column check (an unexpected-rows
            # expectation costs two scans of its own); the failing rows are sampled from `meta`'s query.
            shown = ", ".join(f'"{c}"' for c in (source.keys or list(source.columns)[:1]))
            exps.append(("expect_column_values_to_be_in_set", {
                "column": "_geom_in_region", "value_set": [True],
                "description": "every geometry inside the bounding box of the deployment's regions "
                               "(swapped lon/lat or a wrong CRS land outside)",
                "meta": {"sample_query": f"SELECT {shown}, _geom_where FROM {{batch}} WHERE NOT _geom_in_region"}}))
    for c in q.checks:
        exps.append(expand_check(c, lists))
    for e in q.expectations:
        exps.append((e.expectation, dict(e.kwargs)))
    return exps


def expand_check(c: Check, lists: QpvLists) -> tuple[str, dict]:
    """A project building block as one GX Core expectation (a QPV code's format from the lists registry)."""
    extra = {"mostly": c.mostly} if c.mostly else {}
    if c.check == "qpv":
        regex = lists.get(c.list_).code_pattern if c.list_ is not None else lists.any_code_pattern
        return "expect_column_values_to_match_regex", {"column": c.column, "regex": regex, **extra}
    if c.check in CODE_PATTERNS:
        return "expect_column_values_to_match_regex", {"column": c.column, "regex": CODE_PATTERNS[c.check], **extra}
    if c.check == "rate":
        return "expect_column_values_to_be_between", {"column": c.column, "min_value": 0, "max_value": 100, **extra}
    if c.check == "count":
        return "expect_column_values_to_be_between", {"column": c.column, "min_value": 0, **extra}
    schema, table = c.table.split(".")  # references: validated identifiers, quoted here all the same
    col, key = f'"{c.column}"', f'"{c.key or c.column}"'
    # GX substitutes {batch} with an aliased subquery: no alias of ours, NOT IN keeps names unambiguous
    dangling = f'{col} IS NOT NULL AND {col} NOT IN (SELECT {key} FROM "{schema}"."{table}" WHERE {key} IS NOT NULL)'
    target = f"{c.table}.{c.key or c.column}"
    if c.mostly:  # GX's unexpected-rows expectation has no `mostly`: a share becomes a bounded count
        return "unexpected_rows_expectation", {
            "unexpected_rows_query": (f"SELECT {col} FROM {{batch}} WHERE {dangling} AND "
                                      f"(SELECT count(*) FROM {{batch}}) * {1 - c.mostly:.6f} < "
                                      f"(SELECT count(*) FROM {{batch}} WHERE {dangling})"),
            "description": f"at least {c.mostly:.0%} of {c.column} exist in {target}",
        }
    return "unexpected_rows_expectation", {
        "unexpected_rows_query": f"SELECT {col} FROM {{batch}} WHERE {dangling}",
        "description": f"every {c.column} exists in {target}",
    }


def check_expectations(source: Source, where: str | Path | None = None) -> None:
    """Every catalogue expectation names a GX Core expectation and builds with its kwargs (a misspelt
    `expect_…`, `unexpected_rows` without its query…): a ConfigError naming the file and key, before any run.

    Not run when DAG files are parsed (importing GX takes seconds); every run checks it first."""
    if not source.quality.expectations:
        return
    quiet_libraries()
    import great_expectations.expectations as gxe

    where = where or f"include/sources/{source.id}.yml"
    for n, e in enumerate(source.quality.expectations):
        cls = getattr(gxe, camel(e.expectation), None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, gxe.Expectation):
            known = sorted(n for n in dir(gxe) if n.startswith("Expect") or n == "UnexpectedRowsExpectation")
            raise ConfigError(f"{where}: quality.expectations[{n}].expectation: {e.expectation!r} is not a GX Core "
                              f"expectation ({len(known)} known, e.g. expect_column_values_to_not_be_null)")
        try:
            cls(**e.kwargs)
        except Exception as exc:  # GX validates kwargs with pydantic: missing or wrong arguments
            first = str(exc).strip().splitlines()
            detail = "; ".join(line.strip() for line in first[:4])
            raise ConfigError(f"{where}: quality.expectations[{n}].kwargs: {e.expectation} cannot be built: "
                              f"{detail}") from None
