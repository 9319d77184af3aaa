"""One source through the whole chain, as the CLI runs it: the entry of the run (one release, one feed),
then fetch → stage → validate → promote, every failure recorded and nothing live changed."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qpvhub.catalog.model import Source
from qpvhub.catalog.regions import region_bboxes
from qpvhub.ingest.fetch import fetch
from qpvhub.ingest.locate import Located
from qpvhub.ingest.runs import fail_run, last_success, new_run_id, skip_run, start_run
from qpvhub.ingest.stage import StageResult, check_view_name, drop_staging, stage_file
from qpvhub.ingest.steps import (
    fetch_step,
    locate,
    promote_step,
    qpv_lists,
    source_url,
    stage_step,
    validate_step,
)
from qpvhub.platform.db import connect, reusing_connections
from qpvhub.platform.env import Env
from qpvhub.platform.errors import FetchError, NothingForRegions, QpvhubError
from qpvhub.quality.gx import ValidationReport, validate_table
from qpvhub.quality.suites import build_expectations, check_expectations

NO_FILE = "no file for"  # a per-département feed the publisher has no file for (the reason starts so)


@dataclass
class IngestResult:
    run_id: str
    status: str
    rows_loaded: int | None = None
    rows_rejected: int | None = None
    rows_repaired: int | None = None
    validation: dict | None = None
    reason: str | None = None  # why a run was skipped, when it is not "unchanged"
    translation: dict | None = None  # commune codes moved to the deployment's COG (qpvhub.ingest.cog)


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
    """The whole chain for one source (one release of a series, one feed of a collection), as the CLI runs it.
    Its steps share their database connections (a small source's load opened 14)."""
    with reusing_connections():
        return _ingest(env, source, url=url, sample=sample, force=force, airflow_run_id=airflow_run_id,
                       release=release, feed=feed, located=located)


def _ingest(env: Env, source: Source, *, url: str | None, sample: bool, force: bool, airflow_run_id: str | None,
            release: Any, feed: Any, located: Located | None) -> IngestResult:
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


def validate_only(env: Env, source: Source, *, path: Path | None = None, url: str | None = None,
                  sample: bool = False, release: Any = None) -> tuple[StageResult, ValidationReport]:
    """Read and check a file against the source's suite in a throwaway staging table: nothing is
    archived, promoted or recorded (its rejected rows are removed again)."""
    source = for_run(source, release, sample=sample and path is None, url=url)
    run_id = new_run_id() + "v"
    check_expectations(source, env.settings.sources_dir / f"{source.id}.yml")
    work = Path(tempfile.mkdtemp(prefix=f"qpvhub-{source.id}-"))
    try:
        if path is None:
            got = fetch(source_url(env, source, sample=sample, url=url), work,
                        s3_client=getattr(env.store, "client", None), **env.settings.http.model_dump())
            path = got.path
        staged = stage_file(env, source, run_id, path)
        prev = last_success(env, source.id, source.part)
        exps = build_expectations(source, prev["rows_loaded"] if prev else None,
                                  in_region=bool(region_bboxes(env.settings)), lists=qpv_lists(env))
        report = validate_table(env.uri, "staging", check_view_name(staged.table), source.id, exps,
                                source.quality.policy)
        return staged, report
    finally:
        with connect(env.uri) as conn:
            drop_staging(conn, source, run_id)
            conn.execute("DELETE FROM meta.rejected_rows WHERE run_id = %s", (run_id,))
            conn.commit()
        shutil.rmtree(work, ignore_errors=True)
