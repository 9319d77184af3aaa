"""`dag.test()` end to end: ingest → indicators → publish against real PostGIS and the S3 protocol."""

from __future__ import annotations

import json

import psycopg
import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.postgis, pytest.mark.s3, pytest.mark.slow]


def _state(dr) -> tuple[str, dict[str, str]]:
    return str(dr.state), {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_chain_end_to_end_with_dag_test(dagbag, db_uri, s3_store_conn) -> None:
    for dag_id in ("qpvhub_ingest_cog_communes", "qpvhub_ingest_qpv_2015"):
        dr = dagbag.dags[dag_id].test(run_conf={"sample": True})
        assert _state(dr) == ("success", dict.fromkeys(["start", "fetch", "stage", "validate", "promote"], "success"))
    dr = dagbag.dags["qpvhub_indicators"].test()
    assert _state(dr)[0] == "success"
    dr = dagbag.dags["qpvhub_publish_53"].test()
    assert _state(dr)[0] == "success"
    airflow_run_id = dr.run_id

    with psycopg.connect(db_uri) as conn:
        runs = conn.execute("SELECT source_id, status, airflow_run_id IS NOT NULL FROM meta.source_runs "
                            "ORDER BY started_at").fetchall()
        n_qpv = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
        pub = conn.execute("SELECT status, airflow_run_id, manifest_key FROM meta.publications").fetchone()
    assert runs == [("cog_communes", "success", True), ("qpv_2015", "success", True)]
    assert n_qpv == 6
    assert pub[0] == "published" and pub[1] == airflow_run_id

    from qpvhub.platform.env import Env

    env = Env.from_settings()
    assert env.settings.store.kind == "s3"
    manifest = json.loads(env.store.get_bytes(pub[2]))
    assert manifest["qpvhub"]["airflow_run_id"] == airflow_run_id
    assert env.store.exists("published/53/qpv_profil/latest/qpv_profil_53.geojson")

    # unchanged source: fetch is skipped, downstream tasks too, nothing changes
    dr = dagbag.dags["qpvhub_ingest_qpv_2015"].test(run_conf={"sample": True})
    _, tasks = _state(dr)
    assert tasks["fetch"] == "skipped" and tasks["promote"] == "skipped"


def test_failed_ingest_marks_run_failed_and_keeps_previous(dagbag, db_uri, qpvhub_home, tmp_path) -> None:
    bad = tmp_path / "QPV.geojson"
    bad.write_text("<html><body>Service indisponible</body></html>", encoding="utf-8")
    dr = dagbag.dags["qpvhub_ingest_cog_communes"].test(run_conf={"sample": True})
    assert _state(dr)[0] == "success"
    dr = dagbag.dags["qpvhub_ingest_qpv_2015"].test(run_conf={"url": bad.as_uri()})
    state, tasks = _state(dr)
    assert state == "failed" and tasks["stage"] == "failed" and tasks["promote"] == "upstream_failed"
    with psycopg.connect(db_uri) as conn:
        status, error = conn.execute("SELECT status, error FROM meta.source_runs WHERE source_id = 'qpv_2015'"
                                     ).fetchone()
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]
        n = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
    assert status == "failed" and "HTML page" in error  # set by the failure callback
    assert staging == 0 and n == 0


@pytest.mark.parametrize("source_id, table, rows", [
    ("gtfs", "src.gtfs_stops", 1496),             # GTFS reader, two feeds (partitions), points from lon/lat
    ("bpe", "src.bpe", 120),                      # French CSV, points from Lambert-93 x/y
    ("flood_zones", "src.flood_zones", 3),        # zipped Shapefile, polygons
])
def test_each_reader_through_its_generated_dag(dagbag, db_uri, qpvhub_home, source_id, table, rows) -> None:
    dr = dagbag.dags[f"qpvhub_ingest_{source_id}"].test(run_conf={"sample": True})
    assert _state(dr)[0] == "success"
    with psycopg.connect(db_uri) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
        status = conn.execute("SELECT status, airflow_run_id FROM meta.source_runs").fetchone()
    assert status == ("success", dr.run_id)


def test_reload_all_loads_every_source_in_dependency_order(dagbag, db_uri, qpvhub_home) -> None:
    dr = dagbag.dags["qpvhub_reload_all"].test(run_conf={"sample": True})
    state, tasks = _state(dr)
    # the entries bundling no file (INSEE's 2024-list statistics: `no_sample`) are skipped with their reason
    no_sample = {f"ingest_{s}" for s in ("filosofi_qpv", "insee_qpv24_population", "insee_qpv24_population_communes",
                                          "insee_qpv24_estimations", "insee_qpv24_defm", "insee_qpv24_caf",
                                          "insee_qpv24_scolarisation", "insee_qpv24_dnb", "insee_qpv24_rpls",
                                          "insee_qpv24_side")}
    assert state == "success" and {t: tasks.pop(t) for t in no_sample} == dict.fromkeys(no_sample, "skipped")
    assert set(tasks.values()) == {"success"}
    with psycopg.connect(db_uri) as conn:
        # one line per source (a collection has one run per feed), in the order they first loaded
        order = [r[0] for r in conn.execute("SELECT source_id FROM meta.source_runs WHERE status = 'success' "
                                            "GROUP BY source_id ORDER BY min(started_at)")]
        skipped = [r[0] for r in conn.execute("SELECT source_id FROM meta.source_runs WHERE status = 'skipped' "
                                              "AND error LIKE '%deployment''s regions%'")]
        same_run = conn.execute("SELECT count(DISTINCT airflow_run_id) FROM meta.source_runs").fetchone()[0]
    # the 2024 sample is PACA's: nothing for regions 52 and 53, said and skipped (tests/integration/test_qpv_2024.py)
    assert skipped == ["qpv_2024"]
    assert len(order) + len(skipped) == len(tasks) and same_run == 1
    assert order.index("cog_communes") < order.index("qpv_2015") and order.index("cog_communes") < order.index(
        "iris_ref")


def test_partner_inbox_to_outbox_with_dag_test(dagbag, db_uri, s3_store_conn) -> None:
    """The qpvhub_locate DAG on the S3 protocol: a partner's file located against the newest list loaded (here the
    2015 perimeters of Ille-et-Vilaine), its result in the partner's outbox, the input gone, counts recorded."""
    import shapely
    from pyproj import Transformer

    from qpvhub.platform.env import Env

    for dag_id in ("qpvhub_ingest_cog_communes", "qpvhub_ingest_qpv_2015"):
        assert _state(dagbag.dags[dag_id].test(run_conf={"sample": True}))[0] == "success"
    env = Env.from_settings()
    with psycopg.connect(db_uri) as conn:
        wkb = conn.execute("SELECT ST_AsBinary(geom) FROM ref.qpv WHERE code_qp = 'QP035002'").fetchone()[0]
    p = shapely.from_wkb(bytes(wkb)).representative_point()
    lon, lat = Transformer.from_crs(2154, 4326, always_xy=True).transform(p.x, p.y)
    env.store.put_bytes("partners/ville-rennes/inbox/suivi.csv", f"id;lon;lat\n1;{lon};{lat}\n".encode(), "text/csv")
    dr = dagbag.dags["qpvhub_locate"].test()
    assert _state(dr) == ("success", {"locate_inboxes": "success"})
    assert not env.store.exists("partners/ville-rennes/inbox/suivi.csv")
    result = env.store.get_bytes("partners/ville-rennes/outbox/suivi_localise.csv").decode("utf-8-sig")
    assert ";dans_qpv;;QP035002;Villejean;" in result
    with psycopg.connect(db_uri) as conn:
        assert conn.execute("SELECT partner, status, statuts FROM meta.locate_runs").fetchall() == [
            ("ville-rennes", "success", {"dans_qpv": 1})]
