"""CeleryExecutor for real: Redis on 127.0.0.1:6379 as broker, a Celery worker process started here,
and one DAG run executed by it."""

from __future__ import annotations

import random
import socket
import time

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


def test_two_workers_share_the_regions_publish_tasks_of_one_run(native, catalog, http_source) -> None:
    """A national run on two Celery workers: the indicators DAG emits the mart's asset, every region's publish DAG
    follows, and the two regions' publish tasks run on two different worker processes (one task at a time each)."""
    assert _redis_up(), "Redis must listen on 127.0.0.1:6379 (the CI machine runs it)"
    from qpvhub.airflow import native as nat
    from qpvhub.ingest.pipeline import ingest
    from qpvhub.platform.env import Env
    from tests.conftest import COG_SAMPLE
    from tests.data.national_qpv2024_fixture import archive

    env = Env.from_settings()  # the regions served: 52 and 53 (include/regions); ANCT's national file, cut to them
    assert ingest(env, catalog["cog_communes"], url=http_source.put("v_commune.csv", COG_SAMPLE.read_bytes()),
                  force=True).status == "success"
    res = ingest(env, catalog["qpv_2024"], url=http_source.put("qpv2024.zip", archive(), "application/zip"))
    assert res.status == "success" and res.rows_loaded == 54  # 48 in Pays de la Loire, 6 in Bretagne

    broker = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    info = nat.start(timeout=240, executor="CeleryExecutor", broker=broker, workers=2, concurrency=1)
    assert {"celery-worker-1", "celery-worker-2"} <= set(info["pids"])
    base, h = api_session(info)
    publish = ["qpvhub_publish_52", "qpvhub_publish_53"]
    wait_for_dag(base, h, *publish, "qpvhub_indicators")
    for dag_id in publish:  # scheduled by the mart's asset: unpaused, not triggered
        requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                       timeout=10).raise_for_status()
    run_id = trigger(base, h, "qpvhub_indicators")
    assert _wait_run(base, h, "qpvhub_indicators", run_id)["state"] == "success"
    ran_on = {}
    for dag_id in publish:
        deadline = time.monotonic() + 60
        while not requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns", headers=h, timeout=10).json()["dag_runs"]:
            assert time.monotonic() < deadline, f"{dag_id} was not triggered by the mart's asset"
            time.sleep(2)
        run = _wait_run(base, h, dag_id)
        assert run["state"] == "success" and run["run_type"] == "asset_triggered", run
        logs = {w: (native["home"] / "airflow" / f"{w}.log").read_text(errors="replace")
                for w in ("celery-worker-1", "celery-worker-2")}
        ran_on[dag_id] = [w for w, text in logs.items() if run["dag_run_id"] in text or f"{dag_id}'" in text
                          or f'{dag_id}"' in text or f"dag_id={dag_id}" in text]
    assert sorted(w for ws in ran_on.values() for w in ws) == ["celery-worker-1", "celery-worker-2"], ran_on
    for code, n in (("52", 48), ("53", 6)):
        latest = native["store"] / "published" / code / "qpv_profil" / "latest"
        assert len((latest / f"qpv_profil_{code}.csv").read_text(encoding="utf-8").splitlines()) == n + 1
    assert {"celery-worker-1", "celery-worker-2"} <= set(nat.stop())
