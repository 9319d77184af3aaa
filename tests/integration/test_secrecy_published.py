"""Statistical secrecy judged on what partners download: the attacker check over every published file.

The review reproduced a leak on the demo data: at a threshold of 1,500, QP035003's population (hidden
by secondary suppression) came back within [5,271; 5,284] from `equipements_500m` and
`equipements_500m_pour_1000_hab`, and then Rennes = hors QPV + Σ QPV gave QP035006's. These tests read
the CSV files back from the store, as a partner would, and bound every hidden count from them.
"""

from __future__ import annotations

import json

import pandas as pd
import psycopg
import pytest

from qpvhub.indicators.families import load_families
from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.publish import publish_region, secrecy_rules
from qpvhub.publish.secrecy import bounds, disclosures, table_from_published
from tests.conftest import LISTS

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

THRESHOLDS = (11, 1500, 4000, 9000)


def _load(env, catalog) -> None:
    for sid in ("cog_communes", "qpv_2015", "sigville_demo", "sigville_ipro", "bpe", "rennes_job_offers"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    run_indicators(env)


def _published_tables(root) -> dict[str, pd.DataFrame]:
    """Every kept version of every product, region and départements read together, from the CSV files."""
    out: dict[str, list[pd.DataFrame]] = {}
    for pkg_path in sorted(root.glob("*/*/datapackage.json")):
        if pkg_path.parent.name == "latest":
            continue
        pkg = json.loads(pkg_path.read_text(encoding="utf-8"))
        threshold = pkg["qpvhub"]["statistical_secrecy"]["threshold"]
        main = next(r["path"] for r in pkg["resources"] if r["format"] == "csv" and "_theme_" not in r["path"])
        df = pd.read_csv(pkg_path.parent / main, dtype={"insee_com": str, "dep": str, "code_qp": str})
        out.setdefault(f"threshold {threshold}", []).append(df)
    # a partner may combine the region's file with the départements' of the same rule
    return {k: pd.concat(v).drop_duplicates("code_qp") for k, v in out.items()}


def test_no_hidden_cell_recoverable_at_any_threshold(env, catalog, regions) -> None:
    _load(env, catalog)
    rules = secrecy_rules(load_families(env.settings.sql_dir))
    root = env.settings.store.path / "published" / "53"
    for threshold in THRESHOLDS:
        res = publish_region(env, regions["53"], threshold=threshold)
        tables = _published_tables(root)
        # raising the threshold withdrew the versions published under a weaker rule, and said so
        assert list(tables) == [f"threshold {threshold}"], list(tables)
        if threshold > THRESHOLDS[0]:
            assert res.withdrawn and all(p.withdrawn for p in res.parts)
        table = table_from_published(tables[f"threshold {threshold}"], rules)
        assert disclosures(table, rules, threshold) == []
        hidden = [k for k in table.flags if rules.get(k[0]) and rules[k[0]].kind == "count"]
        if threshold >= 1500:
            assert hidden, threshold  # there is something to protect at these thresholds
        b = bounds(table, rules)
        for key in hidden:
            lo, hi = b[key]
            assert hi - lo >= threshold - 1, (key, lo, hi)
    with psycopg.connect(env.uri) as conn:
        withdrawn = conn.execute("SELECT count(*) FROM meta.publications WHERE status = 'withdrawn'").fetchone()[0]
    assert withdrawn == 2 * (len(THRESHOLDS) - 1)  # region and dép. 35 products, at each raise


def test_the_reviewed_leak_is_closed(env, catalog, regions) -> None:
    """At 1,500: QP035003's per-capita facilities are hidden with its population; the published
    equipements_500m alone no longer bounds it, and QP035006 stays within its whole range."""
    _load(env, catalog)
    publish_region(env, regions["53"], threshold=1500)
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    csv = pd.read_csv(latest / "qpv_profil_53.csv", dtype={"insee_com": str, "dep": str}).set_index("code_qp")
    assert pd.notna(csv.loc["QP035003", "equipements_500m"])  # the numerator is published…
    assert pd.isna(csv.loc["QP035003", "population"])
    assert pd.isna(csv.loc["QP035003", "equipements_500m_pour_1000_hab"])  # …so the per-capita value is not
    assert csv.loc["QP035003", "equipements_500m_pour_1000_hab__secret"] == "secret statistique"
    rules = secrecy_rules(load_families(env.settings.sql_dir))
    b = bounds(table_from_published(csv.reset_index(), rules), rules)
    lo, hi = b[("population", "qpv", 2015, "QP035006")]
    assert hi - lo >= 1499 and lo == 0
    lo, hi = b[("population", "qpv", 2015, "QP035003")]
    assert hi - lo >= 1499


def test_final_gate_runs_the_attacker(env, catalog, regions) -> None:
    """A table that hides QP035003's population but publishes its per-capita value is refused."""
    from qpvhub.platform.db import connect
    from qpvhub.platform.errors import QpvhubError
    from qpvhub.publish import check_secrecy, read_profile

    _load(env, catalog)
    families = load_families(env.settings.sql_dir)
    rules = secrecy_rules(families)
    with connect(env.uri) as conn:
        gdf, _, _ = read_profile(conn, regions['53'], families, 1500, LISTS)
    check_secrecy(gdf, rules, 1500, "qpv_profil_53")  # what the suppression produced passes
    row = gdf.code_qp == "QP035003"
    pop, n500 = 5271.0, float(gdf.loc[row, "equipements_500m"].iloc[0])
    gdf.loc[row, "equipements_500m_pour_1000_hab"] = round(1000 * n500 / pop, 2)
    gdf.loc[row, "equipements_500m_pour_1000_hab__secret"] = None
    with pytest.raises(QpvhubError, match=r"hidden cells recoverable from the published ones: population of "
                                          r"QP035003 \(2015\) bounded within \[52\d\d, 52\d\d\]"):
        check_secrecy(gdf, rules, 1500, "qpv_profil_53")
