"""Statistical secrecy for published extracts (DESIGN.md §7): primary and secondary suppression.

Works on the long mart rows (code_qp, generation, indicator_id, scope, value, insee_com). Indicators
declare in their family header `secrecy: count` (a count of people or households) or
`secrecy: {rate_of: <count indicator>}` (a rate, share or amount computed on that population).

- Primary: a count below the threshold is suppressed; so is every rate on a base count below it.
- Secondary: per commune and indicator, `commune = hors QPV + Σ QPV of the commune`. A single unknown
  term could be recomputed from the others, so while exactly one term is suppressed the smallest
  published term is suppressed too (the commune total, which INSEE publishes anyway, stays).

Suppressed cells become NULL with a reason; nothing is rounded or perturbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

PRIMARY = "effectif inférieur au seuil"
RATE = "calculé sur un effectif inférieur au seuil"
SECONDARY = "secret secondaire (recalculable depuis le total de la commune)"


@dataclass(frozen=True)
class Rule:
    kind: str  # "count" | "rate"
    base: str | None = None  # for rates: the count indicator it is computed on


def apply_secrecy(rows: pd.DataFrame, rules: dict[str, Rule], threshold: int) -> pd.DataFrame:
    """Return `rows` with `value` set to NULL where secret and a `secret` column saying why (else NA).

    `rows` needs columns code_qp, generation, indicator_id, scope, value, insee_com (the QPV's main commune).
    """
    out = rows.copy()
    out["secret"] = pd.Series(pd.NA, index=out.index, dtype="object")
    counts = [i for i, r in rules.items() if r.kind == "count"]
    is_count = out["indicator_id"].isin(counts)
    primary = is_count & out["value"].notna() & (out["value"] < threshold)
    out.loc[primary, "secret"] = PRIMARY

    # rates on a base count below the threshold, same QPV and scope
    base_of = {i: r.base for i, r in rules.items() if r.kind == "rate" and r.base}
    if base_of:
        bases = out[is_count][["code_qp", "generation", "scope", "indicator_id", "value"]].rename(
            columns={"indicator_id": "base", "value": "base_value"})
        rates = out[out["indicator_id"].isin(base_of)].copy()
        rates["base"] = rates["indicator_id"].map(base_of)
        merged = rates.reset_index().merge(bases, on=["code_qp", "generation", "scope", "base"], how="left")
        small = merged[merged["base_value"].notna() & (merged["base_value"] < threshold)]["index"]
        out.loc[small[out.loc[small, "secret"].isna().to_numpy()], "secret"] = RATE

    # secondary: commune = hors QPV + Σ QPV, per (generation, commune, indicator)
    for ind in counts:
        sel = out["indicator_id"] == ind
        for (gen, com), grp in out[sel].groupby(["generation", "insee_com"], dropna=True):
            total = grp[grp["scope"] == "commune"]
            if total.empty or total["value"].isna().all():
                continue
            hors = grp[grp["scope"] == "commune_hors_qpv"].drop_duplicates("scope")
            terms = pd.concat([grp[grp["scope"] == "qpv"], hors])
            while True:
                unknown = terms["secret"].notna() | terms["value"].isna()
                if unknown.sum() != 1:
                    break
                candidates = terms[~unknown].sort_values("value")
                if candidates.empty:
                    break
                pick = candidates.index[0]
                out.loc[pick, "secret"] = SECONDARY
                terms.loc[pick, "secret"] = SECONDARY
            # the hors-QPV value is repeated on every QPV row of the commune: keep the copies consistent
            hors_secret = terms.loc[terms["scope"] == "commune_hors_qpv", "secret"]
            if not hors_secret.empty and pd.notna(hors_secret.iloc[0]):
                same = sel & (out["generation"] == gen) & (out["insee_com"] == com) & (
                    out["scope"] == "commune_hors_qpv")
                out.loc[same & out["secret"].isna(), "secret"] = hors_secret.iloc[0]
    out.loc[out["secret"].notna(), "value"] = None
    return out


def below_threshold(rows: pd.DataFrame, rules: dict[str, Rule], threshold: int) -> pd.DataFrame:
    """Published count cells below the threshold (must be empty before publishing)."""
    counts = [i for i, r in rules.items() if r.kind == "count"]
    sel = rows["indicator_id"].isin(counts) & rows["value"].notna() & (rows["value"] < threshold)
    return rows[sel]
