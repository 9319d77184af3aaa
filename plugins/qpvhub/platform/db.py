"""Database connections and ordered, recorded migrations (`sql/migrations/NNN_name.sql`)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from qpvhub.platform.errors import ConfigError
from qpvhub.platform.settings import Settings

log = logging.getLogger(__name__)

MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# Arbitrary constant: serialises concurrent migrators (two DAG runs starting at once).
MIGRATION_LOCK = 7_426_110


def resolve_uri(settings: Settings) -> str:
    """The PostGIS URI: the configured one, or the embedded cluster (started on demand)."""
    if settings.postgis_uri:
        return settings.postgis_uri
    from qpvhub.platform.embedded import EmbeddedCluster

    return EmbeddedCluster(settings.home / "pg", settings).start()


def safe_uri(uri: str) -> str:
    """The URI with its password masked, for messages."""
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", uri)


@contextmanager
def connect(uri: str, *, autocommit: bool = False, loader: bool = True) -> Iterator[psycopg.Connection]:
    """Open a psycopg 3 connection; with `loader`, act as role `qpvhub_loader` so it owns what it creates."""
    try:
        conn = psycopg.connect(uri, autocommit=autocommit, application_name="qpvhub")
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to PostGIS at {safe_uri(uri)}: {str(exc).strip()}") from exc
    try:
        if loader:
            member = conn.execute(
                "SELECT pg_has_role(current_user, 'qpvhub_loader', 'MEMBER') "
                "FROM pg_roles WHERE rolname = 'qpvhub_loader'"
            ).fetchone()
            if member and member[0]:
                conn.execute("SET ROLE qpvhub_loader")
                if not autocommit:
                    conn.commit()
        yield conn
    finally:
        conn.close()


def migrations(sql_dir: Path) -> list[tuple[str, str, Path]]:
    """List (version, name, path) of migration files, in order; refuse badly named files."""
    found = []
    for path in sorted((sql_dir / "migrations").glob("*.sql")):
        m = MIGRATION_RE.match(path.name)
        if not m:
            raise ConfigError(f"migration file {path} is not named NNN_lowercase_name.sql")
        found.append((m.group(1), m.group(2), path))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"two migrations share a version number in {sql_dir / 'migrations'}")
    return found


def migrate(uri: str, sql_dir: Path) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the versions applied.

    A migration already applied whose file changed is an error: migrations are append-only. This is an
    explicit step (`qpvhub migrate`, the deployment's init task, the test fixtures), never run by a task.
    """
    applied_now: list[str] = []
    with connect(uri, loader=False) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        conn.commit()
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS meta")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS meta.schema_migrations (
                       version text PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            conn.commit()
            done = dict(conn.execute("SELECT version, sha256 FROM meta.schema_migrations").fetchall())
            for version, name, path in migrations(sql_dir):
                text = path.read_text(encoding="utf-8")
                digest = hashlib.sha256(text.encode()).hexdigest()
                if version in done:
                    if done[version] != digest:
                        raise ConfigError(
                            f"migration {path.name} was changed after it was applied; add a new migration instead"
                        )
                    continue
                log.info("applying migration %s", path.name)
                try:
                    conn.execute(text)
                    conn.execute(
                        "INSERT INTO meta.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                        (version, name, digest),
                    )
                    conn.commit()
                except psycopg.Error as exc:
                    conn.rollback()
                    raise ConfigError(f"migration {path.name} failed: {str(exc).strip()}") from exc
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            conn.commit()
    return applied_now


def pending_migrations(uri: str, sql_dir: Path) -> list[str]:
    """The migration files not applied to the database yet (all of them on an empty database)."""
    with connect(uri, loader=False) as conn:
        recorded = conn.execute("SELECT to_regclass('meta.schema_migrations') IS NOT NULL").fetchone()[0]
        done = {r[0] for r in conn.execute("SELECT version FROM meta.schema_migrations")} if recorded else set()
    return [f"{v}_{n}" for v, n, _ in migrations(sql_dir) if v not in done]


def require_migrated(uri: str, sql_dir: Path) -> None:
    """Refuse to work on a database whose schema is behind the code (one query), naming the fix."""
    pending = pending_migrations(uri, sql_dir)
    if pending:
        raise ConfigError(f"the database at {safe_uri(uri)} is not migrated ({len(pending)} pending: "
                          f"{', '.join(pending[:3])}{'…' if len(pending) > 3 else ''}): run `qpvhub migrate` "
                          "(the deployment's init task does)")


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]


def columns_of(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """A table's columns and their SQL types, in order."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", (schema, table)
    ).fetchall()
    return dict(rows)
