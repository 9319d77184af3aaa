"""Indicators across releases: every loaded release of the families that read series sources (SIG Ville's
files, Filosofi), repeats folded, and the evolution between consecutive distinct figures where comparable.

Which sources are series, in which column their release is, comes from the catalogue (`Source.partitioning`);
which releases are loaded, from the tables themselves.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql

from qpvhub.catalog.model import Source
from qpvhub.indicators.families import OUTPUT_COLUMNS, Family, IndicatorDef
from qpvhub.platform.db import table_exists


@dataclass(frozen=True)
class SeriesInput:
    """A series source as the indicators read it: its table, its release column, the releases it holds."""

    source_id: str
    table: str  # schema.table
    column: str
    releases: list[int]


def series_inputs(conn: psycopg.Connection, catalog: dict[str, Source]) -> dict[str, SeriesInput]:
    """The catalogue's series (partitioned by release), by source id, with the releases their tables hold."""
    out = {}
    for source in catalog.values():
        part = source.partitioning
        if part.kind != "release":
            continue
        schema, table = source.target.schema_, source.target.table
        releases: list[int] = []
        if table_exists(conn, schema, table):
            releases = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
                sql.Identifier(part.column), sql.Identifier(schema, table))).fetchall()]
        out[source.id] = SeriesInput(source.id, f"{schema}.{table}", part.column, releases)
    return out


def series_read(fam: Family, series: dict[str, SeriesInput]) -> list[str]:
    """The series sources whose table the family reads (a source named in `sources`, its table in `requires`;
    a family computed from other indicators names its sources for provenance only)."""
    tables = set(fam.header.requires)
    return [s for s in fam.header.sources if s in series and series[s].table in tables]


def latest_releases(fam: Family, series: dict[str, SeriesInput]) -> dict[str, int]:
    """The newest loaded release of each series source the family reads (what mart.qpv_indicator holds)."""
    return {s: series[s].releases[-1] for s in series_read(fam, series) if series[s].releases}


def compute_series(conn: psycopg.Connection, families: list[Family], series: dict[str, SeriesInput],
                   only: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every loaded release of the families that read only series tables (and `ref.*`): one row per
    distinct figure (a release repeating the previous one's figures for an indicator is folded into it,
    `releases` naming both), and the evolutions between consecutive figures where comparable."""
    cols = [*OUTPUT_COLUMNS, "release"]
    frames = []
    for fam in families:
        if only and fam.header.family not in only:
            continue
        mine = [series[s] for s in series_read(fam, series)]
        tables = {r for r in fam.header.requires if not r.startswith("indicator:")}
        if not mine or any(r.startswith("indicator:") for r in fam.header.requires) or any(
                t not in {m.table for m in mine} and not t.startswith("ref.") for t in tables):
            continue
        common = sorted(set.intersection(*(set(m.releases) for m in mine)))
        for release in common:
            rows = conn.execute(sql.SQL("SELECT {cols}, {rel}::smallint FROM ({q}) AS f").format(
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in OUTPUT_COLUMNS), rel=sql.Literal(release),
                q=sql.SQL(fam.sql)), fam.params({m.source_id: release for m in mine})).fetchall()
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


def write_series(conn: psycopg.Connection, series: pd.DataFrame, evo: pd.DataFrame, ids: list[str]) -> None:
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
