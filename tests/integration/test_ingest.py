"""The ingestion chain on real PostGIS with real files fetched over loopback HTTP."""

import json
from pathlib import Path

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import FetchError, InputError, ValidationFailed
from tests.conftest import COG_SAMPLE, QPV_SAMPLE

pytestmark = pytest.mark.postgis


def _qpv_snapshot(uri: str) -> list[tuple]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT code_qp, lib_qp, insee_com, source_run_id, ST_AsEWKB(geom) "
                            "FROM ref.qpv ORDER BY code_qp").fetchall()


def _runs(uri: str) -> list[tuple]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT source_id, status, rows_loaded, error FROM meta.source_runs "
                            "ORDER BY started_at").fetchall()


@pytest.fixture
def loaded(env, catalog, http_source):
    """COG communes then QPV 2015 loaded from the loopback server (the real files)."""
    cog_url = http_source.put("communes.csv", COG_SAMPLE.read_bytes(), "text/csv")
    qpv_url = http_source.put("QPV.geojson", QPV_SAMPLE.read_bytes(), "application/geo+json")
    r1 = ingest(env, catalog["cog_communes"], url=cog_url)
    r2 = ingest(env, catalog["qpv_2015"], url=qpv_url)
    return r1, r2, qpv_url


def test_qpv_2015_lands_in_ref_qpv_in_lambert93(env, loaded) -> None:
    cog, qpv, _ = loaded
    assert (cog.status, cog.rows_loaded) == ("success", 2430)
    assert (qpv.status, qpv.rows_loaded, qpv.rows_rejected) == ("success", 6, 0)
    with psycopg.connect(env.uri) as conn:
        rows = conn.execute("SELECT code_qp, generation, insee_com, dep, ST_SRID(geom), ST_IsValid(geom), "
                            "round(ST_Area(geom) / 10000) FROM ref.qpv ORDER BY code_qp").fetchall()
    assert [r[0] for r in rows] == [f"QP03500{i}" for i in range(1, 7)]
    assert {r[1] for r in rows} == {2015} and {r[3] for r in rows} == {"35"}
    assert rows[0][2] == "35288" and rows[1][2] == "35238"  # Saint-Malo, Rennes resolved from the COG
    assert all(r[4] == 2154 and r[5] for r in rows)
    # The publisher gives `surface` in ha: Villejean 46, Le Blosne 82
    assert rows[1][6] == 46 and rows[4][6] == 82


def test_run_is_recorded_with_lineage_and_raw_bytes_archived(env, loaded) -> None:
    _, qpv, url = loaded
    with psycopg.connect(env.uri) as conn:
        row = conn.execute("SELECT status, urls, sha256, bytes, raw_key, rows_read, rows_loaded, validation, "
                           "timings FROM meta.source_runs WHERE run_id = %s", (qpv.run_id,)).fetchone()
        n_checks = conn.execute("SELECT count(*), bool_and(success) FROM meta.validation_results "
                                "WHERE run_id = %s", (qpv.run_id,)).fetchone()
    status, urls, sha, nbytes, raw_key, read, loaded_n, validation, timings = row
    import hashlib

    assert status == "success" and urls == [url]
    assert sha == hashlib.sha256(QPV_SAMPLE.read_bytes()).hexdigest() and nbytes == QPV_SAMPLE.stat().st_size
    assert raw_key.startswith("raw/qpv_2015/") and qpv.run_id in raw_key
    assert env.store.get_bytes(raw_key) == QPV_SAMPLE.read_bytes()
    assert (read, loaded_n) == (6, 6)
    assert validation["success"] is True and n_checks[0] == validation["evaluated"] and n_checks[1]
    # gx, index and analyze: within validate (GX beside the index, ANALYZE after the index)
    assert set(timings) == {"fetch", "stage", "validate", "promote", "gx", "index", "analyze"}
    assert timings["gx"] <= timings["validate"] and timings["index"] + timings["analyze"] <= timings["validate"]


def test_unchanged_source_is_skipped_with_a_conditional_get(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    again = ingest(env, catalog["qpv_2015"], url=loaded[2])
    assert again.status == "skipped"
    assert http_source.requests[-1][2].get("If-None-Match")  # ETag sent back, server answered 304
    assert _qpv_snapshot(env.uri) == before
    forced = ingest(env, catalog["qpv_2015"], url=loaded[2], force=True)
    assert forced.status == "success" and _qpv_snapshot(env.uri)[0][3] == forced.run_id


def test_columns_and_table_are_documented_for_analysts(env, loaded) -> None:
    with psycopg.connect(env.uri) as conn:
        t = conn.execute("SELECT obj_description('ref.qpv_2015'::regclass)").fetchone()[0]
        c = conn.execute("SELECT col_description('ref.qpv_2015'::regclass, attnum) FROM pg_attribute "
                         "WHERE attrelid = 'ref.qpv_2015'::regclass AND attname = 'insee_com'").fetchone()[0]
        previous = conn.execute("SELECT to_regclass('ref.qpv_2015__previous') IS NOT NULL").fetchone()[0]
    assert "Quartiers prioritaires" in t and "loaded by run" in t
    assert c.startswith("Code INSEE")
    assert previous


def _assert_failed_and_unchanged(env, before, source_id="qpv_2015") -> None:
    assert _qpv_snapshot(env.uri) == before
    last = _runs(env.uri)[-1]
    assert last[0] == source_id and last[1] == "failed" and last[3]
    with psycopg.connect(env.uri) as conn:
        leftovers = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]
    assert leftovers == 0


def test_missing_column_fails_clearly_and_keeps_previous(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    data = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    for f in data["features"]:
        f["properties"]["NOM"] = f["properties"].pop("NOM_QP")
    url = http_source.put("renamed.geojson", json.dumps(data).encode())
    with pytest.raises(InputError, match=r"source qpv_2015, file renamed.geojson, column 'NOM_QP': missing column"):
        ingest(env, catalog["qpv_2015"], url=url)
    _assert_failed_and_unchanged(env, before)


def test_html_instead_of_geojson_fails_clearly_and_keeps_previous(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    url = http_source.put("QPV2.geojson", b"<!DOCTYPE html><html><body>Maintenance</body></html>", "text/html")
    with pytest.raises(InputError, match="file QPV2.geojson: the server sent an HTML page, not a vector dataset"):
        ingest(env, catalog["qpv_2015"], url=url)
    _assert_failed_and_unchanged(env, before)


def test_invalid_json_fails_clearly_and_keeps_previous(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    url = http_source.put("QPV3.geojson", QPV_SAMPLE.read_bytes()[:-200])  # cut: unterminated JSON
    with pytest.raises(InputError, match="file QPV3.geojson, line .*: invalid JSON"):
        ingest(env, catalog["qpv_2015"], url=url)
    _assert_failed_and_unchanged(env, before)


def test_bad_code_blocks_promotion_and_quarantines(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    data = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    data["features"][0]["properties"]["CODE_QP"] = "QN03504M"  # a 2024 code in the 2015 list
    url = http_source.put("wrong.geojson", json.dumps(data).encode())
    with pytest.raises(ValidationFailed) as exc:
        ingest(env, catalog["qpv_2015"], url=url)
    msg = str(exc.value)
    assert "source qpv_2015: validation failed, nothing promoted" in msg
    assert "expect_column_values_to_match_regex on 'code_qp'" in msg and "QN03504M" in msg
    _assert_failed_and_unchanged(env, before)
    run_id = _runs(env.uri)[-1]
    keys = env.store.list("quarantine/qpv_2015/")
    assert any(k.endswith("wrong.geojson") for k in keys) and any(k.endswith("validation.json") for k in keys)
    with psycopg.connect(env.uri) as conn:
        failed = conn.execute("SELECT expectation, column_name, sample FROM meta.validation_results "
                              "WHERE NOT success").fetchall()
    assert ("expect_column_values_to_match_regex", "code_qp", ["QN03504M"]) in failed, run_id


def test_row_count_collapse_blocks(env, catalog, loaded, http_source) -> None:
    before = _qpv_snapshot(env.uri)
    data = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    data["features"] = data["features"][:2]  # 2 of 6: below half of the last load
    url = http_source.put("few.geojson", json.dumps(data).encode())
    with pytest.raises(ValidationFailed, match="expect_table_row_count_to_be_between.*observed 2"):
        ingest(env, catalog["qpv_2015"], url=url)
    _assert_failed_and_unchanged(env, before)


def test_invalid_geometry_is_repaired_and_counted(env, catalog, loaded, http_source) -> None:
    data = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    ring = data["features"][5]["geometry"]["coordinates"][0][0]
    # a bow-tie: swap two vertices of Cleunay's outer ring → self-intersection
    ring[1], ring[2] = ring[2], ring[1]
    url = http_source.put("bowtie.geojson", json.dumps(data).encode())
    res = ingest(env, catalog["qpv_2015"], url=url)
    assert res.status == "success" and res.rows_repaired == 1 and res.rows_loaded == 6
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT bool_and(ST_IsValid(geom)) FROM ref.qpv").fetchone()[0]


def test_http_500_is_retried_then_succeeds(env, catalog, http_source) -> None:
    url = http_source.put("communes.csv", COG_SAMPLE.read_bytes(), "text/csv")
    http_source.fail["communes.csv"] = [500]
    res = ingest(env, catalog["cog_communes"], url=url)
    assert res.status == "success" and res.rows_loaded == 2430
    assert [r[1] for r in http_source.requests] == ["communes.csv", "communes.csv"]


def test_http_404_fails_without_retry(env, catalog, http_source) -> None:
    with pytest.raises(FetchError, match=r"/nope.csv: HTTP 404"):
        ingest(env, catalog["cog_communes"], url=http_source.url("nope.csv"))
    assert len(http_source.requests) == 1
    assert _runs(env.uri)[-1][1] == "failed"


@pytest.mark.s3
def test_s3_url_source_through_the_deployment_store(db_uri, qpvhub_home, s3_store_conn, catalog) -> None:
    from qpvhub.platform.env import Env

    env = Env.from_settings()
    env.store.client.make_bucket("opendata-inbox")
    env.store.client.fput_object("opendata-inbox", "cog/communes 2026.csv", str(COG_SAMPLE))
    url = "s3://opendata-inbox/cog/communes%202026.csv"
    res = ingest(env, catalog["cog_communes"], url=url)
    assert res.status == "success" and res.rows_loaded == 2430
    assert ingest(env, catalog["cog_communes"], url=url).status == "skipped"  # same ETag
    with pytest.raises(FetchError, match=r"s3://opendata-inbox/nope.csv: NoSuchKey"):
        ingest(env, catalog["cog_communes"], url="s3://opendata-inbox/nope.csv")


def test_s3_url_needs_an_s3_store(env, catalog) -> None:
    with pytest.raises(FetchError, match="s3:// sources need an S3 object store"):
        ingest(env, catalog["cog_communes"], url="s3://bucket/communes.csv")


def test_parallel_copy_failure_is_raised_and_nothing_hangs(db_uri) -> None:
    """A writer connection failing mid-COPY (bad value for the column type) fails the stage cleanly."""
    import pandas as pd

    from qpvhub.ingest.copy import copy_batches_parallel
    from qpvhub.platform.db import connect

    with connect(db_uri) as conn:  # as qpvhub_loader, like the pipeline
        conn.execute("CREATE TABLE staging.pc (a integer, b text)")
        conn.commit()
    good = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    bad = pd.DataFrame({"a": ["not a number"], "b": ["z"]})
    batches = [good] * 20 + [bad] + [good] * 200
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="not a number"):
        copy_batches_parallel(db_uri, "pc", ["a", "b"], iter(batches), workers=2)
    assert copy_batches_parallel(db_uri, "pc", ["a", "b"], iter([good] * 50), workers=2) == 100
    with psycopg.connect(db_uri) as conn:
        n = conn.execute("SELECT count(*) FROM staging.pc").fetchone()[0]
    assert n >= 100  # the good share of the failed run may have committed: staging is disposable


def test_two_generations_side_by_side(env, catalog, tmp_path) -> None:
    """ref.qpv keeps 2015 and 2024 in their own partitions: reloading one never touches the other."""
    import shutil

    from qpvhub.catalog.loader import load_source
    from qpvhub.platform.errors import ValidationFailed

    spec = tmp_path / "qpv_2024_test.yml"
    shutil.copy(Path(__file__).resolve().parents[1] / "data" / "qpv_2024_test.yml", spec)
    gen2024 = load_source(spec)
    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    assert ingest(env, catalog["qpv_2015"], sample=True).status == "success"
    assert ingest(env, gen2024, sample=True).status == "success"
    with psycopg.connect(env.uri) as conn:
        counts = dict(conn.execute("SELECT generation, count(*) FROM ref.qpv GROUP BY 1").fetchall())
        codes_2024 = [r[0] for r in conn.execute(
            "SELECT code_qp FROM ref.qpv WHERE generation = 2024 ORDER BY 1")]
        before_2024 = _qpv_snapshot(env.uri)
    assert counts == {2015: 6, 2024: 6}
    assert codes_2024[:2] == ["QN03501I", "QN03502M"]
    forced = ingest(env, catalog["qpv_2015"], sample=True, force=True)  # swap the 2015 partition again
    assert forced.status == "success"
    after = _qpv_snapshot(env.uri)
    assert [r for r in after if r[0].startswith("QN")] == [r for r in before_2024 if r[0].startswith("QN")]
    # a 2015 code in the 2024 list is refused by the suite (and by ref.qpv's own check)
    text = (Path(__file__).resolve().parents[1] / "data" / "qpv2024_fixture_dept35.geojson").read_text(encoding="utf-8")
    bad = tmp_path / "bad2024.geojson"
    bad.write_text(text.replace('"QN03504M"', '"QP035004"'), encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"(?s)expect_column_values_to_match_regex on 'code_qp'.*QP035004"):
        ingest(env, gen2024, url=bad.as_uri())


def _reloptions(uri: str, table: str) -> tuple[bool, list[str] | None, str | None]:
    """Whether the table exists, its storage options and source_run_id's default."""
    with psycopg.connect(uri) as conn:
        row = conn.execute("SELECT c.reloptions, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
                           "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'source_run_id' "
                           "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
                           "WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
    return (False, None, None) if row is None else (True, *row)


@pytest.mark.parametrize("source_id", ["cog_communes", "qpv_2015"])  # a direct COPY, a file-geometry build
def test_staging_settings_stay_in_staging(env, catalog, loaded, source_id) -> None:
    """Autovacuum off (a worker on a fresh staging table makes CREATE INDEX wait deadlock_timeout), no parallel
    workers beside the index build, the run's id as source_run_id's default: the live table has none of them."""
    from qpvhub.ingest import stage
    from qpvhub.ingest.runs import start_run
    from qpvhub.ingest.steps import fetch_step, promote_step, stage_step, validate_step

    src = catalog[source_id]
    url = loaded[2] if source_id == "qpv_2015" else loaded[2].replace("QPV.geojson", "communes.csv")
    run_id = start_run(env, src)
    fetched = fetch_step(env, src, run_id, url, force=True)
    stage_step(env, src, run_id, fetched["raw_key"])
    staging = f"staging.{stage.staging_names(src, run_id)[1]}"
    # a direct COPY does not send source_run_id: the column's default gives it (the build copies it)
    default = f"'{run_id}'::text" if source_id == "cog_communes" else None
    # no parallel workers where an index builds beside GX's scans (the outlines), else GX's may
    options = ["autovacuum_enabled=false"] + (["parallel_workers=0"] if src.geometry else [])
    assert _reloptions(env.uri, staging) == (True, options, default)
    validate_step(env, src, run_id)
    promote_step(env, src, run_id)
    assert _reloptions(env.uri, staging) == (False, None, None)  # renamed into place
    assert _reloptions(env.uri, src.target.qualified) == (True, None, None)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute(f"SELECT DISTINCT source_run_id FROM {src.target.qualified}").fetchall() == [(run_id,)]
