"""Secrecy of the history as one table across releases: a count hidden in any release hides every value computed
on it in every release, and the history's gate refuses a rate published beside a count hidden elsewhere."""

import pandas as pd
import pytest

from qpvhub.platform.errors import QpvhubError
from qpvhub.publish import series as history
from qpvhub.publish.secrecy import PUBLIC_FLAG, Rule

RULES = {"population": Rule("count"), "taux_emploi": Rule("rate", "population"), "superficie_ha": Rule("none")}
QPV = {"generation": 2015, "lib_qp": "Cleunay", "insee_com": "35238", "lib_com": "Rennes", "dep": "35",
       "millesime": "x"}


def _series(rows: list[tuple]) -> pd.DataFrame:
    """Mart series rows: (code_qp, indicator, scope, release, value)."""
    return pd.DataFrame([{**QPV, "code_qp": c, "indicator_id": i, "scope": s, "release": r, "releases": [r],
                          "value": v} for c, i, s, r, v in rows])


def _evolutions() -> pd.DataFrame:
    return pd.DataFrame(columns=["code_qp", "generation", "indicator_id", "scope", "release_from", "release_to",
                                 "evolution", "unit", "reason"])


def test_a_rate_is_hidden_in_every_release_where_its_count_is_hidden_in_one() -> None:
    rows = [("QP035006", "population", "qpv", 2018, 1300.0), ("QP035006", "population", "qpv", 2022, 1320.0),
            ("QP035006", "taux_emploi", "qpv", 2019, 41.9),  # 2019: no population figure at all
            ("QP035006", "superficie_ha", "qpv", 2019, 80.0),  # not computed on a count: stays
            ("QP035002", "population", "qpv", 2018, 8000.0), ("QP035002", "taux_emploi", "qpv", 2019, 35.8)]
    table = history.published(_series(rows), _evolutions(), RULES, 1500)
    got = {(r.code_qp, r.indicator_id, r.release): (None if pd.isna(r.value) else r.value,
                                                     r.value__secret if isinstance(r.value__secret, str) else None)
           for r in table.itertuples()}
    assert got[("QP035006", "taux_emploi", 2019)] == (None, PUBLIC_FLAG)
    assert got[("QP035006", "superficie_ha", 2019)] == (80.0, None)
    assert got[("QP035002", "taux_emploi", 2019)] == (35.8, None)  # a published count leaves its rates published
    history.check(table, RULES, 1500, "t")  # the gate passes what published() wrote


def test_the_history_gate_refuses_a_rate_beside_a_count_hidden_in_another_release() -> None:
    base = {**QPV, "scope": "qpv", "release_previous": None, "evolution": None, "evolution_unit": None,
            "evolution_note": None, "code_qp": "QP035006"}
    table = pd.DataFrame([
        {**base, "indicator_id": "population", "release": 2018, "releases": "2018", "value": None,
         "value__secret": PUBLIC_FLAG},
        {**base, "indicator_id": "taux_emploi", "release": 2019, "releases": "2019", "value": 41.9,
         "value__secret": None}])[history.COLUMNS]
    with pytest.raises(QpvhubError, match="taux_emploi qpv of QP035006 = 41.9 is published while population is "
                                          "hidden"):
        history.check(table, RULES, 1500, "t")
