"""The ingestion chain as steps (fetch → stage → validate → promote), shared by Airflow and the CLI.

Each step takes the source and the run id and finds what it needs in PostGIS and the object store,
so Airflow tasks may run on different workers. Every run is a row in `meta.source_runs`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from qpvhub import __version__, cog, load, quality
from qpvhub.catalog import Source
from qpvhub.config import Settings, load_settings
from qpvhub.db import connect, migrate, resolve_uri
from qpvhub.errors import (
    ConcurrentRunError,
    DatabaseError,
    FetchError,
    NothingForRegions,
    QpvhubError,
    ValidationFailed,
)
from qpvhub.fetch import fetch
from qpvhub.locate import Located, resolve_production
from qpvhub.readers import get_reader
from qpvhub.redact import redact_text, redact_url
from qpvhub.store import Store, open_store, upload_tree

log = logging.getLogger(__name__)


@dataclass
class Env:
    """What a step needs: settings, the PostGIS URI and the store."""

    settings: Settings
    uri: str
    store: Store

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate_db: bool = True) -> Env:
        settings = settings or load_settings()
        uri = resolve_uri(settings)
        if migrate_db:
            migrate(uri, settings)
        return cls(settings=settings, uri=uri, store=open_store(settings.store))


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "_" + secrets.token_hex(3)


def locate(env: Env, source: Source, *, sample: bool = False, url: str | None = None) -> Located:
    """What a run fetches: an explicit URL, else the offline sample when asked, else production (a URL,
    or a publisher's catalogue resolved now).

    Never the sample on a schedule: an entry without a production location fails, so a DAG cannot
    reload a bundled sample forever while `qpvhub status` says "ok"."""
    if url:
        return Located(url)
    if sample:
        if not source.sample:
            why = f" ({source.no_sample})" if source.no_sample else ""
            raise QpvhubError(f"source {source.id} has no offline sample{why}")
        return Located((env.settings.project / "include" / source.sample).resolve().as_uri())
    located = resolve_production(source, timeout=http_settings()["timeout"])
    if located is None:
        raise QpvhubError(f"source {source.id}: no production location; set url in "
                          f"include/sources/{source.id}.yml (or run with --sample for the bundled file)")
    return located


def source_url(env: Env, source: Source, *, sample: bool = False, url: str | None = None) -> str:
    """The URL a run fetches (see `locate`)."""
    return locate(env, source, sample=sample, url=url).url


def _record(conn: psycopg.Connection, run_id: str, *, timings: dict[str, float] | None = None, **fields) -> None:
    """Set fields of the run's meta.source_runs row and add step timings (seconds), in one UPDATE on `conn`."""
    sets = [f"{k} = %({k})s" for k in fields]  # keys are ours
    params = {**{k: Jsonb(v) if isinstance(v, dict) else v for k, v in fields.items()}, "run_id": run_id}
    if timings:
        sets.append("timings = timings || %(timings)s")
        params["timings"] = Jsonb({step: round(seconds, 3) for step, seconds in timings.items()})
    conn.execute(f"UPDATE meta.source_runs SET {', '.join(sets)} WHERE run_id = %(run_id)s", params)


def _update(env: Env, run_id: str, *, timings: dict[str, float] | None = None, **fields) -> None:
    """`_record` on a connection of its own, committed."""
    with connect(env.uri) as conn:
        _record(conn, run_id, timings=timings, **fields)
        conn.commit()


def _add_timing(env: Env, run_id: str, step: str, seconds: float) -> None:
    _update(env, run_id, timings={step: seconds})


STALE_RUN_HOURS = float(os.environ.get("QPVHUB_STALE_RUN_HOURS", "6"))


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
            (source.id, STALE_RUN_HOURS * 3600)).fetchone()
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


def region_departements(env: Env) -> frozenset[str]:
    """Départements of every region this deployment serves (include/regions)."""
    from qpvhub.catalog import load_regions

    return frozenset(d for r in load_regions(env.settings.regions_dir).values() for d in r.departements)


def region_bboxes(env: Env) -> list[tuple[float, float, float, float]]:
    """Bounding boxes (EPSG:4326) of the regions this deployment serves."""
    from qpvhub.catalog import load_regions

    return [r.bbox for r in load_regions(env.settings.regions_dir).values()]


def http_settings() -> dict:
    """HTTP timeout (s), attempts and backoff (s) for sources: QPVHUB_HTTP_TIMEOUT / _RETRIES / _BACKOFF."""
    return {"timeout": float(os.environ.get("QPVHUB_HTTP_TIMEOUT", "60")),
            "retries": int(os.environ.get("QPVHUB_HTTP_RETRIES", "3")),
            "backoff": float(os.environ.get("QPVHUB_HTTP_BACKOFF", "1"))}


def fetch_step(env: Env, source: Source, run_id: str, url: str, *, force: bool = False,
               located: dict | None = None) -> dict:
    """Download, compare with the last success, archive raw bytes; return {'status', 'raw_key', …}.

    `located`: what a publisher's catalogue said about the file (qpvhub.locate); the same resource as
    the last success's is not downloaded again."""
    t0 = time.monotonic()
    quality.check_expectations(source, env.settings.sources_dir / f"{source.id}.yml")
    if source.cog:
        with connect(env.uri) as conn:
            cog.require_events(conn, source)  # before a download that could not be loaded
    prev = None if force else last_success(env, source.id, source.part)
    shown = redact_url(url)  # what is recorded, logged and published: no credentials, no local path
    if located and prev and Located(url, located).same_resource(prev.get("located")):
        _update(env, run_id, status="skipped", urls=[shown], finished_at=dt.datetime.now(dt.UTC),
                sha256=prev["sha256"], raw_key=prev["raw_key"], located=located)
        log.info("source %s: the catalogue describes the resource of run %s (same date and size): skipped "
                 "without downloading", source.id, prev["run_id"])
        return {"status": "skipped", "previous_run": prev["run_id"]}
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        try:
            got = fetch(url, work, etag=prev and prev["etag"], last_modified=prev and prev["last_modified"],
                        s3_client=getattr(env.store, "client", None), **http_settings())
        except QpvhubError:
            raise
        except Exception as exc:  # a library's message may quote the URL: mask it before it is recorded
            text = redact_text(str(exc), url)
            if text != str(exc):
                raise FetchError(f"source {source.id}: {type(exc).__name__}: {text}") from None
            raise
        unchanged = got.not_modified or (prev is not None and got.sha256 == prev["sha256"])
        if prev is not None and source.release is not None and not unchanged:
            # two files for one release: which one is right is a human choice, not the scheduler's
            before = ", ".join(prev["urls"] or ["?"])
            raise FetchError(f"source {source.id}: release {source.release} is already loaded from {before} "
                             f"(run {prev['run_id']}, sha256 {prev['sha256'][:12]}…); {shown} (sha256 "
                             f"{got.sha256[:12]}…) differs: refused — run again with --force to replace that release")
        if unchanged:
            _update(env, run_id, status="skipped", urls=[shown], finished_at=dt.datetime.now(dt.UTC),
                    sha256=prev["sha256"], etag=got.etag, raw_key=prev["raw_key"], located=located)
            log.info("source %s unchanged since run %s: skipped", source.id, prev["run_id"])
            return {"status": "skipped", "previous_run": prev["run_id"]}
        day = run_id[:4] + "-" + run_id[4:6] + "-" + run_id[6:8]
        raw_key = f"raw/{source.id}/{day}/{run_id}/{got.filename}"
        env.store.put_file(raw_key, got.path, consume=True)  # the download is not read again: moved, not copied
        env.store.put_bytes(raw_key + ".sha256", f"{got.sha256}  {got.filename}\n".encode())
        _update(env, run_id, urls=[shown], located=located, etag=got.etag, last_modified=got.last_modified,
                sha256=got.sha256,
                bytes=got.bytes, raw_key=raw_key, timings={"fetch": time.monotonic() - t0})
        return {"status": "fetched", "raw_key": raw_key, "sha256": got.sha256, "bytes": got.bytes}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stage_file(env: Env, source: Source, run_id: str, path: Path) -> load.StageResult:
    """Read a local file with the format's reader, COPY into staging, repair, transform, add the check view."""
    declared_crs = source.geometry.source_crs if source.geometry else None
    options = {**source.reader, **({"crs": declared_crs} if declared_crs else {})}
    reader = get_reader(source.format)(path, source.id, options)
    info = reader.open()
    load.check_columns(source, info.columns, path.name)
    reader.keep_only(source.file_columns())  # BPE24 has 89 columns, the entry reads 10
    srid = load.srid_of(declared_crs or info.crs, source.id) if source.geometry else None
    deps = region_departements(env) if source.region_filter else None
    raw_table, final_table = load.staging_names(source, run_id)
    in_file = [0]

    def counted(dfs):
        for df in dfs:
            in_file[0] += len(df)
            yield df

    # a collection's feed (a national catalogue's) keeps the stops inside the regions' boxes
    boxes = region_bboxes(env) if source.collection and source.geometry and source.geometry.from_columns else []

    def in_regions(dfs):
        for df in dfs:
            if boxes:
                keep = np.zeros(len(df), dtype=bool)
                x, y = df["__x"].astype("float64").to_numpy(), df["__y"].astype("float64").to_numpy()
                for x0, y0, x1, y1 in boxes:
                    keep |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
                df = df[keep]
            yield df

    with connect(env.uri) as conn, load.frozen_heap():
        batches = in_regions(load.convert_batch(b, source, path.name, run_id, deps) for b in counted(reader.batches()))
        if load.is_direct(source):
            # attribute tables and x/y points: straight into the final staging table
            names = load.create_final_staging(conn, source, final_table, run_id)
            conn.commit()  # visible to the COPY workers' connections
            rejected: list = []
            kinds = load.binary_kinds(source, names)  # COPY's binary format where every column has an encoder

            def with_points(dfs):
                for df in dfs:
                    if source.geometry:
                        df, rej = load.points_from_xy(df, source, srid, raw=kinds is not None)
                        rejected.append(rej)
                    yield df

            loaded = load.copy_batches_parallel(env.uri, final_table, names, with_points(batches), kinds=kinds)
            n_rej = load.record_rejects(conn, source, run_id, rejected, "no coordinates")
            result = load.StageResult(final_table, loaded + n_rej, loaded, n_rej, 0)
        else:
            names = load.create_raw_staging(conn, source, raw_table)
            load.copy_batches(conn, raw_table, names, batches)
            result = load.build_final(conn, source, raw_table, final_table, srid, run_id)
        result.period = reader.period
        if (deps is not None or boxes) and in_file[0] and not result.rows_read:
            conn.rollback()
            where = f"départements {', '.join(sorted(deps))}" if deps is not None else "their bounding boxes"
            raise NothingForRegions(
                f"source {source.id}: none of the {in_file[0]} rows of {path.name} is in the deployment's regions "
                f"({where}); nothing loaded, the previous load stays")
        if source.transform:  # before the COG translation: a transform may fill the codes it translates
            sql_path = env.settings.sql_dir / "transforms" / source.transform
            load.run_transform(conn, sql_path.read_text(encoding="utf-8"), final_table)
        result.translation = cog.translate(conn, source, final_table)
        load.create_check_view(conn, source, final_table, region_bboxes(env))
        conn.commit()
    return result


def stage_step(env: Env, source: Source, run_id: str, raw_key: str) -> load.StageResult:
    """Stage the run's archived raw file (any worker can: it comes from the object store)."""
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        path = work / raw_key.rsplit("/", 1)[-1]
        env.store.download(raw_key, path)
        try:
            result = stage_file(env, source, run_id, path)
        except psycopg.Error as exc:
            raise DatabaseError(f"source {source.id}, run {run_id}, step stage: PostgreSQL error, the staging "
                                f"load was abandoned (live table untouched): {str(exc).strip()}") from exc
        _update(env, run_id, rows_read=result.rows_read, rows_loaded=result.rows_loaded,
                rows_rejected=result.rows_rejected, rows_repaired=result.rows_repaired,
                data_from=result.period[0] if result.period else None,
                data_until=result.period[1] if result.period else None, cog_translation=result.translation,
                timings={"stage": time.monotonic() - t0})
        log.info("source %s: %d rows read, %d staged, %d rejected, %d geometries repaired", source.id,
                 result.rows_read, result.rows_loaded, result.rows_rejected, result.rows_repaired)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def validate_only(env: Env, source: Source, *, path: Path | None = None, url: str | None = None,
                  sample: bool = False, release: Any = None) -> tuple[load.StageResult, quality.ValidationReport]:
    """Read and check a file against the source's suite in a throwaway staging table: nothing is
    archived, promoted or recorded (its rejected rows are removed again)."""
    source = for_run(source, release, sample=sample and path is None, url=url)
    run_id = new_run_id() + "v"
    quality.check_expectations(source, env.settings.sources_dir / f"{source.id}.yml")
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        if path is None:
            got = fetch(source_url(env, source, sample=sample, url=url), work,
                        s3_client=getattr(env.store, "client", None))
            path = got.path
        staged = stage_file(env, source, run_id, path)
        prev = last_success(env, source.id, source.part)
        exps = quality.build_expectations(source, prev["rows_loaded"] if prev else None,
                                          in_region=bool(region_bboxes(env)))
        report = quality.validate_table(env.uri, "staging", load.check_view_name(staged.table), source.id, exps,
                                        source.quality.policy)
        return staged, report
    finally:
        with connect(env.uri) as conn:
            load.drop_staging(conn, source, run_id)
            conn.execute("DELETE FROM meta.rejected_rows WHERE run_id = %s", (run_id,))
            conn.commit()
        shutil.rmtree(work, ignore_errors=True)


def docs_prefix(source_id: str, run_id: str) -> str:
    """Where a run's GX Data Docs live in the store (index.html inside)."""
    return f"quality/sources/{source_id}/{run_id}/docs"


def _index_staging(env: Env, source: Source, final_table: str) -> float:
    """Spatial index of the staging table (it carries over at promote); seconds."""
    t0 = time.monotonic()
    with connect(env.uri) as conn:
        load.index_staging(conn, source, final_table)
        conn.commit()
    return time.monotonic() - t0


def _analyze_staging(env: Env, final_table: str) -> float:
    """Planner statistics of the staging table (they carry over at promote); seconds."""
    t0 = time.monotonic()
    with connect(env.uri, autocommit=True) as conn:
        load.analyze(conn, "staging", final_table)
    return time.monotonic() - t0


def validate_step(env: Env, source: Source, run_id: str) -> quality.ValidationReport:
    """Run the source's suite on the staging table; block → quarantine and raise; warn → log."""
    t0 = time.monotonic()
    prev = last_success(env, source.id, source.part)
    _, final_table = load.staging_names(source, run_id)
    view = load.check_view_name(final_table)
    exps = quality.build_expectations(source, prev["rows_loaded"] if prev else None,
                                      in_region=bool(region_bboxes(env)))
    # While GX scans the staging table, a second connection builds its spatial index (CREATE INDEX's SHARE
    # lock allows reads) and its statistics: on two cores they cost little wall time, and promote stays
    # a quick swap. The staging table has no parallel workers (load.staging_storage): the GiST build is one
    # process and the step's critical path, and GX's scans leave it a core.
    docs = Path(tempfile.mkdtemp(prefix=f"qpvhub-docs-{source.id}-"))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # ANALYZE after the index on the same worker: its lock conflicts with CREATE INDEX's anyway
            indexing = pool.submit(lambda: (_index_staging(env, source, final_table),
                                            _analyze_staging(env, final_table)))
            t_gx = time.monotonic()
            report = quality.validate_table(env.uri, "staging", view, f"{source.id}", exps, source.quality.policy,
                                            docs_dir=docs)
            gx_s = time.monotonic() - t_gx
            index_s, analyze_s = indexing.result()
        upload_tree(env.store, docs_prefix(source.id, run_id), docs)  # GX Data Docs of this run
    finally:
        shutil.rmtree(docs, ignore_errors=True)
    with connect(env.uri) as conn:
        quality.record_results(conn, run_id, report)
        # they ran side by side: GX's own wall time, the index's and ANALYZE's are recorded apart
        _record(conn, run_id, validation=report.summary(),
                timings={"gx": gx_s, "index": index_s, "analyze": analyze_s})
        conn.commit()
    report_json = json.dumps(report.to_json(), ensure_ascii=False, indent=2).encode()
    env.store.put_bytes(f"quality/sources/{source.id}/{run_id}/validation.json", report_json, "application/json")
    _add_timing(env, run_id, "validate", time.monotonic() - t0)
    if not report.success:
        if source.quality.policy == "block":
            with connect(env.uri) as conn:
                raw_key = conn.execute("SELECT raw_key FROM meta.source_runs WHERE run_id = %s",
                                       (run_id,)).fetchone()[0]
            qprefix = f"quarantine/{source.id}/{run_id}/"
            if raw_key:
                work = Path(tempfile.mkdtemp(prefix="qpvhub-q-"))
                try:
                    p = work / raw_key.rsplit("/", 1)[-1]
                    env.store.download(raw_key, p)
                    env.store.put_file(qprefix + p.name, p)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            env.store.put_bytes(qprefix + "validation.json", report_json, "application/json")
            text = report.text() + f"\n(raw batch and report in {env.store.describe(qprefix)})"
            raise ValidationFailed(source.id, text, report.to_json())
        log.warning("source %s: validation failed in warn mode, promoting anyway:\n%s", source.id, report.text())
    return report


def promote_step(env: Env, source: Source, run_id: str) -> dict:
    """Swap staging into the live table in one transaction, then record success."""
    t0 = time.monotonic()
    _, final_table = load.staging_names(source, run_id)
    try:
        with connect(env.uri) as conn:
            load.drop_check_view(conn, final_table)
            load.promote(conn, source, final_table, run_id)
            conn.execute(
                "UPDATE meta.source_runs SET status = 'success', finished_at = now() WHERE run_id = %s", (run_id,))
            conn.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"source {source.id}, run {run_id}, step promote: PostgreSQL error, the swap was "
                            f"rolled back and {source.target.qualified} keeps its previous version: "
                            f"{str(exc).strip()}") from exc
    _add_timing(env, run_id, "promote", time.monotonic() - t0)
    return {"status": "success", "target": source.target.qualified}


def skip_run(env: Env, source: Source, run_id: str, reason: str) -> None:
    """End a run that had nothing to load (e.g. no row in the regions): skipped, with the reason."""
    with connect(env.uri) as conn:
        load.drop_staging(conn, source, run_id)
        conn.execute("UPDATE meta.source_runs SET status = 'skipped', finished_at = now(), error = %s "
                     "WHERE run_id = %s AND status = 'running'", (reason, run_id))
        conn.commit()
    log.warning("%s", reason)


def fail_run(env: Env, source: Source, run_id: str, error: BaseException | str) -> None:
    """Mark a run failed and clear its staging tables; the live table is untouched."""
    try:
        with connect(env.uri) as conn:
            load.drop_staging(conn, source, run_id)
            conn.execute(
                "UPDATE meta.source_runs SET status = 'failed', finished_at = now(), error = %s "
                "WHERE run_id = %s AND status = 'running'", (str(error)[:10000], run_id))
            conn.commit()
    except QpvhubError as exc:  # the database itself may be what failed: say so, keep the first error
        log.error("could not record failure of run %s: %s", run_id, exc)


NO_FILE = "no file for"  # a per-département feed the publisher has no file for (the reason starts so)


def collection_feeds(env: Env, source: Source, *, sample: bool = False) -> list[tuple[Any, Located | None]]:
    """The feeds a collection run loads: offline, every listed feed with a bundled file; otherwise the
    listed feeds with a URL and every feed the catalogue's discovery finds (a listed feed naming its
    dataset keeps its id)."""
    assert source.collection is not None
    listed = source.feeds()
    if sample:
        return [(f, None) for f in listed if f.sample]
    out: list[tuple[Any, Located | None]] = [(f, Located(f.url)) for f in listed if f.url]
    per = source.collection.per_departement
    if per is not None:  # one file per département of the regions (a listed feed of the same id keeps its title)
        titles = {f.id: f for f in listed}
        for dep in sorted(region_departements(env)):
            f = per.feed(dep)
            f = f.model_copy(update={"title": titles[f.id].title}) if f.id in titles else f
            out.append((f, Located(f.url)))
    d = source.collection.discover
    if d is not None:
        from qpvhub.locate import discover_feeds

        seen = {f.id for f, _ in out}
        for f, meta in discover_feeds(source.id, d.api, d.types, d.exclude, listed,
                                      timeout=http_settings()["timeout"]):
            if f.id not in seen:
                out.append((f, Located(f.url, meta)))
    if not out:
        raise QpvhubError(f"source {source.id}: no feed to load (no listed feed has a url and discovery found none)")
    return out


def ingest_collection(env: Env, source: Source, *, sample: bool = False, force: bool = False,
                      airflow_run_id: str | None = None, only: str | None = None
                      ) -> list[tuple[Any, IngestResult | BaseException]]:
    """Every feed of a collection, each its own run: a failing feed is reported and the others still load."""
    results: list[tuple[Any, IngestResult | BaseException]] = []
    feeds = collection_feeds(env, source, sample=sample)
    if not sample and not only:
        _flag_vanished(env, source, {f.id for f, _ in feeds}, airflow_run_id)
    for feed, where in feeds:
        if only and feed.id != only:
            continue
        try:
            results.append((feed, ingest(env, source, sample=sample, force=force, airflow_run_id=airflow_run_id,
                                         feed=feed, located=where)))
        except QpvhubError as exc:
            log.error("source %s, feed %s: %s", source.id, feed.id, exc)
            results.append((feed, exc))
    absent = [r for _, r in results if isinstance(r, IngestResult) and r.reason and r.reason.startswith(NO_FILE)]
    if absent and len(absent) == len(results) and not only:  # no département has a file: the pattern is wrong
        raise FetchError(f"source {source.id}: no file at {source.production} for any of the "
                         f"{len(absent)} département(s) (HTTP 404 each): has the location moved?")
    return results


def _flag_vanished(env: Env, source: Source, current: set[str], airflow_run_id: str | None) -> None:
    """A loaded feed the catalogue no longer lists is kept (its stops stay in the table) but flagged: a
    skipped run with the reason, which `qpvhub status` shows on the feed's line."""
    from qpvhub.catalog import Feed

    with connect(env.uri) as conn:
        loaded = [r[0] for r in conn.execute(
            "SELECT DISTINCT part FROM meta.source_runs WHERE source_id = %s AND status = 'success' "
            "AND part IS NOT NULL ORDER BY 1", (source.id,)).fetchall()]
    for part in loaded:
        if part in current:
            continue
        one = source.for_feed(Feed(id=part, title=part))
        run_id = start_run(env, one, airflow_run_id=airflow_run_id)
        skip_run(env, one, run_id, f"source {source.id}: feed {part} is no longer in the catalogue nor listed: its "
                                   "stops stay as last loaded (remove its partition by hand if the network is gone)")


def ingest_samples(env: Env, source: Source, *, force: bool = False) -> list[IngestResult]:
    """Everything bundled for an entry: every release of a series (oldest first), every feed of a collection,
    else its one sample. Raises the first failure (offline samples are expected to load)."""
    if source.collection:
        out = []
        for _feed, res in ingest_collection(env, source, sample=True, force=force):
            if isinstance(res, BaseException):
                raise res
            out.append(res)
        return out
    releases = sorted(source.series.samples) if source.series else [None]
    return [ingest(env, source, sample=True, force=force, release=r) for r in releases]


@dataclass
class IngestResult:
    run_id: str
    status: str
    rows_loaded: int | None = None
    rows_rejected: int | None = None
    rows_repaired: int | None = None
    validation: dict | None = None
    reason: str | None = None  # why a run was skipped, when it is not "unchanged"
    translation: dict | None = None  # commune codes moved to the deployment's COG (qpvhub.cog)


def for_run(source: Source, release: Any = None, *, sample: bool = False, feed: Any = None,
            url: str | None = None) -> Source:
    """The entry a run loads: for a series, one release (given, else the current one; offline, when that one is
    not bundled, the newest bundled sample); for a collection, one feed (a Feed, or the id of a listed one);
    other entries as they are (a release or feed given to them is an error). Reading the bundled sample (no `url`), the
    sample's millésime and COG year apply."""
    one = _for_run(source, release, sample=sample, feed=feed)
    return one.as_sample() if sample and not url else one


def _for_run(source: Source, release: Any = None, *, sample: bool = False, feed: Any = None) -> Source:
    if source.collection is not None:
        if feed is None:
            raise QpvhubError(f"source {source.id} is a collection of feeds: `qpvhub ingest {source.id}` loads "
                              "every feed, --feed ID one of them")
        if isinstance(feed, str):
            listed = {f.id: f for f in source.feeds()}
            if feed not in listed:
                raise QpvhubError(f"source {source.id}: no listed feed {feed!r} (listed: {sorted(listed)}); "
                                  "discovered feeds load with the whole collection")
            feed = listed[feed]
        return source.for_feed(feed)
    if feed is not None:
        raise QpvhubError(f"source {source.id} is not a collection: it takes no --feed")
    if source.series is None:
        if release is not None:
            raise QpvhubError(f"source {source.id} is not a series: it takes no --release")
        return source
    if release is None:
        release = source.series.current
        bundled = source.series.samples
        if sample and bundled and (release is None or (release not in bundled and not source.sample)):
            release = max(bundled)  # offline, the current release not bundled (Filosofi 2021): the newest that is
        if release is None:
            raise QpvhubError(f"source {source.id} is a series: give the release to load (--release YEAR)")
    return source.for_release(release)


def ingest(env: Env, source: Source, *, url: str | None = None, sample: bool = False, force: bool = False,
           airflow_run_id: str | None = None, release: Any = None, feed: Any = None,
           located: Located | None = None) -> IngestResult:
    """The whole chain for one source (one release of a series, one feed of a collection), as the CLI runs it."""
    source = for_run(source, release, sample=sample, feed=feed, url=url)
    where = located or locate(env, source, sample=sample, url=url)
    run_id = start_run(env, source, airflow_run_id=airflow_run_id)
    try:
        try:
            fetched = fetch_step(env, source, run_id, where.url, force=force, located=where.meta or None)
        except FetchError as exc:
            if exc.http_status != 404 or not (source.collection and source.collection.per_departement):
                raise
            reason = f"{NO_FILE} {source.part} at {where.url} (HTTP 404): the publisher has none for it"
            skip_run(env, source, run_id, f"source {source.id}: {reason}")
            return IngestResult(run_id, "skipped", reason=reason)
        if fetched["status"] == "skipped":
            return IngestResult(run_id, "skipped")
        try:
            staged = stage_step(env, source, run_id, fetched["raw_key"])
        except NothingForRegions as exc:
            skip_run(env, source, run_id, str(exc))
            return IngestResult(run_id, "skipped", reason=str(exc))
        report = validate_step(env, source, run_id)
        promote_step(env, source, run_id)
        return IngestResult(run_id, "success", staged.rows_loaded, staged.rows_rejected, staged.rows_repaired,
                            report.summary(), translation=staged.translation)
    except BaseException as exc:
        fail_run(env, source, run_id, exc)
        raise
