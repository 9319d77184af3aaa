"""Migrations and roles on a real PostgreSQL + PostGIS."""

import psycopg
import pytest

from qpvhub.platform.db import migrate
from qpvhub.platform.errors import ConfigError
from tests.conftest import ROOT, as_role

pytestmark = pytest.mark.postgis


def _as(uri: str, user: str) -> str:
    return as_role(uri, user)


def test_migrations_create_schemas_and_are_recorded_once(db_uri: str) -> None:
    with psycopg.connect(db_uri) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        assert {"meta", "staging", "ref", "src", "mart"} <= schemas
        versions = [r[0] for r in conn.execute("SELECT version FROM meta.schema_migrations ORDER BY 1")]
        assert versions[:4] == ["001", "002", "003", "004"]
        geom = conn.execute("SELECT type, srid FROM geometry_columns WHERE f_table_schema = 'ref' "
                            "AND f_table_name = 'qpv'").fetchone()
        assert geom == ("MULTIPOLYGON", 2154)
        gist = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'ref' AND tablename = 'qpv'").fetchall()
        assert any("gist" in r[0] for r in gist)
    assert migrate(db_uri, ROOT / "sql") == []  # idempotent


def test_a_changed_migration_is_refused(db_uri: str) -> None:
    with psycopg.connect(db_uri) as conn:
        conn.execute("UPDATE meta.schema_migrations SET sha256 = 'x' WHERE version = '003'")
    with pytest.raises(ConfigError, match="003_ref.sql was changed after it was applied"):
        migrate(db_uri, ROOT / "sql")


def test_analyst_reads_but_cannot_write_or_create(db_uri: str) -> None:
    with psycopg.connect(_as(db_uri, "qpvhub_analyst"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM ref.qpv").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM meta.source_runs").fetchone() == (0,)
        conn.execute("SET default_transaction_read_only = off")  # privileges must hold on their own
        for stmt, msg in [
            ("INSERT INTO ref.commune VALUES ('35238', 'Rennes', '35', '53', NULL)", "permission denied"),
            ("DELETE FROM mart.qpv_indicator", "permission denied"),
            ("CREATE TABLE ref.x (a int)", "permission denied"),
            ("CREATE TABLE public.x (a int)", "permission denied"),
            ("CREATE TEMP TABLE x (a int)", "permission denied"),
            ("SELECT * FROM staging.anything", "permission denied for schema staging"),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=msg):
                conn.execute(stmt)


def test_loader_role_has_no_superuser_rights(db_uri: str) -> None:
    with psycopg.connect(db_uri) as conn:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles "
                           "WHERE rolname = 'qpvhub_loader'").fetchone()
        assert row == (False, False, False, False)
        owners = {r[0] for r in conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname IN ('meta','staging','ref','src','mart')")}
        assert owners == {"qpvhub_loader"}


# ---------------------------------------------------------------- connections reused within a load
def _backend(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _qpvhub_sessions(uri: str) -> int:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'qpvhub'").fetchone()[0]


def test_connections_are_reused_within_the_block_only_and_closed_after_it(db_uri: str) -> None:
    from qpvhub.platform.db import connect, reusing_connections

    with connect(db_uri) as a:
        first = _backend(a)
    with connect(db_uri) as b:
        assert _backend(b) != first  # outside a block: a new connection each time
    with reusing_connections():
        with connect(db_uri) as a:
            first = _backend(a)
        with connect(db_uri) as b, connect(db_uri) as c:  # the idle one, and a new one beside it
            assert _backend(b) == first and _backend(c) != first
        with connect(db_uri, autocommit=True) as d:  # another kind of connection is not handed over
            assert _backend(d) not in (first, _backend(c))
        assert _qpvhub_sessions(db_uri) == 3  # idle, kept for the block
    assert _qpvhub_sessions(db_uri) == 0  # and closed when it ends


def test_a_reused_connection_is_in_the_state_of_a_new_one(db_uri: str) -> None:
    from qpvhub.platform.db import connect, reusing_connections

    with reusing_connections():
        with connect(db_uri) as a:
            pid = _backend(a)
            a.execute("CREATE TEMPORARY TABLE scratch (x int)")
            a.execute("SET search_path = pg_catalog")
            a.execute("SELECT pg_advisory_lock(42)")
            a.execute("CREATE TABLE meta.uncommitted (x int)")  # never committed: rolled back, as a close would
        with connect(db_uri) as b:
            assert _backend(b) == pid
            assert b.execute("SELECT current_user, current_setting('search_path')").fetchone() == (
                "qpvhub_loader", '"$user", public')
            assert b.execute("SELECT to_regclass('pg_temp.scratch'), to_regclass('meta.uncommitted')").fetchone() == (
                None, None)
            assert b.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                             (pid,)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.DivisionByZero), connect(db_uri) as c:
            c.execute("SELECT 1 / 0")  # the failed transaction is rolled back, the connection kept
        with connect(db_uri) as d:
            assert _backend(d) == pid and d.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_dropped_while_idle_is_replaced(db_uri: str) -> None:
    from qpvhub.platform.db import connect, reusing_connections

    with reusing_connections():
        with connect(db_uri) as a:
            pid = _backend(a)
        with psycopg.connect(db_uri, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        with connect(db_uri) as b:
            assert _backend(b) != pid and b.execute("SELECT 1").fetchone() == (1,)


def test_a_forked_child_shares_no_idle_connection(db_uri: str) -> None:
    import os

    from qpvhub.platform.db import connect, reusing_connections

    with reusing_connections():
        with connect(db_uri) as a:
            pid = _backend(a)
        child = os.fork()
        if child == 0:  # the child would share the idle connection's socket: it was closed before the fork
            os._exit(0)
        assert os.waitpid(child, 0)[1] == 0
        with connect(db_uri) as b:
            assert _backend(b) != pid and b.execute("SELECT 1").fetchone() == (1,)
