"""The embedded PostGIS cluster used when AIRFLOW_CONN_QPVHUB_POSTGIS is unset: runs from any project
directory, and is closed to the machine's other accounts (scram-sha-256, generated secrets)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from qpvhub.platform.embedded import EmbeddedCluster, find_bindir
from qpvhub.platform.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.postgis


@pytest.fixture
def cluster_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cluster handle in a fresh directory; its system location (if any) under a temporary base."""
    system = Path(tempfile.mkdtemp(prefix="qpvhub-sys-"))
    system.chmod(0o755)
    monkeypatch.setenv("QPVHUB_SYSTEM_DIR", str(system / "lib"))
    made: list[EmbeddedCluster] = []

    def make(root: Path) -> EmbeddedCluster:
        made.append(EmbeddedCluster(root, Settings.load()))
        return made[-1]

    yield make
    for c in made:
        c.destroy()
    shutil.rmtree(system, ignore_errors=True)


def test_start_is_idempotent_and_serves_postgis(cluster_in) -> None:
    root = Path(tempfile.mkdtemp(prefix="qpvhub-emb-"))
    root.chmod(0o755)
    cluster = cluster_in(root / "pg")
    try:
        uri = cluster.start()
        assert uri.startswith("postgresql://postgres:") and uri.endswith("/qpvhub")
        assert cluster.start() == uri  # already running: same port, same database
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            assert conn.execute("SELECT ST_SRID(ST_Transform(ST_SetSRID(ST_MakePoint(-1.68, 48.11), 4326), 2154))"
                                ).fetchone() == (2154,)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        cluster.stop()
        assert not cluster.is_running()
        again = cluster.start()  # restarts on its data with the same secrets, on a free port
        assert again.rsplit(":", 1)[0] == uri.rsplit(":", 1)[0]
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_runs_from_a_directory_only_root_can_reach(cluster_in, tmp_path: Path) -> None:
    """A clone under /root (mode 700): as root, the server user cannot reach it, so the cluster lives in
    the system location, recorded in the project; as another user it simply lives in the project."""
    home = tmp_path / "root-home"
    home.mkdir(mode=0o700)
    os.chmod(home, 0o700)
    cluster = cluster_in(home / "qpvhub" / ".qpvhub" / "pg")
    uri = cluster.start()
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    if os.geteuid() == 0:
        assert cluster.location != cluster.root and cluster.location.parent == Path(os.environ["QPVHUB_SYSTEM_DIR"])
        assert (cluster.root / "location").read_text().strip() == str(cluster.location)
        st = cluster.location.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid != 0  # owned by postgres, closed to others
    else:
        assert cluster.location == cluster.root
    location = cluster.location
    cluster.destroy()  # make clean: removes the system location too
    assert not location.exists() and not cluster.root.exists()


def test_closed_to_other_accounts_and_the_analyst_reads_only(cluster_in, tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    root.chmod(0o755)
    cluster = cluster_in(root / "pg")
    cluster.start()
    port = cluster.port()
    for user in ("postgres", "qpvhub_analyst"):
        secret = cluster.password_file(user)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{port}/qpvhub", connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"postgresql://{user}:wrong@127.0.0.1:{port}/qpvhub", connect_timeout=5)
    assert cluster.password("postgres") != cluster.password("qpvhub_analyst")
    # psql as another local user, no password: refused (what `psql -h 127.0.0.1 -U postgres` does)
    psql = find_bindir() / "psql"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGCONNECT_TIMEOUT": "5"}
    res = subprocess.run([str(psql if psql.exists() else "psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
                          "postgres", "-w", "-c", "SELECT 1", "qpvhub"], capture_output=True, text=True, env=env)
    assert res.returncode != 0 and "password" in res.stderr
    # the printed analyst connection works and is read-only
    from qpvhub.platform.db import migrate

    migrate(cluster.uri("qpvhub"), ROOT / "sql")
    analyst = subprocess.run([os.sys.executable, "-m", "qpvhub.platform.embedded", "analyst-uri", str(cluster.root)],
                             capture_output=True, text=True, check=True).stdout.strip()
    with psycopg.connect(analyst) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("qpvhub_analyst",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE public.x (a int)")


def test_a_trust_cluster_of_an_older_version_is_secured(cluster_in, tmp_path: Path) -> None:
    """A cluster initialised with trust (before passwords) gets its passwords and a scram pg_hba.conf."""
    root = tmp_path / "old"
    root.mkdir()
    root.chmod(0o755)
    cluster = cluster_in(root / "pg")
    cluster.start()
    cluster.stop()
    hba = cluster.datadir / "pg_hba.conf"
    text = subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + ["cat", str(hba)],
                          capture_output=True, text=True, check=True).stdout
    legacy = text.replace("scram-sha-256", "trust")
    tmp = cluster.location / "hba.old"  # where the server's user can read it
    tmp.write_text(legacy)
    tmp.chmod(0o644)
    subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + ["cp", str(tmp), str(hba)],
                   check=True)
    cluster.start()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port()}/qpvhub", connect_timeout=5)
    with psycopg.connect(cluster.uri("qpvhub")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
