"""The history product: every loaded release of the series indicators, with evolutions, secrecy per year.

`…_series.csv` (and `.fr.csv`) is long: one row per QPV, indicator, scope and distinct figure, with the
releases carrying it, the value (or « secret statistique »), and the evolution from the previous figure —
or why there is none (definition changed, value not published, secret). Secrecy is applied to each
release's table on its own (secondary suppression within each year), then across releases: a count hidden in
any release hides every value computed on it in every release (a release without that count — SIG Ville has
no population file for 2017 or 2019 — would otherwise publish rates its other releases hide); an evolution
is given only where both its values are published, so it discloses nothing the yearly tables hide.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from qpvhub.platform.errors import QpvhubError
from qpvhub.publish.secrecy import PUBLIC_FLAG, Rule, Table, apply_secrecy, describe, disclosures, table_from_long
from qpvhub.publish.writers import formula_safe

COLUMNS = ["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep", "indicator_id", "scope", "release",
           "releases", "millesime", "value", "value__secret", "release_previous", "evolution", "evolution_unit",
           "evolution_note"]
FIELDS = [
    {"name": "code_qp", "type": "string", "description": "Code du QPV"},
    {"name": "generation", "type": "integer", "description": "Liste des QPV (son année)"},
    {"name": "lib_qp", "type": "string", "description": "Nom du QPV"},
    {"name": "insee_com", "type": "string", "description": "Code INSEE de la commune principale"},
    {"name": "lib_com", "type": "string", "description": "Nom de la commune principale"},
    {"name": "dep", "type": "string", "description": "Code du département"},
    {"name": "indicator_id", "type": "string", "description": "Indicateur (mart.indicator_catalog)"},
    {"name": "scope", "type": "string", "description": "qpv, commune ou commune_hors_qpv"},
    {"name": "release", "type": "integer", "description": "Première édition du fichier source portant ce chiffre"},
    {"name": "releases", "type": "string", "description": "Toutes les éditions portant le même chiffre (séparées "
                                                          "par une espace) : une édition qui reprend les chiffres de "
                                                          "la précédente n'est pas une absence d'évolution"},
    {"name": "millesime", "type": "string", "description": "Millésime de la valeur"},
    {"name": "value", "type": "number", "description": "Valeur (unité de l'indicateur) ; vide si secrète"},
    {"name": "value__secret", "type": "string", "description": f"« {PUBLIC_FLAG} » si la valeur n'est pas "
                                                                "diffusée dans l'une de ses éditions"},
    {"name": "release_previous", "type": "integer", "description": "Édition du chiffre précédent"},
    {"name": "evolution", "type": "number", "description": "Évolution depuis le chiffre précédent : en points pour "
                                                           "un taux, en % sinon ; vide si non comparable"},
    {"name": "evolution_unit", "type": "string", "description": "points ou %"},
    {"name": "evolution_note", "type": "string", "description": "Pourquoi l'évolution n'est pas donnée"},
]


def read(conn, codes: list[str], generation: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The region's series rows (with the QPV's names and commune) and evolutions, from the mart."""
    series = pd.DataFrame(conn.execute(
        "SELECT s.code_qp, s.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep, s.indicator_id, s.scope, "
        "s.release, s.releases, s.millesime, s.value FROM mart.qpv_indicator_series s JOIN ref.qpv q "
        "USING (code_qp, generation) WHERE s.code_qp = ANY(%s) AND s.generation = %s "
        "ORDER BY s.code_qp, s.indicator_id, s.scope, s.release",  # one order: the same bytes for the same data
        (codes, generation)).fetchall(), columns=["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep",
                                                  "indicator_id", "scope", "release", "releases", "millesime",
                                                  "value"])
    evo = pd.DataFrame(conn.execute(
        "SELECT code_qp, generation, indicator_id, scope, release_from, release_to, evolution, unit, reason "
        "FROM mart.qpv_indicator_evolution WHERE code_qp = ANY(%s) AND generation = %s "
        "ORDER BY code_qp, indicator_id, scope, release_to", (codes, generation)
    ).fetchall(), columns=["code_qp", "generation", "indicator_id", "scope", "release_from", "release_to",
                           "evolution", "unit", "reason"])
    return series, evo


def predecessors(conn, codes: list[str], minimum: float = 0.05) -> dict[str, list[dict]]:
    """For QPV of the 2024 list, the QPV of the 2015 list they replace (ref.qpv_correspondence, from the
    perimeters' overlap): code, name and the overlap's share of each perimeter; an overlap under `minimum` of
    both perimeters (a shared edge, a street) is not a predecessor."""
    out: dict[str, list[dict]] = {}
    for c24, c15, lib, s24, s15 in conn.execute(
            "SELECT c.code_qp_2024, c.code_qp_2015, q.lib_qp, c.share_of_2024, c.share_of_2015 "
            "FROM ref.qpv_correspondence c JOIN ref.qpv q ON q.generation = 2015 AND q.code_qp = c.code_qp_2015 "
            "WHERE c.code_qp_2024 = ANY(%s) AND greatest(c.share_of_2024, c.share_of_2015) >= %s "
            "ORDER BY c.code_qp_2024, c.share_of_2024 DESC, c.code_qp_2015", (codes, minimum)).fetchall():
        out.setdefault(c24, []).append({"code_qp": c15, "lib_qp": lib, "share_of_2024": float(s24),
                                        "share_of_2015": float(s15)})
    return out


def earlier_list(conn, region_departements: list[str], codes: list[str], rules: dict[str, Rule],
                 threshold: int) -> tuple[dict[str, list[dict]], pd.DataFrame]:
    """What a 2024 fiche shows of the 2015 list: the predecessors of each QPV and the published history of the
    2015 list in the region (secrecy applied to the whole 2015 table of the region, as its own products do, and
    checked by the same gate) — never folded into the 2024 evolution."""
    before = predecessors(conn, codes)
    if not before:
        return {}, pd.DataFrame(columns=COLUMNS)
    all15 = [c for (c,) in conn.execute("SELECT code_qp FROM ref.qpv WHERE generation = 2015 AND dep = ANY(%s) "
                                        "ORDER BY 1", (region_departements,)).fetchall()]
    series15, evo15 = read(conn, all15, 2015)
    past15 = published(series15, evo15, rules, threshold)
    check(past15, rules, threshold, "series of the 2015 list shown on the 2024 fiches")
    return before, past15


def published(series: pd.DataFrame, evo: pd.DataFrame, rules: dict[str, Rule], threshold: int) -> pd.DataFrame:
    """The history table as published: secrecy per release, evolutions only between published values."""
    if series.empty:
        return pd.DataFrame(columns=COLUMNS)
    # one row per release carrying a figure, so that each year's table is suppressed on its own
    per_year = series.explode("releases").rename(columns={"releases": "year"})
    hidden: set[tuple] = set()
    for _year, rows in per_year.groupby("year", sort=True):
        rows = rows.reset_index(drop=True)
        out = apply_secrecy(rows[["code_qp", "generation", "indicator_id", "scope", "value", "insee_com"]], rules,
                            threshold)
        mask = out["secret"].notna().to_numpy()
        hidden |= {(c, g, i, s, int(r)) for c, g, i, s, r in rows.loc[
            mask, ["code_qp", "generation", "indicator_id", "scope", "release"]].itertuples(index=False)}
    # across releases: a rate whose count is hidden in any release is hidden in every release
    counts_hidden = hidden_counts(series, hidden, rules)
    for c, g, i, s, r, com in series[["code_qp", "generation", "indicator_id", "scope", "release",
                                      "insee_com"]].itertuples(index=False):
        rule = rules.get(i)
        if rule is not None and rule.kind == "rate" and (rule.base, s, int(g), _unit(s, c, com)) in counts_hidden:
            hidden.add((c, g, i, s, int(r)))
    key = list(zip(series["code_qp"], series["generation"], series["indicator_id"], series["scope"],
                   series["release"].astype(int), strict=True))
    table = series.assign(value__secret=[PUBLIC_FLAG if k in hidden else None for k in key])
    table.loc[table["value__secret"].notna(), "value"] = None
    table["releases"] = [" ".join(str(int(r)) for r in rs) for rs in table["releases"]]
    e = evo.rename(columns={"release_to": "release", "release_from": "release_previous", "unit": "evolution_unit",
                            "reason": "evolution_note"})
    table = table.merge(e, on=["code_qp", "generation", "indicator_id", "scope", "release"], how="left")
    prev_hidden = [(c, g, i, s, int(p)) in hidden if p == p and p is not None else False for c, g, i, s, p in zip(
        table["code_qp"], table["generation"], table["indicator_id"], table["scope"], table["release_previous"],
        strict=True)]
    secret = table["value__secret"].notna().to_numpy() | pd.Series(prev_hidden, dtype=bool).to_numpy()
    with_prev = table["release_previous"].notna().to_numpy()
    table.loc[secret & with_prev, "evolution"] = None
    table.loc[secret & with_prev, "evolution_note"] = f"{PUBLIC_FLAG} : l'une des deux valeurs n'est pas diffusée"
    table["release_previous"] = table["release_previous"].astype("Int64")
    table["evolution"] = table["evolution"].round(2)
    order = {"qpv": 0, "commune": 1, "commune_hors_qpv": 2}
    table = table.assign(_o=table["scope"].map(order)).sort_values(
        ["code_qp", "indicator_id", "_o", "release"]).drop(columns="_o")
    return table[COLUMNS].reset_index(drop=True)


def _unit(scope: str, code_qp: str, insee_com: str) -> str:
    """A cell's unit: the QPV for scope qpv, its commune otherwise (one cell per commune)."""
    return code_qp if scope == "qpv" else insee_com


def hidden_counts(series: pd.DataFrame, hidden: set[tuple], rules: dict[str, Rule]) -> set[tuple]:
    """(count indicator, scope, generation, unit) of every count hidden in at least one release."""
    coms = {(c, int(g)): com for c, g, com in series[["code_qp", "generation", "insee_com"]].itertuples(index=False)}
    return {(i, s, int(g), _unit(s, c, coms.get((c, int(g)), ""))) for c, g, i, s, _r in hidden
            if rules.get(i, Rule("none")).kind == "count"}


def check(table: pd.DataFrame, rules: dict[str, Rule], threshold: int, suite: str) -> None:
    """The history's final gate, year by year, as for the extract: no count under the threshold published,
    no hidden count an attacker bounds from that year's published cells; and across releases, no value
    published in one release that is computed on a count hidden in another."""
    problems = []
    flagged = {(c, g, i, s, int(r)) for c, g, i, s, r, f in table[
        ["code_qp", "generation", "indicator_id", "scope", "release", "value__secret"]].itertuples(index=False)
        if isinstance(f, str)}
    counts_hidden = hidden_counts(table, flagged, rules)
    for r in table[table["value"].notna()].itertuples():
        rule = rules.get(r.indicator_id)
        if rule is not None and rule.kind == "rate" and (
                rule.base, r.scope, int(r.generation), _unit(r.scope, r.code_qp, r.insee_com)) in counts_hidden:
            problems.append(f"{r.releases}: {r.indicator_id} {r.scope} of {r.code_qp} = {r.value:g} is published "
                            f"while {rule.base} is hidden in another release")
    per_year = table.assign(year=table["releases"].str.split(" ")).explode("year")
    for year, rows in per_year.groupby("year", sort=True):
        counts = rows[rows["indicator_id"].map(lambda i: rules.get(i, Rule("none")).kind == "count")]
        low = counts[counts["value"].notna() & (counts["value"] < threshold)]
        problems += [f"{year}: {r.indicator_id} {r.scope} of {r.code_qp} = {r.value:g} is under {threshold}"
                     for r in low.itertuples()]
        cells, keys = table_from_long(rows.reset_index(drop=True))
        flags = {k: PUBLIC_FLAG for k, f in zip(keys, rows["value__secret"], strict=True) if isinstance(f, str)}
        leaks = disclosures(Table(cells.values, flags, cells.communes), rules, threshold)
        if leaks:
            problems.append(f"{year}: hidden cells recoverable: {describe(leaks)}")
    if problems:
        raise QpvhubError(f"{suite}: statistical secrecy check of the history failed (threshold {threshold}), "
                          "nothing published\n" + "\n".join(problems[:20]))


def write(table: pd.DataFrame, path: Path, *, french: bool = False) -> None:
    """CSV (`,`, UTF-8) or the French spreadsheet one (`;`, UTF-8 with BOM, decimal comma); same bytes for
    the same table."""
    table = formula_safe(table)
    buf = io.StringIO()
    if french:
        table.to_csv(buf, index=False, sep=";", decimal=",", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        path.write_text(buf.getvalue(), encoding="utf-8-sig")
    else:
        table.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        path.write_text(buf.getvalue(), encoding="utf-8")
