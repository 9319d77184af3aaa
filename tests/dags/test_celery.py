"""CeleryExecutor for real: Redis on 127.0.0.1:6379 as broker, a Celery worker process started here,
and one DAG run executed by it."""

from __future__ import annotations

import random
import socket

import psycopg
import pytest
import requests

from tests.dags.conftest import api_session, wait_for_dag
from tests.dags.test_native_deployment import _wait_run, trigger

pytestmark = [pytest.mark.airflow, pytest.mark.postgis, pytest.mark.slow]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_a_celery_worker_runs_an_ingest_dag(native) -> None:
    assert _redis_up(), "Redis must listen on 127.0.0.1:6379 (the CI machine runs it)"
    from qpvhub.airflow import native as nat

    broker = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"  # a Redis database of its own
    info = nat.start(timeout=240, executor="CeleryExecutor", broker=broker)
    assert "celery-worker" in info["pids"]
    base, h = api_session(info)
    dag_id = "qpvhub_ingest_cog_communes"
    wait_for_dag(base, h, dag_id)
    run_id = trigger(base, h, dag_id, {"sample": True, "force": True})
    assert _wait_run(base, h, dag_id, run_id)["state"] == "success"
    tis = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", headers=h,
                       timeout=10).json()["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis} == dict.fromkeys(
        ["start", "fetch", "stage", "validate", "promote"], "success")
    worker_log = (native["home"] / "airflow" / "celery-worker.log").read_text(errors="replace")
    assert "execute_workload" in worker_log or "execute_command" in worker_log, worker_log[-2000:]
    assert run_id in worker_log or dag_id in worker_log
    with psycopg.connect(native["db_uri"]) as conn:
        assert conn.execute("SELECT count(*) FROM ref.commune").fetchone()[0] == 2430
    assert "celery-worker" in nat.stop()
