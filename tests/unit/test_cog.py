"""Commune codes followed through INSEE's real commune events (the bundled cut of v_mvt_commune_2025)."""

import csv
import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from qpvhub.catalog.loader import load_catalog
from qpvhub.catalog.model import Source
from qpvhub.ingest.cog import Event, passage, summary

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "include" / "sample_data"


def events() -> list[Event]:
    with (SAMPLES / "v_mvt_commune_2025_reg52_53_DERIVED.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["TYPECOM_AV"] == r["TYPECOM_AP"] == "COM" and r["MOD"] != "10"]
    return [Event(r["MOD"], dt.date.fromisoformat(r["DATE_EFF"]), r["COM_AV"], r["COM_AP"]) for r in rows]


def current_communes() -> set[str]:
    with (SAMPLES / "v_commune_2026_reg52_53_DERIVED.csv").open(encoding="utf-8", newline="") as f:
        return {r["COM"] for r in csv.DictReader(f) if r["TYPECOM"] == "COM"}


def iris_2021_communes() -> set[str]:
    with (SAMPLES / "insee_iris_ref_2021_reg52_53.csv").open(encoding="utf-8", newline="") as f:
        return {r["DEPCOM"] for r in csv.DictReader(f, delimiter=";")}


def test_iris_2021_communes_all_exist_in_cog_2026_once_translated() -> None:
    codes = iris_2021_communes()
    cog = current_communes()
    assert len(codes - cog) == 17  # what the 2021 geography holds that COG 2026 no longer does
    p = passage(events(), codes, 2021, 2026)
    assert set(p.target) == codes - cog
    assert {p.target.get(c, c) for c in codes} <= cog
    # a commune nouvelle (2025), a chief-town code change (2025), a 2022 commune nouvelle, a 2024 one
    assert p.target["22027"] == "22241" and p.target["22043"] == "22241"
    assert p.target["49069"] == "49126"
    assert p.target["56049"] == "56213" and p.target["85307"] == "85001" and p.target["35112"] == "35062"
    assert p.steps["49069"] == ["2025-01-01 changement de code dû à un transfert de chef-lieu (50): 49069 → 49126"]
    assert p.steps["22027"] == ["2025-01-01 création de commune nouvelle (32): 22027 → 22241"]
    # Essarts-en-Bocage was split in 2024: its 2021 code stays, the others it split into are said
    assert p.split == {"85084": ["85165", "85212"]} and "85084" not in p.target


def test_a_code_merged_then_re_established_is_itself_again() -> None:
    """L'Oie (85165) merged into Essarts-en-Bocage (85084) in 2016 and was re-established in 2024."""
    p = passage(events(), {"85165", "85212", "85084"}, 2015, 2026)
    assert p.target == {}
    assert p.steps["85165"][0].startswith("2016-01-01 création de commune nouvelle (32): 85165 → 85084")
    assert p.steps["85165"][-1] == "2024-01-01 rétablissement (21): 85165 rétablie"
    assert p.split == {"85084": ["85165", "85212"]}
    # up to COG 2023 it is still part of the commune nouvelle
    assert passage(events(), {"85165"}, 2015, 2023).target == {"85165": "85084"}


def test_window_a_cog_includes_the_events_of_its_first_day() -> None:
    ev = events()
    assert passage(ev, {"22027"}, 2025, 2026).target == {}  # COG 2025 already has Plumieux
    assert passage(ev, {"22027"}, 2024, 2025).target == {"22027": "22241"}
    assert passage(ev, {"22027"}, 2024, 2024).target == {}


def test_chained_events_follow_every_step() -> None:
    """Codes of an old geography pass through several events (1943 onwards) to their current commune."""
    codes = {e.com_av for e in events() if e.com_av[:2] in {"49", "85"}}
    p = passage(events(), codes, 1943, 2026)
    cog = current_communes()
    placed = {c: p.target.get(c, c) for c in codes if c not in p.dissolved}
    assert all(t in cog for t in placed.values() if t[:2] in {"49", "85"}), sorted(
        (c, t) for c, t in placed.items() if t not in cog)
    assert max(len(s) for s in p.steps.values()) >= 2


def test_summary_names_counts_and_splits() -> None:
    report = {"status": "translated", "from": 2021, "to": 2026, "columns": {"insee_com": {
        "codes": 17, "rows": 23, "rows_merged": 0, "split": [{"code": "85084", "into": ["85165", "85212"]}],
        "dissolved": []}}, "warning": "the events file ends on 2025-01-01"}
    text = summary(report)
    assert text.startswith("COG 2021 → 2026: insee_com: 17 code(s) translated on 23 row(s)")
    assert "kept on a commune split since (85084)" in text and "ends on 2025-01-01" in text


def test_catalogue_entries_on_older_geographies_declare_it() -> None:
    cat = load_catalog(ROOT / "include" / "sources")
    assert cat["iris_ref"].as_sample().cog_year() == 2021 and cat["iris_ref"].cog_year() == 2024
    # Filosofi: each release on its own geography (2019 on COG 2021, 2021 on COG 2022)
    assert cat["filosofi_iris"].for_release(2019).cog_year() == 2021
    assert cat["filosofi_iris"].for_release(2021).cog_year() == 2022
    assert cat["cog_communes"].cog_year() is None


def _spec(**cog) -> dict:
    return {"id": "t", "title": "t", "publisher": "p", "licence": "l", "sample": "x.csv", "format": "csv",
            "columns": {"insee_com": {"source": "COM", "description": "c"},
                        "taux": {"source": "T", "type": "double", "description": "r"}},
            "keys": ["insee_com"], "target": {"schema": "src", "table": "t"}, "millesime": "2021",
            "depends_on": ["cog_mouvements"], "cog": cog}


def test_aggregate_needs_a_rule_for_rates_and_the_events_dependency() -> None:
    with pytest.raises(ValidationError, match=r"cannot tell how \['taux'\] merge"):
        Source.model_validate(_spec(columns=["insee_com"], merged="aggregate"))
    assert Source.model_validate(_spec(columns=["insee_com"], merged="aggregate", rules={"taux": "first"}))
    with pytest.raises(ValidationError, match="add it to depends_on"):
        Source.model_validate({**_spec(columns=["insee_com"]), "depends_on": []})
    with pytest.raises(ValidationError, match="not declared"):
        Source.model_validate(_spec(columns=["code"]))
