"""The derived reference tables (`sql/derived/*.sql`: subdivided QPV, QPV × commune shares, the 2015/2024
correspondence, EPCI, communes outside their QPV), rebuilt from what is loaded before indicators run."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql

from qpvhub.indicators.families import DerivedHeader, split_header
from qpvhub.platform.errors import ConfigError

log = logging.getLogger(__name__)

NEXT = "qpv_indicator_next"  # staging.qpv_indicator_next: the mart being computed


def has_rows(conn: psycopg.Connection, qualified: str) -> bool:
    if qualified.startswith("indicator:"):
        return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE indicator_id = %s)").format(
            sql.Identifier("staging", NEXT)), (qualified.split(":", 1)[1],)).fetchone()[0]  # this run's so far
    schema, table = qualified.split(".")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
    if not exists:
        return False
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, table))).fetchone()[0]


def refresh_derived(conn: psycopg.Connection, sql_dir: Path) -> dict[str, int]:
    """Rebuild the derived reference tables (`sql/derived/*.sql`: subdivided QPV, QPV × commune shares,
    2015/2024 correspondence, EPCI) from what is loaded; a table whose inputs are missing is left empty."""
    counts: dict[str, int] = {}
    for path in sorted((sql_dir / "derived").glob("*.sql")):
        header, body = split_header(path, DerivedHeader)
        assert isinstance(header, DerivedHeader)
        schema, table = header.table.split(".")
        target = sql.Identifier(schema, table)
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        missing = [r for r in header.requires if not has_rows(conn, r)]
        if missing:
            log.info("derived table %s left empty: %s not loaded", header.table, ", ".join(missing))
            counts[header.table] = 0
            continue
        try:
            conn.execute(body)
        except psycopg.Error as exc:
            raise ConfigError(f"derived table {path.name} failed: {str(exc).strip()}") from exc
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        counts[header.table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
    return counts
