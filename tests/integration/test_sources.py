"""Every shipped catalogue entry loads from its offline sample through the one pipeline."""

from pathlib import Path

import psycopg
import pytest

from qpvhub.catalog.loader import load_catalog, load_order
from qpvhub.ingest.parts import ingest_collection
from qpvhub.ingest.pipeline import for_run, ingest
from qpvhub.ops.monitor import freshness
from qpvhub.platform.errors import QpvhubError
from tests.conftest import bpe_sample_text

pytestmark = pytest.mark.postgis

ROOT = Path(__file__).resolve().parents[2]
ORDER = [s.id for s in load_order(load_catalog(ROOT / "include" / "sources"))]
# rows expected from each bundled sample (after filters and rejects), checked against the files
EXPECTED_ROWS = {
    "bpe": 120, "cog_communes": 2430, "cog_mouvements": 1538, "commune_contours": 332, "epci_names": 18,
    "filosofi_iris": 1021, "flood_zones": {"dep_35": 3}, "gtfs": {"star": 1493, "sailcoop": 3}, "iris_ref": 3680,
    "isochrones": 16,
    "qpv_2015": 6, "rennes_bus_stops": 2021, "rennes_job_offers": 3918, "sigville_demo": 78, "sigville_ipro": 78,
    "sigville_revn": 78,
}


# Samples outside the deployment's regions (52, 53): skipped with the reason here, loaded elsewhere
# (qpv_2024: the 135 QPV of PACA, tests/integration/test_qpv_2024.py with region 93 configured).
OUTSIDE_REGIONS = {"qpv_2024": 135}
# Entries that bundle no file and say why (`no_sample`): INSEE's figures by QPV of the 2024 list, loaded from
# labelled FIXTURE archives in tests/integration/test_insee_qpv24.py, never invented for the demo.
NO_SAMPLE = {s.id for s in load_catalog(ROOT / "include" / "sources").values() if s.no_sample}


def test_expected_rows_cover_the_catalogue() -> None:
    assert sorted([*EXPECTED_ROWS, *OUTSIDE_REGIONS, *NO_SAMPLE]) == sorted(ORDER)


@pytest.mark.parametrize("source_id", ORDER)
def test_source_loads_from_its_sample(env, catalog, source_id: str) -> None:
    if source_id in NO_SAMPLE:
        with pytest.raises(QpvhubError, match=f"source {source_id} has no offline sample"):
            ingest(env, catalog[source_id], sample=True)
        # `qpvhub status`: never loaded, and what its schedule will load
        (f,) = [f for f in freshness(env.uri, catalog) if f.source_id == source_id]
        assert f.data_note == (f"no release loaded; the schedule loads the current one, "
                               f"{catalog[source_id].series.current} (no offline sample)"), f.data_note
        return
    for dep in catalog[source_id].depends_on:
        assert ingest(env, catalog[dep], sample=True).status == "success"
    src = catalog[source_id]
    if src.collection:  # every feed, each its partition
        for feed, res in ingest_collection(env, src, sample=True):
            assert res.status == "success" and res.rows_loaded == EXPECTED_ROWS[source_id][feed.id], feed.id
        _check_table(env, src.for_feed(src.feeds()[0]), EXPECTED_ROWS[source_id][src.feeds()[0].id])
        return
    res = ingest(env, src, sample=True)
    if source_id in OUTSIDE_REGIONS:
        assert res.status == "skipped" and f"none of the {OUTSIDE_REGIONS[source_id]} rows" in res.reason
        return
    assert res.status == "success" and res.validation["success"]
    assert res.rows_loaded == EXPECTED_ROWS[source_id]
    _check_table(env, for_run(src, sample=True), EXPECTED_ROWS[source_id])


def _check_table(env, src, expected: int) -> None:
    """The loaded table (partition): Lambert-93, documented, readable by analysts, with statistics."""
    t = src.target
    with psycopg.connect(env.uri) as conn:
        n = conn.execute(f"SELECT count(*) FROM {t.schema_}.{t.physical_table}").fetchone()[0]
        comments = conn.execute(
            "SELECT count(*) FILTER (WHERE col_description(c.oid, a.attnum) IS NOT NULL), count(*) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE s.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (t.schema_, t.physical_table)).fetchone()
        if src.geometry:
            srid, kind = conn.execute(
                f"SELECT DISTINCT ST_SRID({src.geometry.column}), GeometryType({src.geometry.column}) "
                f"FROM {t.schema_}.{t.physical_table}").fetchone()
            assert (srid, kind) == (2154, src.geometry.type.upper())
        analyst = conn.execute("SELECT has_table_privilege('qpvhub_analyst', %s, 'SELECT')",
                               (f"{t.schema_}.{t.physical_table}",)).fetchone()[0]
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname = %s AND tablename = %s",
                             (t.schema_, t.physical_table)).fetchone()[0]
        staging_left = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE n.nspname = 'staging'").fetchone()[0]
    assert stats > 0  # analysed on staging, statistics kept through the swap
    assert staging_left == 0  # tables, views and indexes of the run are gone
    assert n == expected
    assert comments[0] == comments[1]  # every column documented
    assert analyst


def test_point_csv_rejects_rows_without_coordinates_with_the_reason(env, catalog) -> None:
    res = ingest(env, catalog["bpe"], sample=True)
    assert (res.rows_loaded, res.rows_rejected) == (120, 1)
    with psycopg.connect(env.uri) as conn:
        reason, record = conn.execute("SELECT reason, record FROM meta.rejected_rows WHERE run_id = %s",
                                      (res.run_id,)).fetchone()
        inside = conn.execute("SELECT count(*) FROM src.bpe b JOIN ref.qpv q ON ST_Within(b.geom, q.geom)"
                              ).fetchone()[0]
    assert reason == "no coordinates" and record["qualite_xy"] == "_Z" and record["__feature"] == 122
    assert inside == 0  # ref.qpv not loaded in this test: nothing to join, and no error


def test_region_filter_keeps_only_the_deployment_regions(env, catalog, http_source) -> None:
    data = (ROOT / "tests" / "data" / "sigville_qpv2015_DEMO_2022_mixed_regions.csv").read_bytes()
    src = catalog["sigville_demo"]
    src = src.model_copy(update={"quality": src.quality.model_copy(update={"min_rows": 1})})
    res = ingest(env, src, url=http_source.put("DEMO.csv", data), release=2022)
    with psycopg.connect(env.uri) as conn:
        codes = [r[0] for r in conn.execute("SELECT code_qp FROM src.sigville_demo")]
    assert codes == ["QP035002"] and res.rows_loaded == 1


def test_reference_check_blocks_codes_missing_from_the_cog(env, catalog, http_source) -> None:
    """ref.commune holds only the Côtes-d'Armor: IRIS of the three other départements dangle."""
    cog = (ROOT / "include" / "sample_data" / "v_commune_2026_reg52_53_DERIVED.csv").read_text(encoding="utf-8")
    lines = cog.splitlines()
    only_22 = "\n".join([lines[0], *[line for line in lines[1:] if line.split(",")[1].startswith('"22')]]) + "\n"
    src = catalog["cog_communes"]
    small = src.model_copy(update={"quality": src.quality.model_copy(update={"min_rows": 1})})
    assert ingest(env, small, url=http_source.put("cog22.csv", only_22.encode())).status == "success"
    assert ingest(env, catalog["cog_mouvements"], sample=True).status == "success"
    from qpvhub.platform.errors import ValidationFailed

    # 3,270 IRIS outside the Côtes-d'Armor were 3,266 once the four of its communes merged since 2021 are translated
    expected = r"every insee_com exists in ref.commune.insee_com: e.g. \[\['29\d{3}'\].*observed 3266"
    with pytest.raises(ValidationFailed, match=expected):
        ingest(env, catalog["iris_ref"], sample=True)


def _demo_with_rate(value: str) -> bytes:
    """The real SIG Ville DEMO sample with Villejean's share of under-25s (53,7) replaced."""
    raw = (ROOT / "include" / "sample_data" / "sigville_qpv2015_DEMO_2022_reg52_53.csv").read_bytes()
    line = next(x for x in raw.split(b"\r\n") if x.startswith(b"QP035002;"))
    assert b";53,7;" in line
    return raw.replace(line, line.replace(b";53,7;", f";{value};".encode(), 1))


def test_rate_over_100_blocks_and_keeps_previous(env, catalog, http_source) -> None:
    from qpvhub.platform.errors import ValidationFailed

    assert ingest(env, catalog["sigville_demo"], sample=True).status == "success"
    with psycopg.connect(env.uri) as conn:
        before = conn.execute("SELECT part_0_24 FROM src.sigville_demo WHERE code_qp = 'QP035002'").fetchone()[0]
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_between on 'part_0_24'.*140"):
        # a corrected file for the same release is a human's choice (--force), and it is still checked
        ingest(env, catalog["sigville_demo"], url=http_source.put("DEMO.csv", _demo_with_rate("140,0")), release=2022,
               force=True)
    with psycopg.connect(env.uri) as conn:
        after = conn.execute("SELECT part_0_24 FROM src.sigville_demo WHERE code_qp = 'QP035002'").fetchone()[0]
        failed = conn.execute("SELECT column_name, sample FROM meta.validation_results WHERE NOT success").fetchall()
    assert before == after == 53.7
    assert ("part_0_24", [140.0]) in failed
    assert any(k.endswith("DEMO.csv") for k in env.store.list("quarantine/sigville_demo/"))


def test_warn_policy_promotes_and_flags(env, catalog, http_source) -> None:
    src = catalog["sigville_demo"]
    warn = src.model_copy(update={"quality": src.quality.model_copy(update={"policy": "warn"})})
    res = ingest(env, warn, url=http_source.put("DEMO.csv", _demo_with_rate("140,0")), release=2022)
    assert res.status == "success" and res.validation["success"] is False and res.validation["policy"] == "warn"
    with psycopg.connect(env.uri) as conn:
        value = conn.execute("SELECT part_0_24 FROM src.sigville_demo WHERE code_qp = 'QP035002'").fetchone()[0]
        flagged = conn.execute("SELECT status, validation->>'success', validation->'failures' FROM meta.source_runs "
                               "WHERE run_id = %s", (res.run_id,)).fetchone()
    assert value == 140.0
    assert flagged[0] == "success" and flagged[1] == "false" and "part_0_24" in flagged[2][0]


def test_commune_code_losing_a_digit_is_blocked_not_filtered(env, catalog, http_source) -> None:
    """A DEPCOM cut to four characters must fail the suite with its value, not disappear in the filter."""
    lines = bpe_sample_text().splitlines()
    i = next(n for n, line in enumerate(lines) if ";35238;35;53;" in line)
    lines[i] = lines[i].replace(";35238;", ";5238;", 1)
    from qpvhub.platform.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"(?s)expect_column_values_to_match_regex on 'insee_com'.*'5238'"):
        ingest(env, catalog["bpe"], url=http_source.put("bpe.csv", ("\n".join(lines) + "\n").encode()))
