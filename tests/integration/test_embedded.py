"""The embedded PostGIS cluster used when AIRFLOW_CONN_QPVHUB_POSTGIS is unset."""

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from qpvhub.embedded import EmbeddedCluster

pytestmark = pytest.mark.postgis


def test_start_is_idempotent_and_serves_postgis() -> None:
    root = Path(tempfile.mkdtemp(prefix="qpvhub-emb-"))
    root.chmod(0o755)
    cluster = EmbeddedCluster(root / "pg")
    try:
        uri = cluster.start()
        assert uri.startswith("postgresql://postgres@127.0.0.1:") and uri.endswith("/qpvhub")
        assert cluster.start() == uri  # already running: same port, same database
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            assert conn.execute("SELECT ST_SRID(ST_Transform(ST_SetSRID(ST_MakePoint(-1.68, 48.11), 4326), 2154))"
                                ).fetchone() == (2154,)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        cluster.stop()
        assert not cluster.is_running()
        assert cluster.start().startswith("postgresql://postgres@127.0.0.1:")  # restarts on its data
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
