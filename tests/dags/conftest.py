"""Airflow for the DAG tests: its own AIRFLOW_HOME and a PostgreSQL metadata database on the test
cluster, migrated once per session. Airflow is imported only after this is set up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ROOT, _with_db


@pytest.fixture(scope="session")
def airflow_env(pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    name = "airflow_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    home = tmp_path_factory.mktemp("airflow_home")
    meta_uri = _with_db(pg_admin_uri, name).replace("postgresql://", "postgresql+psycopg2://", 1)
    values = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_uri,
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                       env=os.environ.copy(), timeout=300)
        yield values
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def dagbag(airflow_env, qpvhub_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def native(db_uri: str, pg_admin_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Settings for `qpvhub.airflow.native` in this test: its own QPVHUB_HOME, local store and metadata
    database (dropped afterwards); `start` is left to the test (executor choice)."""
    meta_db = "airflow_native_" + uuid.uuid4().hex[:6]
    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)  # the embedded PostgreSQL runs as postgres when we are root
    monkeypatch.setenv("QPVHUB_AIRFLOW_DB", meta_db)
    monkeypatch.setenv("QPVHUB_HOME", str(home))
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE",
                       json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path / "store")}}))
    try:
        yield {"home": home, "store": tmp_path / "store", "db_uri": db_uri}
    finally:
        from qpvhub.airflow import native as nat

        nat.stop()
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(meta_db)))


def api_session(info: dict) -> tuple[str, dict]:
    """Base URL and bearer header for the started deployment (simple auth manager's /auth/token)."""
    import requests

    token = requests.post(f"{info['url']}/auth/token", json={"username": "admin", "password": info["password"]},
                          timeout=10).json()["access_token"]
    return info["url"], {"Authorization": f"Bearer {token}"}


def wait_for_dag(base: str, headers: dict, *dag_ids: str, timeout: float = 120) -> None:
    """Wait until the dag-processor has parsed every one of `dag_ids` (polls the REST API).

    The processor parses the DAG files one by one: one DAG being served says nothing of another file's."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    missing = list(dag_ids)
    while time.monotonic() < deadline:
        missing = [d for d in missing
                   if requests.get(f"{base}/api/v2/dags/{d}", headers=headers, timeout=10).status_code != 200]
        if not missing:
            return
        time.sleep(2)
    raise AssertionError(f"{', '.join(missing)} not parsed after {timeout}s")
