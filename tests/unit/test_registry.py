"""The indicator registry (sql/indicators/*.sql headers): what it reads, and every way a header is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qpvhub.indicators.families import RateSecrecy, load_families, parse_family
from qpvhub.platform.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

HEADER = """-- ---
-- family: {family}
-- sources: [sigville_demo]
-- requires: {requires}
-- indicators:
{indicators}-- ---
SELECT 1;
"""


def _ind(id_: str, secrecy: str = "") -> str:
    return (f"--   - id: {id_}\n--     label_fr: {id_}\n--     unit: u\n--     theme: t\n--     method: m\n"
            f"--     millesime: '2022'\n" + (f"--     secrecy: {secrecy}\n" if secrecy else ""))


def _write(tmp_path: Path, name: str, *, requires: str = "[src.sigville_demo]", indicators: str = "") -> Path:
    d = tmp_path / "indicators"
    d.mkdir(exist_ok=True)
    p = d / f"{name}.sql"
    p.write_text(HEADER.format(family=name, requires=requires, indicators=indicators or _ind(f"{name}_x")),
                 encoding="utf-8")
    return p


def test_the_shipped_registry_is_ordered_and_complete() -> None:
    families = load_families(ROOT / "sql")
    order = [f.header.family for f in families]
    assert order.index("ratios") > order.index("emploi") and order.index("ratios") > order.index("offres_emploi")
    ids = [i.id for f in families for i in f.header.indicators]
    assert len(ids) == len(set(ids)) == 54  # 40 on the 2015 list and the commune geography, 14 of the 2024 list
    # each family says why a QPV may have no value (the fiche quartier shows it beside « non disponible »)
    assert all(len(f.header.absent_fr) > 20 for f in families), [f.header.family for f in families
                                                                 if not f.header.absent_fr]
    by_id = {i.id: i for f in families for i in f.header.indicators}
    assert by_id["population"].secrecy == "count"
    per = by_id["equipements_500m_pour_1000_hab"].secrecy
    assert isinstance(per, RateSecrecy) and (per.rate_of, per.numerator, per.denominator, per.per) == (
        "population", "equipements_500m", "population", 1000.0)
    assert by_id["superficie_ha"].secrecy is None and by_id["superficie_ha"].range == (1.0, 2000.0)
    fam = next(f for f in families if f.header.family == "geographie")
    assert fam.sql.startswith("SELECT") and not fam.sql.endswith(";") and fam.path.name == "geographie.sql"


def test_header_lines_become_yaml(tmp_path: Path) -> None:
    p = _write(tmp_path, "a", indicators=_ind("a_count", "count"))
    f = parse_family(p)
    assert f.header.family == "a" and f.header.sources == ["sigville_demo"]
    assert f.header.requires == ["src.sigville_demo"] and f.header.indicators[0].id == "a_count"
    assert f.sql == "SELECT 1"


@pytest.mark.parametrize("text, message", [
    ("SELECT 1;\n", "no header between '-- ---' lines at the top"),
    ("-- ---\n-- family: [unclosed\n-- ---\nSELECT 1;\n", "invalid header"),
    ("-- ---\n-- family: Bad-Name\n-- sources: []\n-- indicators: []\n-- ---\nSELECT 1;\n", "invalid header"),
    ("-- ---\n-- family: a\n-- sources: []\n-- indicators: []\n-- surprise: 1\n-- ---\nSELECT 1;\n",
     "invalid header"),
])
def test_bad_headers_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.sql"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as exc:
        parse_family(p)
    assert str(p) in str(exc.value)


@pytest.mark.parametrize("req", ["src.x; DROP TABLE y", "public.t", "indicator:Bad", "src"])
def test_requires_entries_are_checked(tmp_path: Path, req: str) -> None:
    p = _write(tmp_path, "a", requires=f'["{req}"]')
    with pytest.raises(ConfigError, match=r"requires entry .* is neither schema.table nor indicator:<id>"):
        parse_family(p)


def test_families_come_after_the_indicators_they_require(tmp_path: Path) -> None:
    _write(tmp_path, "a_ratio", requires='["indicator:z_base_x"]', indicators=_ind("a_ratio_x"))
    _write(tmp_path, "m_middle", requires='["indicator:a_ratio_x"]', indicators=_ind("m_middle_x"))
    _write(tmp_path, "z_base", indicators=_ind("z_base_x"))
    assert [f.header.family for f in load_families(tmp_path)] == ["z_base", "a_ratio", "m_middle"]


def test_unknown_required_indicator_and_cycles_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a", requires='["indicator:nowhere"]')
    with pytest.raises(ConfigError, match=r"indicator family a requires indicators no family defines: "
                                          r"\['indicator:nowhere'\]"):
        load_families(tmp_path)
    shutil.rmtree(tmp_path / "indicators")
    _write(tmp_path, "a", requires='["indicator:b_x"]')
    _write(tmp_path, "b", requires='["indicator:a_x"]')
    with pytest.raises(ConfigError, match=r"require each other in a cycle: a, b"):
        load_families(tmp_path)


def test_an_indicator_defined_twice_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a", indicators=_ind("same"))
    _write(tmp_path, "b", indicators=_ind("same"))
    with pytest.raises(ConfigError, match=r"indicator 'same' defined in .*a.sql and .*b.sql"):
        load_families(tmp_path)


@pytest.mark.parametrize("secrecy, message", [
    ("{rate_of: nothing}", r"secrecy rate_of 'nothing' is not an indicator declared 'secrecy: count'"),
    ("{rate_of: a_count, numerator: a_other, denominator: a_other}",
     r"rate_of 'a_count' must be its numerator or its denominator"),
    ("{rate_of: a_count, numerator: ghost, denominator: a_count}", r"secrecy names 'ghost', which is no indicator"),
    ("{rate_of: a_count, denominator: ghost, numerator: a_count}", r"secrecy names 'ghost', which is no indicator"),
    ("{rate_of: a_count, per: thousand}", "invalid header"),
    ("{rate: a_count}", "invalid header"),
])
def test_secrecy_declarations_are_checked(tmp_path: Path, secrecy: str, message: str) -> None:
    _write(tmp_path, "a", indicators=_ind("a_count", "count") + _ind("a_other") + _ind("a_rate", secrecy))
    with pytest.raises(ConfigError, match=message):
        load_families(tmp_path)


def test_a_rate_without_a_formula_and_one_with_it_load(tmp_path: Path) -> None:
    _write(tmp_path, "a", indicators=_ind("a_count", "count") + _ind("a_other")
           + _ind("a_rate", "{rate_of: a_count}")
           + _ind("a_per", "{rate_of: a_count, numerator: a_other, denominator: a_count, per: 1000}"))
    by_id = {i.id: i.secrecy for f in load_families(tmp_path) for i in f.header.indicators}
    assert by_id["a_rate"] == RateSecrecy(rate_of="a_count") and by_id["a_per"].per == 1000.0
