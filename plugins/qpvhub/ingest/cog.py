"""Commune codes of an older geography translated to the deployment's COG through INSEE's commune events.

Many files are published on the commune geography of their year (Filosofi, IRIS, an old outline layer):
codes of communes merged or renumbered since then match nothing in `ref.commune`. A source declares its
COG year (`cog:` in its entry); at load time its codes follow the events of `ref.commune_mouvement`
(INSEE's `v_mvt_commune_<year>.csv`) dated after 1 January of that year, up to the deployment's COG.
What was translated, and what could not be, is recorded with the run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from qpvhub.catalog.model import Source
from qpvhub.platform.db import columns_of
from qpvhub.platform.errors import QpvhubError

log = logging.getLogger(__name__)

EVENTS_TABLE = "ref.commune_mouvement"
# INSEE's event types (MOD) as its documentation names them
MOD_LABELS = {
    "10": "changement de nom", "20": "création", "21": "rétablissement", "30": "suppression",
    "31": "fusion simple", "32": "création de commune nouvelle", "33": "fusion association",
    "34": "transformation de fusion association en fusion simple", "35": "suppression de commune déléguée",
    "41": "changement de code dû à un changement de département",
    "50": "changement de code dû à un transfert de chef-lieu",
    "70": "transformation de commune associée en commune déléguée", "71": "rétablissement de commune déléguée",
}


@dataclass(frozen=True)
class Event:
    """One row of the events file, commune to commune (the only rows that move a code)."""

    mod: str
    date: dt.date
    com_av: str
    com_ap: str


@dataclass
class Passage:
    """Where each code of one COG year stands in a later one."""

    from_year: int
    to_year: int
    target: dict[str, str] = field(default_factory=dict)  # code → its commune at to_year (changed codes only)
    steps: dict[str, list[str]] = field(default_factory=dict)  # code → the events it followed
    split: dict[str, list[str]] = field(default_factory=dict)  # code kept, its commune split since: → the others
    dissolved: dict[str, list[str]] = field(default_factory=dict)  # code removed into several communes


def window(from_year: int, to_year: int) -> tuple[dt.date, dt.date]:
    """Events that separate COG `from_year` from COG `to_year`: a COG is the state at 1 January, events
    dated that day included."""
    return dt.date(from_year, 1, 1), dt.date(to_year, 1, 1)


def passage(events: Iterable[Event], codes: Iterable[str], from_year: int, to_year: int) -> Passage:
    """Follow `codes` through the events after COG `from_year` up to COG `to_year`, day by day.

    On a day, a commune whose rows lead to one other commune only was merged or renumbered (MOD 31-34, 41,
    50): its codes move there. One whose rows lead to itself and others was split (MOD 20, 21): its codes
    stay, except a code the split re-establishes, which becomes itself again. One leading to several others
    without itself was removed (MOD 30): its codes cannot be placed and are reported.
    """
    first, last = window(from_year, to_year)
    by_day: dict[dt.date, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    mods: dict[tuple[dt.date, str], set[str]] = defaultdict(set)
    for e in events:
        if first < e.date <= last:
            by_day[e.date][e.com_av].add(e.com_ap)
            mods[(e.date, e.com_av)].add(e.mod)
    out = Passage(from_year, to_year)
    cur = {c: c for c in codes}
    for day in sorted(by_day):
        moves: dict[str, str] = {}
        splits: dict[str, set[str]] = {}
        gone: dict[str, set[str]] = {}
        for av, aps in by_day[day].items():
            if av in aps:
                if len(aps) > 1:
                    splits[av] = aps - {av}
            elif len(aps) == 1:
                moves[av] = next(iter(aps))
            else:
                gone[av] = aps

        def why(av: str, day: dt.date = day) -> str:
            kinds = ", ".join(f"{MOD_LABELS.get(m, 'événement')} ({m})" for m in sorted(mods[(day, av)]))
            return f"{day.isoformat()} {kinds}"

        for code, at in cur.items():
            seen = set()
            while at in moves and at not in seen:  # a renumbering and a merger the same day
                seen.add(at)
                out.steps.setdefault(code, []).append(f"{why(at)}: {at} → {moves[at]}")
                at = moves[at]
            if at in splits:
                if code in splits[at]:  # re-established: the code is a commune again
                    out.steps.setdefault(code, []).append(f"{why(at)}: {code} rétablie")
                    out.split.pop(code, None)
                    at = code
                else:
                    out.split[code] = sorted(set(out.split.get(code, [])) | splits[at])
            if at in gone:
                out.dissolved[code] = sorted(gone[at])
            cur[code] = at
    out.target = {c: t for c, t in cur.items() if c != t}
    return out


def deployment_cog(conn: psycopg.Connection) -> int | None:
    """The COG year of `ref.commune` (its last load's millésime), None before the COG is loaded."""
    if conn.execute("SELECT to_regclass('ref.commune')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT millesime FROM meta.source_runs WHERE source_id = 'cog_communes' AND status = 'success' "
                       "AND millesime ~ '^[0-9]{4}$' ORDER BY finished_at DESC LIMIT 1").fetchone()
    return int(row[0]) if row else None


def load_events(conn: psycopg.Connection, from_year: int, to_year: int) -> tuple[list[Event], dt.date | None]:
    """The commune-to-commune events between two COGs (name changes left out) and the file's last date."""
    if conn.execute("SELECT to_regclass(%s)", (EVENTS_TABLE,)).fetchone()[0] is None:
        return [], None
    until = conn.execute(f"SELECT max(date_eff) FROM {EVENTS_TABLE}").fetchone()[0]  # constant name
    first, last = window(from_year, to_year)
    rows = conn.execute(
        f"SELECT mod, date_eff, com_av, com_ap FROM {EVENTS_TABLE} WHERE typecom_av = 'COM' AND typecom_ap = 'COM' "
        "AND mod <> '10' AND date_eff > %s AND date_eff <= %s", (first, last)).fetchall()
    return [Event(*r) for r in rows], until


def _missing_events(source: Source, year: int, to_year: int) -> QpvhubError:
    return QpvhubError(
        f"source {source.id}: its commune codes are on COG {year}, the deployment's on COG {to_year}; they are "
        f"translated through INSEE's commune events, not loaded yet: `qpvhub ingest cog_mouvements` first "
        "(nothing was loaded, the previous load stays)")


def require_events(conn: psycopg.Connection, source: Source) -> None:
    """Fail before downloading when the source will need the events to load and they are not there."""
    year, to_year = source.cog_year(), deployment_cog(conn)
    if year is None or to_year is None or year >= to_year:
        return
    if conn.execute("SELECT to_regclass(%s)", (EVENTS_TABLE,)).fetchone()[0] is None:
        raise _missing_events(source, year, to_year)


def translate(conn: psycopg.Connection, source: Source, table: str) -> dict | None:
    """Translate the commune codes of the staging table `staging.<table>` to the deployment's COG.

    Returns the report recorded with the run (None for a source without `cog`). Fails when codes need
    translating and the events are not loaded: a silent load would leave them dangling.
    """
    year = source.cog_year()
    if year is None or source.cog is None:
        return None
    to_year = deployment_cog(conn)
    report: dict = {"from": year, "to": to_year, "columns": {}}
    if to_year is None:
        report["status"] = "not translated: the deployment's COG (cog_communes) is not loaded"
        log.warning("source %s: %s", source.id, report["status"])
        return report
    if year >= to_year:
        report["status"] = f"current: the file is on COG {year}"
        return report
    events, until = load_events(conn, year, to_year)
    if until is None:
        raise _missing_events(source, year, to_year)
    report["events_until"] = until.isoformat()
    if until < dt.date(to_year, 1, 1):
        report["warning"] = (f"the events file ends on {until.isoformat()}: changes of COG {to_year} itself are "
                             "not in it; load that year's file")
    staged = sql.Identifier("staging", table)
    for column in source.cog.columns:
        col = sql.Identifier(column)
        codes = [r[0] for r in conn.execute(
            sql.SQL("SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL").format(c=col, t=staged))]
        p = passage(events, codes, year, to_year)
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cog_passage (old text PRIMARY KEY, new text NOT NULL) "
                     "ON COMMIT DROP")
        conn.execute("TRUNCATE _cog_passage")
        with conn.cursor().copy("COPY _cog_passage (old, new) FROM STDIN") as cp:
            for old, new in p.target.items():
                cp.write_row((old, new))
        if source.cog.merged == "aggregate":
            rows, merged = _aggregate(conn, source, table, column)
        else:
            rows = conn.execute(sql.SQL("UPDATE {t} s SET {c} = p.new FROM _cog_passage p WHERE s.{c} = p.old")
                                .format(t=staged, c=col)).rowcount
            merged = 0
            if column in source.keys:  # `attach` keeps each row: a table keyed by commune gets a key twice
                dup = conn.execute(sql.SQL("SELECT {c}, count(*) FROM {t} WHERE {c} IN (SELECT new FROM _cog_passage) "
                                           "GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 5").format(
                    c=col, t=staged)).fetchall()
                if dup:
                    raise QpvhubError(
                        f"source {source.id}: communes merged since COG {year} give their rows one code, and "
                        f"{column} is this table's key: {', '.join(f'{c} ({n} rows)' for c, n in dup)}; declare "
                        f"`cog: {{merged: aggregate}}` in include/sources/{source.id}.yml to make one row of them "
                        "(counts summed, geometries unioned)")
        report["columns"][column] = {
            "codes": len(p.target), "rows": rows, "rows_merged": merged,
            "translated": [{"code": c, "to": t, "events": p.steps.get(c, [])} for c, t in sorted(p.target.items())],
            "split": [{"code": c, "into": v} for c, v in sorted(p.split.items())],
            "dissolved": [{"code": c, "into": v} for c, v in sorted(p.dissolved.items())],
        }
    report["status"] = "translated"
    log.info("source %s: %s", source.id, summary(report))
    return report


def _aggregate(conn: psycopg.Connection, source: Source, table: str, column: str) -> tuple[int, int]:
    """Rows of communes merged into one become one row: counts summed, geometries unioned, other values the
    row's whose code the commune kept (its chief town), else the smallest code's. Returns (rows moved, rows
    removed by merging)."""
    col = sql.Identifier(column)
    geom = source.geometry.column if source.geometry else None
    staged = sql.Identifier("staging", table)
    names = list(columns_of(conn, "staging", table))  # the declared columns and the run's own (source_run_id)
    conn.execute(sql.SQL("CREATE TEMP TABLE _cog_rows ON COMMIT DROP AS SELECT s.*, s.{c} AS __old FROM {t} s "
                         "WITH NO DATA").format(c=col, t=staged))
    moved = conn.execute(sql.SQL(
        "WITH d AS (DELETE FROM {t} s USING _cog_passage p WHERE s.{c} = p.old RETURNING s.*, p.new AS __new) "
        "INSERT INTO _cog_rows SELECT * FROM d").format(t=staged, c=col)).rowcount
    if not moved:
        return 0, 0
    conn.execute(sql.SQL("UPDATE _cog_rows SET __old = {c}, {c} = __old").format(c=col))  # (old, new) in place
    # the communes they merged into, when the file has them too, join their group
    conn.execute(sql.SQL(
        "WITH d AS (DELETE FROM {t} s WHERE s.{c} IN (SELECT {c} FROM _cog_rows) RETURNING s.*, s.{c}) "
        "INSERT INTO _cog_rows SELECT * FROM d").format(t=staged, c=col))
    keys = list(source.keys)
    pieces = []
    for name in names:
        ident = sql.Identifier(name)
        rule = source.cog.rules.get(name) if source.cog else None
        kind = source.columns[name].type if name in source.columns else "geometry"
        if name in keys:
            pieces.append(ident)
        elif name == geom:
            pieces.append(sql.SQL("ST_Multi(ST_Union({g}))").format(g=ident))
        elif rule == "sum" or (rule is None and kind in ("integer", "bigint", "smallint")):
            pieces.append(sql.SQL("sum({n})").format(n=ident))
        else:
            pieces.append(sql.SQL("(array_agg({n} ORDER BY (__old = {c}) DESC, __old))[1]").format(n=ident, c=col))
    inserted = conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {vals} FROM _cog_rows GROUP BY {keys}").format(
        t=staged, cols=sql.SQL(", ").join(map(sql.Identifier, names)), vals=sql.SQL(", ").join(pieces),
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)))).rowcount
    total = conn.execute("SELECT count(*) FROM _cog_rows").fetchone()[0]
    conn.execute("DROP TABLE _cog_rows")
    return moved, total - inserted


def summary(report: dict | None) -> str:
    """One line for logs and the CLI: what was translated, and what could not be."""
    if not report:
        return ""
    if report.get("status") != "translated":
        return f"COG {report['from']}: {report.get('status')}"
    parts = []
    for column, r in report["columns"].items():
        line = f"{column}: {r['codes']} code(s) translated on {r['rows']} row(s)"
        if r["rows_merged"]:
            line += f", {r['rows_merged']} row(s) merged"
        if r["split"]:
            line += f"; {len(r['split'])} kept on a commune split since ({', '.join(s['code'] for s in r['split'])})"
        if r["dissolved"]:
            line += f"; {len(r['dissolved'])} removed into several communes, left as they were"
        parts.append(line)
    text = f"COG {report['from']} → {report['to']}: " + "; ".join(parts)
    return text + (f" ({report['warning']})" if report.get("warning") else "")
