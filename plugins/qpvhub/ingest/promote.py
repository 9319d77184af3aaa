"""The promote step's swap: the staging table replaces the live one (rename, or DETACH/ATTACH for one
partition) in the caller's transaction, the previous kept as `<table>__previous`, comments from the catalogue.

A failure at any point leaves the live table as it was.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from qpvhub.catalog.model import Source
from qpvhub.ingest.stage import STAGING_OPTIONS
from qpvhub.platform.db import columns_of, table_exists
from qpvhub.platform.errors import QpvhubError


class PromoteError(QpvhubError):
    """The new table does not fit the live one (columns or types differ): nothing was changed."""


def _attach_to_store(conn: psycopg.Connection, source: Source, schema: str) -> None:
    """The entry's new table becomes the partition of its shared store (`target.part_of`) for its constant, once
    its columns are the store's (the migration defines them: a catalogue entry cannot reshape the store)."""
    t = source.target
    assert t.part_of is not None
    store, column = t.part_of.table, t.part_of.column
    if not table_exists(conn, schema, store):
        raise PromoteError(f"source {source.id}: its store {schema}.{store} does not exist: run `qpvhub migrate`")
    want, got = columns_of(conn, schema, store), columns_of(conn, schema, t.table)
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise PromoteError(f"source {source.id}: its columns do not match the store {schema}.{store}: {diff}")
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        sql.Identifier(schema, store), sql.Identifier(schema, t.table),
        sql.Literal(source.columns[column].constant)))


def promote(conn: psycopg.Connection, source: Source, final_table: str, run_id: str) -> None:
    """Swap the staging table in, in the current transaction; the caller commits (or rolls back)."""
    t = source.target
    schema, live = t.schema_, t.physical_table
    previous = f"{live}__previous"
    new = sql.Identifier("staging", final_table)
    conn.execute("SET LOCAL lock_timeout = '60s'")
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"promote:{schema}.{live}",))
    if t.partition and not table_exists(conn, schema, t.table):
        # the first release of a series: its parent, partitioned by the release column, shaped like staging
        (pcol, _), = t.partition.items()
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS) PARTITION BY LIST ({})").format(
            sql.Identifier(schema, t.table), new, sql.Identifier(pcol)))
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN source_run_id DROP DEFAULT").format(
            sql.Identifier(schema, t.table)))  # staging's default names this run only
        conn.execute(sql.SQL("GRANT SELECT ON {} TO qpvhub_analyst").format(sql.Identifier(schema, t.table)))
        if t.part_of is not None:
            _attach_to_store(conn, source, schema)
    parent_cols = columns_of(conn, schema, t.table) if table_exists(conn, schema, t.table) else None
    new_cols = columns_of(conn, "staging", final_table)
    if parent_cols is not None and parent_cols != new_cols:
        diff = sorted(set(parent_cols.items()) ^ set(new_cols.items()))
        raise PromoteError(f"source {source.id}: staging table does not match {schema}.{t.table}: {diff}")

    # Constraints of the live table (NOT NULL, CHECK) go onto the new one before it replaces it, in one
    # ALTER TABLE: PostgreSQL checks them all in a single scan.
    actions = [sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(name))
               for name, col in source.columns.items() if col.required or name in source.keys]
    if source.geometry:
        actions.append(sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(source.geometry.column)))
    actions.append(sql.SQL("RESET ({})").format(sql.SQL(", ").join(map(sql.SQL, STAGING_OPTIONS))))
    actions.append(sql.SQL("ALTER COLUMN source_run_id DROP DEFAULT"))  # a staging convenience only
    if parent_cols is not None:
        checks = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype = 'c' AND NOT coninhcount > 0",
            (sql.Identifier(schema, t.table).as_string(conn),)).fetchall()
        actions += [sql.SQL("ADD CONSTRAINT {} {}").format(sql.Identifier(conname), sql.SQL(condef))
                    for conname, condef in checks]
    conn.execute(sql.SQL("ALTER TABLE {} {}").format(new, sql.SQL(", ").join(actions)))

    if t.part_of is not None:  # the store's bound too: a leaf attached below it must prove both
        store_value = source.columns[t.part_of.column].constant
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL AND {} = {})").format(
            new, sql.Identifier(f"{live}_store_bound"), sql.Identifier(t.part_of.column),
            sql.Identifier(t.part_of.column), sql.Literal(store_value)))
    if t.partition:
        (pcol, pval), = t.partition.items()
        # A matching CHECK lets ATTACH skip its validation scan.
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL AND {} = {})").format(
            new, sql.Identifier(f"{live}_partition_bound"), sql.Identifier(pcol), sql.Identifier(pcol),
            sql.Literal(pval)))
    else:
        if source.keys:
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                new, sql.SQL(", ").join(sql.Identifier(k) for k in source.keys)))

    if table_exists(conn, schema, previous):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, previous)))
    if t.partition:
        (pcol, pval), = t.partition.items()
        if table_exists(conn, schema, live):
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                sql.Identifier(schema, t.table), sql.Identifier(schema, live)))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, live), sql.Identifier(previous)))
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(new, sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, final_table), sql.Identifier(live)))
        conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            sql.Identifier(schema, t.table), sql.Identifier(schema, live), sql.Literal(pval)))
    else:
        if table_exists(conn, schema, live):
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, live), sql.Identifier(previous)))
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(new, sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, final_table), sql.Identifier(live)))

    target = sql.Identifier(schema, live)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO qpvhub_analyst").format(target))
    described = f"{source.title} — {source.publisher}; licence: {source.licence}"
    _describe(conn, source, target, f"{described}; loaded by run {run_id}")
    if t.partition:  # the parent an analyst queries: every partition's rows, the same columns
        (pcol, _), = t.partition.items()
        _describe(conn, source, sql.Identifier(schema, t.table),
                  f"{described}; one partition per {pcol} ({schema}.{t.table}_<{pcol}>), each with its run")


def _describe(conn: psycopg.Connection, source: Source, table: sql.Identifier, comment: str) -> None:
    """The table's and its columns' comments, from the catalogue: what the analyst guide promises psql shows."""
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(comment)))
    for name, col in source.columns.items():
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            table, sql.Identifier(name), sql.Literal(col.description)))
    conn.execute(sql.SQL("COMMENT ON COLUMN {}.source_run_id IS {}").format(
        table, sql.Literal("meta.source_runs.run_id of the load")))
    if source.geometry:
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            table, sql.Identifier(source.geometry.column), sql.Literal(source.geometry.description)))
