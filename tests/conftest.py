"""Shared fixtures: a real PostGIS cluster, one database per test, a loopback HTTP source server,
an S3-protocol server (moto) and isolated qpvhub settings.

Set `QPVHUB_TEST_PG_URI` (an administrator URI, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
to use an existing server; otherwise a private cluster is started from the local binaries.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from qpvhub.catalog.qpv_lists import load_qpv_lists

LISTS = load_qpv_lists(Path(__file__).resolve().parents[1] / "include" / "qpv_lists.yml")

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ["QPVHUB_TASK_RETRIES"] = "0"

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "include" / "sample_data"
QPV_SAMPLE = SAMPLES / "qpv2015_dept35_esigat_resovilles.geojson"
COG_SAMPLE = SAMPLES / "v_commune_2026_reg52_53_DERIVED.csv"
BPE_SAMPLE = SAMPLES / "BPE25_dep35_FIXTURE.zip"  # BPE25.zip's layout: BPE25.csv inside, cp1252


def bpe_sample_text() -> str:
    """The bundled BPE 2024 file's CSV as text (tests edit it and serve it bare, as a changed download)."""
    import zipfile

    with zipfile.ZipFile(BPE_SAMPLE) as z:
        return z.read("BPE25.csv").decode("cp1252")


# ---------------------------------------------------------------- PostGIS
@pytest.fixture(scope="session")
def pg_admin_uri() -> Iterator[str]:
    """Administrator URI of a PostgreSQL server with PostGIS available."""
    if os.environ.get("QPVHUB_TEST_PG_URI"):
        yield os.environ["QPVHUB_TEST_PG_URI"]
        return
    from qpvhub.platform.embedded import EmbeddedCluster

    root = Path(tempfile.mkdtemp(prefix="qpvhub-test-pg-"))
    root.chmod(0o755)  # the server runs as postgres when we are root
    cluster = EmbeddedCluster(root)
    cluster.start()
    for role in ("qpvhub_analyst", "qpvhub_api"):
        _ROLE_PASSWORDS[role] = cluster.password(role)
    try:
        yield cluster.uri("postgres")
    finally:
        cluster.destroy()


_ROLE_PASSWORDS: dict[str, str] = {}


def as_role(uri: str, role: str) -> str:
    """`uri` for another login role: the embedded test cluster's password for it, else none (trust)."""
    parts = urlsplit(uri)
    auth = role + (":" + _ROLE_PASSWORDS[role] if role in _ROLE_PASSWORDS else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def loaded_before(uri: str, tmp_path: Path, migration: str, create: str, insert: str, source_id: str,
                  millesime: str) -> list[str]:
    """A database migrated up to (not including) `migration`, holding a table as the loader created it then
    (`create`, `insert`) and the successful run 'old' that loaded it; returns the migrations applied next."""
    import shutil

    from qpvhub.platform.db import migrate

    before = tmp_path / "project"
    shutil.copytree(ROOT / "sql", before / "sql", ignore=shutil.ignore_patterns(f"{migration}_*"))
    migrate(uri, before / "sql")
    with psycopg.connect(uri) as conn:
        conn.execute("SET ROLE qpvhub_loader")
        conn.execute(create)
        conn.execute(insert)
        conn.execute("INSERT INTO meta.source_runs (run_id, source_id, status, millesime, finished_at) "
                     "VALUES ('old', %s, 'success', %s, now())", (source_id, millesime))
        conn.commit()
    return migrate(uri, ROOT / "sql")


def converted(uri: str, table: str, columns: str) -> tuple[str, list[tuple], str]:
    """After a migration that partitions `table` by release: its kind ('p'), its rows (`columns`, ordered)
    and the part recorded for the run 'old' of `loaded_before`."""
    with psycopg.connect(uri) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]
        rows = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(
            sql.SQL(columns), sql.Identifier(*table.split(".")))).fetchall()
        recorded = conn.execute("SELECT part FROM meta.source_runs WHERE run_id = 'old'").fetchone()[0]
    return kind, rows, recorded


def _with_db(uri: str, dbname: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture
def empty_db(pg_admin_uri: str) -> Iterator[str]:
    """A fresh empty database (no migrations) for this test; dropped afterwards."""
    name = "qpvhub_t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(pg_admin_uri, name)
    finally:
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_uri(empty_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database of its own, also set as AIRFLOW_CONN_QPVHUB_POSTGIS."""
    from qpvhub.platform.db import migrate

    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_POSTGIS", empty_db)
    migrate(empty_db, ROOT / "sql")
    return empty_db


# ---------------------------------------------------------------- settings / env
@pytest.fixture
def qpvhub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "qpvhub-home"
    monkeypatch.setenv("QPVHUB_HOME", str(home))
    monkeypatch.delenv("AIRFLOW_CONN_QPVHUB_STORE", raising=False)
    return home


@pytest.fixture
def env(db_uri: str, qpvhub_home: Path):
    """Pipeline environment: the test's database and a local-directory store."""
    from qpvhub.platform.env import Env

    return Env.from_settings()


@pytest.fixture
def catalog():
    from qpvhub.catalog.loader import load_catalog

    return load_catalog(ROOT / "include" / "sources")


@pytest.fixture
def regions():
    from qpvhub.catalog.regions import load_regions

    return load_regions(ROOT / "include" / "regions", ROOT / "include" / "reference")


FIXTURE_COG_PACA = ROOT / "tests" / "data" / "cog2026_paca_qpv_communes_FIXTURE.csv"


@pytest.fixture
def env93(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_source):
    """(Env, COG url): the deployment's regions plus 93, added by `qpvhub region add` into a regions directory of
    its own; the COG sample plus the 53 communes of PACA's QPV, served on loopback."""
    import shutil

    from qpvhub.cli import main as cli
    from qpvhub.platform.env import Env

    regions = tmp_path / "regions"
    shutil.copytree(ROOT / "include" / "regions", regions)
    monkeypatch.setenv("QPVHUB_REGIONS_DIR", str(regions))
    assert cli(["region", "add", "93", "--bbox=4.2,42.9,7.8,45.2", "--contact", "pole@example.org"]) == 0
    assert (regions / "93.yml").exists()
    env = Env.from_settings()
    cog = COG_SAMPLE.read_bytes() + b"".join(FIXTURE_COG_PACA.read_bytes().splitlines(keepends=True)[1:])
    return env, http_source.put("cog.csv", cog)


# ---------------------------------------------------------------- loopback HTTP source server
@dataclass
class HttpSource:
    """Files served on 127.0.0.1 with ETag/If-None-Match, and scripted failures per path."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    fail: dict[str, list[int]] = field(default_factory=dict)  # path → statuses to return first
    content_type: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.files[name] = data
        self.content_type[name] = content_type
        return self.url(name)


@pytest.fixture
def http_source() -> Iterator[HttpSource]:
    state = HttpSource(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            name = unquote(urlsplit(self.path).path).lstrip("/")  # the query (an API key…) names no file
            state.requests.append(("GET", name, dict(self.headers)))
            queue = state.fail.get(name)
            if queue:
                status = queue.pop(0)
                self.send_response(status)
                body = b"<html><body>Internal error</body></html>"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", state.content_type.get(name, "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- S3 protocol (moto)
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, spoken to through the real minio client code."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store_conn(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """AIRFLOW_CONN_QPVHUB_STORE set to a fresh bucket on the moto server."""
    import json

    bucket = "qpvhub-" + uuid.uuid4().hex[:8]
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "bucket": bucket}}
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE", json.dumps(conn))
    return conn
