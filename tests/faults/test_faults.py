"""One injected failure per test, on a real run (PostGIS, S3 protocol server, loopback HTTP source).

Each test asserts the same three things: the run fails (or retries and succeeds) with a message saying
what and where; nothing already loaded or published is lost or half-replaced; the next run after the
fault clears succeeds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.ingest.runs import start_run
from qpvhub.ingest.steps import fetch_step, promote_step, stage_step, validate_step
from qpvhub.platform.env import Env
from qpvhub.platform.errors import (
    ConcurrentRunError,
    ConfigError,
    DatabaseError,
    FetchError,
    InputError,
    ValidationFailed,
)
from qpvhub.platform.store import StoreError
from tests.conftest import COG_SAMPLE, QPV_SAMPLE, ROOT

pytestmark = [pytest.mark.postgis, pytest.mark.faults]


def _snapshot(uri: str, table: str = "ref.qpv") -> list[tuple]:
    key = {"ref.qpv": "code_qp", "ref.commune": "insee_com", "src.bpe": "typequ, insee_com"}[table]
    with psycopg.connect(uri) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {key}, source_run_id").fetchall()


def _staging_left(uri: str) -> list[str]:
    with psycopg.connect(uri) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'staging'")]


def _last_run(uri: str, source_id: str) -> tuple:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT status, error FROM meta.source_runs WHERE source_id = %s "
                            "ORDER BY started_at DESC LIMIT 1", (source_id,)).fetchone()


@pytest.fixture
def loaded(env, catalog, http_source):
    """COG then QPV 2015 loaded from the loopback server: the 'already published' state to protect."""
    ingest(env, catalog["cog_communes"], url=http_source.put("communes.csv", COG_SAMPLE.read_bytes()))
    ingest(env, catalog["qpv_2015"], url=http_source.put("QPV.geojson", QPV_SAMPLE.read_bytes()))
    return _snapshot(env.uri)


def _changed_qpv() -> bytes:
    """The real QPV file with one name changed: a new version the next run must load."""
    return QPV_SAMPLE.read_bytes().replace(b'"Maurepas', b'"Maurepas (nouveau)', 1)


# 1 ---------------------------------------------------------------------------------------------
def test_01_http_500_then_success_on_retry(env, catalog, loaded, http_source, monkeypatch) -> None:
    monkeypatch.setenv("QPVHUB_HTTP_BACKOFF", "0.01")
    env = Env.from_settings()  # settings are read once: this test's
    url = http_source.put("QPV2.geojson", _changed_qpv())
    http_source.fail["QPV2.geojson"] = [500, 503]
    res = ingest(env, catalog["qpv_2015"], url=url)
    assert res.status == "success"
    assert [r[1] for r in http_source.requests if r[1] == "QPV2.geojson"] == ["QPV2.geojson"] * 3
    assert any("nouveau" in r[1] for r in _snapshot(env.uri))


def test_01b_http_500_every_time_fails_clearly_and_keeps_previous(env, catalog, loaded, http_source,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("QPVHUB_HTTP_BACKOFF", "0.01")
    env = Env.from_settings()  # settings are read once: this test's
    url = http_source.put("QPV2.geojson", _changed_qpv())
    http_source.fail["QPV2.geojson"] = [500, 500, 500]
    with pytest.raises(FetchError, match=r"QPV2.geojson: HTTP 500"):
        ingest(env, catalog["qpv_2015"], url=url)
    assert _snapshot(env.uri) == loaded and _last_run(env.uri, "qpv_2015")[0] == "failed"
    assert ingest(env, catalog["qpv_2015"], url=url).status == "success"


# 2 ---------------------------------------------------------------------------------------------
def test_02_source_times_out(env, catalog, loaded, http_source, monkeypatch) -> None:
    monkeypatch.setenv("QPVHUB_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("QPVHUB_HTTP_RETRIES", "2")
    monkeypatch.setenv("QPVHUB_HTTP_BACKOFF", "0.01")
    env = Env.from_settings()  # settings are read once: this test's
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # accepts, never answers
    try:
        with pytest.raises(FetchError, match=r"127.0.0.1:\d+/QPV.geojson: ReadTimeout"):
            ingest(env, catalog["qpv_2015"], url=f"http://127.0.0.1:{sock.getsockname()[1]}/QPV.geojson")
    finally:
        sock.close()
    assert _snapshot(env.uri) == loaded
    status, error = _last_run(env.uri, "qpv_2015")
    assert status == "failed" and "ReadTimeout" in error
    assert ingest(env, catalog["qpv_2015"], url=http_source.put("QPV2.geojson", _changed_qpv())).status == "success"


# 3 ---------------------------------------------------------------------------------------------
def test_03_download_truncated_mid_body(env, catalog, loaded, http_source, monkeypatch) -> None:
    import http.server

    monkeypatch.setenv("QPVHUB_HTTP_BACKOFF", "0.01")
    env = Env.from_settings()  # settings are read once: this test's
    body = _changed_qpv()

    class Liar(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FetchError, match=r"QPV.geojson: .*(truncated|IncompleteRead|ProtocolError|Connection)"):
            ingest(env, catalog["qpv_2015"], url=f"http://127.0.0.1:{server.server_address[1]}/QPV.geojson")
    finally:
        server.shutdown()
        server.server_close()
    assert _snapshot(env.uri) == loaded
    with psycopg.connect(env.uri) as conn:  # nothing of the cut download was archived as a raw batch
        assert conn.execute("SELECT raw_key FROM meta.source_runs WHERE status = 'failed'").fetchone()[0] is None
    assert ingest(env, catalog["qpv_2015"], url=http_source.put("QPV2.geojson", body)).status == "success"


# 4 ---------------------------------------------------------------------------------------------
def test_04_connection_killed_during_copy(env, catalog, http_source, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from gen_bpe import generate

    assert ingest(env, catalog["bpe"], sample=True).status == "success"
    before = _snapshot(env.uri, "src.bpe")
    big = generate(400_000, tmp_path / "bpe_400k.csv")
    url = http_source.put("bpe.csv", big.read_bytes())
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        with psycopg.connect(env.uri, autocommit=True) as conn:
            while time.monotonic() < deadline and not killed:
                pids = [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'COPY %staging%' AND state = 'active'")]
                for pid in pids[:1]:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
                time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    try:
        with pytest.raises(DatabaseError, match=r"source bpe, run \d+\S*, step stage: PostgreSQL error.*"
                                                r"(terminat|connection|closed)"):
            ingest(env, catalog["bpe"], url=url)
    finally:
        t.join()
    assert killed, "the COPY was seen and terminated"
    assert _snapshot(env.uri, "src.bpe") == before
    assert _staging_left(env.uri) == []
    assert _last_run(env.uri, "bpe")[0] == "failed"
    res = ingest(env, catalog["bpe"], url=url)
    assert res.status == "success" and res.rows_loaded == 400_000


# 5 ---------------------------------------------------------------------------------------------
def test_05_postgresql_down_when_the_run_starts(env, catalog, loaded, http_source, monkeypatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nobody listens on
    down = Env.from_settings()
    down.uri = f"postgresql://postgres@127.0.0.1:{port}/qpvhub"
    url = http_source.put("QPV2.geojson", _changed_qpv())
    with pytest.raises(ConfigError, match=rf"cannot connect to PostGIS at postgresql://postgres@127.0.0.1:{port}"):
        ingest(down, catalog["qpv_2015"], url=url)
    assert _snapshot(env.uri) == loaded
    assert ingest(env, catalog["qpv_2015"], url=url).status == "success"


# 6 ---------------------------------------------------------------------------------------------
def test_06_object_store_down_during_publication(db_uri, qpvhub_home, catalog, regions, monkeypatch) -> None:
    """The store dies while a new version is uploaded: latest/ still serves the previous version."""
    from moto.server import ThreadedMotoServer

    from qpvhub.indicators.runner import run_indicators
    from qpvhub.platform.store import S3Store
    from qpvhub.publish import publish_region

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = "faults-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "bucket": bucket}}))
    try:
        env = Env.from_settings()
        for sid in ("cog_communes", "qpv_2015"):
            assert ingest(env, catalog[sid], sample=True).status == "success"
        run_indicators(env)
        first = publish_region(env, regions["53"])
        base = "published/53/qpv_profil/latest/"
        latest = {k: env.store.get_bytes(k) for k in env.store.list(base)}
        # new data: the mart gains the population indicators, so a new version is due
        assert ingest(env, catalog["sigville_demo"], sample=True).status == "success"
        run_indicators(env)
        puts: list[str] = []
        real_put = S3Store.put_file

        def dying_put(self, key, path, content_type="application/octet-stream"):
            puts.append(key)
            if len(puts) == 3:
                server.stop()  # the store goes away mid-upload
            return real_put(self, key, path, content_type)

        monkeypatch.setattr(S3Store, "put_file", dying_put)
        with pytest.raises(StoreError, match=r"(object store http://127.0.0.1:\d+ unreachable|upload to .*"
                                             r"published/53/qpv_profil/)"):
            publish_region(Env.from_settings(), regions["53"])
        monkeypatch.setattr(S3Store, "put_file", real_put)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # the store is back
        server.start()
        env = Env.from_settings()
        assert {k: env.store.get_bytes(k) for k in env.store.list(base)} == latest  # untouched
        second = publish_region(env, regions["53"])
        assert second.status == "published" and second.version != first.version
        manifest = json.loads(env.store.get_bytes(base + "datapackage.json"))
        assert manifest["version"] == second.version
    finally:
        server.stop()


# 7 ---------------------------------------------------------------------------------------------
def test_07_object_store_refuses_the_raw_archive_write(db_uri, qpvhub_home, catalog, s3_endpoint,
                                                       monkeypatch) -> None:
    """A bucket policy denies writes under raw/: the run fails before loading anything."""
    from minio import Minio

    bucket = "faults-ro-" + uuid.uuid4().hex[:6]
    admin = Minio(s3_endpoint.split("//")[1], access_key="testing", secret_key="testing", secure=False)
    admin.make_bucket(bucket)
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "bucket": bucket}}
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE", json.dumps(conn))
    env = Env.from_settings()
    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    before = _snapshot(db_uri, "ref.commune")
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/raw/*"]}]}
    admin.set_bucket_policy(bucket, json.dumps(deny))
    changed = COG_SAMPLE.read_bytes().replace(b"Allineuc", b"Allineuc-sur-Lie", 1)
    url = (qpvhub_home / "cog.csv")
    url.parent.mkdir(parents=True, exist_ok=True)
    url.write_bytes(changed)
    with pytest.raises(StoreError, match=rf"upload to s3://{bucket}/raw/cog_communes/\S+/cog.csv: "
                                         r"(AccessDenied|refused by the object store \(HTTP 403\))"):
        ingest(env, catalog["cog_communes"], url=url.as_uri())
    assert _snapshot(db_uri, "ref.commune") == before
    assert _last_run(db_uri, "cog_communes")[0] == "failed" and _staging_left(db_uri) == []
    admin.delete_bucket_policy(bucket)  # the operator fixes the policy: the next run succeeds
    assert ingest(Env.from_settings(), catalog["cog_communes"], url=url.as_uri()).status == "success"
    assert _snapshot(db_uri, "ref.commune") != before


# 8 ---------------------------------------------------------------------------------------------
def test_08_two_runs_of_the_same_source_at_once(env, catalog, loaded, http_source) -> None:
    url = http_source.put("QPV2.geojson", _changed_qpv())
    other = start_run(env, catalog["qpv_2015"])  # a run in progress (another worker, or the CLI)
    with pytest.raises(ConcurrentRunError, match=rf"source qpv_2015: run {other} .* is still in progress"):
        ingest(env, catalog["qpv_2015"], url=url)
    assert _snapshot(env.uri) == loaded
    # truly concurrent: two threads start together; one runs, the other is refused cleanly
    from qpvhub.ingest.runs import fail_run

    fail_run(env, catalog["qpv_2015"], other, "worker died")
    results: list[object] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(ingest(env, catalog["qpv_2015"], url=url, force=True).status)
        except ConcurrentRunError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(str(r) if isinstance(r, str) else "refused" for r in results)
    assert statuses in (["refused", "success"], ["success", "success"])  # the second may start after the first ends
    assert any("nouveau" in r[1] for r in _snapshot(env.uri))
    assert _staging_left(env.uri) == []


# 9 ---------------------------------------------------------------------------------------------
def test_09_disk_full_during_promote(env, catalog, loaded, http_source, pg_admin_uri) -> None:
    source = catalog["qpv_2015"]
    run_id = start_run(env, source)
    fetched = fetch_step(env, source, run_id, http_source.put("QPV2.geojson", _changed_qpv()))
    stage_step(env, source, run_id, fetched["raw_key"])
    validate_step(env, source, run_id)
    fn = "fault_disk_full_" + uuid.uuid4().hex[:6]
    with psycopg.connect(env.uri, autocommit=True) as admin:  # superuser: an event trigger simulates ENOSPC
        admin.execute(f"""CREATE FUNCTION public.{fn}() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device'
                  USING ERRCODE = 'disk_full'; END $$""")
        admin.execute(f"CREATE EVENT TRIGGER {fn} ON ddl_command_start WHEN TAG IN ('ALTER TABLE') "
                      f"EXECUTE FUNCTION public.{fn}()")
    try:
        with pytest.raises(DatabaseError, match=r"source qpv_2015, run .*, step promote: PostgreSQL error, the swap "
                                                r"was rolled back and ref.qpv keeps its previous version: could not "
                                                r"extend file .*No space left on device"):
            promote_step(env, source, run_id)
    finally:
        with psycopg.connect(env.uri, autocommit=True) as admin:
            admin.execute(f"DROP EVENT TRIGGER {fn}")
            admin.execute(f"DROP FUNCTION public.{fn}()")
    from qpvhub.ingest.runs import fail_run

    fail_run(env, source, run_id, "disk full")  # what the DAG's failure callback does
    assert _snapshot(env.uri) == loaded and _staging_left(env.uri) == []
    assert ingest(env, source, url=http_source.url("QPV2.geojson")).status == "success"


# 10 --------------------------------------------------------------------------------------------
def test_10_invalid_geometries_repaired_rejected_or_refused(env, catalog, loaded, http_source) -> None:
    doc = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    feats = doc["features"]
    ring = feats[1]["geometry"]["coordinates"][0][0]
    a, b, c = ring[0], ring[len(ring) // 3], ring[2 * len(ring) // 3]
    feats[1]["geometry"] = {"type": "MultiPolygon", "coordinates": [[[a, c, b, [c[0], a[1]], a]]]}  # bow-tie
    feats[2]["geometry"] = {"type": "MultiPolygon", "coordinates": []}  # empty
    res = ingest(env, catalog["qpv_2015"], url=http_source.put("bad.geojson", json.dumps(doc).encode()))
    assert res.status == "success" and res.rows_repaired >= 1 and res.rows_rejected == 1
    with psycopg.connect(env.uri) as conn:
        reason = conn.execute("SELECT reason FROM meta.rejected_rows WHERE run_id = %s", (res.run_id,)).fetchone()
        valid = conn.execute("SELECT bool_and(ST_IsValid(geom)) FROM ref.qpv").fetchone()[0]
    assert "empty" in reason[0] and valid
    # a ring that is not closed: GDAL's GeoJSON reader closes it; the loaded perimeter is valid and the
    # same as the closed one
    doc = json.loads(_changed_qpv().decode("utf-8"))
    doc["features"][3]["geometry"]["coordinates"][0][0].pop()
    code = doc["features"][3]["properties"]["CODE_QP"]
    res = ingest(env, catalog["qpv_2015"], url=http_source.put("open.geojson", json.dumps(doc).encode()))
    assert res.status == "success" and res.rows_loaded == 6
    with psycopg.connect(env.uri) as conn:
        ok = conn.execute("SELECT ST_IsValid(geom), ST_IsClosed(ST_ExteriorRing(ST_GeometryN(geom, 1))) "
                          "FROM ref.qpv WHERE code_qp = %s", (code,)).fetchone()
    assert ok == (True, True)
    assert ingest(env, catalog["qpv_2015"], url=http_source.put("QPV2.geojson", _changed_qpv())).status == "success"


# 11 --------------------------------------------------------------------------------------------
def test_11_schema_drift_column_renamed(env, catalog, loaded, http_source) -> None:
    drifted = QPV_SAMPLE.read_bytes().replace(b'"NOM_QP"', b'"NOM_QUARTIER"')
    with pytest.raises(InputError, match=r"source qpv_2015, file QPVd.geojson, column 'NOM_QP': missing column"):
        ingest(env, catalog["qpv_2015"], url=http_source.put("QPVd.geojson", drifted))
    assert _snapshot(env.uri) == loaded and _staging_left(env.uri) == []
    assert ingest(env, catalog["qpv_2015"], url=http_source.put("QPV2.geojson", _changed_qpv())).status == "success"


# 12 --------------------------------------------------------------------------------------------
def test_12_row_count_collapse(env, catalog, loaded, http_source) -> None:
    before = _snapshot(env.uri, "ref.commune")
    lines = COG_SAMPLE.read_bytes().splitlines(keepends=True)
    tenth = b"".join([lines[0], *lines[1::10]])
    with pytest.raises(ValidationFailed, match=r"(?s)source cog_communes: validation failed, nothing promoted.*"
                                               r"expect_table_row_count_to_be_between.*observed 2\d\d"):
        ingest(env, catalog["cog_communes"], url=http_source.put("cog10.csv", tenth))
    assert _snapshot(env.uri, "ref.commune") == before
    run_id = _last_run_id(env.uri, "cog_communes")
    assert env.store.exists(f"quarantine/cog_communes/{run_id}/validation.json")
    assert env.store.exists(f"quarantine/cog_communes/{run_id}/cog10.csv")
    res = ingest(env, catalog["cog_communes"], url=http_source.put("cog.csv", COG_SAMPLE.read_bytes()), force=True)
    assert res.status == "success" and res.rows_loaded == 2430


def _last_run_id(uri: str, source_id: str) -> str:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT run_id FROM meta.source_runs WHERE source_id = %s ORDER BY started_at DESC "
                            "LIMIT 1", (source_id,)).fetchone()[0]
