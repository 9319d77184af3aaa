"""Indicator registry and runner over `sql/indicators/*.sql`.

Each file is one family: a YAML header in `--` comments (between `-- ---` lines) documents its
indicators (id, French label, unit, theme, method, millésime), the sources it needs and the tables it
requires; the SQL after it returns (indicator_id, code_qp, generation, scope, value, numerator,
denominator, millesime, source_run_ids). The runner replaces the family's rows in `mart.qpv_indicator`
in one transaction and rebuilds the wide view `mart.qpv_profile`. A family whose required tables are
empty is absent from the mart, never 0.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import psycopg
import yaml
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qpvhub.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("indicator_id", "code_qp", "generation", "scope", "value", "numerator", "denominator",
                  "millesime", "source_run_ids")


class RateSecrecy(BaseModel):
    """A value computed on a count under secrecy: hidden whenever that count is hidden, for any reason.

    `numerator` / `denominator` (indicator ids, one of them `rate_of`) and `per` state the published
    formula value = per × numerator / denominator, which the attacker check uses as a constraint.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_of: str
    numerator: str | None = None
    denominator: str | None = None
    per: float = 1.0


class IndicatorDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label_fr: str
    unit: str
    theme: str
    method: str
    millesime: str
    is_count: bool = False
    range: tuple[float, float] | None = Field(default=None, description="plausible [min, max], checked")
    comparable_from: int | None = Field(
        default=None, description="release from which the definition holds: no evolution across it (series)")
    comparability_note: str = Field(default="", description="what changed at comparable_from, in French")
    secrecy: Literal["count"] | RateSecrecy | None = Field(
        default=None, description="'count' (people or households) or {rate_of: <count id>, numerator, "
                                  "denominator, per}: publication secrecy")


class FamilyHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    family: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sources: list[str]
    requires: list[str] = Field(default_factory=list)
    absent_fr: str = Field(default="", description="why a QPV may have no value though the sources are loaded "
                                                  "(shown as « non disponible » on the fiche quartier)")
    generation: int | None = Field(
        default=None, ge=2014, le=2100,
        description="the one QPV list the family's sources describe (SIG Ville: 2015; INSEE's file of the 2024 list: "
                    "2024): the fiches of another list leave its rows out")
    indicators: list[IndicatorDef]


@dataclass(frozen=True)
class Family:
    header: FamilyHeader
    sql: str
    path: Path


class DerivedHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(pattern=r"^ref\.[a-z_][a-z0-9_]*$")
    requires: list[str]


def _split_header(path: Path, model: type[BaseModel]) -> tuple[BaseModel, str]:
    """A SQL file's YAML header (`--` comments between `-- ---` lines), validated, and the SQL after it."""
    text = path.read_text(encoding="utf-8")
    m = re.match(r"\s*-- ---\n(.*?)\n-- ---\n(.*)", text, re.S)
    if not m:
        raise ConfigError(f"{path}: no header between '-- ---' lines at the top")
    lines = m.group(1).splitlines()
    header_yaml = "\n".join(line[3:] if line.startswith("-- ") else line.lstrip("-") for line in lines)
    try:
        return model.model_validate(yaml.safe_load(header_yaml)), m.group(2)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid header: {exc}") from None


def parse_family(path: Path) -> Family:
    """Split a family file into its validated header and its SELECT."""
    header, body = _split_header(path, FamilyHeader)
    assert isinstance(header, FamilyHeader)
    for req in header.requires:
        if not re.match(r"^((ref|src|mart)\.[a-z_][a-z0-9_]*|indicator:[a-z][a-z0-9_]*)$", req):
            raise ConfigError(f"{path}: requires entry {req!r} is neither schema.table nor indicator:<id>")
    return Family(header=header, sql=body.strip().rstrip(";"), path=path)


def _ordered(families: list[Family]) -> list[Family]:
    """Families in an order where each comes after the families computing the indicators it requires."""
    by_indicator = {i.id: f.header.family for f in families for i in f.header.indicators}
    deps = {f.header.family: {by_indicator.get(r.split(":", 1)[1], r) for r in f.header.requires
                              if r.startswith("indicator:")} for f in families}
    for fam, ds in deps.items():
        unknown = [d for d in ds if d.startswith("indicator:") or d not in deps]
        if unknown:
            raise ConfigError(f"indicator family {fam} requires indicators no family defines: {unknown}")
    done: list[Family] = []
    pending = list(families)
    while pending:
        ready = [f for f in pending if deps[f.header.family] <= {d.header.family for d in done}]
        if not ready:
            raise ConfigError("indicator families require each other in a cycle: "
                              + ", ".join(f.header.family for f in pending))
        done += ready
        pending = [f for f in pending if f not in ready]
    return done


def load_families(sql_dir: Path) -> list[Family]:
    families = _ordered([parse_family(p) for p in sorted((sql_dir / "indicators").glob("*.sql"))])
    seen: dict[str, Path] = {}
    for f in families:
        for ind in f.header.indicators:
            if ind.id in seen:
                raise ConfigError(f"indicator {ind.id!r} defined in {seen[ind.id]} and {f.path}")
            seen[ind.id] = f.path
    counts = {i.id for f in families for i in f.header.indicators if i.secrecy == "count"}
    for f in families:
        for ind in f.header.indicators:
            if not isinstance(ind.secrecy, RateSecrecy):
                continue
            if ind.secrecy.rate_of not in counts:
                raise ConfigError(f"{f.path}: {ind.id} secrecy rate_of {ind.secrecy.rate_of!r} is not an "
                                  "indicator declared 'secrecy: count'")
            terms = (ind.secrecy.numerator, ind.secrecy.denominator)
            if any(terms) and ind.secrecy.rate_of not in terms:
                raise ConfigError(f"{f.path}: {ind.id} secrecy: rate_of {ind.secrecy.rate_of!r} must be its "
                                  "numerator or its denominator")
            for t in terms:
                if t and t not in seen:
                    raise ConfigError(f"{f.path}: {ind.id} secrecy names {t!r}, which is no indicator")
    return families


def _has_rows(conn: psycopg.Connection, qualified: str) -> bool:
    if qualified.startswith("indicator:"):
        return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE indicator_id = %s)").format(
            sql.Identifier("staging", NEXT)), (qualified.split(":", 1)[1],)).fetchone()[0]
    schema, table = qualified.split(".")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
    if not exists:
        return False
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, table))).fetchone()[0]


NEXT = "qpv_indicator_next"


def refresh_derived(conn: psycopg.Connection, sql_dir: Path) -> dict[str, int]:
    """Rebuild the derived reference tables (`sql/derived/*.sql`: subdivided QPV, QPV × commune shares,
    2015/2024 correspondence, EPCI) from what is loaded; a table whose inputs are missing is left empty."""
    counts: dict[str, int] = {}
    for path in sorted((sql_dir / "derived").glob("*.sql")):
        header, body = _split_header(path, DerivedHeader)
        assert isinstance(header, DerivedHeader)
        schema, table = header.table.split(".")
        target = sql.Identifier(schema, table)
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        missing = [r for r in header.requires if not _has_rows(conn, r)]
        if missing:
            log.info("derived table %s left empty: %s not loaded", header.table, ", ".join(missing))
            counts[header.table] = 0
            continue
        try:
            conn.execute(body)
        except psycopg.Error as exc:
            raise ConfigError(f"derived table {path.name} failed: {str(exc).strip()}") from exc
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        counts[header.table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
    return counts


def series_tables(conn: psycopg.Connection) -> dict[str, list[int]]:
    """Source tables kept per release (`src.*` partitioned by a `release` column) → the releases loaded."""
    names = [r[0] for r in conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = "
        "p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "AND a.attnum = p.partattrs[0] WHERE n.nspname = 'src' AND a.attname = 'release' ORDER BY 1").fetchall()]
    return {t: [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT release FROM {} ORDER BY 1").format(
        sql.Identifier(*t.split(".")))).fetchall()] for t in names}


def at_release(body: str, releases: dict[str, int]) -> str:
    """A family's SQL reading one release of each series table it names (`src.sigville_ipro s` →
    `(SELECT * FROM src.sigville_ipro WHERE release = 2019) s`)."""
    for table, release in releases.items():
        body = re.sub(rf"\b{re.escape(table)}\b(?!_)", f"(SELECT * FROM {table} WHERE release = {int(release)})", body)
    return body


def _tables_of(fam: Family) -> set[str]:
    return {r for r in fam.header.requires if not r.startswith("indicator:")}


def _compute(conn: psycopg.Connection, families: list[Family], only: list[str] | None) -> dict[str, int]:
    """Compute the families into staging.qpv_indicator_next (other families' rows carried over)."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", NEXT)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE mart.qpv_indicator INCLUDING DEFAULTS)").format(
        sql.Identifier("staging", NEXT)))
    target = sql.Identifier("staging", NEXT)
    chosen = [f for f in families if not only or f.header.family in only]
    computed = sql.Identifier("staging", NEXT).as_string(conn)
    recomputed = [i.id for f in chosen for i in f.header.indicators]
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM mart.qpv_indicator WHERE NOT indicator_id = ANY(%s)").format(
        target), (recomputed,))
    written: dict[str, int] = {}
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in OUTPUT_COLUMNS)
    series = series_tables(conn)
    for fam in chosen:
        ids = [i.id for i in fam.header.indicators]
        missing = [r for r in fam.header.requires if not _has_rows(conn, r)]
        if missing:
            log.warning("indicator family %s: %s empty or missing, its indicators are absent", fam.header.family,
                        ", ".join(missing))
            written.update(dict.fromkeys(ids, 0))
            continue
        try:
            # The SQL is the project's own file, not user input; {computed} is this run's indicators so far.
            # Series tables are read at their newest release: mart.qpv_indicator is the latest.
            latest = {t: rs[-1] for t, rs in series.items() if rs and t in fam.sql}
            body = at_release(fam.sql.replace("{computed}", computed), latest)
            conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM ({q}) AS f").format(
                t=target, cols=cols, q=sql.SQL(body)))
        except psycopg.Error as exc:
            raise ConfigError(f"indicator family {fam.path.name} failed: {str(exc).strip()}") from exc
        if fam.header.generation is not None:  # what the fiches rely on to leave the family out of the other list
            other = conn.execute(sql.SQL("SELECT array_agg(DISTINCT generation) FROM {} WHERE indicator_id = ANY(%s) "
                                         "AND generation <> %s").format(target),
                                 (ids, fam.header.generation)).fetchone()[0]
            if other:
                raise ConfigError(f"indicator family {fam.path.name} declares generation {fam.header.generation} "
                                  f"but computed values for QPV of the list(s) {other}")
        for i in ids:
            written[i] = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE indicator_id = %s").format(target),
                                      (i,)).fetchone()[0]
    return written


def compute_series(conn: psycopg.Connection, families: list[Family], only: list[str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every loaded release of the families that read only series tables (and `ref.*`): one row per
    distinct figure (a release repeating the previous one's figures for an indicator is folded into it,
    `releases` naming both), and the evolutions between consecutive figures where comparable."""
    series = series_tables(conn)
    cols = [*OUTPUT_COLUMNS, "release"]
    frames = []
    for fam in families:
        if only and fam.header.family not in only:
            continue
        tables = _tables_of(fam)
        mine = [t for t in tables if t in series]
        if not mine or any(r.startswith("indicator:") for r in fam.header.requires) or any(
                t not in series and not t.startswith("ref.") for t in tables):
            continue
        common = sorted(set.intersection(*(set(series[t]) for t in mine)))
        for release in common:
            body = at_release(fam.sql, dict.fromkeys(mine, release))
            rows = conn.execute(sql.SQL("SELECT {cols}, {rel}::smallint FROM ({q}) AS f").format(
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in OUTPUT_COLUMNS), rel=sql.Literal(release),
                q=sql.SQL(body))).fetchall()
            frames.append(pd.DataFrame(rows, columns=cols))
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    defs = {i.id: i for f in families for i in f.header.indicators}
    folded = fold_repeats(long)
    return folded, evolutions(folded, defs)


def fold_repeats(long: pd.DataFrame) -> pd.DataFrame:
    """Rows of a release whose figures for an indicator and scope equal the previous release's for every
    QPV are folded into that release's rows (`releases` lists both): the same underlying figures published
    twice, not "no change"."""
    if long.empty:
        return long.assign(releases=pd.Series(dtype=object))
    first_of: dict[tuple, int] = {}
    for key, g in long.groupby(["indicator_id", "scope", "generation"], sort=True):
        wide = g.pivot(index="code_qp", columns="release", values="value")
        rels = sorted(wide.columns)
        for prev, cur in itertools.pairwise(rels):
            a, b = wide[prev], wide[cur]
            shown = a.notna() | b.notna()
            same = bool(shown.any()) and bool(((a == b) | (a.isna() & b.isna()))[shown].all())
            first_of[(*key, cur)] = first_of.get((*key, prev), prev) if same else cur
        first_of.setdefault((*key, rels[0]), rels[0])
    first = [first_of[(i, s, g, r)] for i, s, g, r in
             zip(long["indicator_id"], long["scope"], long["generation"], long["release"], strict=True)]
    long = long.assign(first=first)
    named = (long.groupby(["indicator_id", "scope", "generation", "code_qp", "first"])["release"]
             .agg(lambda r: sorted(int(x) for x in r)).rename("releases"))
    kept = long[long["release"] == long["first"]].drop(columns="first")
    return kept.join(named, on=["indicator_id", "scope", "generation", "code_qp", "release"]).reset_index(drop=True)


EVOLUTION_COLUMNS = ["code_qp", "generation", "indicator_id", "scope", "release_from", "release_to", "value_from",
                     "value_to", "evolution", "unit", "reason"]


def evolutions(series: pd.DataFrame, defs: dict[str, IndicatorDef]) -> pd.DataFrame:
    """Between consecutive distinct figures of each cell: points for rates, % otherwise; no value (and the
    reason) across a change of definition, where a value is missing, or from zero. Vectorised: a national
    history is hundreds of thousands of cells."""
    if series.empty:
        return pd.DataFrame(columns=EVOLUTION_COLUMNS)
    key = ["indicator_id", "scope", "generation", "code_qp"]
    s = series.sort_values([*key, "release"]).reset_index(drop=True)
    prev = s.groupby(key, sort=False)[["release", "value"]].shift(1)
    has = prev["release"].notna()
    a, p = s[has].reset_index(drop=True), prev[has].reset_index(drop=True)
    ind = a["indicator_id"].astype(object)  # plain Python strings, whatever the frame's string dtype
    # per row, from the registry: numpy-typed whatever dtype `map` would infer (all-NaN, Arrow strings…)
    unit = pd.Series(["points" if i in defs and defs[i].unit == "%" else "%" for i in ind], index=a.index,
                     dtype=object)
    cf = pd.Series([float(defs[i].comparable_from) if i in defs and defs[i].comparable_from else float("nan")
                    for i in ind], index=a.index, dtype="float64")
    note = pd.Series([defs[i].comparability_note if i in defs else "" for i in ind], index=a.index, dtype=object)
    rf, rt = p["release"].astype(int), a["release"].astype(int)
    vf, vt = p["value"].astype(float), a["value"].astype(float)
    crossing = cf.notna() & (rf < cf) & (cf <= rt)
    cross_text = ("définition changée à l'édition " + cf.fillna(0).astype(int).astype(str)
                  + note.map(lambda n: f" : {n}" if n else ""))
    reason = pd.Series(None, index=a.index, dtype=object)
    reason = reason.mask(unit.eq("%") & vf.eq(0), "valeur de départ nulle : évolution en % non définie")
    reason = reason.mask(vt.isna(), "valeur non publiée en " + rt.astype(str) + " (secret ou absente du fichier)")
    reason = reason.mask(vf.isna(), "valeur non publiée en " + rf.astype(str) + " (secret ou absente du fichier)")
    reason = reason.mask(crossing, cross_text)
    evo = (vt - vf).where(unit.eq("points"), 100 * (vt - vf) / vf.where(vf != 0)).round(6)
    evo = evo.where(reason.isna())
    return pd.DataFrame({"code_qp": a["code_qp"], "generation": a["generation"], "indicator_id": ind,
                         "scope": a["scope"], "release_from": rf, "release_to": rt, "value_from": vf, "value_to": vt,
                         "evolution": evo, "unit": unit, "reason": reason})[EVOLUTION_COLUMNS]


def _write_series(conn: psycopg.Connection, series: pd.DataFrame, evo: pd.DataFrame, ids: list[str]) -> None:
    """Replace the series and evolutions of the recomputed indicators (in the caller's transaction)."""
    conn.execute("DELETE FROM mart.qpv_indicator_evolution WHERE indicator_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM mart.qpv_indicator_series WHERE indicator_id = ANY(%s)", (ids,))
    if series.empty:
        return

    def clean(v):  # pandas' missing values (NaN, NA) as SQL NULL
        return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v

    with conn.cursor() as cur:
        with cur.copy("COPY mart.qpv_indicator_series (code_qp, generation, indicator_id, scope, release, releases, "
                      "millesime, value, numerator, denominator, source_run_ids) FROM STDIN") as cp:
            for r in series.itertuples(index=False):
                cp.write_row((r.code_qp, int(r.generation), r.indicator_id, r.scope, int(r.release), r.releases,
                              r.millesime, clean(r.value), clean(r.numerator), clean(r.denominator),
                              list(r.source_run_ids or [])))
        with cur.copy("COPY mart.qpv_indicator_evolution (code_qp, generation, indicator_id, scope, release_from, "
                      "release_to, value_from, value_to, evolution, unit, reason) FROM STDIN") as cp:
            for r in evo.itertuples(index=False):
                cp.write_row((r.code_qp, int(r.generation), r.indicator_id, r.scope, int(r.release_from),
                              int(r.release_to), clean(r.value_from), clean(r.value_to), clean(r.evolution), r.unit,
                              clean(r.reason)))


def mart_expectations(families: list[Family]) -> list[tuple[str, dict]]:
    """The mart's suite: keys, code formats, plausible ranges per indicator, a row for every QPV."""
    from qpvhub.catalog import CODE_PATTERNS

    code = f"{CODE_PATTERNS['qpv_2015'][:-1]}|{CODE_PATTERNS['qpv_2024'][1:]}"
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


def run_indicators(uri: str, sql_dir: Path, only: list[str] | None = None, *, run_id: str | None = None,
                   store=None) -> dict[str, int]:
    """Build the mart in staging, check it with its GX suite, then swap it in; return rows per indicator.

    As for sources, a failed suite changes nothing: `mart.qpv_indicator` keeps its previous values. The
    suite's results go to `meta.validation_results` under `run_id` (and as JSON under
    `quality/mart/<run_id>/` when a store is given).
    """
    from qpvhub.db import connect
    from qpvhub.errors import ValidationFailed
    from qpvhub.quality import record_results, validate_table

    run_id = run_id or "indicators-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    families = load_families(sql_dir)
    try:
        with connect(uri) as conn:
            derived = refresh_derived(conn, sql_dir)
            conn.commit()
            log.info("derived reference tables: %s", derived)
            written = _compute(conn, families, only)
            conn.commit()
            series, evo = compute_series(conn, families, only)
        report = validate_table(uri, "staging", NEXT, "mart_qpv_indicator", mart_expectations(families), "block")
        with connect(uri) as conn:  # kept whatever the outcome, like a source's results
            record_results(conn, run_id, report)
            conn.commit()
        if store is not None:
            store.put_bytes(f"quality/mart/{run_id}/validation.json",
                            json.dumps(report.to_json(), ensure_ascii=False, indent=2).encode(), "application/json")
        if not report.success:
            raise ValidationFailed("mart.qpv_indicator", report.text(), report.to_json())
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
            _write_series(conn, series, evo, list(written))
            rebuild_profile(conn)
            conn.commit()
    finally:
        with connect(uri) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("staging", NEXT)))
            conn.commit()
    return written


SCOPE_SUFFIX = {"qpv": "", "commune": "__commune", "commune_hors_qpv": "__hors_qpv"}


def theme_view_name(theme: str) -> str:
    """`mart.theme_<theme without accents>`: 'socio-démographie' → theme_socio_demographie."""
    import unicodedata

    ascii_ = unicodedata.normalize("NFKD", theme).encode("ascii", "ignore").decode()
    return "theme_" + re.sub(r"[^a-z0-9]+", "_", ascii_.lower()).strip("_")


def _wide_view(conn: psycopg.Connection, name: str, columns: list[tuple[str, str]], comment: str) -> None:
    """A view with one row per QPV and generation and one column per (indicator, scope)."""
    cols = [sql.SQL("max(i.value) FILTER (WHERE i.indicator_id = {} AND i.scope = {}) AS {}").format(
        sql.Literal(ind), sql.Literal(scope), sql.Identifier(ind + SCOPE_SUFFIX[scope])) for ind, scope in columns]
    select = sql.SQL(
        "SELECT q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep{extra} "
        "FROM ref.qpv q LEFT JOIN mart.qpv_indicator i "
        "ON i.code_qp = q.code_qp AND i.generation = q.generation "
        "GROUP BY q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep"
    ).format(extra=sql.SQL("").join(sql.SQL(", ") + c for c in cols))
    view = sql.Identifier("mart", name)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(view, select))
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(comment)))
    scope_fr = {"qpv": "", "commune": " — commune", "commune_hors_qpv": " — commune hors QPV"}
    for ind, scope in columns:
        label = conn.execute("SELECT label_fr || ' (' || unit || ')' FROM mart.indicator_catalog "
                             "WHERE indicator_id = %s", (ind,)).fetchone()
        if label:
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                view, sql.Identifier(ind + SCOPE_SUFFIX[scope]), sql.Literal(label[0] + scope_fr[scope])))


SERIES_VIEW_COLUMNS = {
    "indicator_id": "Indicator id (mart.indicator_catalog)", "label_fr": "Label in French", "unit": "Unit of value",
    "scope": "qpv, commune or commune_hors_qpv", "release": "First release (edition) carrying this figure",
    "releases": "Every release carrying the same figure (a repeat of the previous release is not « no change »)",
    "millesime": "Millésime of the value", "value": "Value (unsuppressed: analysts only)",
    "release_previous": "Release of the previous distinct figure", "value_previous": "Previous distinct figure",
    "evolution": "Change since the previous figure: points for rates, % otherwise; NULL when not comparable",
    "evolution_unit": "points or %", "evolution_note": "Why there is no evolution (definition changed, value missing…)",
}


def _series_view(conn: psycopg.Connection, name: str, theme: str) -> None:
    """`mart.theme_<theme>_series`: the theme's history, long (one row per QPV, indicator, scope and distinct
    figure), with the evolution from the previous figure or why there is none."""
    view = sql.Identifier("mart", name)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(sql.SQL(
        "CREATE VIEW {} AS SELECT s.code_qp, s.generation, q.lib_qp, q.insee_com, q.lib_com, s.indicator_id, "
        "c.label_fr, c.unit, s.scope, s.release, s.releases, s.millesime, s.value, e.release_from AS release_previous, "
        "e.value_from AS value_previous, e.evolution, e.unit AS evolution_unit, e.reason AS evolution_note "
        "FROM mart.qpv_indicator_series s JOIN mart.indicator_catalog c USING (indicator_id) "
        "LEFT JOIN ref.qpv q USING (code_qp, generation) "
        "LEFT JOIN mart.qpv_indicator_evolution e ON e.code_qp = s.code_qp AND e.generation = s.generation "
        "AND e.indicator_id = s.indicator_id AND e.scope = s.scope AND e.release_to = s.release "
        "WHERE c.theme = {}").format(view, sql.Literal(theme)))
    for col, text in SERIES_VIEW_COLUMNS.items():
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(view, sql.Identifier(col), sql.Literal(text)))
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(
        f"Theme « {theme} », every loaded release: one row per QPV, indicator, scope and distinct figure "
        "(releases: every edition carrying it); evolution from the previous figure in points (rates) or % "
        "(counts, amounts), NULL with evolution_note where not comparable. Unsuppressed: analysts only")))


def rebuild_profile(conn: psycopg.Connection) -> None:
    """`mart.qpv_profile` (every indicator, scope qpv) and one `mart.theme_<theme>` view per theme
    (its indicators in every scope computed, commune comparisons beside the QPV value)."""
    present = conn.execute(
        "SELECT i.indicator_id, i.scope, c.theme FROM (SELECT DISTINCT indicator_id, scope FROM mart.qpv_indicator) i "
        "JOIN mart.indicator_catalog c USING (indicator_id) "
        "ORDER BY c.theme, i.indicator_id, array_position(ARRAY['qpv', 'commune', 'commune_hors_qpv'], i.scope)"
    ).fetchall()
    _wide_view(conn, "qpv_profile", sorted((i, s) for i, s, _ in present if s == "qpv"),
               "One row per QPV and generation, one column per indicator (scope qpv); see mart.indicator_catalog")
    themes = sorted({t for *_, t in conn.execute("SELECT theme FROM mart.indicator_catalog").fetchall()})
    existing = {r[0] for r in conn.execute(
        "SELECT viewname FROM pg_views WHERE schemaname = 'mart' AND viewname LIKE 'theme\\_%'").fetchall()}
    for theme in themes:
        name = theme_view_name(theme)
        _wide_view(conn, name, [(i, s) for i, s, t in present if t == theme],
                   f"Theme « {theme} »: one row per QPV and generation; columns <indicator> (QPV), "
                   "<indicator>__commune and <indicator>__hors_qpv (the commune outside its QPV) where computed")
        existing.discard(name)
        _series_view(conn, name + "_series", theme)
        existing.discard(name + "_series")
    for stale in existing:
        conn.execute(sql.SQL("DROP VIEW {}").format(sql.Identifier("mart", stale)))
    _networks_view(conn)


def _networks_view(conn: psycopg.Connection) -> None:
    """`mart.qpv_networks`: which transport networks (GTFS feeds) serve each QPV, with their stops within
    300 m — the names behind the `reseaux_300m` count. Absent while no feed is loaded."""
    view = sql.Identifier("mart", "qpv_networks")
    has = conn.execute("SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = 'src' AND "
                       "table_name = 'gtfs_stops' AND column_name IN ('feed_id', 'network')").fetchone()[0]
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    if not has:
        return
    conn.execute(sql.SQL(
        "CREATE VIEW {} AS SELECT q.generation, q.code_qp, q.lib_qp, st.feed_id, st.network, "
        "count(DISTINCT st.stop_id) AS stops_300m FROM ref.qpv_subdivided s "
        "JOIN ref.qpv q USING (generation, code_qp) "
        "JOIN src.gtfs_stops st ON ST_DWithin(st.geom, s.geom, 300) AND coalesce(st.location_type, 0) = 0 "
        "GROUP BY 1, 2, 3, 4, 5").format(view))
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(
        "Transport networks (GTFS feeds, one partition of src.gtfs_stops each) with a stop in the QPV or "
        "within 300 m: one row per QPV and network")))
    for col, text in {"feed_id": "Feed (partition of src.gtfs_stops)", "network": "Network (the feed's title)",
                      "stops_300m": "Stops of that network in the QPV or within 300 m"}.items():
        conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(view, sql.Identifier(col), sql.Literal(text)))
