"""Suites as data: automatic expectations and the project's building blocks."""

import re

import pytest

from qpvhub.catalog.loader import load_source
from qpvhub.catalog.model import CODE_PATTERNS, Check
from qpvhub.platform.errors import ConfigError
from qpvhub.quality.suites import build_expectations, expand_check
from tests.conftest import LISTS, ROOT


@pytest.mark.parametrize("kind, good, bad", [
    ("insee_commune", ["01001", "2A004", "97411", "35238"], ["1001", "2C004", "350238", "AB123"]),
    ("departement", ["01", "2A", "2B", "35", "971"], ["1", "2C", "350", "20"[:1]]),
    ("iris", ["352380101", "2A0040000"], ["35238010", "35238_0101"]),
])
def test_code_patterns(kind: str, good: list[str], bad: list[str]) -> None:
    rx = re.compile(CODE_PATTERNS[kind])
    assert all(rx.match(v) for v in good)
    assert not any(rx.match(v) for v in bad)


@pytest.mark.parametrize("year, good, bad", [
    (2015, ["QP035001", "QP02A001", "QP971001"], ["QN03504M", "QP35001", "QP035001A"]),
    (2024, ["QN04405M", "QN02A01I", "QN03501I"], ["QP035001", "QN044051", "QN0440M"]),
])
def test_qpv_codes_of_each_list_come_from_the_registry(year: int, good: list[str], bad: list[str]) -> None:
    name, kw = expand_check(Check(check="qpv", list=year, column="code_qp"), LISTS)
    rx = re.compile(kw["regex"])
    assert name == "expect_column_values_to_match_regex" and kw["regex"] == LISTS.get(year).code_pattern
    assert all(rx.match(v) for v in good) and not any(rx.match(v) for v in bad)
    assert all(LISTS.of_code(v).year == year for v in good)
    anyl = re.compile(expand_check(Check(check="qpv", column="c"), LISTS)[1]["regex"])  # no list: any known one
    assert all(anyl.match(v) for v in good) and not anyl.match("QX035001")


def test_building_blocks_expand_to_gx_expectations() -> None:
    assert expand_check(Check(check="rate", column="taux"), LISTS) == (
        "expect_column_values_to_be_between", {"column": "taux", "min_value": 0, "max_value": 100})
    assert expand_check(Check(check="count", column="n", mostly=0.95), LISTS) == (
        "expect_column_values_to_be_between", {"column": "n", "min_value": 0, "mostly": 0.95})
    name, kw = expand_check(Check(check="references", column="insee_com", table="ref.commune"), LISTS)
    assert name == "unexpected_rows_expectation"
    assert '"insee_com" NOT IN (SELECT "insee_com" FROM "ref"."commune"' in kw["unexpected_rows_query"]


def test_references_table_must_be_ref_or_src() -> None:
    with pytest.raises(ValueError, match="references needs table"):
        Check(check="references", column="insee_com", table="pg_catalog.pg_authid")


def test_suite_of_qpv_2015(tmp_path) -> None:
    src = load_source(ROOT / "include" / "sources" / "qpv_2015.yml")
    exps = build_expectations(src, previous_rows=1400, in_region=True, lists=LISTS)
    assert exps[0] == ("expect_table_row_count_to_be_between", {"min_value": 700})  # not collapsed vs last load
    assert ("expect_column_values_to_be_unique", {"column": "code_qp"}) in exps
    assert ("expect_column_values_to_be_in_set", {"column": "_geom_type", "value_set": ["MULTIPOLYGON"]}) in exps
    in_region = [k for n, k in exps if k.get("column") == "_geom_in_region"]
    assert in_region == [{"column": "_geom_in_region", "value_set": [True],
                          "description": "every geometry inside the bounding box of the deployment's regions "
                                         "(swapped lon/lat or a wrong CRS land outside)",
                          "meta": {"sample_query": 'SELECT "code_qp", _geom_where FROM {batch} WHERE NOT '
                                                   "_geom_in_region"}}]
    assert ("expect_column_values_to_match_regex", {"column": "code_qp", "regex": LISTS.get(2015).code_pattern}) in exps


def test_check_on_unknown_column_is_refused(tmp_path) -> None:
    text = (ROOT / "include" / "sources" / "qpv_2015.yml").read_text(encoding="utf-8")
    p = tmp_path / "qpv_2015.yml"
    p.write_text(text.replace("{check: qpv, list: 2015, column: code_qp}", "{check: qpv, list: 2015, column: code}"))
    with pytest.raises(ConfigError, match="quality check 'qpv' names 'code', not one of the columns"):
        load_source(p)


def test_data_docs_views_reuse_compiled_templates(tmp_path) -> None:
    """The Data Docs views GX instantiates from the site config compile each template once: a second
    view's environment loads it from the bytecode cache instead of compiling it."""
    import jinja2

    from qpvhub.quality.views import CachedIndexPageView, CachedPageView, bytecode_cache

    compiled: list[str] = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        compiled.append(name)
        return original(self, source, name, filename, raw, defer_init)

    cache = bytecode_cache()
    directory, cache.directory = cache.directory, str(tmp_path)  # a fresh cache for the test
    jinja2.Environment.compile = counting
    try:
        CachedPageView().env.get_template("page.j2")
        first = len(compiled)
        CachedPageView().env.get_template("page.j2")
        CachedIndexPageView().env.get_template("page.j2")
    finally:
        jinja2.Environment.compile = original
        cache.directory = directory
    assert first >= 1 and len(compiled) == first
    assert any(tmp_path.iterdir())
