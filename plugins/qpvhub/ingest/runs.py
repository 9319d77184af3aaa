"""The run ledger: one `meta.source_runs` row per run of a source (or of one of its partitions), its
state, lineage, counts and step timings; one run of a source at a time."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from types import EllipsisType

import psycopg
from psycopg.types.json import Jsonb

from qpvhub import __version__
from qpvhub.catalog.model import Source
from qpvhub.ingest.stage import drop_staging
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.platform.errors import ConcurrentRunError, QpvhubError

log = logging.getLogger(__name__)


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "_" + secrets.token_hex(3)


def record(conn: psycopg.Connection, run_id: str, *, timings: dict[str, float] | None = None, **fields) -> None:
    """Set fields of the run's meta.source_runs row and add step timings (seconds), in one UPDATE on `conn`."""
    sets = [f"{k} = %({k})s" for k in fields]  # keys are ours
    params = {**{k: Jsonb(v) if isinstance(v, dict) else v for k, v in fields.items()}, "run_id": run_id}
    if timings:
        sets.append("timings = timings || %(timings)s")
        params["timings"] = Jsonb({step: round(seconds, 3) for step, seconds in timings.items()})
    conn.execute(f"UPDATE meta.source_runs SET {', '.join(sets)} WHERE run_id = %(run_id)s", params)


def update(env: Env, run_id: str, *, timings: dict[str, float] | None = None, **fields) -> None:
    """`_record` on a connection of its own, committed."""
    with connect(env.uri) as conn:
        record(conn, run_id, timings=timings, **fields)
        conn.commit()


def add_timing(env: Env, run_id: str, step: str, seconds: float) -> None:
    update(env, run_id, timings={step: seconds})


def start_run(env: Env, source: Source, *, airflow_run_id: str | None = None, run_id: str | None = None) -> str:
    """Record a new run; refuse it while another run of the source is in progress.

    Two runs of one source would stage the same tables and race to promote. A 'running' row older than
    QPVHUB_STALE_RUN_HOURS (a worker killed without its failure callback) does not block.
    """
    run_id = run_id or new_run_id()
    with connect(env.uri) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"run:{source.id}",))
        other = conn.execute(
            "SELECT run_id, started_at FROM meta.source_runs WHERE source_id = %s AND status = 'running' "
            "AND started_at > now() - make_interval(secs => %s) ORDER BY started_at DESC LIMIT 1",
            (source.id, env.settings.runs.stale_run_hours * 3600)).fetchone()
        if other:
            raise ConcurrentRunError(
                f"source {source.id}: run {other[0]} started at {other[1]:%Y-%m-%d %H:%M:%S%z} is still in "
                "progress; this run does not start (retry later, or mark that run failed if its worker died)")
        conn.execute(
            "INSERT INTO meta.source_runs (run_id, source_id, airflow_run_id, status, target, code_version, millesime, "
            "part) VALUES (%s, %s, %s, 'running', %s, %s, %s, %s)",
            (run_id, source.id, airflow_run_id, source.target.qualified, __version__, source.millesime,
             source.part))
        conn.commit()
    return run_id


def last_success(env: Env, source_id: str, part: str | EllipsisType | None = ...) -> dict | None:
    """The source's last successful run: of one partition when given (a release, a feed; None: an entry
    without partitions), of any by default."""
    with connect(env.uri) as conn:
        row = conn.execute(
            "SELECT run_id, sha256, etag, last_modified, rows_loaded, raw_key, located, urls FROM meta.source_runs "
            "WHERE source_id = %s AND status = 'success' AND (%s OR part IS NOT DISTINCT FROM %s) "
            "ORDER BY finished_at DESC LIMIT 1", (source_id, part is ..., None if part is ... else part)
        ).fetchone()
    if not row:
        return None
    return dict(zip(("run_id", "sha256", "etag", "last_modified", "rows_loaded", "raw_key", "located", "urls"), row,
                    strict=True))


def skip_run(env: Env, source: Source, run_id: str, reason: str) -> None:
    """End a run that had nothing to load (e.g. no row in the regions): skipped, with the reason."""
    with connect(env.uri) as conn:
        drop_staging(conn, source, run_id)
        conn.execute("UPDATE meta.source_runs SET status = 'skipped', finished_at = now(), error = %s "
                     "WHERE run_id = %s AND status = 'running'", (reason, run_id))
        conn.commit()
    log.warning("%s", reason)


def fail_run(env: Env, source: Source, run_id: str, error: BaseException | str) -> None:
    """Mark a run failed and clear its staging tables; the live table is untouched."""
    try:
        with connect(env.uri) as conn:
            drop_staging(conn, source, run_id)
            conn.execute(
                "UPDATE meta.source_runs SET status = 'failed', finished_at = now(), error = %s "
                "WHERE run_id = %s AND status = 'running'", (str(error)[:10000], run_id))
            conn.commit()
    except QpvhubError as exc:  # the database itself may be what failed: say so, keep the first error
        log.error("could not record failure of run %s: %s", run_id, exc)
