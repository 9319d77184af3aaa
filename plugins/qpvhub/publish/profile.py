"""The region's published-grade table: one QPV list's outlines with every indicator, statistical secrecy
applied and checked before anything is written (the attacker check included), with its field documentation
and the source runs behind it."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely

from qpvhub.catalog.qpv_lists import QpvLists
from qpvhub.catalog.regions import Region
from qpvhub.indicators.families import SCOPE_SUFFIX
from qpvhub.platform.errors import QpvhubError
from qpvhub.publish.secrecy import PUBLIC_FLAG, Rule, apply_secrecy, describe, disclosures, table_from_published

SCOPE_LABEL = {"commune": " — commune entière (comparaison)", "commune_hors_qpv": " — commune hors QPV (comparaison)"}


def secrecy_rules(families) -> dict[str, Rule]:
    """Secrecy rules from the indicator headers (`secrecy: count` or `{rate_of: <count>}`)."""
    rules = {}
    for fam in families:
        for ind in fam.header.indicators:
            if ind.secrecy == "count":
                rules[ind.id] = Rule("count")
            elif ind.secrecy is not None:
                s = ind.secrecy
                rules[ind.id] = Rule("rate", s.rate_of, s.numerator, s.denominator, s.per)
    return rules


def generations(conn, region: Region) -> list[int]:
    """QPV lists loaded for the region's départements, oldest first (2015, 2024)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT generation FROM ref.qpv WHERE dep = ANY(%s) ORDER BY 1",
                                       (region.departements,)).fetchall()]


def read_profile(conn, region: Region, families, threshold: int, lists: QpvLists, generation: int | None = None
                 ) -> tuple[gpd.GeoDataFrame, list[dict], list[dict]]:
    """QPV outlines of one list (default: the newest loaded for the region) with every indicator (QPV, then
    commune comparisons), statistical secrecy applied; the field documentation; the source runs used."""
    loaded = generations(conn, region)
    if not loaded:
        raise QpvhubError(f"region {region.code}: no QPV in ref.qpv for départements {region.departements}")
    generation = loaded[-1] if generation is None else generation
    if generation not in loaded:
        raise QpvhubError(f"region {region.code}: the {generation} QPV list is not loaded for départements "
                          f"{region.departements} (loaded: {loaded})")
    base = conn.execute(
        "SELECT code_qp, generation, lib_qp, insee_com, lib_com, dep, ST_AsBinary(geom) FROM ref.qpv "
        "WHERE dep = ANY(%s) AND generation = %s ORDER BY code_qp", (region.departements, generation)).fetchall()
    catalog = {r[0]: r for r in conn.execute(
        "SELECT indicator_id, label_fr, unit, method, millesime, theme FROM mart.indicator_catalog").fetchall()}
    long = pd.DataFrame(conn.execute(
        "SELECT i.code_qp, i.generation, i.indicator_id, i.scope, i.value, q.insee_com, i.status "
        "FROM mart.qpv_indicator i JOIN ref.qpv q USING (code_qp, generation) WHERE q.dep = ANY(%s) "
        "AND i.generation = %s ORDER BY i.code_qp, i.indicator_id, i.scope",  # secrecy sees one order
        (region.departements, generation)).fetchall(),
        columns=["code_qp", "generation", "indicator_id", "scope", "value", "insee_com", "status"])
    rules = secrecy_rules(families)
    long = apply_secrecy(long, rules, threshold)
    long["col"] = long["indicator_id"] + long["scope"].map(SCOPE_SUFFIX)
    order = {s: k for k, s in enumerate(SCOPE_SUFFIX)}
    cols = (long[["indicator_id", "scope", "col"]].drop_duplicates()
            .assign(theme=lambda d: d["indicator_id"].map(lambda i: catalog[i][5] if i in catalog else ""),
                    so=lambda d: d["scope"].map(order))
            .sort_values(["theme", "indicator_id", "so"]))
    df = pd.DataFrame(base, columns=["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep", "__wkb"])
    values = long.set_index(["code_qp", "generation", "col"])["value"].unstack("col")
    # one flag for every hidden cell: a reason per cell would say which are under the threshold
    public_flag = long["secret"].where(long["secret"].isna(), PUBLIC_FLAG)
    flags = (long.assign(secret=public_flag)[long["indicator_id"].isin(rules)]
             .set_index(["code_qp", "generation", "col"])["secret"].unstack("col"))
    ordered: list[str] = []
    for c, ind in zip(cols["col"], cols["indicator_id"], strict=True):
        ordered.append(c)
        if ind in rules:
            ordered.append(c + "__secret")
    wide = values.join(flags.add_suffix("__secret"), how="left") if not flags.empty else values
    for c in ordered:
        if c not in wide.columns:
            wide[c] = pd.NA
    # counts (people, stops, facilities) as integers in every format, where every value is whole
    counts = {i.id for f in families for i in f.header.indicators if i.is_count or i.secrecy == "count"}
    whole = {c for c, ind in zip(cols["col"], cols["indicator_id"], strict=True) if ind in counts
             and c in wide.columns and bool((wide[c].dropna().astype("float64") % 1 == 0).all())}
    df = df.join(wide[ordered].astype({c: "float64" for c in ordered if not c.endswith("__secret")}),
                 on=["code_qp", "generation"])
    geom = shapely.from_wkb([bytes(w) for w in df.pop("__wkb")])
    gdf = gpd.GeoDataFrame(df, geometry=geom, crs=2154)
    gdf.attrs["integers"] = sorted(whole)  # the writers write them as integers (qpvhub.publish.writers)
    base_doc = {
        "code_qp": ("string", f"Code du QPV ({lists.describe_codes()})"),
        "generation": ("integer", "Liste des QPV (son année) : " + ", ".join(map(str, lists.years))),
        "lib_qp": ("string", "Nom du QPV"),
        "insee_com": ("string", "Code INSEE de la commune principale"),
        "lib_com": ("string", "Nom de la commune principale"),
        "dep": ("string", "Code du département"),
    }
    fields = [{"name": c, "type": t, "description": d} for c, (t, d) in base_doc.items()]
    for c, ind, scope in zip(cols["col"], cols["indicator_id"], cols["scope"], strict=True):
        if ind not in catalog:
            continue
        _, label, unit, method, mill, _ = catalog[ind]
        theme = catalog[ind][5]
        fields.append({"name": c, "type": "integer" if c in whole else "number",
                       "description": f"{label}{SCOPE_LABEL.get(scope, '')}. {method}",
                       "unit": unit, "millesime": mill, "theme": theme})
        if ind in rules:
            fields.append({"name": c + "__secret", "type": "string", "theme": theme,
                           "description": f"« {PUBLIC_FLAG} » si {c} n'est pas diffusé (effectif inférieur au "
                                          f"seuil de {threshold}, valeur calculée sur un tel effectif, ou secret "
                                          "secondaire qui empêche de le recalculer) ; vide si la valeur est diffusée"})
    run_ids = sorted({rid for rid in conn.execute(
        "SELECT DISTINCT unnest(source_run_ids) FROM mart.qpv_indicator i JOIN ref.qpv q "
        "USING (code_qp, generation) WHERE q.dep = ANY(%s) AND i.generation = %s",
        (region.departements, generation)).fetchall() for rid in rid if rid})
    qpv_run = conn.execute("SELECT DISTINCT source_run_id FROM ref.qpv WHERE dep = ANY(%s) AND generation = %s",
                           (region.departements, generation)).fetchall()
    run_ids = sorted(set(run_ids) | {r[0] for r in qpv_run if r[0]})  # the perimeters, even with no indicator
    keys = ("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded", "validation", "millesime",
            "data_from", "data_until")
    runs = [dict(zip(keys, r, strict=True)) for r in conn.execute(
        "SELECT run_id, source_id, urls, sha256, finished_at, rows_loaded, validation, millesime, data_from, "
        "data_until FROM meta.source_runs WHERE run_id = ANY(%s) ORDER BY source_id, run_id", (run_ids,)).fetchall()]
    for r in runs:  # ISO text in the data package; data_from/data_until: a GTFS feed's timetable period
        for k in ("finished_at", "data_from", "data_until"):
            r[k] = r[k].isoformat() if r[k] else None
    return gdf, fields, runs


def check_secrecy(gdf: gpd.GeoDataFrame, rules: dict[str, Rule], threshold: int, suite: str) -> None:
    """The extract's final check, refusing the version: a GX suite (every count cell, in every scope, at
    or above the threshold) and no value left beside a secrecy flag."""
    from qpvhub.quality.gx import validate_frame

    def base(c: str) -> str:
        return next((c[: -len(suf)] for suf in ("__commune", "__hors_qpv") if c.endswith(suf)), c)

    counts = [c for c in gdf.columns if rules.get(base(c), Rule("none")).kind == "count"]
    leaks = [c[: -len("__secret")] for c in gdf.columns if c.endswith("__secret")
             and (gdf[c].notna() & gdf[c[: -len("__secret")]].notna()).any()]
    report = None
    if counts:
        report = validate_frame(pd.DataFrame(gdf[counts]), suite, [
            ("expect_column_values_to_be_between", {"column": c, "min_value": threshold}) for c in counts])
    # the attacker: bounds every hidden count from the published cells alone (identities, rate formulas)
    recoverable = disclosures(table_from_published(pd.DataFrame(gdf.drop(columns="geometry", errors="ignore")),
                                                   rules), rules, threshold)
    if (report and not report.success) or leaks or recoverable:
        raise QpvhubError(f"{suite}: statistical secrecy check failed (threshold {threshold}), nothing published"
                          + (f"\n{report.text()}" if report and not report.success else "")
                          + (f"\nvalues published beside a secrecy flag: {leaks}" if leaks else "")
                          + (f"\nhidden cells recoverable from the published ones: {describe(recoverable)}"
                             if recoverable else ""))
