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
