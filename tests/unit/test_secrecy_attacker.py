"""The attacker model of publish/secrecy.py on small tables whose bounds are worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from qpvhub.publish.secrecy import (
    PUBLIC_FLAG,
    Rule,
    SecrecyError,
    Table,
    _decimals_eps,
    apply_secrecy,
    below_threshold,
    bounds,
    describe,
    disclosures,
    suppress,
    table_from_published,
)

POP = {"population": Rule("count")}
PER = {**POP, "eq_1000": Rule("rate", "population", "equipements", "population", 1000.0)}
INF = math.inf


def _k(code: str, scope: str = "qpv", ind: str = "population") -> tuple[str, str, int, str]:
    return (ind, scope, 2015, code)


def _table(values: dict, flags: set, communes: dict | None = None) -> Table:
    return Table(values, {k: PUBLIC_FLAG for k in flags}, communes or {(2015, "C"): {"A", "B"}})


def test_identity_bounds_are_exact() -> None:
    """C = A + B + hors, with C = 100 and hors = 60 published: A and B hidden, A + B = 40."""
    vals = {_k("A"): None, _k("B"): None, _k("C", "commune"): 100.0, _k("C", "commune_hors_qpv"): 60.0}
    b = bounds(_table(vals, {_k("A"), _k("B")}), POP)
    assert b[_k("A")] == (0, 40) and b[_k("B")] == (0, 40)
    vals[_k("B")] = 15.0  # B published: A is recomputed exactly
    b = bounds(_table(vals, {_k("A")}), POP)
    assert b[_k("A")] == (25, 25)
    assert disclosures(_table(vals, {_k("A")}), POP, 11) == [(_k("A"), 25, 25)]


def test_hidden_total_is_bounded_by_its_terms() -> None:
    vals = {_k("A"): 30.0, _k("B"): 20.0, _k("C", "commune"): None, _k("C", "commune_hors_qpv"): 50.0}
    b = bounds(_table(vals, {_k("C", "commune")}), POP)
    assert b[_k("C", "commune")] == (100, 100)
    vals[_k("B")] = None  # one term hidden too: the total is at least the published ones
    b = bounds(_table(vals, {_k("C", "commune"), _k("B")}), POP)
    assert b[_k("C", "commune")] == (80, INF) and b[_k("B")] == (0, INF)


def test_flags_of_other_indicators_are_not_counts_to_protect() -> None:
    vals = {_k("A"): None, _k("B"): 15.0, _k("C", "commune"): 100.0, _k("C", "commune_hors_qpv"): 60.0,
            _k("A", ind="equipements"): None}
    t = _table(vals, {_k("A"), _k("A", ind="equipements")})
    assert [k for k, _, _ in disclosures(t, PER, 11)] == [_k("A")]


def test_the_threshold_range_is_allowed_and_one_less_is_not() -> None:
    """Width t - 1 is what the rule itself discloses of a primary cell: allowed; t - 2 is not."""
    vals = {_k("A"): None, _k("B"): None, _k("C", "commune"): 100.0, _k("C", "commune_hors_qpv"): 90.0}
    t = _table(vals, {_k("A"), _k("B")})  # A + B = 10
    assert disclosures(t, POP, 11) == []  # width 10 = t - 1
    assert disclosures(t, POP, 12) == [(_k("A"), 0, 10), (_k("B"), 0, 10)]  # width 10 < 11


def test_per_capita_formula_bounds_both_ways() -> None:
    """eq_1000 = 1000 × equipements / population: a published rate and numerator bound the population,
    a published rate and population bound the numerator."""
    vals = {_k("A"): None, _k("A", ind="equipements"): 20.0, _k("A", ind="eq_1000"): 4.0}
    t = Table(vals, {_k("A"): PUBLIC_FLAG}, {})
    lo, hi = bounds(t, PER)[_k("A")]
    assert (lo, hi) == (4994, 5006)  # 1000 × 20 / [4.005, 3.995]: [4993.8, 5006.3], integers
    vals2 = {_k("A"): 5000.0, _k("A", ind="equipements"): None, _k("A", ind="eq_1000"): 4.0}
    t2 = Table(vals2, {_k("A", ind="equipements"): PUBLIC_FLAG}, {})
    n_lo, n_hi = bounds(t2, PER)[_k("A", ind="equipements")]
    assert n_lo == pytest.approx(19.975) and n_hi == pytest.approx(20.025)
    # a rate of 0 says nothing of the population
    vals3 = {_k("A"): None, _k("A", ind="equipements"): 0.0, _k("A", ind="eq_1000"): 0.0}
    assert bounds(Table(vals3, {_k("A"): PUBLIC_FLAG}, {}), PER)[_k("A")] == (0.0, INF)


def test_a_rate_is_read_to_its_last_decimal() -> None:
    assert _decimals_eps(4.0) == 0.5 and _decimals_eps(4.5) == 0.05 and _decimals_eps(4.25) == 0.005
    assert _decimals_eps(1 / 3) == 5e-7


def test_inconsistent_figures_keep_the_last_consistent_bounds() -> None:
    """A published identity that does not add up (figures of two releases) never makes an empty interval."""
    vals = {_k("A"): 30.0, _k("B"): None, _k("C", "commune"): 100.0, _k("C", "commune_hors_qpv"): 90.0}
    lo, hi = bounds(_table(vals, {_k("B")}), POP)[_k("B")]
    assert lo <= hi


def test_suppression_hides_the_smallest_other_term_then_asks_the_attacker() -> None:
    vals = {_k("A"): 5.0, _k("B"): 400.0, _k("D"): 300.0, _k("C", "commune"): 5000.0,
            _k("C", "commune_hors_qpv"): 4295.0}
    flags = suppress(_table(vals, set(), {(2015, "C"): {"A", "B", "D"}}), POP, 11)
    assert flags == {_k("A"): "effectif inférieur au seuil",
                     _k("D"): "secret secondaire (recalculable depuis le total de la commune)"}


def test_apply_secrecy_keeps_the_frame_index_and_its_order() -> None:
    rows = pd.DataFrame({"code_qp": ["A", "B", "A"], "generation": [2015] * 3,
                         "indicator_id": ["population", "population", "population"],
                         "scope": ["qpv", "qpv", "commune"], "value": [5.0, 400.0, 405.0],
                         "insee_com": ["C"] * 3}, index=[10, 20, 30])
    out = apply_secrecy(rows, POP, 11)
    assert list(out.index) == [10, 20, 30]
    assert out.loc[10, "secret"] == "effectif inférieur au seuil" and pd.isna(out.loc[10, "value"])
    assert out.loc[20, "secret"].startswith("secret secondaire") and pd.isna(out.loc[30, "secret"])
    assert out.loc[30, "value"] == 405.0


def test_below_threshold_is_strict() -> None:
    rows = pd.DataFrame({"indicator_id": ["population", "population", "autre"], "value": [10.0, 11.0, 1.0]})
    assert below_threshold(rows, POP, 11)["value"].tolist() == [10.0]


def test_table_from_published_reads_columns_flags_and_communes() -> None:
    df = pd.DataFrame({
        "code_qp": ["A", "B"], "generation": [2015, 2015], "insee_com": ["C", "C"],
        "population": [None, 400.0], "population__secret": [PUBLIC_FLAG, None],
        "population__commune": [5000.0, 5000.0], "population__hors_qpv": [None, None],
        "population__hors_qpv__secret": [PUBLIC_FLAG, PUBLIC_FLAG],
        "equipements": [3.0, 7.0], "eq_1000": [None, 17.5], "eq_1000__secret": [PUBLIC_FLAG, ""],
        "autre": [1.0, 2.0]})
    t = table_from_published(df, PER)
    assert t.communes == {(2015, "C"): {"A", "B"}}
    assert t.values[_k("A")] is None and t.values[_k("B")] == 400.0
    assert t.values[_k("C", "commune")] == 5000.0 and t.values[_k("C", "commune_hors_qpv")] is None
    assert t.values[_k("A", ind="equipements")] == 3.0 and ("autre", "qpv", 2015, "A") not in t.values
    assert set(t.flags) == {_k("A"), _k("C", "commune_hors_qpv"), _k("A", ind="eq_1000")}
    assert [k for k, _, _ in disclosures(t, PER, 11)] == []


def test_describe_names_the_cell_and_its_bounds() -> None:
    text = describe([(_k("QP035003"), 5271, 5284), (_k("35238", "commune_hors_qpv"), 0, 9)])
    assert text == ("population of QP035003 (2015) bounded within [5271, 5284]; "
                    "population__hors_qpv of 35238 (2015) bounded within [0, 9]")


def test_an_unprotectable_cell_is_an_error_not_a_leak() -> None:
    """A hidden count bounded by a rate formula, with nothing left to hide in any identity."""
    vals = {_k("A"): 5.0, _k("A", ind="equipements"): 1.0, _k("A", ind="eq_1000"): 200.0}
    with pytest.raises(SecrecyError, match=r"population of A \(2015\) bounded within \[5, 5\] and no cell"):
        suppress(Table(vals, {}, {}), {**PER, "eq_1000": Rule("none", None, "equipements", "population", 1000)},
                 11)


# ------------------------------------------------------------------ propagation details (mutation testing)

def _per_capita_a(total: float, hors: float | None) -> dict:
    """A hidden but bounded to [4994, 5006] by its published per-capita value; B hidden; C and hors given."""
    vals = {_k("A"): None, _k("A", ind="equipements"): 20.0, _k("A", ind="eq_1000"): 4.0, _k("B"): None,
            _k("C", "commune"): total}
    if hors is not None:
        vals[_k("C", "commune_hors_qpv")] = hors
    return vals


def test_bounds_need_several_rounds_and_stay_exact() -> None:
    """The formula bounds A; only then does the identity bound B (a second round)."""
    t = _table(_per_capita_a(10_000, 3000), {_k("A"), _k("B")})
    b = bounds(t, PER)
    assert b[_k("A")] == (4994, 5006)
    assert b[_k("B")] == (10_000 - 3000 - 5006, 10_000 - 3000 - 4994)


def test_a_term_with_a_lower_bound_is_not_over_tightened() -> None:
    """C = 14,990 with A in [4994, 5006]: the identity says A ≤ 14,990, nothing tighter."""
    b = bounds(_table(_per_capita_a(14_990, None), {_k("A"), _k("B")}), PER)
    assert b[_k("A")] == (4994, 5006) and b[_k("B")] == (0, 14_990 - 4994)
    assert b[_k("C", "commune_hors_qpv")] == (0, 14_990 - 4994)  # a missing term is at least 0, not more


def test_finite_terms_bound_each_other_from_below() -> None:
    vals = _per_capita_a(5100, 0)
    vals[_k("B")] = 100.0
    b = bounds(_table(vals, {_k("A")}), PER)
    assert b[_k("A")] == (5000, 5000)


def test_formulas_without_their_other_term_are_skipped_not_fatal() -> None:
    """The first QPV publishes a rate without its numerator (nothing to invert); the next one has both."""
    vals = {_k("A"): None, _k("A", ind="eq_1000"): 4.0,
            _k("B"): None, _k("B", ind="equipements"): 10.0, _k("B", ind="eq_1000"): 0.5}
    t = Table(vals, {_k("A"): PUBLIC_FLAG, _k("B"): PUBLIC_FLAG}, {})
    b = bounds(t, PER)
    assert b[_k("A")] == (0.0, INF)
    lo, hi = b[_k("B")]  # 1000 × 10 / [0.505, 0.495]: a rate below 1 still bounds the population
    assert (lo, hi) == (19_802, 20_202)


def test_an_absent_value_is_unknown_not_published() -> None:
    rows = pd.DataFrame({"code_qp": ["A", "B", "A", "A"], "generation": [2015] * 4,
                         "indicator_id": ["population"] * 4, "scope": ["qpv", "qpv", "commune", "commune_hors_qpv"],
                         "value": [float("nan"), 5.0, 100.0, 60.0], "insee_com": ["C"] * 4})
    out = apply_secrecy(rows, POP, 11)
    assert pd.isna(out["secret"].iloc[0]) and out["secret"].iloc[1] == "effectif inférieur au seuil"
    assert out["value"].iloc[2:].tolist() == [100.0, 60.0]  # A + B = 40 unknown: nothing more to hide


def test_published_values_first_non_empty_wins_and_empty_strings_are_empty() -> None:
    df = pd.DataFrame({"code_qp": ["A", "B"], "generation": [2015, 2015], "insee_com": ["C", "C"],
                       "population": ["", "400"], "population__commune": [None, 5000.0]})
    t = table_from_published(df, POP)
    assert t.values[_k("A")] is None and t.values[_k("B")] == 400.0
    assert t.values[_k("C", "commune")] == 5000.0
