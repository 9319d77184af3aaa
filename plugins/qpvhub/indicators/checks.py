"""Independent checks run with the indicators (`sql/checks/*.sql`): a publisher's own QPV assignment of its rows
(BPE's QP2024) against the hub's point-in-perimeter join — the agreement rate is stored in
`meta.qpv_assignment_check`, the disagreeing rows of the last run in `meta.qpv_assignment_disagreement`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from qpvhub.catalog.qpv_lists import QpvLists
from qpvhub.indicators.derived import has_rows
from qpvhub.indicators.families import split_header
from qpvhub.platform.db import columns_of

log = logging.getLogger(__name__)


class CheckHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    generation: int
    requires: list[str]
    columns: dict[str, list[str]] = {}  # table → columns it reads: a table loaded in an older layout is skipped


@dataclass
class Agreement:
    """How often the publisher's QPV and the hub's agree, overall and per publisher quality flag."""

    source: str
    generation: int
    departements: list[str]
    compared: int
    agreeing: int
    by_quality: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.agreeing / self.compared if self.compared else None

    def line(self) -> str:
        """One line for `qpvhub indicators`."""
        if not self.compared:
            return f"{self.source}: no geolocated row in the départements of list {self.generation} to compare"
        per = ", ".join(f"quality {q}: {v['agreeing']}/{v['compared']}" for q, v in sorted(self.by_quality.items()))
        return (f"{self.source}: the publisher's QPV (list {self.generation}) and the hub's point-in-perimeter join "
                f"agree for {self.agreeing}/{self.compared} rows ({100 * self.rate:.1f} %); {per}")


def run_checks(conn: psycopg.Connection, sql_dir: Path, lists: QpvLists) -> list[Agreement]:
    """Run every check whose inputs are loaded, store its result, return them (in the caller's transaction)."""
    out = []
    for path in sorted((sql_dir / "checks").glob("*.sql")):
        header, body = split_header(path, CheckHeader)
        assert isinstance(header, CheckHeader)
        if not all(has_rows(conn, r) for r in header.requires) or not has_rows(conn, "ref.qpv"):
            continue
        lacking = {t: [c for c in cols if c not in columns_of(conn, *t.split("."))]
                   for t, cols in header.columns.items()}
        if any(lacking.values()):  # loaded before its current layout (BPE 2024 had no QP2024 column): reload it
            log.warning("check %s skipped: %s lacks %s (loaded in an older layout: `qpvhub ingest %s --force`)",
                        path.name, *next((t, c) for t, c in lacking.items() if c), header.source)
            continue
        params = {"generation": header.generation, "code_pattern": lists.get(header.generation).code_pattern}
        compared = sql.SQL(body)  # the project's own file, not user input
        rows = conn.execute(sql.SQL("WITH c AS ({}) SELECT quality, publisher IS NOT DISTINCT FROM hub, count(*), "
                                    "min(source_run_id) FROM c GROUP BY 1, 2").format(compared), params).fetchall()
        deps = [d for (d,) in conn.execute("SELECT DISTINCT dep FROM ref.qpv WHERE generation = %s ORDER BY 1",
                                           (header.generation,))]
        a = Agreement(header.source, header.generation, deps, 0, 0)
        run_id = None
        for quality, same, n, run in rows:
            q = a.by_quality.setdefault(quality, {"compared": 0, "agreeing": 0})
            q["compared"] += n
            a.compared += n
            if same:
                q["agreeing"] += n
                a.agreeing += n
            run_id = run_id or run
        if not a.compared:
            out.append(a)
            continue
        conn.execute(
            "INSERT INTO meta.qpv_assignment_check (source_id, source_run_id, generation, departements, compared, "
            "agreeing, rate, by_quality) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (a.source, run_id, a.generation, deps, a.compared, a.agreeing, a.rate, Jsonb(a.by_quality)))
        conn.execute("DELETE FROM meta.qpv_assignment_disagreement WHERE source_id = %s AND generation = %s",
                     (a.source, a.generation))
        conn.execute(sql.SQL(
            "INSERT INTO meta.qpv_assignment_disagreement (source_id, generation, insee_com, typequ, "
            "code_qp_publisher, code_qp_hub, quality, qualite_xy, distance_m) "
            "SELECT %(source)s, %(generation)s, c.insee_com, c.typequ, c.publisher, c.hub, c.quality, c.qualite_xy, "
            "(SELECT round(ST_Distance(c.geom, q.geom)::numeric, 1) FROM ref.qpv q "
            " WHERE q.generation = %(generation)s AND q.code_qp = c.publisher) "
            "FROM ({}) c WHERE c.publisher IS DISTINCT FROM c.hub ORDER BY c.quality, c.insee_com").format(compared),
            {**params, "source": a.source})
        log.info("%s", a.line())
        out.append(a)
    return out
