"""Build the qpvhub DAGs from the catalogue: one ingest DAG per source, indicators, one publish per region.

Nothing here touches the database, the store or the network at parse time: the catalogue YAML is
read (it is configuration) and every task imports and calls package functions when it runs.
Assets chain them: ingest → `qpvhub://<schema>/<table>` → indicators → `qpvhub://mart/qpv_indicator`
→ publish.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import operator
from typing import Any

from airflow.sdk import DAG, Asset, task

from qpvhub.catalog.loader import load_catalog, load_order
from qpvhub.catalog.model import RELEASE, Source
from qpvhub.catalog.regions import Region, deployment_regions
from qpvhub.platform.redact import redact_url
from qpvhub.platform.settings import Settings

log = logging.getLogger(__name__)

MART_ASSET = "qpvhub://mart/qpv_indicator"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def default_args(settings: Settings, **over: Any) -> dict[str, Any]:
    """Retries with exponential backoff and a timeout on every task."""
    args = {
        "owner": "qpvhub",
        "retries": settings.scheduling.task_retries,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
    }
    args.update(over)
    return args


def _env():
    """The task's environment, read when the task runs (a worker's own settings); the schema must be current:
    migrations are the deployment's init step (`qpvhub migrate`), never a task's."""
    from qpvhub.platform.env import Env

    return Env.from_settings()


def _fail_ingest_run(source: Source, context: dict) -> None:
    """Final failure of an ingest task: mark the qpvhub run failed and clear its staging tables."""
    from qpvhub.ingest.runs import fail_run

    ti = context.get("ti")
    run_id = ti.xcom_pull(task_ids="start") if ti else None
    error = context.get("exception") or "task failed"
    log.error("qpvhub ingest %s failed (run %s): %s", source.id, run_id, error)
    if run_id:
        fail_run(_env(), source, run_id, error)
    _notify(f"ingest {source.id}", context, qpvhub_run=run_id)


def _notify(what: str, context: dict, **extra: Any) -> None:
    """Post a failure to the configured webhook (and the task log) with where to look."""
    from qpvhub.ops.monitor import notify_failure

    ti = context.get("ti")
    notify_failure(Settings.load().monitoring, what, context.get("exception") or "task failed",
                   dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None),
                   airflow_run_id=context.get("run_id"), try_number=getattr(ti, "try_number", None), **extra)


def _notify_task_failure(what: str, context: dict) -> None:
    _notify(what, context)


NO_PRODUCTION = ("(none yet: not scheduled; `qpvhub sources check` lists it. Trigger with `{\"url\": …}` or "
                 "`{\"sample\": true}`)")


def _ingest_dag(settings: Settings, source: Source, doc: str, on_failure, params: dict) -> DAG:
    """An ingest DAG's frame. No production location: not scheduled (a scheduled run could only fail);
    manual runs take a url or the sample."""
    return DAG(
        dag_id=f"qpvhub_ingest_{source.id}",
        schedule=source.schedule if source.production else None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["qpvhub", "ingest", *source.tags],
        default_args=default_args(settings, on_failure_callback=on_failure),
        doc_md=doc,
        params=params,
    )


def _conf(context: dict) -> dict:
    """The run's parameters: the DAG's defaults, overridden by the trigger's conf."""
    return {**context["params"], **((context["dag_run"].conf or {}) if context.get("dag_run") else {})}


def build_collection_dag(settings: Settings, source: Source) -> DAG:
    """Every feed of a collection (GTFS networks), each its own run with its own partition: one task loops
    over them so that a failing feed is reported (the task fails at the end) while the others load."""
    doc = (f"### Ingest `{source.id}` (a collection of feeds)\n{source.title}\n\n{source.description}\n\n"
           f"- target: `{source.target.qualified}`, one partition per feed\n- production: "
           f"{redact_url(source.production) if source.production else NO_PRODUCTION}\n\nConf `{{\"feed\": "
           f"\"{source.feeds()[0].id if source.feeds() else 'ID'}\"}}` loads one part (a feed, a département), "
           "`{\"sample\": true}` the bundled ones, `{\"force\": true}` even unchanged.")
    with _ingest_dag(settings, source, doc, functools.partial(_notify_task_failure, f"ingest {source.id}"),
                     {"sample": False, "force": False, "feed": None}) as dag:

        @task(pool=settings.scheduling.db_pool, outlets=[Asset(source.asset_uri)])
        def ingest_feeds(**context: Any) -> dict:
            from qpvhub.ingest.parts import run_parts

            conf = _conf(context)
            run = run_parts(_env(), source, sample=bool(conf.get("sample")), force=bool(conf.get("force")),
                            feed=conf.get("feed"), airflow_run_id=context["run_id"])
            log.info("%s:\n%s", source.id, "\n".join(run.lines()))
            run.raise_if_failed()
            return run.summary()

        ingest_feeds()
    return dag


def build_ingest_dag(settings: Settings, source: Source) -> DAG:
    """fetch → stage → validate → promote for one catalogue entry; the promote task emits its asset."""
    if source.collection:
        return build_collection_dag(settings, source)
    doc = (f"### Ingest `{source.id}`\n{source.title}\n\n{source.description}\n\n"
           f"- publisher: {source.publisher}\n- licence: {source.licence}\n- target: `{source.target.qualified}`\n"
           f"- production: {redact_url(source.production) if source.production else NO_PRODUCTION}\n"
           f"- quality policy: {source.quality.policy}\n\n"
           "Trigger with conf `{\"sample\": true}` to load the bundled sample, `{\"url\": \"…\"}` to override the URL, "
           "`{\"force\": true}` to load even when unchanged.")
    on_failure = functools.partial(_fail_ingest_run, source)
    if source.series:
        url = "" if RELEASE in (source.url or "") else " with `\"url\": \"…\"`"  # the url names each release's file
        doc += (f"\n\nA series: each release is a partition, loaded on its own. `{{\"release\": 2019}}`{url} "
                f"loads one; the schedule loads release {source.series.current or '(none set)'}.")

    def release_source(context: dict) -> Source:
        """The entry this run loads (one release, for a series)."""
        from qpvhub.ingest.pipeline import for_run

        conf = _conf(context)
        return for_run(source, conf.get("release"), sample=bool(conf.get("sample")), url=conf.get("url"))

    pool = settings.scheduling.db_pool
    with _ingest_dag(settings, source, doc, on_failure,
                     {"sample": False, "url": None, "force": False, "release": None}) as dag:

        @task
        def start(**context: Any) -> str:
            from qpvhub.ingest.runs import start_run

            return start_run(_env(), release_source(context), airflow_run_id=context["run_id"])

        @task
        def fetch(qrun: str, **context: Any) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            from qpvhub.ingest.steps import fetch_step, locate

            env = _env()
            conf = _conf(context)
            one = release_source(context)
            where = locate(env, one, sample=bool(conf.get("sample")), url=conf.get("url"))
            res = fetch_step(env, one, qrun, where.url, force=bool(conf.get("force")), located=where.meta or None)
            if res["status"] == "skipped":
                raise AirflowSkipException(f"{source.id} unchanged since run {res['previous_run']}")
            return res["raw_key"]

        @task(pool=pool)
        def stage(qrun: str, raw_key: str, **context: Any) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from qpvhub.ingest.runs import skip_run
            from qpvhub.ingest.steps import stage_step
            from qpvhub.platform.errors import NothingForRegions

            env = _env()
            one = release_source(context)
            try:
                r = stage_step(env, one, qrun, raw_key)
            except NothingForRegions as exc:
                skip_run(env, one, qrun, str(exc))
                raise AirflowSkipException(str(exc)) from None
            return {"rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected, "rows_repaired": r.rows_repaired}

        @task(pool=pool)
        def validate(qrun: str, staged: dict, **context: Any) -> dict:
            from qpvhub.ingest.steps import validate_step

            return validate_step(_env(), release_source(context), qrun).summary()

        @task(pool=pool, outlets=[Asset(source.asset_uri)])
        def promote(qrun: str, summary: dict, **context: Any) -> dict:
            from qpvhub.ingest.steps import promote_step

            return promote_step(_env(), release_source(context), qrun)

        qrun = start()
        raw_key = fetch(qrun)
        staged = stage(qrun, raw_key)
        summary = validate(qrun, staged)
        promote(qrun, summary)
    return dag


def build_indicators_dag(settings: Settings, sources: dict[str, Source]) -> DAG:
    """Recompute the mart whenever any source asset is updated."""
    assets = sorted({s.asset_uri for s in sources.values()})
    schedule = functools.reduce(operator.or_, [Asset(a) for a in assets]) if assets else None
    with DAG(
        dag_id="qpvhub_indicators",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["qpvhub", "indicators"],
        params={"force": False},
        default_args=default_args(settings, on_failure_callback=functools.partial(_notify_task_failure,
                                                                                  "indicators")),
        doc_md="### Indicators\nRuns every family of `sql/indicators/` into `mart.qpv_indicator` and rebuilds "
               "`mart.qpv_profile` and the `mart.theme_*` views, when any source is reloaded; the mart's GX results "
               "go to `meta.validation_results` under `indicators-<Airflow run id>`. A mart that would lose a "
               "region's QPV or indicators is refused (the task fails naming them); trigger with "
               "`{\"force\": true}` if intended.",
    ) as dag:

        @task(pool=settings.scheduling.db_pool, outlets=[Asset(MART_ASSET)])
        def compute(**context) -> dict:
            from qpvhub.indicators.runner import run_indicators

            return run_indicators(_env(), run_id=f"indicators-{context['run_id']}",
                                  force=bool(_conf(context).get("force")))

        compute()
    return dag


def build_publish_dag(settings: Settings, region: Region) -> DAG:
    """Publish a region's extracts whenever the mart is recomputed."""
    with DAG(
        dag_id=f"qpvhub_publish_{region.code}",
        schedule=Asset(MART_ASSET),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["qpvhub", "publish", f"region:{region.code}"],
        default_args=default_args(settings, on_failure_callback=functools.partial(_notify_task_failure,
                                                                                  f"publish region {region.code}")),
        doc_md=f"### Publish — {region.name} ({region.code})\nQPV profile extracts (CSV, GeoJSON, GeoPackage, "
               f"GeoParquet) to `published/{region.code}/`, versioned, checksummed, then `latest/`.",
    ) as dag:

        # bigger regions first when the mart's asset starts every publication at once: with two slots, the
        # largest region started last would leave a slot idle while it alone prints its fiches
        @task(priority_weight=len(region.departements), weight_rule="absolute")
        def publish(**context: Any) -> dict:
            from qpvhub.publish import publish_region

            res = publish_region(_env(), region, airflow_run_id=context["run_id"])
            return {"version": res.version, "status": res.status, "prefix": res.prefix}

        publish()
    return dag


def _monitoring_dag(settings: Settings, dag_id: str, schedule: str, what: str, doc_md: str) -> DAG:
    """A monitoring DAG: no retry (a check that fails should say so now), failures notified as `what`."""
    return DAG(dag_id=dag_id, schedule=schedule, start_date=START, catchup=False, max_active_runs=1,
               tags=["qpvhub", "monitoring"], doc_md=doc_md,
               default_args=default_args(settings, retries=0,
                                         on_failure_callback=functools.partial(_notify_task_failure, what)))


def build_health_dag(settings: Settings, sources: dict[str, Source]) -> DAG:
    """Daily: fail (and notify) when a source has not been confirmed within its schedule's tolerance."""
    with _monitoring_dag(
        settings, "qpvhub_health", "@daily", "health check",
        "### Health\nFails when a source's last confirmed load (success, or unchanged check) is older "
        "than its tolerance (QPVHUB_STALE_FACTOR × its schedule's interval + 1 day), it never loaded, its last "
        "run failed, or its data expired or is outdated; the table is in the task log and `qpvhub status`.",
    ) as dag:

        @task
        def freshness() -> dict:
            from qpvhub.ops.monitor import freshness as check
            from qpvhub.ops.monitor import needs_attention, status_table

            env = _env()
            rows = check(env.uri, sources, stale_factor=env.settings.monitoring.stale_factor)
            log.info("source freshness:\n%s", status_table(rows))
            why = {f.source_id: f.data_note or f.last_error for f in rows}
            bad = [f"{f.source_id} ({f.state}{': ' + why[f.source_id] if why[f.source_id] else ''})"
                   for f in needs_attention(rows)]  # what `qpvhub status` and `qpvhub health` list
            if bad:
                raise RuntimeError(f"{len(bad)} source(s) not fresh: {', '.join(bad)}")
            return {f.source_id: f.state for f in rows}

        freshness()
    return dag


def build_reload_all_dag(settings: Settings, sources: dict[str, Source]) -> DAG:
    """Manual: reload every source, dependencies first (conf `{"force": true}` reloads unchanged ones too)."""
    with DAG(
        dag_id="qpvhub_reload_all",
        schedule=None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["qpvhub", "ingest", "manual"],
        default_args=default_args(settings, on_failure_callback=functools.partial(_notify_task_failure,
                                                                                  "reload all")),
        params={"force": False, "sample": False},
        doc_md="### Reload everything\nRuns every catalogue source through the same pipeline, each after the "
               "sources it depends on; each task emits its source's asset, so the indicators and publication "
               "follow. Trigger with conf `{\"force\": true}` to reload unchanged sources, `{\"sample\": true}` "
               "for the bundled samples.",
    ) as dag:
        tasks: dict[str, Any] = {}
        for source in load_order(sources):

            @task(task_id=f"ingest_{source.id}", pool=settings.scheduling.db_pool, outlets=[Asset(source.asset_uri)])
            def run(src: Source = source, **context: Any) -> dict:
                from qpvhub.ingest.parts import run_parts

                conf = _conf(context)
                if conf.get("sample") and src.no_sample:  # nothing bundled to reload, and the entry says why
                    from airflow.sdk.exceptions import AirflowSkipException

                    raise AirflowSkipException(f"{src.id}: no offline sample: {src.no_sample}")
                # every part (each feed, each bundled release); the task fails at the end if one did
                run = run_parts(_env(), src, sample=bool(conf.get("sample")), force=bool(conf.get("force")),
                                airflow_run_id=context["run_id"])
                log.info("%s:\n%s", src.id, "\n".join(run.lines()))
                run.raise_if_failed()
                return run.summary()

            tasks[source.id] = run()
            for dep in source.depends_on:
                tasks[dep] >> tasks[source.id]
    return dag


def reload_all_dags() -> dict[str, DAG]:
    settings = Settings.load()
    return {"qpvhub_reload_all": build_reload_all_dag(settings, load_catalog(settings.sources_dir))}


def build_sources_check_dag(settings: Settings, sources: dict[str, Source]) -> DAG:
    """Weekly: probe every production location and compare its layout; fail (and notify) on any problem."""
    with _monitoring_dag(
        settings, "qpvhub_sources_check", "@weekly", "sources check",
        "### Sources check\nFor every catalogue entry: resolves its locator, probes the production "
        "location (HEAD or ranged GET), reads its first kilobytes (a ZIP's central directory) and compares "
        "the header or fields with the declared columns. Fails when a location is unreachable or its "
        "layout drifted; the table is in the task log and `qpvhub sources check`.",
    ) as dag:

        @task
        def check() -> dict:
            from qpvhub.catalog.regions import region_departements
            from qpvhub.ingest.runs import last_success
            from qpvhub.ops.sources_check import check_sources

            env = _env()
            previous = {sid: p for sid in sources if (p := last_success(env, sid))}
            probes = check_sources(sources, env.settings.publishers, previous=previous,
                                   departements=sorted(region_departements(env.settings)))
            log.info("production locations:\n%s", "\n".join(p.line() if p.reachable
                                                              else f"{p.source_id}: UNREACHABLE {p.status}"
                                                              for p in probes))
            bad = [p.source_id for p in probes if not p.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} source(s) unreachable or drifted: {', '.join(bad)}")
            return {p.source_id: p.layout for p in probes}

        check()
    return dag


def build_locate_dag(settings: Settings) -> DAG:
    """Every 10 minutes: the CSV files partners dropped in their inbox, located, their result in their outbox, the
    input deleted; results past the retention swept. Logs and XCom carry counts only, never an address."""
    with DAG(dag_id="qpvhub_locate", schedule="*/10 * * * *", start_date=START, catchup=False, max_active_runs=1,
             tags=["qpvhub", "partenaires"], default_args=default_args(settings, retries=1),
             doc_md="### Partners: is this address in a QPV?\nA partner drops a CSV under `partners/<id>/inbox/` "
                    "(addresses or coordinates, columns recognised by name); the result, every row with its QPV "
                    "of the 2024 list and its statut, is written to `partners/<id>/outbox/<name>_localise.csv` "
                    "and the input deleted. Results expire after QPVHUB_LOCATE_RETENTION_DAYS. Nothing of a file "
                    "is kept elsewhere: `meta.locate_runs` holds counts.") as dag:

        @task(pool=settings.scheduling.db_pool)
        def locate_inboxes() -> dict:
            from qpvhub.locate.partners import process_inboxes, sweep

            env = _env()
            done = process_inboxes(env)
            swept = sweep(env)
            failed = [d for d in done if d.error]
            if failed:
                raise RuntimeError(f"{len(failed)} partner file(s) failed (left in their inbox): "
                                   + "; ".join(f"{d.partner}: {d.error}" for d in failed))
            return {"files": len(done), "rows": sum(d.summary.rows for d in done if d.summary), "swept": len(swept)}

        locate_inboxes()
    return dag


def locate_dags() -> dict[str, DAG]:
    return {"qpvhub_locate": build_locate_dag(Settings.load())}


def sources_check_dags() -> dict[str, DAG]:
    settings = Settings.load()
    return {"qpvhub_sources_check": build_sources_check_dag(settings, load_catalog(settings.sources_dir))}


def health_dags() -> dict[str, DAG]:
    settings = Settings.load()
    return {"qpvhub_health": build_health_dag(settings, load_catalog(settings.sources_dir))}


def ingest_dags() -> dict[str, DAG]:
    """One ingest DAG per catalogue entry, by dag_id."""
    settings = Settings.load()
    sources = load_catalog(settings.sources_dir)
    return {f"qpvhub_ingest_{s.id}": build_ingest_dag(settings, s) for s in sources.values()}


def indicators_dags() -> dict[str, DAG]:
    settings = Settings.load()
    return {"qpvhub_indicators": build_indicators_dag(settings, load_catalog(settings.sources_dir))}


def publish_dags() -> dict[str, DAG]:
    """One publish DAG per region file, by dag_id."""
    settings = Settings.load()
    return {f"qpvhub_publish_{r.code}": build_publish_dag(settings, r) for r in deployment_regions(settings).values()}


def build_all() -> dict[str, DAG]:
    """Every qpvhub DAG by dag_id."""
    return {**ingest_dags(), **indicators_dags(), **publish_dags(), **health_dags(), **reload_all_dags(),
            **locate_dags()}
