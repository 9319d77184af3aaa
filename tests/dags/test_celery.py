"""CeleryExecutor for real: Redis on 127.0.0.1:6379 as broker, a Celery worker process started here,
and one DAG run executed by it."""

from __future__ import annotations

import json
import random
import socket
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from tests.dags.test_native_deployment import _wait_run

pytestmark = [pytest.mark.airflow, pytest.mark.postgis, pytest.mark.slow]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_a_celery_worker_runs_an_ingest_dag(db_uri, pg_admin_uri, tmp_path: Path, monkeypatch) -> None:
    assert _redis_up(), "Redis must listen on 127.0.0.1:6379 (the CI machine runs it)"
    from psycopg import sql
    from qpvhub.airflow import native

    meta_db = "airflow_celery_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("QPVHUB_AIRFLOW_DB", meta_db)
    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)
    monkeypatch.setenv("QPVHUB_HOME", str(home))
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE", json.dumps({"conn_type": "fs",
                                                                "extra": {"path": str(tmp_path / "store")}}))
    broker = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"  # a Redis database of its own
    info = native.start(timeout=240, executor="CeleryExecutor", broker=broker)
    try:
        assert "celery-worker" in info["pids"]
        base = info["url"]
        token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": info["password"]},
                              timeout=10).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        dag_id = "qpvhub_ingest_cog_communes"
        for _ in range(60):  # the dag-processor's first parse
            if requests.get(f"{base}/api/v2/dags/{dag_id}", headers=h, timeout=10).status_code == 200:
                break
            import time

            time.sleep(2)
        requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                       timeout=10).raise_for_status()
        r = requests.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None,
                                                                        "conf": {"sample": True, "force": True}},
                          headers=h, timeout=10)
        assert r.status_code == 200, r.text
        run_id = r.json()["dag_run_id"]
        assert _wait_run(base, h, dag_id, run_id)["state"] == "success"
        tis = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", headers=h,
                           timeout=10).json()["task_instances"]
        with psycopg.connect(db_uri) as conn:
            runs = conn.execute("SELECT source_id, status, error FROM meta.source_runs ORDER BY started_at").fetchall()
        assert {t["task_id"]: t["state"] for t in tis} == dict.fromkeys(
            ["start", "fetch", "stage", "validate", "promote"], "success"), (runs, [(t["task_id"], t["try_number"])
                                                                                   for t in tis])
        assert {t.get("executor") or "CeleryExecutor" for t in tis} == {"CeleryExecutor"}
        worker_log = (home / "airflow" / "celery-worker.log").read_text(errors="replace")
        assert "execute_workload" in worker_log or "execute_command" in worker_log, worker_log[-2000:]
        assert run_id in worker_log or dag_id in worker_log
        with psycopg.connect(db_uri) as conn:
            assert conn.execute("SELECT count(*) FROM ref.commune").fetchone()[0] == 2430
    finally:
        stopped = native.stop()
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(meta_db)))
    assert "celery-worker" in stopped
