"""`make airflow` for real: api-server, scheduler and dag-processor on this machine with a PostgreSQL
metadata database; the ingest → indicators → publish chain triggered through the REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
import requests

pytestmark = [pytest.mark.airflow, pytest.mark.postgis, pytest.mark.slow]


def _wait_run(base: str, headers: dict, dag_id: str, run_id: str | None = None, timeout: float = 300) -> dict:
    """The run (or the latest run of the DAG) once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_id:
            runs = [requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", headers=headers, timeout=10).json()]
        else:
            runs = requests.get(f"{base}/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=1",
                                headers=headers, timeout=10).json()["dag_runs"]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"{dag_id} did not finish in {timeout}s")


def test_native_deployment_runs_the_chain_through_the_rest_api(db_uri, pg_admin_uri, tmp_path: Path,
                                                              monkeypatch) -> None:
    import uuid

    from psycopg import sql
    from qpvhub.airflow import native

    meta_db = "airflow_native_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("QPVHUB_AIRFLOW_DB", meta_db)

    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)
    monkeypatch.setenv("QPVHUB_HOME", str(home))
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_STORE", json.dumps({"conn_type": "fs",
                                                                "extra": {"path": str(tmp_path / "store")}}))
    info = native.start(timeout=240)
    try:
        base = info["url"]
        health = requests.get(f"{base}/api/v2/monitor/health", timeout=10).json()
        assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor")} == dict.fromkeys(
            ["metadatabase", "scheduler", "dag_processor"], "healthy")
        token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": info["password"]},
                              timeout=10).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 120  # the dag-processor's first parse
        while time.monotonic() < deadline:
            dags = requests.get(f"{base}/api/v2/dags?limit=100", headers=h, timeout=10).json()
            if {"qpvhub_ingest_qpv_2015", "qpvhub_publish_53"} <= {d["dag_id"] for d in dags["dags"]}:
                break
            time.sleep(2)
        for dag_id in ("qpvhub_ingest_cog_communes", "qpvhub_ingest_qpv_2015"):
            requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                           timeout=10).raise_for_status()
            r = requests.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None,
                                                                            "conf": {"sample": True, "force": True}},
                              headers=h, timeout=10)
            assert r.status_code == 200, r.text
            assert _wait_run(base, h, dag_id, r.json()["dag_run_id"])["state"] == "success", dag_id
        for dag_id in ("qpvhub_publish_53", "qpvhub_indicators"):
            requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h,
                           timeout=10).raise_for_status()
        # the asset events of the two loads came while the indicators DAG was paused: trigger it once;
        # its mart asset then schedules the publication (unpaused first)
        r = requests.post(f"{base}/api/v2/dags/qpvhub_indicators/dagRuns", json={"logical_date": None},
                          headers=h, timeout=10)
        assert r.status_code == 200, r.text
        assert _wait_run(base, h, "qpvhub_indicators", r.json()["dag_run_id"])["state"] == "success"
        publish = _wait_run(base, h, "qpvhub_publish_53")
        assert publish["state"] == "success" and publish["run_type"] == "asset_triggered"
        with psycopg.connect(db_uri) as conn:
            n_qpv = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
            n_area = conn.execute("SELECT count(*) FROM mart.qpv_indicator "
                                  "WHERE indicator_id = 'superficie_ha'").fetchone()[0]
            airflow_ids = conn.execute("SELECT count(*) FROM meta.source_runs WHERE airflow_run_id LIKE 'manual__%' "
                                       "AND status = 'success'").fetchone()[0]
        # unpausing also starts each DAG's latest scheduled run (catchup off): ours are forced, both load
        assert (n_qpv, n_area, airflow_ids) == (6, 6, 2)
        assert (tmp_path / "store" / "published" / "53" / "qpv_profil" / "latest" / "SHA256SUMS").exists()
    finally:
        assert set(native.stop()) == {"api-server", "scheduler", "dag-processor"}
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(meta_db)))
    assert not (home / "airflow" / "pids.json").exists()
