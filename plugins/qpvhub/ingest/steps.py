"""The ingestion steps (fetch → stage → validate → promote) as Airflow runs them, each its own task.

Each step takes the source and the run id and finds what it needs in PostGIS and the object store, so
tasks may run on different workers; each records what it did on the run's row (`qpvhub.ingest.runs`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from qpvhub.catalog.model import Source
from qpvhub.catalog.qpv_lists import QpvLists, load_qpv_lists
from qpvhub.catalog.regions import region_bboxes
from qpvhub.ingest import cog, promote, stage
from qpvhub.ingest.fetch import fetch
from qpvhub.ingest.locate import Located, resolve_production
from qpvhub.ingest.runs import add_timing, last_success, record, update
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.platform.errors import DatabaseError, FetchError, QpvhubError, ValidationFailed
from qpvhub.platform.redact import redact_text, redact_url
from qpvhub.platform.store import upload_tree
from qpvhub.quality import gx as quality
from qpvhub.quality.gx import docs_prefix
from qpvhub.quality.suites import build_expectations, check_expectations

log = logging.getLogger(__name__)


def qpv_lists(env: Env) -> QpvLists:
    """The QPV lists registry of the deployment (include/qpv_lists.yml)."""
    return load_qpv_lists(env.settings.qpv_lists_path)


def cog_hint(source: Source, report: quality.ValidationReport) -> str:
    """What to do when commune codes match nothing in ref.commune and the entry does not translate them: they
    may be of an older COG (merged or renumbered communes)."""
    dangling = [m.group(1) for r in report.failed if r.description and "in ref.commune" in r.description
                and (m := re.search(r"(\w+) exists? in ref\.commune", r.description))]
    if source.cog is not None or not dangling:
        return ""
    cols = sorted(set(dangling))
    return (f"\nhint: codes of {cols} match no commune of the deployment's COG: if the file is on an older "
            f"geography, declare `cog: {{columns: {cols}, year: <its COG year>}}` in include/sources/{source.id}.yml "
            "(and depends_on: [cog_mouvements]) to translate them")


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
    located = resolve_production(source, env.settings.publishers, timeout=env.settings.http.timeout)
    if located is None:
        raise QpvhubError(f"source {source.id}: no production location; set url in "
                          f"include/sources/{source.id}.yml (or run with --sample for the bundled file)")
    return located


def source_url(env: Env, source: Source, *, sample: bool = False, url: str | None = None) -> str:
    """The URL a run fetches (see `locate`)."""
    return locate(env, source, sample=sample, url=url).url


def fetch_step(env: Env, source: Source, run_id: str, url: str, *, force: bool = False,
               located: dict | None = None) -> dict:
    """Download, compare with the last success, archive raw bytes; return {'status', 'raw_key', …}.

    `located`: what a publisher's catalogue said about the file (qpvhub.ingest.locate); the same resource as
    the last success's is not downloaded again."""
    t0 = time.monotonic()
    check_expectations(source, env.settings.sources_dir / f"{source.id}.yml")
    if source.cog:
        with connect(env.uri) as conn:
            cog.require_events(conn, source)  # before a download that could not be loaded
    prev = None if force else last_success(env, source.id, source.part)
    shown = redact_url(url)  # what is recorded, logged and published: no credentials, no local path
    if located and prev and Located(url, located).same_resource(prev.get("located")):
        update(env, run_id, status="skipped", urls=[shown], finished_at=dt.datetime.now(dt.UTC),
                sha256=prev["sha256"], raw_key=prev["raw_key"], located=located)
        log.info("source %s: the catalogue describes the resource of run %s (same date and size): skipped "
                 "without downloading", source.id, prev["run_id"])
        return {"status": "skipped", "previous_run": prev["run_id"]}
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        try:
            got = fetch(url, work, etag=prev and prev["etag"], last_modified=prev and prev["last_modified"],
                        s3_client=getattr(env.store, "client", None), **env.settings.http.model_dump())
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
            update(env, run_id, status="skipped", urls=[shown], finished_at=dt.datetime.now(dt.UTC),
                    sha256=prev["sha256"], etag=got.etag, raw_key=prev["raw_key"], located=located)
            log.info("source %s unchanged since run %s: skipped", source.id, prev["run_id"])
            return {"status": "skipped", "previous_run": prev["run_id"]}
        day = run_id[:4] + "-" + run_id[4:6] + "-" + run_id[6:8]
        raw_key = f"raw/{source.id}/{day}/{run_id}/{got.filename}"
        env.store.put_file(raw_key, got.path, consume=True)  # the download is not read again: moved, not copied
        env.store.put_bytes(raw_key + ".sha256", f"{got.sha256}  {got.filename}\n".encode())
        update(env, run_id, urls=[shown], located=located, etag=got.etag, last_modified=got.last_modified,
                sha256=got.sha256,
                bytes=got.bytes, raw_key=raw_key, timings={"fetch": time.monotonic() - t0})
        return {"status": "fetched", "raw_key": raw_key, "sha256": got.sha256, "bytes": got.bytes}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stage_step(env: Env, source: Source, run_id: str, raw_key: str) -> stage.StageResult:
    """Stage the run's archived raw file (any worker can: it comes from the object store)."""
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        path = work / raw_key.rsplit("/", 1)[-1]
        env.store.download(raw_key, path)
        try:
            result = stage.stage_file(env, source, run_id, path)
        except psycopg.Error as exc:
            raise DatabaseError(f"source {source.id}, run {run_id}, step stage: PostgreSQL error, the staging "
                                f"load was abandoned (live table untouched): {str(exc).strip()}") from exc
        update(env, run_id, rows_read=result.rows_read, rows_loaded=result.rows_loaded,
                rows_rejected=result.rows_rejected, rows_repaired=result.rows_repaired,
                data_from=result.period[0] if result.period else None,
                data_until=result.period[1] if result.period else None, cog_translation=result.translation,
                timings={"stage": time.monotonic() - t0})
        log.info("source %s: %d rows read, %d staged, %d rejected, %d geometries repaired", source.id,
                 result.rows_read, result.rows_loaded, result.rows_rejected, result.rows_repaired)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _index_staging(env: Env, source: Source, final_table: str) -> float:
    """Spatial index of the staging table (it carries over at promote); seconds."""
    t0 = time.monotonic()
    with connect(env.uri) as conn:
        stage.index_staging(conn, source, final_table)
        conn.commit()
    return time.monotonic() - t0


def _analyze_staging(env: Env, final_table: str) -> float:
    """Planner statistics of the staging table (they carry over at promote); seconds."""
    t0 = time.monotonic()
    with connect(env.uri, autocommit=True) as conn:
        stage.analyze(conn, "staging", final_table)
    return time.monotonic() - t0


def validate_step(env: Env, source: Source, run_id: str) -> quality.ValidationReport:
    """Run the source's suite on the staging table; block → quarantine and raise; warn → log."""
    t0 = time.monotonic()
    prev = last_success(env, source.id, source.part)
    _, final_table = stage.staging_names(source, run_id)
    view = stage.check_view_name(final_table)
    exps = build_expectations(source, prev["rows_loaded"] if prev else None,
                              in_region=bool(region_bboxes(env.settings)), lists=qpv_lists(env))
    # While GX scans the staging table, a second connection builds its spatial index (CREATE INDEX's SHARE
    # lock allows reads) and its statistics: on two cores they cost little wall time, and promote stays
    # a quick swap. The staging table has no parallel workers (stage.staging_storage): the GiST build is one
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
        record(conn, run_id, validation=report.summary(),
                timings={"gx": gx_s, "index": index_s, "analyze": analyze_s})
        conn.commit()
    report_json = json.dumps(report.to_json(), ensure_ascii=False, indent=2).encode()
    env.store.put_bytes(f"quality/sources/{source.id}/{run_id}/validation.json", report_json, "application/json")
    add_timing(env, run_id, "validate", time.monotonic() - t0)
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
            text = (report.text() + cog_hint(source, report)
                    + f"\n(raw batch and report in {env.store.describe(qprefix)})")
            raise ValidationFailed(source.id, text, report.to_json())
        log.warning("source %s: validation failed in warn mode, promoting anyway:\n%s", source.id, report.text())
    return report


def promote_step(env: Env, source: Source, run_id: str) -> dict:
    """Swap staging into the live table in one transaction, then record success."""
    t0 = time.monotonic()
    _, final_table = stage.staging_names(source, run_id)
    try:
        with connect(env.uri) as conn:
            stage.drop_check_view(conn, final_table)
            promote.promote(conn, source, final_table, run_id)
            conn.execute(
                "UPDATE meta.source_runs SET status = 'success', finished_at = now() WHERE run_id = %s", (run_id,))
            conn.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"source {source.id}, run {run_id}, step promote: PostgreSQL error, the swap was "
                            f"rolled back and {source.target.qualified} keeps its previous version: "
                            f"{str(exc).strip()}") from exc
    add_timing(env, run_id, "promote", time.monotonic() - t0)
    return {"status": "success", "target": source.target.qualified}
