"""`make airflow` for real: api-server, scheduler and dag-processor on this machine with a PostgreSQL
metadata database; the ingest → indicators → publish chain triggered through the REST API."""

from __future__ import annotations

import csv
import io
import time

import psycopg
import pytest
import requests

from tests.dags.conftest import api_session, wait_for_dag

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


def trigger(base: str, h: dict, dag_id: str, conf: dict | None = None) -> str:
    """Unpause `dag_id` and start a run; return its run id."""
    requests.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h, timeout=10).raise_for_status()
    r = requests.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}},
                      headers=h, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["dag_run_id"]


def test_native_deployment_runs_the_chain_through_the_rest_api(native) -> None:
    from qpvhub.airflow import native as nat

    info = nat.start(timeout=240)
    base, h = api_session(info)
    health = requests.get(f"{base}/api/v2/monitor/health", timeout=10).json()
    assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor")} == dict.fromkeys(
        ["metadatabase", "scheduler", "dag_processor"], "healthy")
    wait_for_dag(base, h, "qpvhub_ingest_cog_communes", "qpvhub_ingest_qpv_2015", "qpvhub_indicators",
                 "qpvhub_publish_53", "qpvhub_locate")
    for dag_id in ("qpvhub_ingest_cog_communes", "qpvhub_ingest_qpv_2015"):
        # forced: unpausing also starts the latest scheduled run (catchup off), which may load first
        run_id = trigger(base, h, dag_id, {"sample": True, "force": True})
        assert _wait_run(base, h, dag_id, run_id)["state"] == "success", dag_id
    requests.patch(f"{base}/api/v2/dags/qpvhub_publish_53", json={"is_paused": False}, headers=h,
                   timeout=10).raise_for_status()
    # the loads' asset events came while the indicators DAG was paused: trigger it once; its mart asset
    # then schedules the publication
    run_id = trigger(base, h, "qpvhub_indicators")
    assert _wait_run(base, h, "qpvhub_indicators", run_id)["state"] == "success"
    publish = _wait_run(base, h, "qpvhub_publish_53")
    assert publish["state"] == "success" and publish["run_type"] == "asset_triggered"
    with psycopg.connect(native["db_uri"]) as conn:
        n_qpv = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
        n_area = conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE indicator_id = 'superficie_ha'"
                              ).fetchone()[0]
        manual = conn.execute("SELECT count(*) FROM meta.source_runs WHERE airflow_run_id LIKE 'manual__%' "
                              "AND status = 'success'").fetchone()[0]
    assert (n_qpv, n_area, manual) == (6, 6, 2)
    assert (native["store"] / "published" / "53" / "qpv_profil" / "latest" / "SHA256SUMS").exists()
    # a partner's file: dropped in its inbox, located by qpvhub_locate run through the REST API, gone from the inbox
    import shapely
    from pyproj import Transformer

    with psycopg.connect(native["db_uri"]) as conn:
        wkb = conn.execute("SELECT ST_AsBinary(geom) FROM ref.qpv WHERE code_qp = 'QP035002'").fetchone()[0]
    p = shapely.from_wkb(bytes(wkb)).representative_point()
    lon, lat = Transformer.from_crs(2154, 4326, always_xy=True).transform(p.x, p.y)
    inbox = native["store"] / "partners" / "ville-rennes" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "suivi.csv").write_text(f"id;lon;lat\n1;{lon};{lat}\n", encoding="utf-8")
    run_id = trigger(base, h, "qpvhub_locate")
    assert _wait_run(base, h, "qpvhub_locate", run_id)["state"] == "success"
    assert not (inbox / "suivi.csv").exists()
    result = native["store"] / "partners" / "ville-rennes" / "outbox" / "suivi_localise.csv"
    rows = list(csv.DictReader(io.StringIO(result.read_text(encoding="utf-8-sig")), delimiter=";"))
    assert len(rows) == 1 and rows[0]["statut"] == "dans_qpv" and "QP035002" in rows[0].values(), rows
    assert set(nat.stop()) == {"api-server", "scheduler", "dag-processor"}
    assert not (native["home"] / "airflow" / "pids.json").exists()
