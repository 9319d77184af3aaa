"""Statistical secrecy on the real SIG Ville figures (bundled DEMO file, regions 52-53)."""

from __future__ import annotations

import csv
import io
import itertools
import re

import pandas as pd
import pytest
from qpvhub.publish.secrecy import PRIMARY, RATE, SECONDARY, Rule, apply_secrecy, below_threshold

from tests.conftest import SAMPLES

RULES = {"population": Rule("count"), "part_moins_25": Rule("rate", "population")}


def _num(cell: str) -> float | None:
    cell = re.sub(r"[\s\u202f\xa0]", "", cell)
    return float(cell.replace(",", ".")) if cell else None


@pytest.fixture(scope="module")
def long() -> pd.DataFrame:
    """The mart's long rows for population (QPV, commune, commune hors QPV) and the share under 25,
    built from the real file as the demographie family builds them."""
    text = (SAMPLES / "sigville_qpv2015_DEMO_2022_reg52_53.csv").read_text(encoding="utf-8-sig")
    rows = []
    for r in csv.DictReader(io.StringIO(text), delimiter=";"):
        pop, com, com_qp = _num(r["POP_MUN"]), _num(r["POP_COM"]), _num(r["POP_COM_QP"])
        base = {"code_qp": r["CODGEO"], "generation": 2015, "insee_com": r["LIB_COM"]}
        rows += [{**base, "indicator_id": "population", "scope": "qpv", "value": pop},
                 {**base, "indicator_id": "population", "scope": "commune", "value": com},
                 {**base, "indicator_id": "population", "scope": "commune_hors_qpv", "value": com - com_qp},
                 {**base, "indicator_id": "part_moins_25", "scope": "qpv", "value": _num(r["TX_TOT_0A24"])}]
    return pd.DataFrame(rows)


def _cell(df: pd.DataFrame, code: str, ind: str = "population", scope: str = "qpv") -> pd.Series:
    return df[(df.code_qp == code) & (df.indicator_id == ind) & (df.scope == scope)].iloc[0]


def _recomputable(df: pd.DataFrame) -> list[str]:
    """Suppressed cells a partner could solve from commune = hors QPV + Σ QPV (one unknown in an equation)."""
    found = []
    pop = df[df.indicator_id == "population"]
    for _, grp in pop.groupby("insee_com"):
        total = grp[grp.scope == "commune"]["value"].dropna()
        terms = pd.concat([grp[grp.scope == "qpv"], grp[grp.scope == "commune_hors_qpv"].head(1)])
        unknown = terms[terms["value"].isna()]
        if len(total) and len(unknown) == 1:
            found.append(unknown.iloc[0]["code_qp"] + "/" + unknown.iloc[0]["scope"])
    return found


def test_the_equation_holds_on_the_real_file(long: pd.DataFrame) -> None:
    """Without secrecy a hidden QPV population is exactly recomputable: the reason for secondary suppression."""
    rennes = long[(long.insee_com == "Rennes") & (long.indicator_id == "population")]
    qpv = rennes[rennes.scope == "qpv"]["value"].sum()
    hors = rennes[rennes.scope == "commune_hors_qpv"]["value"].iloc[0]
    assert qpv + hors == rennes[rennes.scope == "commune"]["value"].iloc[0] == 217_728


def test_default_threshold_suppresses_nothing_in_these_qpv(long: pd.DataFrame) -> None:
    out = apply_secrecy(long, RULES, 11)
    assert out["secret"].isna().all()
    assert below_threshold(out, RULES, 11).empty


@pytest.mark.parametrize("threshold", [1500, 2000, 4000, 8000])
def test_no_suppressed_population_can_be_recomputed(long: pd.DataFrame, threshold: int) -> None:
    out = apply_secrecy(long, RULES, threshold)
    assert below_threshold(out, RULES, threshold).empty
    assert _recomputable(out) == []
    # only cells of a group with two or more unknowns are hidden, and every hidden cell says why
    assert out.loc[out["value"].isna() & out["secret"].notna(), "secret"].isin([PRIMARY, RATE, SECONDARY]).all()


def test_rennes_at_1500_hides_the_smallest_other_qpv(long: pd.DataFrame) -> None:
    out = apply_secrecy(long, RULES, 1500)
    assert _cell(out, "QP035006")["secret"] == PRIMARY  # 1,317 inhabitants
    assert _cell(out, "QP035003")["secret"] == SECONDARY  # 5,271: the smallest published term
    assert _cell(out, "QP035006", "part_moins_25")["secret"] == RATE
    assert pd.isna(_cell(out, "QP035003", "part_moins_25")["secret"])  # its base is 5,271: a rate is safe
    assert _cell(out, "QP035002")["value"] == 8883 and _cell(out, "QP035002", scope="commune_hors_qpv")["value"] \
        == 217_728 - 33_227
    assert _cell(out, "QP035002", scope="commune")["value"] == 217_728  # INSEE publishes it anyway


def test_single_qpv_commune_hides_the_rest_of_the_commune(long: pd.DataFrame) -> None:
    out = apply_secrecy(long, RULES, 4000)
    assert _cell(out, "QP035001")["secret"] == PRIMARY  # Saint-Malo, 3,562
    hors = _cell(out, "QP035001", scope="commune_hors_qpv")
    assert hors["secret"] == SECONDARY and pd.isna(hors["value"])  # else 46,478 - hors = the QPV
    assert _cell(out, "QP035001", scope="commune")["value"] == 46_478


def test_hors_qpv_copies_stay_consistent(long: pd.DataFrame) -> None:
    """The hors-QPV value is repeated on each QPV row of a commune: all copies hidden or none."""
    for threshold in (1500, 2000, 4000, 8000):
        out = apply_secrecy(long, RULES, threshold)
        hors = out[(out.indicator_id == "population") & (out.scope == "commune_hors_qpv")]
        for _, grp in hors.groupby("insee_com"):
            assert grp["value"].isna().nunique() == 1


def test_combinations_never_leave_a_single_unknown(long: pd.DataFrame) -> None:
    """Brute force on Lorient's four QPV: whatever subset is primary-suppressed, no cell is recomputable."""
    lorient = long[long.insee_com == "Lorient"].copy()
    codes = sorted(lorient.code_qp.unique())
    for k in range(1, len(codes) + 1):
        for hidden in itertools.combinations(codes, k):
            trial = lorient.copy()
            mask = (trial.indicator_id == "population") & (trial.scope == "qpv") & trial.code_qp.isin(hidden)
            trial.loc[mask, "value"] = 1.0  # force below any threshold
            out = apply_secrecy(trial, RULES, 11)
            assert _recomputable(out) == [], hidden
