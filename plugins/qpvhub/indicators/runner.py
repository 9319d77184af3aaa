"""The indicators run: derived geography rebuilt, every family computed into a staging mart, the mart's GX
suite, then one transaction swaps it in with the history, the catalogue and the views. A family whose
required tables are empty is absent from the mart, never 0; a failed suite changes nothing."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from qpvhub.catalog.loader import load_catalog
from qpvhub.catalog.qpv_lists import QpvLists, load_qpv_lists
from qpvhub.catalog.regions import Region, deployment_regions
from qpvhub.indicators.checks import Agreement, run_checks
from qpvhub.indicators.derived import NEXT, has_rows, refresh_derived
from qpvhub.indicators.families import OUTPUT_COLUMNS, Family, load_families
from qpvhub.indicators.series import (
    SeriesInput,
    compute_series,
    latest_releases,
    series_inputs,
    series_read,
    write_series,
)
from qpvhub.indicators.views import rebuild_profile
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.platform.errors import ConfigError, QpvhubError, ValidationFailed
from qpvhub.platform.store import Store
from qpvhub.quality.gx import record_results, validate_table

log = logging.getLogger(__name__)


class MartWouldShrink(QpvhubError):
    """The recomputed mart lacks QPV or indicators the live one has: not swapped in without --force."""


# the département in a QPV code of any list: Q + letter + département on three characters (035 → 35, 02A, 971)
CODE_DEP = "CASE WHEN substr(code_qp, 3, 1) = '0' THEN substr(code_qp, 4, 2) ELSE substr(code_qp, 3, 3) END"


def losses(conn: psycopg.Connection, regions: dict[str, Region]) -> list[str]:
    """Per region (from the QPV codes themselves: a QPV gone from ref.qpv is still counted), the QPV that have
    values in the live mart and none in the new one, and the indicators no longer computed there."""
    region_of = {d: code for code, r in regions.items() for d in r.departements}
    out = []
    query = sql.SQL(f"SELECT {CODE_DEP} AS dep, generation, code_qp, array_agg(DISTINCT indicator_id) FROM {{}} "
                    "GROUP BY 1, 2, 3")
    live = {(d, g, c): set(ids) for d, g, c, ids in conn.execute(query.format(sql.Identifier("mart", "qpv_indicator")))}
    new = {(d, g, c): set(ids) for d, g, c, ids in conn.execute(query.format(sql.Identifier("staging", NEXT)))}
    for code in sorted({region_of.get(d, "(none served)") for d, _, _ in live}):
        mine = [k for k in live if region_of.get(k[0], "(none served)") == code]
        gone = sorted(f"{c} (list {g})" for d, g, c in mine if (d, g, c) not in new)
        was = set().union(*(live[k] for k in mine))
        now = set().union(*(new.get(k, set()) for k in mine))
        dropped = sorted(was - now)
        if gone:
            out.append(f"  region {code}: {len(gone)} QPV would have no value left: {', '.join(gone[:8])}"
                       + ("…" if len(gone) > 8 else ""))
        if dropped:
            out.append(f"  region {code}: indicators no longer computed: {', '.join(dropped)}")
    return out


def output_columns(conn: psycopg.Connection, fam: Family, params: dict) -> list[str]:
    """The columns a family writes: OUTPUT_COLUMNS, and `status` when it gives one (a value the source keeps
    secret: a row with no value and status 'secret')."""
    cur = conn.execute(sql.SQL("SELECT * FROM ({}) AS f LIMIT 0").format(sql.SQL(fam.sql)), params)
    given = {d.name for d in cur.description or []}
    missing = [c for c in OUTPUT_COLUMNS if c not in given]
    if missing:
        raise ConfigError(f"{fam.path}: its SELECT lacks {missing}")
    return [*OUTPUT_COLUMNS, *(["status"] if "status" in given else [])]


def check_params(fam: Family, series: dict[str, SeriesInput]) -> None:
    """A family reading a series source must say which release (`%(release_<source>)s`), and name no other."""
    used = set(re.findall(r"%\(release_([a-z0-9_]+)\)s", fam.sql))
    mine = set(series_read(fam, series))
    if used != mine:
        raise ConfigError(f"{fam.path}: reads the series {sorted(mine)} but its SQL selects the release of "
                          f"{sorted(used)}: each series source needs `WHERE <alias>.release = %(release_<source>)s`")
    if fam.header.generation is None and "%(generation)s" in fam.sql:
        raise ConfigError(f"{fam.path}: its SQL uses %(generation)s but its header declares no generation")


def _compute(conn: psycopg.Connection, families: list[Family], series: dict[str, SeriesInput],
             only: list[str] | None) -> Counts:
    """Compute the families into staging.qpv_indicator_next (other families' rows carried over)."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", NEXT)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE mart.qpv_indicator INCLUDING DEFAULTS)").format(
        sql.Identifier("staging", NEXT)))
    target = sql.Identifier("staging", NEXT)
    chosen = [f for f in families if not only or f.header.family in only]
    recomputed = [i.id for f in chosen for i in f.header.indicators]
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM mart.qpv_indicator WHERE NOT indicator_id = ANY(%s)").format(
        target), (recomputed,))
    written = Counts()
    for fam in chosen:
        ids = [i.id for i in fam.header.indicators]
        missing = [r for r in fam.header.requires if not has_rows(conn, r)]
        if missing:
            log.warning("indicator family %s: %s empty or missing, its indicators are absent", fam.header.family,
                        ", ".join(missing))
            written.update(dict.fromkeys(ids, 0))
            written.absent.update(dict.fromkeys(ids, f"{', '.join(missing)} empty or not loaded"))
            continue
        check_params(fam, series)
        started = time.perf_counter()
        try:
            # The SQL is the project's own file, not user input. Series are read at their newest release:
            # mart.qpv_indicator is the latest (compute_series has every release).
            params = fam.params(latest_releases(fam, series))
            names = output_columns(conn, fam, params)
            mine = sql.SQL(", ").join(sql.Identifier(c) for c in names)
            conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM ({q}) AS f").format(
                t=target, cols=mine, q=sql.SQL(fam.sql)), params)
        except psycopg.Error as exc:
            raise ConfigError(f"indicator family {fam.path.name} failed: {str(exc).strip()}") from exc
        written.seconds[fam.header.family] = round(time.perf_counter() - started, 3)
        if fam.header.generation is not None:  # what the fiches rely on to leave the family out of the other list
            other = conn.execute(sql.SQL("SELECT array_agg(DISTINCT generation) FROM {} WHERE indicator_id = ANY(%s) "
                                         "AND generation <> %s").format(target),
                                 (ids, fam.header.generation)).fetchone()[0]
            if other:
                raise ConfigError(f"indicator family {fam.path.name} declares generation {fam.header.generation} "
                                  f"but computed values for QPV of the list(s) {other}")
        for i in ids:
            written[i] = n = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE indicator_id = %s").format(target),
                                          (i,)).fetchone()[0]
            if not n:
                written.absent[i] = "computed from loaded sources, but no value for any QPV of the loaded lists"
    return written


class Counts(dict):
    """Values written per indicator; `absent` says why an indicator has none (what is missing, or that its
    sources cover no loaded QPV); `checks`, the independent checks run with them (qpvhub.indicators.checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.absent: dict[str, str] = {}
        self.checks: list[Agreement] = []
        self.seconds: dict[str, float] = {}  # per family, and per step (`derived`, `series`, `suite`)


def mart_expectations(families: list[Family], lists: QpvLists) -> list[tuple[str, dict]]:
    """The mart's suite: keys, code formats (of any known QPV list), plausible ranges, a row for every QPV."""
    code = lists.any_code_pattern
    exps: list[tuple[str, dict]] = [
        ("expect_compound_columns_to_be_unique", {"column_list": ["generation", "code_qp", "indicator_id", "scope"]}),
        ("expect_column_values_to_match_regex", {"column": "code_qp", "regex": code}),
        ("expect_column_values_to_not_be_null", {"column": "millesime"}),
        ("unexpected_rows_expectation", {
            "unexpected_rows_query": "SELECT q.generation, q.code_qp FROM ref.qpv q WHERE NOT EXISTS "
                                     "(SELECT 1 FROM {batch} WHERE code_qp = q.code_qp AND generation = q.generation)",
            "description": "every QPV of ref.qpv has indicator rows (a profile)"}),
    ]
    for fam in families:
        for ind in fam.header.indicators:
            if ind.range is not None:
                lo, hi = ind.range
                exps.append(("unexpected_rows_expectation", {
                    "unexpected_rows_query": f"SELECT code_qp, scope, value FROM {{batch}} WHERE indicator_id = "
                                             f"'{ind.id}' AND (value < {float(lo)!r} OR value > {float(hi)!r})",
                    "description": f"{ind.id} within its plausible range [{lo}, {hi}] {ind.unit}"}))
    return exps


def run_indicators(env: Env, only: list[str] | None = None, *, run_id: str | None = None,
                   store: Store | None = None, force: bool = False) -> Counts:
    """Build the mart in staging, check it with its GX suite, then swap it in; return rows per indicator.

    As for sources, a failed suite changes nothing: `mart.qpv_indicator` keeps its previous values. The
    suite's results go to `meta.validation_results` under `run_id` and as JSON under `quality/mart/<run_id>/`
    (in `store`, the environment's unless given). A mart that would lose a region's QPV or indicators against
    the live one is refused, naming what would be lost, unless `force` (a source withdrawn on purpose).
    """
    uri, sql_dir, store = env.uri, env.settings.sql_dir, store or env.store
    run_id = run_id or "indicators-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    families = load_families(sql_dir)
    catalog = load_catalog(env.settings.sources_dir)
    lists = load_qpv_lists(env.settings.qpv_lists_path)
    try:
        with connect(uri) as conn:
            t0 = time.perf_counter()
            derived = refresh_derived(conn, sql_dir)
            conn.commit()
            derived_s = time.perf_counter() - t0
            log.info("derived reference tables: %s", derived)
            series_in = series_inputs(conn, catalog)
            written = _compute(conn, families, series_in, only)
            conn.commit()
            t0 = time.perf_counter()
            series, evo = compute_series(conn, families, series_in, only)
            written.seconds["series"] = round(time.perf_counter() - t0, 3)
        written.seconds["derived"] = round(derived_s, 3)
        t0 = time.perf_counter()
        report = validate_table(uri, "staging", NEXT, "mart_qpv_indicator", mart_expectations(families, lists),
                                "block")
        written.seconds["suite"] = round(time.perf_counter() - t0, 3)
        with connect(uri) as conn:  # kept whatever the outcome, like a source's results
            record_results(conn, run_id, report)
            conn.commit()
        if store is not None:  # (a test may run without one)
            store.put_bytes(f"quality/mart/{run_id}/validation.json",
                            json.dumps(report.to_json(), ensure_ascii=False, indent=2).encode(), "application/json")
        if not report.success:
            raise ValidationFailed("mart.qpv_indicator", report.text(), report.to_json())
        with connect(uri) as conn:
            lost = losses(conn, deployment_regions(env.settings))
        if lost and not force:
            raise MartWouldShrink("the new mart.qpv_indicator would lose what the live one holds, nothing swapped "
                                  "(a source missing or replaced by a smaller one? `qpvhub status`; run with "
                                  "--force if it is intended):\n" + "\n".join(lost))
        if lost:
            log.warning("indicators: forced, the mart loses:\n%s", "\n".join(lost))
        with connect(uri) as conn:
            conn.execute("SET LOCAL lock_timeout = '60s'")
            for fam in families:
                for ind in fam.header.indicators:
                    conn.execute(
                        """INSERT INTO mart.indicator_catalog
                               (indicator_id, label_fr, unit, theme, sources, method, millesime, is_count, sql_file)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (indicator_id) DO UPDATE SET label_fr = EXCLUDED.label_fr,
                               unit = EXCLUDED.unit, theme = EXCLUDED.theme, sources = EXCLUDED.sources,
                               method = EXCLUDED.method, millesime = EXCLUDED.millesime,
                               is_count = EXCLUDED.is_count, sql_file = EXCLUDED.sql_file""",
                        (ind.id, ind.label_fr, ind.unit, ind.theme, fam.header.sources, ind.method.strip(),
                         ind.millesime, ind.is_count, fam.path.name))
            conn.execute("DELETE FROM mart.qpv_indicator")
            conn.execute(sql.SQL("INSERT INTO mart.qpv_indicator SELECT * FROM {}").format(
                sql.Identifier("staging", NEXT)))
            conn.execute("UPDATE mart.indicator_catalog SET computed_at = now() WHERE indicator_id = ANY(%s)",
                         ([i for i, n in written.items() if n],))
            write_series(conn, series, evo, list(written))
            rebuild_profile(conn)
            written.checks = run_checks(conn, sql_dir, lists)
            conn.commit()
    finally:
        with connect(uri) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", NEXT)))
            conn.commit()
    return written
