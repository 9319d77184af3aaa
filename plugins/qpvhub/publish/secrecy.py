"""Statistical secrecy for published extracts (docs/publishing.md), as a property of the published table.

Indicators declare in their family header `secrecy: count` (a count of people or households) or
`secrecy: {rate_of: <count>, numerator: …, denominator: …, per: …}` (a value computed on that count;
the formula, when its other term is published, is what an attacker could invert).

Cells are (indicator, scope, generation, unit): the unit is the QPV code for scope `qpv`, the commune
for `commune` and `commune_hors_qpv` (repeated on every QPV row of the commune in the files, hidden
or shown together). Suppression, iterated until stable:

- primary: a count below the threshold;
- rates: every value computed on a count hidden for any reason;
- secondary: per commune and count, `commune = hors QPV + Σ QPV`: while one term is unknown, the
  smallest published term is hidden too;
- attacker: :func:`disclosures` bounds every hidden count from the published cells alone (interval
  propagation over the identities and the rate formulas, counts being non-negative integers); where
  it bounds one more tightly than the rule allows (narrower than the threshold's range [0, t - 1]),
  one more term of its identity is hidden.

The files flag every hidden cell alike (:data:`PUBLIC_FLAG`, as INSEE marks its secret cells): a
reason per cell would tell which cells are under the threshold and which only hide another.

Suppressed cells become NULL with a reason; nothing is rounded or perturbed. The same attacker is the
publication's final gate, run on the very table that is written.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

PRIMARY = "effectif inférieur au seuil"
RATE = "calculé sur un effectif couvert par le secret"
SECONDARY = "secret secondaire (recalculable depuis le total de la commune)"
AT_SOURCE = "secret de la source (INSEE)"
PUBLIC_FLAG = "secret statistique"
METHOD = "qpvhub-secrecy-2"  # recorded in each datapackage; versions published under another method are withdrawn

SCOPES = {"qpv": "", "commune": "__commune", "commune_hors_qpv": "__hors_qpv"}
INF = math.inf
MAX_ROUNDS = 200  # propagation rounds at most (it converges in a handful on real tables)

Key = tuple[str, str, int, str]  # indicator, scope, generation, unit (QPV code or commune code)


@dataclass(frozen=True)
class Rule:
    """`count`, or `rate` computed on the count `base`; `value = per × numerator / denominator` when stated."""

    kind: str  # "count" | "rate"
    base: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    per: float = 1.0


class SecrecyError(Exception):
    """No suppression pattern protects a cell (should not happen: the commune total is the last resort)."""


@dataclass
class Table:
    """The cells of a (long or published) table: values, flags, and which QPV belong to which commune."""

    values: dict[Key, float | None]
    flags: dict[Key, str]
    communes: dict[tuple[int, str], set[str]]  # (generation, commune) → QPV codes

    def identities(self, rules: dict[str, Rule]) -> list[tuple[Key, list[Key]]]:
        """(commune total, [QPV terms…, hors-QPV term]) for every count with a commune cell."""
        out = []
        for ind, rule in sorted(rules.items()):
            if rule.kind != "count":
                continue
            for (gen, com), codes in sorted(self.communes.items()):
                total = (ind, "commune", gen, com)
                if total not in self.values:
                    continue
                terms = [(ind, "qpv", gen, c) for c in sorted(codes)] + [(ind, "commune_hors_qpv", gen, com)]
                out.append((total, terms))
        return out


def _unit(scope: str, code_qp: str, insee_com: str) -> str:
    return code_qp if scope == "qpv" else insee_com


def table_from_long(rows: pd.DataFrame) -> tuple[Table, list[Key]]:
    """Cells of the mart's long rows (code_qp, generation, indicator_id, scope, value, insee_com) and each row's key."""
    values: dict[Key, float | None] = {}
    communes: dict[tuple[int, str], set[str]] = defaultdict(set)
    keys: list[Key] = []
    for code, gen, ind, scope, value, com in rows[["code_qp", "generation", "indicator_id", "scope", "value",
                                                   "insee_com"]].itertuples(index=False):
        key = (ind, scope, int(gen), _unit(scope, code, com))
        keys.append(key)
        v = None if value is None or pd.isna(value) else float(value)
        if values.get(key) is None:
            values[key] = v
        if isinstance(com, str):
            communes[(int(gen), com)].add(code)
    return Table(values, {}, dict(communes)), keys


def table_from_published(df: pd.DataFrame, rules: dict[str, Rule]) -> Table:
    """Cells of a published table (CSV/GeoPackage columns: `<id>[__commune|__hors_qpv]` and `…__secret`)."""
    wanted = set(rules)
    for r in rules.values():
        wanted |= {t for t in (r.base, r.numerator, r.denominator) if t}
    columns = []
    for c in df.columns:
        for scope, suffix in SCOPES.items():
            ind = c[: len(c) - len(suffix)] if suffix and c.endswith(suffix) else (c if not suffix else None)
            if ind in wanted and not c.endswith("__secret"):
                columns.append((c, ind, scope))
                break
    values: dict[Key, float | None] = {}
    flags: dict[Key, str] = {}
    communes: dict[tuple[int, str], set[str]] = defaultdict(set)
    for _, row in df.iterrows():
        gen, code, com = int(row["generation"]), str(row["code_qp"]), str(row["insee_com"])
        communes[(gen, com)].add(code)
        for c, ind, scope in columns:
            key = (ind, scope, gen, _unit(scope, code, com))
            v = row[c]
            v = None if v is None or (isinstance(v, str) and not v.strip()) or pd.isna(v) else float(v)
            if values.get(key) is None:
                values[key] = v
            flag = row.get(c + "__secret")
            if isinstance(flag, str) and flag.strip():
                flags[key] = flag
    return Table(values, flags, dict(communes))


def _decimals_eps(v: float) -> float:
    """Half a unit of the last decimal shown: what a reader of the published value knows of it."""
    for d in range(7):
        if abs(round(v, d) - v) < 1e-9:
            return 0.5 * 10 ** -d
    return 5e-7


def _is_count(rules: dict[str, Rule], indicator: str) -> bool:
    rule = rules.get(indicator)
    return rule is not None and rule.kind == "count"


def bounds(table: Table, rules: dict[str, Rule]) -> dict[Key, tuple[float, float]]:
    """What an attacker knows of every cell, as an interval, from the published cells alone."""
    b: dict[Key, tuple[float, float]] = {}
    count_ids = {i for i, r in rules.items() if r.kind == "count"}
    for key, v in table.values.items():
        if v is not None and key not in table.flags:
            # counts (people, facilities, offers) are exact integers; a rate is rounded: at least to 2
            # decimals in the registry, else as shown
            exact = key[0] in count_ids or (rules.get(key[0]) is None and float(v).is_integer())
            eps = 0.0 if exact else min(_decimals_eps(v), 0.005)
            b[key] = (v - eps, v + eps)
        else:  # hidden or absent: a non-negative number, nothing more (the files flag every hidden cell alike)
            b[key] = (0.0, INF)
    identities = table.identities(rules)
    for _total, terms in identities:
        for t in terms:
            b.setdefault(t, (0.0, INF))
    formulas = [(key, rules[key[0]]) for key in b if key[0] in rules and rules[key[0]].numerator
                and rules[key[0]].denominator and table.values.get(key) is not None and key not in table.flags]

    def tighten(key: Key, lo: float, hi: float) -> bool:
        """Narrow the key's interval; False when nothing changes (or the figures contradict each other)."""
        old_lo, old_hi = b[key]
        if key[0] in count_ids:  # whole numbers; an unknown side (±inf, nan) keeps what was known
            lo = math.ceil(lo - 1e-6) if lo > -INF else old_lo
            hi = math.floor(hi + 1e-6) if hi < INF else old_hi
        new = (max(old_lo, lo), min(old_hi, hi))
        if new[0] > new[1]:  # inconsistent figures (an identity that does not hold exactly): keep what we had
            return False
        if new[0] > old_lo + 1e-9 or new[1] < old_hi - 1e-9:
            b[key] = new
            return True
        return False

    for _ in range(MAX_ROUNDS):
        changed = False
        for total, terms in identities:
            los = [b[t][0] for t in terms]
            his = [b[t][1] for t in terms]
            sum_lo, sum_hi = sum(los), sum(his)
            changed |= tighten(total, sum_lo, sum_hi)
            t_lo, t_hi = b[total]
            for i, t in enumerate(terms):
                others_hi = sum_hi - his[i] if his[i] != INF else sum(h for j, h in enumerate(his) if j != i)
                others_lo = sum_lo - los[i]
                changed |= tighten(t, t_lo - others_hi, t_hi - others_lo)
        for key, rule in formulas:
            _, scope, gen, unit = key
            num = (rule.numerator, scope, gen, unit)
            den = (rule.denominator, scope, gen, unit)
            if num not in b or den not in b:
                continue
            r_lo, r_hi = b[key]
            n_lo, n_hi = b[num]
            d_lo, d_hi = b[den]
            changed |= tighten(num, r_lo * d_lo / rule.per, r_hi * d_hi / rule.per)
            if r_hi > 0:
                changed |= tighten(den, rule.per * n_lo / r_hi, rule.per * n_hi / r_lo if r_lo > 0 else INF)
        if not changed:
            break
    return b


def disclosures(table: Table, rules: dict[str, Rule], threshold: int) -> list[tuple[Key, float, float]]:
    """Hidden counts an attacker bounds more tightly than the rule allows: within an interval narrower
    than the threshold's own range [0, threshold - 1]."""
    b = bounds(table, rules)
    out = []
    for key in sorted(table.flags):
        if not _is_count(rules, key[0]):
            continue
        lo, hi = b.get(key, (0.0, INF))
        if hi - lo < threshold - 1 - 1e-9:
            out.append((key, lo, hi))
    return out


def suppress(table: Table, rules: dict[str, Rule], threshold: int, at_source: Iterable[Key] = ()) -> dict[Key, str]:
    """Decide every hidden cell and why, iterating primary, rates, secondary and the attacker until stable; cells the
    source itself keeps secret (`at_source`, INSEE's `s`) are hidden from the start, and what is computed on them
    with them."""
    flags: dict[Key, str] = dict.fromkeys(at_source, AT_SOURCE)
    for key, v in table.values.items():
        if _is_count(rules, key[0]) and v is not None and v < threshold:
            flags[key] = PRIMARY
    identities = table.identities(rules)
    member_of: dict[Key, list[int]] = defaultdict(list)
    for n, (total, terms) in enumerate(identities):
        for k in (total, *terms):
            member_of[k].append(n)

    def published(k: Key) -> bool:
        return table.values.get(k) is not None and k not in flags

    def hide_one(n: int) -> bool:
        """Hide the smallest published term of identity n, else its total; False when nothing is left."""
        total, terms = identities[n]
        shown = sorted((k for k in terms if published(k)), key=lambda k: (table.values[k], k))
        pick = shown[0] if shown else (total if published(total) else None)
        if pick is None:
            return False
        flags[pick] = SECONDARY
        return True

    while True:  # ends: each round hides at least one more cell, or returns, or raises
        changed = False
        for key in table.values:
            rule = rules.get(key[0])
            if rule and rule.kind == "rate" and published(key) and (rule.base, *key[1:]) in flags:
                flags[key] = RATE
                changed = True
        for n, (total, terms) in enumerate(identities):
            while published(total) and sum(not published(k) for k in terms) == 1 and hide_one(n):
                changed = True
        if changed:
            continue
        leaks = disclosures(Table(table.values, flags, table.communes), rules, threshold)
        if not leaks:
            return flags
        done: set[int] = set()
        for key, lo, hi in leaks:
            mine = member_of.get(key, [])
            if done.intersection(mine):
                continue  # one more cell of its identity is hidden this round: look again first
            if not any(hide_one(n) for n in mine):
                raise SecrecyError(f"{describe([(key, lo, hi)])} and no cell is left to hide")
            done.update(mine)


def apply_secrecy(rows: pd.DataFrame, rules: dict[str, Rule], threshold: int) -> pd.DataFrame:
    """Return `rows` with `value` set to NULL where secret and a `secret` column saying why (else NA).

    `rows` needs columns code_qp, generation, indicator_id, scope, value, insee_com (the QPV's main commune), and
    may have `status` ('secret': the source keeps the value secret).
    """
    out = rows.copy()
    table, keys = table_from_long(out)
    at_source = ([k for k, s in zip(keys, out["status"], strict=True) if s == "secret"]
                 if "status" in out.columns else [])
    flags = suppress(table, rules, threshold, at_source)
    out["secret"] = [flags.get(k) for k in keys]
    out.loc[out["secret"].notna(), "value"] = None
    return out


def below_threshold(rows: pd.DataFrame, rules: dict[str, Rule], threshold: int) -> pd.DataFrame:
    """Published count cells below the threshold (must be empty before publishing)."""
    counts = [i for i, r in rules.items() if r.kind == "count"]
    sel = rows["indicator_id"].isin(counts) & rows["value"].notna() & (rows["value"] < threshold)
    return rows[sel]


def describe(leaks: Iterable[tuple[Key, float, float]]) -> str:
    """One line per recoverable cell, for error messages."""
    return "; ".join(f"{ind}{SCOPES[scope]} of {unit} ({gen}) bounded within [{lo:g}, {hi:g}]"
                     for (ind, scope, gen, unit), lo, hi in leaks)
