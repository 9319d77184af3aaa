"""Database connections and ordered, recorded migrations (`sql/migrations/NNN_name.sql`)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

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
    """Open a psycopg 3 connection; with `loader`, act as role `qpvhub_loader` so it owns what it creates.

    Inside `reusing_connections()`, an idle connection of the block is handed back instead, in the state of a
    new one (`DISCARD ALL`: no transaction, settings, temporary tables, locks or prepared statements left)."""
    conn = _POOL.take(uri, autocommit, loader)
    if conn is None:
        try:
            conn = psycopg.connect(uri, autocommit=autocommit, application_name="qpvhub")
        except psycopg.OperationalError as exc:
            raise ConfigError(f"cannot connect to PostGIS at {safe_uri(uri)}: {str(exc).strip()}") from exc
        try:
            _act_as_loader(conn, autocommit, loader)
        except BaseException:
            conn.close()
            raise
    try:
        yield conn
    finally:
        if not _POOL.give(conn, uri, autocommit, loader):
            conn.close()


def _act_as_loader(conn: psycopg.Connection, autocommit: bool, loader: bool) -> None:
    if not loader:
        return
    member = conn.execute(
        "SELECT pg_has_role(current_user, 'qpvhub_loader', 'MEMBER') FROM pg_roles WHERE rolname = 'qpvhub_loader'"
    ).fetchone()
    if member and member[0]:
        conn.execute("SET ROLE qpvhub_loader")
        if not autocommit:
            conn.commit()


class _IdleConnections:
    """The idle connections of the open `reusing_connections()` blocks, shared by their threads (a load's COPY
    writers and index builder are threads). Emptied when the last block ends, and before a fork: a child must
    not share its parent's sockets."""

    PER_KEY = 4  # a load's main thread, its two COPY writers, its index builder

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks = 0
        self.idle: dict[tuple, list[psycopg.Connection]] = {}
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_in_parent,
                            after_in_child=self._after_fork_in_child)

    def take(self, uri: str, autocommit: bool, loader: bool) -> psycopg.Connection | None:
        while True:
            with self.lock:
                stack = self.idle.get((uri, autocommit, loader))
                conn = stack.pop() if stack else None
            if conn is None:
                return None
            try:  # back to a new connection's state; a connection the server dropped meanwhile fails here
                conn.autocommit = True
                conn.execute("DISCARD ALL")
                conn.autocommit = autocommit
                _act_as_loader(conn, autocommit, loader)
                return conn
            except psycopg.Error:
                conn.close()

    def give(self, conn: psycopg.Connection, uri: str, autocommit: bool, loader: bool) -> bool:
        """Keep `conn` for the next `connect` (its open transaction rolled back, as closing would)."""
        if not self.blocks or conn.closed or conn.broken:
            return False
        try:
            status = conn.info.transaction_status
            if status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS, TransactionStatus.INERROR):
                return False  # a query still running (an interrupted one): close
            if status != TransactionStatus.IDLE:
                conn.rollback()
        except psycopg.Error:
            return False
        with self.lock:
            stack = self.idle.setdefault((uri, autocommit, loader), [])
            if not self.blocks or len(stack) >= self.PER_KEY:
                return False
            stack.append(conn)
        return True

    def enter(self) -> None:
        with self.lock:
            self.blocks += 1

    def leave(self) -> None:
        with self.lock:
            self.blocks -= 1
            if self.blocks:
                return
            idle, self.idle = self.idle, {}
        for stack in idle.values():
            for conn in stack:
                conn.close()

    def _before_fork(self) -> None:
        """Close the idle connections (a child would share their sockets) and hold the lock across the fork."""
        self.lock.acquire()
        for conn in [c for stack in self.idle.values() for c in stack]:
            conn.close()
        self.idle.clear()

    def _after_fork_in_parent(self) -> None:
        self.lock.release()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()


_POOL = _IdleConnections()


@contextmanager
def reusing_connections() -> Iterator[None]:
    """Within the block, `connect` reuses the block's idle connections instead of opening one each time (each
    new one costs SCRAM authentication and a server process: 5–9 ms; a GTFS feed's load opened 14 of them)."""
    _POOL.enter()
    try:
        yield
    finally:
        _POOL.leave()


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
