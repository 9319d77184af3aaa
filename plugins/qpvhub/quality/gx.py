"""GX Core 1.x runs: a suite over a PostGIS table (a source's staging table, the indicators mart) or a small
frame (an extract before publication), its results for `meta.validation_results`, its Data Docs.

Geometries are checked through a view that exposes `ST_IsValid`, `ST_SRID`, `GeometryType` and emptiness
as plain columns, since SQLAlchemy has no PostGIS type: validation runs where the data is, never loading
it into memory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpvhub.platform.settings import quiet_libraries

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    """One expectation's outcome, in the shape stored in meta.validation_results."""

    expectation: str
    column: str | None
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    description: str | None = None
    sample_query: str | None = None  # rows to show when it fails (`{batch}` stands for the table)

    def describe(self) -> str:
        where = f" on {self.column!r}" if self.column else ""
        args = {k: v for k, v in self.kwargs.items() if k not in ("column", "result_format", "batch_id")}
        if self.description:  # e.g. unexpected-rows checks: say what, not the SQL
            args = self.description
        detail = []
        if self.unexpected_count:
            detail.append(f"{self.unexpected_count} unexpected ({(self.unexpected_percent or 0):.1f} %)")
        if self.sample:
            detail.append(f"e.g. {self.sample[:5]}")
        if self.observed_value is not None and not self.unexpected_count:
            detail.append(f"observed {self.observed_value}")
        outcome = "; ".join(detail) or ("passed" if self.success else "failed")
        return f"{self.expectation}{where} {args or ''}: {outcome}".replace(" :", ":")


@dataclass
class ValidationReport:
    suite: str
    success: bool
    results: list[CheckResult]
    policy: str

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> dict:
        return {
            "suite": self.suite,
            "success": self.success,
            "policy": self.policy,
            "evaluated": len(self.results),
            "failed": len(self.failed),
            "failures": [r.describe() for r in self.failed],
        }

    def text(self) -> str:
        lines = [f"suite {self.suite}: {len(self.results) - len(self.failed)}/{len(self.results)} expectations passed"]
        lines += [f"  ✗ {r.describe()}" for r in self.failed]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**self.summary(), "results": [r.__dict__ for r in self.results]}


def _gx_context():
    quiet_libraries()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX pins some of its loggers at INFO; one line per validation is enough in Airflow's task logs.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, ctx


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def sqlalchemy_uri(uri: str) -> str:
    """GX's SQL datasource speaks SQLAlchemy: postgresql:// → postgresql+psycopg2://."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri[len(prefix):]
    return uri


def validate_table(
    uri: str, schema: str, table: str, suite_name: str, expectations: list[tuple[str, dict]], policy: str,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Run the expectations with GX Core against `schema.table` in PostgreSQL.

    Two passes keep big tables fast: every expectation with result_format BOOLEAN_ONLY (about half the
    queries), then the failed ones and the row count again with SUMMARY, for counts and samples. With
    `docs_dir`, GX's Data Docs (HTML) of both passes are built there.
    """
    gx, ctx = _gx_context()
    if docs_dir is not None:
        page = {"module_name": "qpvhub.quality.views", "class_name": "CachedPageView"}  # templates compiled once
        ctx.add_data_docs_site("qpvhub", {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                   "view": {"module_name": "qpvhub.quality.views",
                                            "class_name": "CachedIndexPageView"}},
            "site_section_builders": {name: {"view": page} for name in ("expectations", "validations", "profiling")},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        })
    ds = ctx.data_sources.add_postgres("qpvhub", connection_string=sqlalchemy_uri(uri))
    try:
        asset = ds.add_table_asset(table, table_name=table, schema_name=schema)
        batch_def = asset.add_batch_definition_whole_table("whole")
        checks = _run_suite(gx, ctx, batch_def, suite_name, expectations, docs=docs_dir is not None)
    finally:
        _close_engines(ctx, ds)
    _sample_unexpected_rows(uri, schema, table, checks)
    return ValidationReport(suite=suite_name, success=all(c.success for c in checks), results=checks, policy=policy)


def _close_engines(ctx, *sources) -> None:
    """Close the pools of GX's SQLAlchemy engines (the datasource's and its execution engine's, in each copy GX
    made): they outlive the ephemeral context until a garbage collection, two connections each, and a process
    validating table after table (500 GTFS feeds of a national collection) ran out of server connections."""
    for ds in [*sources, *ctx.data_sources.all().values()]:
        for engine in (getattr(ds, "_engine", None), getattr(getattr(ds, "_execution_engine", None), "engine", None)):
            if engine is not None:
                engine.dispose()


def _run_suite(gx, ctx, batch_def, suite_name: str, expectations: list[tuple[str, dict]], *,
               batch_parameters: dict | None = None, docs: bool = False) -> list[CheckResult]:
    """Run a suite in two passes (BOOLEAN_ONLY for all, SUMMARY for the failed and the row counts)."""

    def run(name: str, exps: list[tuple[str, dict]], fmt: dict):
        suite = gx.ExpectationSuite(name=name)
        for exp_name, kwargs in exps:
            cls = getattr(gx.expectations, camel(exp_name), None)
            if cls is None:
                raise ValueError(f"suite {suite_name}: GX Core has no expectation {exp_name!r}")
            suite.add_expectation(cls(**kwargs))
        suite = ctx.suites.add(suite)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
        # results stay in the context's store, for Data Docs; GX returns them in its own order: the suite's
        order = {e.id: n for n, e in enumerate(suite.expectations)}
        results = vd.run(result_format=fmt, batch_parameters=batch_parameters).results
        return sorted(results, key=lambda r: order[r.expectation_config.id])

    def key(cfg) -> str:  # GX does not keep the suite's order in its results: match on the config
        return cfg.type + json.dumps({k: v for k, v in cfg.kwargs.items() if k != "batch_id"}, sort_keys=True,
                                     default=str)

    quick = run(suite_name, expectations, {"result_format": "BOOLEAN_ONLY"})
    again = [r.expectation_config for r in quick
             if not r.success or r.expectation_config.type.startswith("expect_table_")]
    detailed = {}
    if again:
        exps = [(c.type, {**{k: v for k, v in c.kwargs.items() if k != "batch_id"},
                          **({"description": c.description} if c.description else {}),
                          **({"meta": c.meta} if c.meta else {})}) for c in again]
        detailed = {key(r.expectation_config): r for r in run(
            suite_name + "__detail", exps, {"result_format": "SUMMARY", "partial_unexpected_count": 10})}
    if docs:
        ctx.build_data_docs(site_names=["qpvhub"])  # one render of both passes
    checks = []
    for first in quick:
        r = detailed.get(key(first.expectation_config), first)
        cfg = r.expectation_config
        res = r.result or {}
        ok = bool(r.success)
        observed = res.get("observed_value")
        if r.exception_info and any(v.get("raised_exception") for v in r.exception_info.values()
                                     if isinstance(v, dict)):
            ok = False
            msgs = {v.get("exception_message") for v in r.exception_info.values() if isinstance(v, dict)}
            observed = "error: " + "; ".join(sorted(m for m in msgs if m))
        unexpected = res.get("unexpected_count")
        if unexpected is None and ok and "column" in cfg.kwargs and not cfg.kwargs.get("mostly"):
            unexpected = 0  # a passed column expectation without `mostly` had no unexpected value
        checks.append(CheckResult(
            expectation=cfg.type,
            column=cfg.kwargs.get("column"),
            success=ok,
            observed_value=_jsonable(observed),
            unexpected_count=unexpected,
            unexpected_percent=res.get("unexpected_percent"),
            sample=_jsonable(res.get("partial_unexpected_list") or []),
            kwargs=_jsonable(dict(cfg.kwargs)),
            description=getattr(cfg, "description", None),
            sample_query=(cfg.meta or {}).get("sample_query"),
        ))
    return checks


def validate_frame(df, suite_name: str, expectations: list[tuple[str, dict]], policy: str = "block"
                   ) -> ValidationReport:
    """The same suites on a pandas DataFrame (small frames: an extract before publication)."""
    gx, ctx = _gx_context()
    batch_def = ctx.data_sources.add_pandas("frame").add_dataframe_asset("frame").add_batch_definition_whole_dataframe(
        "whole")
    checks = _run_suite(gx, ctx, batch_def, suite_name, expectations, batch_parameters={"dataframe": df})
    return ValidationReport(suite=suite_name, success=all(c.success for c in checks), results=checks, policy=policy)


def _sample_unexpected_rows(uri: str, schema: str, table: str, checks: list[CheckResult], n: int = 5) -> None:
    """GX gives an unexpected-rows check's rows only in COMPLETE format (all of them): fetch a few instead,
    so the report says which rows failed."""
    import psycopg
    from psycopg import sql

    failed = [c for c in checks if not c.success and (c.sample_query or (
        c.expectation == "unexpected_rows_expectation" and c.kwargs.get("unexpected_rows_query")))]
    if not failed:
        return
    batch = sql.Identifier(schema, table)
    with psycopg.connect(uri) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        for c in failed:
            # plain substitution: the query may hold other braces (regex quantifiers)
            text = c.sample_query or c.kwargs["unexpected_rows_query"]
            query = sql.SQL(text.replace("{batch}", batch.as_string(conn)))
            try:
                rows = conn.execute(sql.SQL("SELECT * FROM (") + query + sql.SQL(f") AS u LIMIT {int(n)}"))
                c.sample = _jsonable([list(r) for r in rows.fetchall()])
            except psycopg.Error as exc:  # the count came from GX; a sample is a bonus
                log.warning("could not sample rows of %s: %s", c.description, exc)
                conn.rollback()
                conn.execute("SET TRANSACTION READ ONLY")


def record_results(conn, run_id: str, report: ValidationReport) -> None:
    """One `meta.validation_results` row per expectation evaluated (the caller commits)."""
    from psycopg.types.json import Jsonb

    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meta.validation_results (run_id, suite, expectation, column_name, success, "
            "observed_value, unexpected_count, unexpected_percent, sample) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [(run_id, report.suite, r.expectation, r.column, r.success,
              None if r.observed_value is None else json.dumps(r.observed_value, ensure_ascii=False),
              r.unexpected_count, r.unexpected_percent, Jsonb(r.sample)) for r in report.results])


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_jsonable(x) for x in v]
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def docs_prefix(source_id: str, run_id: str) -> str:
    """Where a run's GX Data Docs live in the store (index.html inside)."""
    return f"quality/sources/{source_id}/{run_id}/docs"
