"""Promote is one transaction: a failure at any of its DDL statements leaves the live table (or partition)
byte for byte as it was and `__previous` holding the version before it.

An event trigger on `ddl_command_start` counts the promote's statements and raises at the n-th, for every
n in turn: a COMMIT slipped between the rename and the ATTACH, or a `__previous` emptied on the way,
makes one of these fail."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from qpvhub.ingest import promote, stage
from qpvhub.ingest.pipeline import ingest
from qpvhub.ingest.promote import PromoteError
from qpvhub.ingest.runs import start_run
from qpvhub.ingest.steps import fetch_step, promote_step, stage_step, validate_step
from qpvhub.platform.db import connect

pytestmark = [pytest.mark.postgis, pytest.mark.faults, pytest.mark.slow]

FAULT = """
CREATE SEQUENCE IF NOT EXISTS public.fault_count;
GRANT USAGE, UPDATE ON SEQUENCE public.fault_count TO PUBLIC;
CREATE OR REPLACE FUNCTION public.fault_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    at int := nullif(current_setting('qpvhub.fault_at', true), '')::int;
    n bigint;
BEGIN
    IF at IS NULL THEN RETURN; END IF;
    n := nextval('public.fault_count');
    RAISE NOTICE 'ddl % %', n, tg_tag;
    IF n = at THEN
        RAISE EXCEPTION 'injected failure at DDL statement % (%)', n, tg_tag;
    END IF;
END $$;
CREATE EVENT TRIGGER fault_ddl ON ddl_command_start EXECUTE FUNCTION public.fault_ddl();
"""


def _rows(uri: str, schema: str, table: str) -> list[tuple] | None:
    """Every row, geometry as its exact bytes (hex EWKB), in a stable order; None if the table is absent."""
    with psycopg.connect(uri) as conn:
        if not conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0]:
            return None
        return conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY t::text").format(
            sql.Identifier(schema, table))).fetchall()


def _run_ids(uri: str, schema: str, table: str) -> set[str]:
    with psycopg.connect(uri) as conn:
        return {r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT source_run_id FROM {}").format(
            sql.Identifier(schema, table)))}


@pytest.mark.parametrize("sid", ["qpv_2015", "cog_communes"])  # a partition (DETACH/ATTACH), a table (rename)
def test_a_failure_at_every_ddl_statement_of_promote_changes_nothing(env, catalog, sid: str) -> None:
    source = catalog[sid]
    if sid == "qpv_2015":
        assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    v1 = ingest(env, source, sample=True).run_id
    v2 = ingest(env, source, sample=True, force=True).run_id
    schema, live = source.target.schema_, source.target.physical_table
    previous = f"{live}__previous"
    live_before, previous_before = _rows(env.uri, schema, live), _rows(env.uri, schema, previous)
    assert live_before and previous_before and len(live_before) == len(previous_before)
    assert live_before != previous_before  # the same data, each row stamped with its run
    assert _run_ids(env.uri, schema, live) == {v2} and _run_ids(env.uri, schema, previous) == {v1}

    run_id = start_run(env, source)
    fetched = fetch_step(env, source, run_id, source_url(env, source), force=True)
    stage_step(env, source, run_id, fetched["raw_key"])
    validate_step(env, source, run_id)
    _, final_table = stage.staging_names(source, run_id)
    with psycopg.connect(env.uri, autocommit=True) as admin:
        admin.execute(FAULT)
    try:
        tags: list[str] = []

        def attempt(at: int) -> None:
            with connect(env.uri) as conn:
                conn.add_notice_handler(lambda d: tags.append(d.message_primary))
                conn.execute("SELECT setval('public.fault_count', 1, false)")
                conn.execute(sql.SQL("SET qpvhub.fault_at = {}").format(sql.Literal(str(at))))
                conn.commit()
                try:
                    stage.drop_check_view(conn, final_table)
                    promote.promote(conn, source, final_table, run_id)
                finally:
                    conn.rollback()  # what promote_step does on an error: nothing is committed

        attempt(0)  # counts the statements without failing
        statements = [t for t in tags if t.startswith("ddl ")]
        kinds = " ".join(statements)
        assert "ALTER TABLE" in kinds and "GRANT" in kinds and "COMMENT" in kinds and "DROP TABLE" in kinds
        assert len(statements) >= 8, statements
        for n in range(1, len(statements) + 1):
            tags.clear()
            with pytest.raises(psycopg.Error, match=rf"injected failure at DDL statement {n} "):
                attempt(n)
            assert _rows(env.uri, schema, live) == live_before, f"live changed by a failure at {statements[n - 1]}"
            assert _rows(env.uri, schema, previous) == previous_before, f"__previous changed at {statements[n - 1]}"
            if source.target.partition:
                with psycopg.connect(env.uri) as conn:
                    attached = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                                            (f"{schema}.{live}",)).fetchone()[0]
                assert attached == 1
    finally:
        with psycopg.connect(env.uri, autocommit=True) as admin:
            admin.execute("DROP EVENT TRIGGER IF EXISTS fault_ddl")
            admin.execute("DROP FUNCTION IF EXISTS public.fault_ddl()")
            admin.execute("DROP SEQUENCE IF EXISTS public.fault_count")
    # the same staged run now promotes: live is the new version, __previous the one before it (v2)
    promote_step(env, source, run_id)
    after = _rows(env.uri, schema, live)
    assert after and len(after) == len(live_before) and _run_ids(env.uri, schema, live) == {run_id}
    assert _rows(env.uri, schema, previous) == live_before


def test_a_staging_table_that_does_not_match_the_live_one_is_refused(env, catalog) -> None:
    source = catalog["cog_communes"]
    ingest(env, source, sample=True)
    before = _rows(env.uri, "ref", "commune")
    with psycopg.connect(env.uri, autocommit=True) as conn:  # the live table drifted (a manual change)
        conn.execute("ALTER TABLE ref.commune ADD COLUMN note text")
    before = _rows(env.uri, "ref", "commune")
    with pytest.raises(PromoteError, match=r"source cog_communes: staging table does not match ref.commune: "
                                           r".*\('note', 'text'\)"):
        ingest(env, source, sample=True, force=True)
    assert _rows(env.uri, "ref", "commune") == before


def source_url(env, source) -> str:
    from qpvhub.ingest.steps import source_url as url_of

    return url_of(env, source, sample=True)
