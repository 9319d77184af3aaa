"""Typing of source values: French numbers, clear errors naming line/feature and column."""

import pandas as pd
import pytest

from qpvhub.catalog.model import Source
from qpvhub.ingest.convert import RegionScope, check_columns, convert_batch, srid_of
from qpvhub.ingest.copy import frozen_heap
from qpvhub.platform.errors import InputError


def _source(**cols) -> Source:
    return Source.model_validate({
        "id": "t", "title": "t", "publisher": "p", "licence": "l", "url": "file:///x.csv", "format": "csv",
        "reader": {"decimal": ","}, "target": {"schema": "src", "table": "t"},
        "columns": {k: {"source": k.upper(), "type": v, "description": k} for k, v in cols.items()},
    })


def test_french_numbers_with_narrow_nbsp_and_decimal_comma() -> None:
    src = _source(pop="integer", tp60="double")
    df = pd.DataFrame({"POP": ["6\u202f206", "1 964 ", None], "TP60": ["43,2", "7", ""], "__feature": [2, 3, 4]})
    out = convert_batch(df, src, "f.csv", "run1")
    assert list(out["pop"]) == [6206, 1964, pd.NA]
    assert out["tp60"].iloc[0] == pytest.approx(43.2) and pd.isna(out["tp60"].iloc[2])
    assert set(out["source_run_id"]) == {"run1"}


def test_bad_number_names_line_and_column() -> None:
    src = _source(pop="integer")
    df = pd.DataFrame({"POP": ["12", "n.d."], "__feature": [2, 3]})
    expected = r"source t, file f.csv, line 3, column 'POP': not a number \(integer\): 'n.d.'"
    with pytest.raises(InputError, match=expected):
        convert_batch(df, src, "f.csv", "r")


def test_fraction_in_integer_column_is_refused() -> None:
    df = pd.DataFrame({"POP": ["12,5"], "__feature": [7]})
    with pytest.raises(InputError, match="line 7.*not a whole number"):
        convert_batch(df, _source(pop="integer"), "f.csv", "r")


def test_missing_columns_are_all_named() -> None:
    with pytest.raises(InputError, match=r"column 'POP': missing column\(s\) \['POP', 'TP60'\]; the file has \['X'\]"):
        check_columns(_source(pop="integer", tp60="double"), ["X"], "f.csv")


def test_srid_of_crs84_and_lambert93() -> None:
    assert srid_of("OGC:CRS84", "s") == 4326
    assert srid_of("EPSG:2154", "s") == 2154
    with pytest.raises(InputError, match="unknown CRS"):
        srid_of("EPSG:999999", "s")


def test_filtered_batches_keep_values_in_their_rows() -> None:
    """Row filters leave gaps in the index: parsed numbers must stay with their rows."""
    src = _source(pop="integer").model_copy(update={"row_filter": {"KEEP": ["y"]}})
    df = pd.DataFrame({"POP": ["1", "2,0", "3", "4"], "KEEP": ["n", "y", "n", "y"], "__feature": [2, 3, 4, 5]})
    out = convert_batch(df, src, "f.csv", "r")
    assert list(out["pop"]) == [2, 4] and list(out["__feature"]) == [3, 5]


def test_region_filter_keeps_malformed_codes_for_the_suite() -> None:
    """`1001` (01001 having lost its leading zero) is not another region's commune: it must not vanish."""
    src = Source.model_validate({
        "id": "t", "title": "t", "publisher": "p", "licence": "l", "url": "file:///x.csv", "format": "csv",
        "target": {"schema": "src", "table": "t"}, "region_filter": {"column": "insee_com", "level": "commune"},
        "columns": {"insee_com": {"source": "DEPCOM", "description": "c"}},
    })
    df = pd.DataFrame({"DEPCOM": ["01001", "1001", "35238", "2A004", None], "__feature": [2, 3, 4, 5, 6]})
    out = convert_batch(df, src, "f.csv", "r", RegionScope(frozenset({"01", "2A"})))
    assert [None if pd.isna(v) else v for v in out["insee_com"]] == ["01001", "1001", "2A004", None]


def test_the_heap_is_frozen_while_a_file_streams_and_given_back_even_on_failure() -> None:
    """A freeze left behind would hide every later object from the cyclic collector for good."""
    import gc

    before = gc.get_freeze_count()
    with pytest.raises(InputError), frozen_heap():
        assert gc.get_freeze_count() > before
        raise InputError("bad value", source="s", file="f.csv", line=3, column="c")
    assert gc.get_freeze_count() == before
