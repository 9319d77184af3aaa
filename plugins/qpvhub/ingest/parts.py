"""Every part of an entry, each its own run: the releases of a series, the feeds of a collection (listed,
discovered, one per département), or the entry itself; a failing part is reported and the others load.

`run_parts` is the one loop behind `qpvhub ingest`, the ingest DAGs and the reload-all DAG.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from qpvhub.catalog.model import Feed, Source
from qpvhub.catalog.regions import region_departements
from qpvhub.ingest.locate import Located, discover_feeds
from qpvhub.ingest.pipeline import NO_FILE, IngestResult, ingest
from qpvhub.ingest.runs import skip_run, start_run
from qpvhub.platform.db import connect, reusing_connections
from qpvhub.platform.env import Env
from qpvhub.platform.errors import FetchError, QpvhubError

log = logging.getLogger(__name__)


@dataclass
class Feeds:
    """The feeds a collection run loads, what a person should be told about the others, and whether the
    catalogue's discovery answered (when it did not, nothing is inferred from the feeds it did not list)."""

    feeds: list[tuple[Feed, Located | None]]
    notes: list[str] = field(default_factory=list)
    discovery_failed: bool = False

    @property
    def ids(self) -> set[str]:
        return {f.id for f, _ in self.feeds}


def collection_feeds(env: Env, source: Source, *, sample: bool = False) -> Feeds:
    """The feeds a collection run loads: offline, every listed feed with a bundled file (the others said); otherwise
    the listed feeds with a URL, one per département of the regions (`per_departement`) and every feed the
    catalogue's discovery finds (a listed feed naming its dataset keeps its id). Discovery unreachable: the other
    feeds still load, and a note says so."""
    assert source.collection is not None
    listed = source.feeds()
    if sample:
        out = Feeds([(f, None) for f in listed if f.sample])
        out.notes += [f"{source.id}/{f.id}: no bundled sample, not loaded offline (production: {f.url})"
                      for f in listed if not f.sample and f.url]
        return out
    out = Feeds([(f, Located(f.url)) for f in listed if f.url])
    out.notes += [f"{source.id}/{f.id}: listed with no url, loads from its bundled sample only (--sample)"
                  for f in listed if not f.url and not f.dataset]
    per = source.collection.per_departement
    if per is not None:  # one file per département of the regions (a listed feed of the same id keeps its title)
        titles = {f.id: f for f in listed}
        for dep in sorted(region_departements(env.settings)):
            f = per.feed(dep)
            f = f.model_copy(update={"title": titles[f.id].title}) if f.id in titles else f
            out.feeds.append((f, Located(f.url)))
    d = source.collection.discover
    if d is not None:
        api = env.settings.publishers.transport_api or d.api
        try:
            found = discover_feeds(source.id, api, d.types, d.exclude, listed, timeout=env.settings.http.timeout)
        except QpvhubError as exc:
            if not out.feeds:
                raise
            out.discovery_failed = True
            out.notes.append(f"{source.id}: discovery failed, the {len(out.feeds)} listed feed(s) load and the "
                             f"discovered ones keep their last load: {str(exc).splitlines()[0]}")
            found = []
        seen = out.ids
        out.feeds += [(f, Located(f.url, meta)) for f, meta in found if f.id not in seen]
    if not out.feeds:
        raise QpvhubError(f"source {source.id}: no feed to load (no listed feed has a url and discovery found none)")
    return out


def ingest_collection(env: Env, source: Source, *, sample: bool = False, force: bool = False,
                      airflow_run_id: str | None = None, only: str | None = None,
                      notes: list[str] | None = None) -> list[tuple[Any, IngestResult | BaseException]]:
    """Every feed of a collection, each its own run: a failing feed is reported and the others still load; what a
    person should know of the feeds not loaded goes to `notes` (and the log). The feeds' loads share their
    database connections."""
    with reusing_connections():
        return _ingest_feeds(env, source, sample=sample, force=force, airflow_run_id=airflow_run_id, only=only,
                             notes=notes)


def _ingest_feeds(env: Env, source: Source, *, sample: bool, force: bool, airflow_run_id: str | None,
                  only: str | None, notes: list[str] | None) -> list[tuple[Any, IngestResult | BaseException]]:
    results: list[tuple[Any, IngestResult | BaseException]] = []
    feeds = collection_feeds(env, source, sample=sample)
    for note in feeds.notes:
        log.warning("%s", note)
    if notes is not None:
        notes += feeds.notes
    if not sample and not only and not feeds.discovery_failed:
        _flag_vanished(env, source, feeds.ids | {f.id for f in source.feeds()}, airflow_run_id)
    if only and only not in feeds.ids:
        raise QpvhubError(f"source {source.id}: no feed {only!r} to load (feeds: {sorted(feeds.ids)})")
    for feed, where in feeds.feeds:
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
    """Everything bundled for an entry (every release of a series, every feed of a collection, else its one
    sample); raises the first failure (offline samples are expected to load)."""
    run = run_parts(env, source, sample=True, force=force)
    run.raise_if_failed()
    return [o.result for o in run.outcomes if o.result is not None]


@dataclass
class PartOutcome:
    """One part's run: its result, or the error that ended it."""

    label: str  # what a person reads: `sigville_demo release 2019`, `gtfs/star`, `bpe`
    result: IngestResult | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the CLI and the task log."""
        r = self.result
        if self.error is not None:
            return f"{self.label}: FAILED: {str(self.error).splitlines()[0]}"
        assert r is not None
        if r.status == "skipped" and not r.reason:
            return (f"{self.label}: unchanged since the last successful load, skipped (run {r.run_id}, "
                    f"{self.seconds:.1f}s)")
        if r.status == "skipped":
            return f"{self.label}: skipped (run {r.run_id}, {self.seconds:.1f}s): {r.reason}"
        passed = ""
        if r.validation:
            passed = (f", {r.validation['evaluated'] - r.validation['failed']}/{r.validation['evaluated']} "
                      "expectations passed")
        text = (f"{self.label}: {r.rows_loaded} rows loaded, {r.rows_rejected} rejected, {r.rows_repaired} geometries "
                f"repaired{passed} (run {r.run_id}, {self.seconds:.1f}s)")
        if r.translation:
            from qpvhub.ingest.cog import summary

            text += f"\n{self.label}: {summary(r.translation)}"
        return text


@dataclass
class PartsRun:
    """Every part an entry loaded in one go, and how each went."""

    source: Source
    outcomes: list[PartOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # parts not loaded, and why (a feed without sample…)

    @property
    def failed(self) -> list[PartOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    def lines(self) -> list[str]:
        return [*self.notes, *(o.line() for o in self.outcomes)]

    def summary(self) -> dict[str, str]:
        """Part → status (success, skipped, or failed: the first line of the error), for Airflow's XCom."""
        return {o.label: (f"failed: {str(o.error).splitlines()[0]}" if o.error is not None else o.result.status)
                for o in self.outcomes}

    def raise_if_failed(self) -> None:
        """A lone part's own error; for several, one error naming the failed parts (the others loaded)."""
        if not self.failed:
            return
        if len(self.outcomes) == 1:
            raise self.failed[0].error
        raise QpvhubError(f"source {self.source.id}: {len(self.failed)} of {len(self.outcomes)} part(s) failed "
                          f"(the others loaded): " + "; ".join(o.line() for o in self.failed))


def run_parts(env: Env, source: Source, *, sample: bool = False, force: bool = False, url: str | None = None,
              release: Any = None, feed: str | None = None, airflow_run_id: str | None = None) -> PartsRun:
    """Load every part of an entry, each its own run: a collection's feeds (or the one `feed`), a series' release
    (`release`; with `sample` and none given, every bundled release, oldest first), else the entry itself.

    Feeds are independent: a failing one is recorded and the others still load. A series' releases and an
    entry's single part stop at the first failure (what depends on them would fail too)."""
    run = PartsRun(source)
    if source.collection is not None:
        for one_feed, res in ingest_collection(env, source, sample=sample, force=force, airflow_run_id=airflow_run_id,
                                               only=feed, notes=run.notes):
            run.outcomes.append(PartOutcome(f"{source.id}/{one_feed.id}", *(
                (None, res) if isinstance(res, BaseException) else (res, None))))
        return run
    if source.series and sample and release is None and not url:
        releases: list[Any] = sorted(source.series.samples)  # none bundled: nothing to load offline
    else:
        releases = [release]
    for rel in releases:
        label = f"{source.id} release {rel}" if rel is not None else source.id
        t0 = time.monotonic()
        try:
            res = ingest(env, source, url=url, sample=sample, force=force, airflow_run_id=airflow_run_id,
                         release=rel, feed=feed)
        except QpvhubError as exc:
            run.outcomes.append(PartOutcome(label, error=exc, seconds=time.monotonic() - t0))
            break
        run.outcomes.append(PartOutcome(label, res, seconds=time.monotonic() - t0))
    return run
