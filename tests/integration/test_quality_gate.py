"""The quality gate on constructed tables: what each expectation reports, how a report reads and is stored.

The ingestion tests run the gate on real files, where almost every check passes; here each kind of check
fails (or passes) on purpose, on a five-row table in PostGIS and on a DataFrame, so the report's counts,
samples, messages and stored rows are pinned down.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import psycopg
import pytest

from qpvhub.catalog.model import CODE_PATTERNS, Check, Source
from qpvhub.quality.gx import (
    CheckResult,
    ValidationReport,
    _jsonable,
    record_results,
    sqlalchemy_uri,
    validate_frame,
    validate_table,
)
from qpvhub.quality.suites import build_expectations, expand_check
from tests.conftest import LISTS

ROWS = [  # code, n, rate, in region, where
    ("A", 1, 10.0, True, "POINT(-1.68 48.11)"),
    ("B", 2, 150.0, True, "POINT(-1.67 48.12)"),
    ("B", None, 20.0, False, "POINT(48.12 -1.67)"),
    ("C", 3, 30.0, True, "POINT(-1.66 48.13)"),
    (None, 4, 40.0, True, "POINT(-1.65 48.14)"),
]


def _source(**over) -> Source:
    spec = {
        "id": "probe", "title": "t", "publisher": "p", "licence": "l", "url": "https://example.org/f.csv",
        "format": "csv",
        "columns": {"code": {"source": "CODE", "description": "d"},
                    "n": {"source": "N", "type": "integer", "description": "d", "required": False},
                    "lib": {"source": "LIB", "description": "d"},
                    "dep": {"source": "DEP", "description": "d", "required": False}},
        "keys": ["code"], "target": {"schema": "src", "table": "probe"},
        "quality": {"min_rows": 3, "max_drop_ratio": 0.25,
                    "checks": [{"check": "rate", "column": "n"}],
                    "expectations": [{"expectation": "expect_column_max_to_be_between",
                                      "kwargs": {"column": "n", "max_value": 9}}]},
    }
    spec.update(over)
    return Source.model_validate(spec)


# ---------------------------------------------------------------- the suite as data
def test_row_floor_is_min_rows_or_the_last_load_less_the_allowed_drop() -> None:
    s = _source()
    assert build_expectations(s, None, lists=LISTS)[0] == ("expect_table_row_count_to_be_between", {"min_value": 3})
    assert build_expectations(s, 0, lists=LISTS)[0] == ("expect_table_row_count_to_be_between", {"min_value": 3})
    # 101 rows last time, 25 % may go: ceil(75.75) = 76, never a fraction and never rounded down
    assert build_expectations(s, 101, lists=LISTS)[0] == ("expect_table_row_count_to_be_between", {"min_value": 76})
    assert build_expectations(s, 2, lists=LISTS)[0] == ("expect_table_row_count_to_be_between", {"min_value": 3})
    assert math.ceil(101 * 0.75) == 76


def test_automatic_checks_then_the_catalogue_s_in_order() -> None:
    exps = build_expectations(_source(), None, lists=LISTS)
    assert exps == [
        ("expect_table_row_count_to_be_between", {"min_value": 3}),
        ("expect_column_values_to_not_be_null", {"column": "code"}),   # required and key
        ("expect_column_values_to_not_be_null", {"column": "lib"}),    # required
        ("expect_column_values_to_be_unique", {"column": "code"}),
        ("expect_column_values_to_be_between", {"column": "n", "min_value": 0, "max_value": 100}),
        ("expect_column_max_to_be_between", {"column": "n", "max_value": 9}),
    ]


def test_an_optional_key_column_is_still_not_null_and_compound_keys_are_unique_together() -> None:
    exps = build_expectations(_source(keys=["code", "dep"]), None, lists=LISTS)
    assert ("expect_column_values_to_not_be_null", {"column": "dep"}) in exps
    assert ("expect_column_values_to_not_be_null", {"column": "n"}) not in exps
    assert ("expect_compound_columns_to_be_unique", {"column_list": ["code", "dep"]}) in exps
    assert not [n for n, _ in exps if n == "expect_column_values_to_be_unique"]
    assert not [n for n, _ in build_expectations(_source(keys=[]), None, lists=LISTS) if "unique" in n]


def test_file_geometries_are_checked_points_from_columns_only_for_the_region() -> None:
    geom = {"type": "MultiPolygon", "srid": 2154}
    exps = build_expectations(_source(geometry=geom), None, lists=LISTS)
    assert exps[4:8] == [
        ("expect_column_values_to_be_in_set", {"column": "_geom_valid", "value_set": [True]}),
        ("expect_column_values_to_be_in_set", {"column": "_geom_empty", "value_set": [False]}),
        ("expect_column_values_to_be_in_set", {"column": "_geom_srid", "value_set": [2154]}),
        ("expect_column_values_to_be_in_set", {"column": "_geom_type", "value_set": ["MULTIPOLYGON"]}),
    ]
    assert not [k for _, k in exps if k.get("column") == "_geom_in_region"]  # in_region not asked
    points = {"type": "Point", "srid": 2154, "x": "lon", "y": "lat", "source_crs": "EPSG:4326"}
    exps = build_expectations(_source(geometry=points, keys=[]), None, in_region=True, lists=LISTS)
    geo = [k for n, k in exps if str(k.get("column", "")).startswith("_geom")]
    assert [k["column"] for k in geo] == ["_geom_in_region"]
    assert [n for n, k in exps if k.get("column") == "_geom_in_region"] == ["expect_column_values_to_be_in_set"]
    # without keys, the report names the rows by their first column
    assert geo[0]["meta"] == {"sample_query": 'SELECT "code", _geom_where FROM {batch} WHERE NOT _geom_in_region'}
    exps = build_expectations(_source(geometry=points, keys=["code", "dep"]), None, in_region=True, lists=LISTS)
    (geo,) = [k for _, k in exps if k.get("column") == "_geom_in_region"]
    assert geo["meta"]["sample_query"].startswith('SELECT "code", "dep", _geom_where FROM {batch}')


@pytest.mark.parametrize("kind", sorted(CODE_PATTERNS))
def test_every_code_check_is_its_regex(kind: str) -> None:
    assert expand_check(Check(check=kind, column="c"), LISTS) == (
        "expect_column_values_to_match_regex", {"column": "c", "regex": CODE_PATTERNS[kind]})
    assert expand_check(Check(check=kind, column="c", mostly=0.9), LISTS)[1]["mostly"] == 0.9


def test_references_with_a_key_and_with_a_share() -> None:
    name, kw = expand_check(Check(check="references", column="com", table="ref.commune", key="insee_com"), LISTS)
    assert name == "unexpected_rows_expectation"
    assert kw == {"unexpected_rows_query": 'SELECT "com" FROM {batch} WHERE "com" IS NOT NULL AND "com" NOT IN '
                                           '(SELECT "insee_com" FROM "ref"."commune" WHERE "insee_com" IS NOT NULL)',
                  "description": "every com exists in ref.commune.insee_com"}
    name, kw = expand_check(Check(check="references", column="com", table="ref.commune", mostly=0.95), LISTS)
    assert name == "unexpected_rows_expectation"
    assert kw["description"] == "at least 95% of com exist in ref.commune.com"
    assert "(SELECT count(*) FROM {batch}) * 0.050000 < (SELECT count(*) FROM {batch} WHERE" in \
        kw["unexpected_rows_query"]


# ---------------------------------------------------------------- the gate run in PostGIS
@pytest.fixture
def probe(db_uri: str) -> str:
    with psycopg.connect(db_uri) as conn:
        conn.execute("CREATE TABLE src.codes (code text)")
        conn.execute("INSERT INTO src.codes VALUES ('A'), ('B'), (NULL)")
        conn.execute("CREATE TABLE src.probe (code text, n integer, rate double precision, "
                     "_geom_in_region boolean, _geom_where text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO src.probe VALUES (%s, %s, %s, %s, %s)", ROWS)
    return db_uri


SUITE = [
    ("expect_table_row_count_to_be_between", {"min_value": 10}),                      # 0 fails: 5 rows
    ("expect_column_values_to_not_be_null", {"column": "code"}),                       # 1 fails: 1 null
    ("expect_column_values_to_be_unique", {"column": "code"}),                         # 2 fails: B twice
    expand_check(Check(check="rate", column="rate"), LISTS),                                 # 3 fails: 150
    ("expect_column_values_to_be_between", {"column": "n", "min_value": 0, "max_value": 10}),  # 4 passes
    ("expect_column_values_to_not_be_null", {"column": "n", "mostly": 0.5}),           # 5 passes, mostly
    ("expect_column_values_to_be_in_set", {                                           # 6 fails, sampled
        "column": "_geom_in_region", "value_set": [True], "description": "inside the regions",
        "meta": {"sample_query": 'SELECT "code", _geom_where FROM {batch} WHERE NOT _geom_in_region'}}),
    expand_check(Check(check="references", column="code", table="src.codes"), LISTS),       # 7 fails: C
    ("expect_column_values_to_not_be_null", {"column": "missing"}),                   # 8 raises: no column
    ("expect_table_row_count_to_be_between", {"min_value": 1}),                       # 9 passes
]


def test_each_failure_is_counted_sampled_and_said(probe: str, tmp_path) -> None:
    report = validate_table(probe, "src", "probe", "probe_suite", SUITE, "block", docs_dir=tmp_path / "docs")
    assert not report.success and report.policy == "block" and report.suite == "probe_suite"
    r = report.results
    assert len(r) == len(SUITE)
    # in the suite's order, whatever order GX returns them in
    assert [c.expectation for c in r] == [n for n, _ in SUITE]
    assert [c.success for c in r] == [False, False, False, False, True, True, False, False, False, True]
    assert [c.column for c in r] == [None, "code", "code", "rate", "n", "n", "_geom_in_region", None, "missing",
                                     None]

    assert r[0].observed_value == 5 and r[9].observed_value == 5  # row counts come back with their value
    assert r[0].describe() == "expect_table_row_count_to_be_between {'min_value': 10}: observed 5"
    assert (r[1].unexpected_count, r[1].unexpected_percent) == (1, 20.0)
    assert r[1].describe() == "expect_column_values_to_not_be_null on 'code': 1 unexpected (20.0 %); e.g. [None]"
    assert r[2].unexpected_count == 2 and r[2].sample == ["B", "B"]
    assert r[3].unexpected_count == 1 and r[3].sample == [150.0]
    assert r[3].describe() == ("expect_column_values_to_be_between on 'rate' {'min_value': 0.0, 'max_value': 100.0}: "
                               "1 unexpected (20.0 %); e.g. [150.0]")
    assert r[4].unexpected_count == 0  # passed, no mostly: nothing unexpected
    assert r[5].unexpected_count is None  # passed with `mostly`: some may have been unexpected
    # a column check's failing rows, sampled by its query: which row and where
    assert r[6].sample == [["B", "POINT(48.12 -1.67)"]]
    assert r[6].describe() == ("expect_column_values_to_be_in_set on '_geom_in_region' inside the regions: "
                               "1 unexpected (20.0 %); e.g. [['B', 'POINT(48.12 -1.67)']]")
    assert r[7].sample == [["C"]]
    assert r[7].describe().startswith("unexpected_rows_expectation every code exists in src.codes.code: ")
    assert r[8].observed_value.startswith("error: ") and "missing" in r[8].observed_value
    assert r[8].describe() == ("expect_column_values_to_not_be_null on 'missing': observed error: Error: The column "
                               '"missing" in BatchData does not exist.')

    summary = report.summary()
    assert {k: summary[k] for k in ("suite", "success", "policy", "evaluated", "failed")} == {
        "suite": "probe_suite", "success": False, "policy": "block", "evaluated": 10, "failed": 7}
    assert summary["failures"] == [c.describe() for c in report.failed]
    assert report.text().splitlines()[0] == "suite probe_suite: 3/10 expectations passed"
    assert report.text().splitlines()[1] == "  ✗ " + r[0].describe()
    assert len(report.text().splitlines()) == 8
    js = report.to_json()
    assert json.loads(json.dumps(js)) == js and len(js["results"]) == 10 and js["failed"] == 7
    assert js["results"][6]["sample_query"].startswith('SELECT "code"')
    assert (tmp_path / "docs" / "index.html").is_file()  # Data Docs of both passes


def test_a_passing_suite_and_its_stored_rows(probe: str) -> None:
    suite = [SUITE[4], SUITE[5], SUITE[9]]
    report = validate_table(probe, "src", "probe", "ok_suite", suite, "warn")
    assert report.success and report.failed == [] and report.policy == "warn"
    assert report.text() == "suite ok_suite: 3/3 expectations passed"
    with psycopg.connect(probe) as conn:
        record_results(conn, "run-1", report)
        bad = validate_table(probe, "src", "probe", "bad_suite", [SUITE[0], SUITE[3]], "block")
        record_results(conn, "run-2", bad)
        conn.commit()
        rows = conn.execute("SELECT run_id, suite, expectation, column_name, success, observed_value, "
                            "unexpected_count, unexpected_percent, sample FROM meta.validation_results "
                            "ORDER BY id").fetchall()
    assert rows == [
        ("run-1", "ok_suite", "expect_column_values_to_be_between", "n", True, None, 0, None, []),
        ("run-1", "ok_suite", "expect_column_values_to_not_be_null", "n", True, None, None, None, []),
        ("run-1", "ok_suite", "expect_table_row_count_to_be_between", None, True, "5", None, None, []),
        ("run-2", "bad_suite", "expect_table_row_count_to_be_between", None, False, "5", None, None, []),
        ("run-2", "bad_suite", "expect_column_values_to_be_between", "rate", False, None, 1, 20.0, [150.0]),
    ]


def test_the_same_suite_on_a_frame() -> None:
    df = pd.DataFrame(ROWS, columns=["code", "n", "rate", "_geom_in_region", "_geom_where"])
    report = validate_frame(df, "frame_suite", [SUITE[1], SUITE[3], SUITE[4], SUITE[9]])
    assert report.policy == "block" and not report.success
    assert [c.success for c in report.results] == [False, False, True, True]
    assert report.results[1].sample == [150.0] and report.results[3].observed_value == 5
    assert validate_frame(df, "f2", [SUITE[4]], policy="warn").success


# ---------------------------------------------------------------- small helpers
def test_describe_without_details_and_with_long_samples() -> None:
    c = CheckResult("expect_x", None, False)
    assert c.describe() == "expect_x: failed"
    assert CheckResult("expect_x", "c", True, unexpected_count=0).describe() == "expect_x on 'c': passed"
    c = CheckResult("expect_x", "c", False, unexpected_count=3, sample=list(range(8)), kwargs={"column": "c",
                    "batch_id": "b", "result_format": "SUMMARY", "value_set": [1]})
    assert c.describe() == "expect_x on 'c' {'value_set': [1]}: 3 unexpected (0.0 %); e.g. [0, 1, 2, 3, 4]"
    rep = ValidationReport("s", True, [CheckResult("e", None, True)], "warn")
    assert rep.summary()["failures"] == [] and rep.summary()["evaluated"] == 1


def test_uris_and_json_values() -> None:
    assert sqlalchemy_uri("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert sqlalchemy_uri("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert sqlalchemy_uri("sqlite:///x") == "sqlite:///x"
    import datetime as dt
    import decimal

    assert _jsonable({1: (decimal.Decimal("1.5"), {2}), "d": dt.date(2024, 1, 1), "n": None, "b": True}) == {
        "1": ["1.5", [2]], "d": "2024-01-01", "n": None, "b": True}


def test_validations_leave_no_connection_open(probe: str) -> None:
    """A process validating table after table (500 GTFS feeds of a national collection) keeps its server
    connections: GX's engines pool none (each held two until a garbage collection, and a collection of 500 feeds
    ran out of server connections)."""
    def held() -> int:
        with psycopg.connect(probe) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()").fetchone()[0]

    before = held()
    for i in range(6):
        validate_table(probe, "src", "probe", f"leak_{i}", [SUITE[4], SUITE[0]], "warn")
    assert held() == before
