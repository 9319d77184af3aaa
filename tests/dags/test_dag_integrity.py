"""DagBag integrity: imports cleanly, no I/O at parse time, every DAG has tags, retries, max_active_runs=1."""

from __future__ import annotations

import socket
import time

import pytest

from qpvhub.platform.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.airflow

EXPECTED = {"qpvhub_ingest_qpv_2015", "qpvhub_ingest_cog_communes", "qpvhub_indicators", "qpvhub_publish_52",
            "qpvhub_publish_53"}


@pytest.fixture
def parsed(airflow_env, qpvhub_home, monkeypatch: pytest.MonkeyPatch):
    """Parse the DAG folder with production defaults and any network connection forbidden."""
    import psycopg
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("QPVHUB_TASK_RETRIES", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_POSTGIS", "postgresql://nobody@192.0.2.1:5432/none")
    attempts: list = []

    def no_connect(self, address):
        attempts.append(address)
        raise OSError(f"network I/O at DAG parse time: {address}")

    def no_pg(*a, **k):
        attempts.append(("psycopg", a))
        raise OSError("database connection at DAG parse time")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(psycopg, "connect", no_pg)
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    elapsed = time.perf_counter() - t0
    return bag, attempts, elapsed


def test_dagbag_imports_without_errors_or_io(parsed) -> None:
    bag, attempts, elapsed = parsed
    assert bag.import_errors == {}
    assert attempts == []
    assert set(bag.dag_ids) >= EXPECTED
    print(f"DagBag parse of {len(bag.dag_ids)} DAGs: {elapsed:.2f}s")


def test_one_ingest_dag_per_catalogue_entry(parsed) -> None:
    bag, _, _ = parsed
    sources = sorted(p.stem for p in (ROOT / "include" / "sources").glob("*.yml"))
    assert sorted(d[len("qpvhub_ingest_"):] for d in bag.dag_ids if d.startswith("qpvhub_ingest_")) == sources
    dag = bag.dags["qpvhub_ingest_qpv_2015"]
    assert [t.task_id for t in dag.topological_sort()] == ["start", "fetch", "stage", "validate", "promote"]
    promote = dag.get_task("promote")
    assert [a.uri for a in promote.outlets] == ["qpvhub://ref/qpv"]


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_defaults(parsed, dag_id: str) -> None:
    bag, _, _ = parsed
    dag = bag.dags[dag_id]
    assert "qpvhub" in dag.tags and len(dag.tags) >= 2
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.doc_md
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.execution_timeout is not None


def test_assets_chain_ingest_to_indicators_to_publish(parsed) -> None:
    bag, _, _ = parsed
    ind = bag.dags["qpvhub_indicators"]
    uris = {a.uri for a in ind.timetable.asset_condition.objects}
    assert {"qpvhub://ref/qpv", "qpvhub://ref/commune", "qpvhub://src/gtfs_stops"} <= uris
    for dag_id, dag in bag.dags.items():
        if dag_id.startswith("qpvhub_ingest_"):
            # promote (a collection: its one task over every feed) emits the table's asset
            (emitter,) = [t for t in dag.tasks if t.outlets]
            assert emitter.task_id in ("promote", "ingest_feeds") and emitter.outlets[0].uri in uris
    assert [a.uri for a in ind.get_task("compute").outlets] == ["qpvhub://mart/qpv_indicator"]
    pub = bag.dags["qpvhub_publish_53"]
    assert pub.timetable.asset_condition.uri == "qpvhub://mart/qpv_indicator"
    # the mart starts every region's publication: the larger regions (more départements) are queued first
    weights = {c: bag.dags[f"qpvhub_publish_{c}"].get_task("publish").priority_weight for c in ("52", "53")}
    assert weights == {"52": 5, "53": 4}


def test_reload_all_and_health_dags(parsed) -> None:
    bag, _, _ = parsed
    reload_all = bag.dags["qpvhub_reload_all"]
    sources = sorted(p.stem for p in (ROOT / "include" / "sources").glob("*.yml"))
    assert sorted(t.task_id[len("ingest_"):] for t in reload_all.tasks) == sources
    qpv = reload_all.get_task("ingest_qpv_2015")
    assert "ingest_cog_communes" in qpv.upstream_task_ids  # dependencies first
    assert [a.uri for a in qpv.outlets] == ["qpvhub://ref/qpv"]
    assert type(reload_all.timetable).__name__ == "NullTimetable"  # manual only
    health = bag.dags["qpvhub_health"]
    assert [t.task_id for t in health.tasks] == ["freshness"]
    check = bag.dags["qpvhub_sources_check"]
    assert [t.task_id for t in check.tasks] == ["check"] and type(check.timetable).__name__ != "NullTimetable"
    # every shipped entry has a production location, so each is scheduled (a series its current release) …
    assert type(bag.dags["qpvhub_ingest_sigville_demo"].timetable).__name__ != "NullTimetable"
    # … and one without would not be: a scheduled run could only fail
    from qpvhub.airflow.factory import build_ingest_dag
    from qpvhub.catalog.loader import load_catalog

    demo = load_catalog(ROOT / "include" / "sources")["sigville_demo"]
    unscheduled = build_ingest_dag(Settings.load(), demo.model_copy(update={"url": None}))
    assert type(unscheduled.timetable).__name__ == "NullTimetable"
    assert type(bag.dags["qpvhub_ingest_bpe"].timetable).__name__ != "NullTimetable"  # BPE25.zip now
    assert type(bag.dags["qpvhub_ingest_qpv_2024"].timetable).__name__ != "NullTimetable"


def test_each_dag_file_parses_on_its_own_and_reports_its_time(airflow_env, qpvhub_home, capsys) -> None:
    """Per-file parse (what the dag-processor does); times are reported, not asserted (see `make bench`
    for performance): one line per file in the test output."""
    from airflow.dag_processing.dagbag import DagBag

    lines = []
    for path in sorted((ROOT / "dags").glob("qpvhub_*.py")):
        t0 = time.perf_counter()
        bag = DagBag(dag_folder=str(path))
        elapsed = time.perf_counter() - t0
        assert bag.import_errors == {} and bag.dag_ids, path.name
        lines.append(f"{path.name}: {len(bag.dag_ids)} DAG(s) parsed in {elapsed:.2f}s")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert len(lines) == 7
