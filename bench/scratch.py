"""A throwaway, migrated database for a benchmark run (dropped afterwards, whatever happens)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create `<prefix><random>` on the configured (or embedded) server, migrate it, yield its URI, drop it."""
    from qpvhub.platform.db import migrate, resolve_uri
    from qpvhub.platform.settings import Settings

    settings = Settings.load()
    admin = resolve_uri(settings)
    name = prefix + uuid.uuid4().hex[:6]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    uri = urlunsplit(urlsplit(admin)._replace(path="/" + name))
    try:
        migrate(uri, settings.sql_dir)
        yield uri
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
