"""Indicator registry and runner over `sql/indicators/*.sql`.

Each file is one family: a YAML header in `--` comments (between `-- ---` lines) documents its
indicators (id, French label, unit, theme, method, millésime), the sources it needs and the tables it
requires; the SQL after it returns (indicator_id, code_qp, generation, scope, value, numerator,
denominator, millesime, source_run_ids). The runner replaces the family's rows in `mart.qpv_indicator`
in one transaction and rebuilds the wide view `mart.qpv_profile`. A family whose required tables are
empty is absent from the mart, never 0.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qpvhub.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("indicator_id", "code_qp", "generation", "scope", "value", "numerator", "denominator",
                  "millesime", "source_run_ids")


class IndicatorDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label_fr: str
    unit: str
    theme: str
    method: str
    millesime: str
    is_count: bool = False


class FamilyHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    family: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sources: list[str]
    requires: list[str] = Field(default_factory=list)
    indicators: list[IndicatorDef]


@dataclass(frozen=True)
class Family:
    header: FamilyHeader
    sql: str
    path: Path


def parse_family(path: Path) -> Family:
    """Split a family file into its validated header and its SELECT."""
    text = path.read_text(encoding="utf-8")
    m = re.match(r"\s*-- ---\n(.*?)\n-- ---\n(.*)", text, re.S)
    if not m:
        raise ConfigError(f"{path}: no header between '-- ---' lines at the top")
    lines = m.group(1).splitlines()
    header_yaml = "\n".join(line[3:] if line.startswith("-- ") else line.lstrip("-") for line in lines)
    try:
        header = FamilyHeader.model_validate(yaml.safe_load(header_yaml))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid indicator header: {exc}") from None
    for req in header.requires:
        if not re.match(r"^(ref|src|mart)\.[a-z_][a-z0-9_]*$", req):
            raise ConfigError(f"{path}: requires entry {req!r} is not schema.table")
    return Family(header=header, sql=m.group(2).strip().rstrip(";"), path=path)


def load_families(sql_dir: Path) -> list[Family]:
    families = [parse_family(p) for p in sorted((sql_dir / "indicators").glob("*.sql"))]
    seen: dict[str, Path] = {}
    for f in families:
        for ind in f.header.indicators:
            if ind.id in seen:
                raise ConfigError(f"indicator {ind.id!r} defined in {seen[ind.id]} and {f.path}")
            seen[ind.id] = f.path
    return families


def _has_rows(conn: psycopg.Connection, qualified: str) -> bool:
    schema, table = qualified.split(".")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
    if not exists:
        return False
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, table))).fetchone()[0]


def run_indicators(conn: psycopg.Connection, sql_dir: Path, only: list[str] | None = None) -> dict[str, int]:
    """Compute every family (or `only` those) in one transaction; return rows written per indicator."""
    families = load_families(sql_dir)
    written: dict[str, int] = {}
    for fam in families:
        if only and fam.header.family not in only:
            continue
        ids = [i.id for i in fam.header.indicators]
        for ind in fam.header.indicators:
            conn.execute(
                """INSERT INTO mart.indicator_catalog
                       (indicator_id, label_fr, unit, theme, sources, method, millesime, is_count, sql_file)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (indicator_id) DO UPDATE SET label_fr = EXCLUDED.label_fr, unit = EXCLUDED.unit,
                       theme = EXCLUDED.theme, sources = EXCLUDED.sources, method = EXCLUDED.method,
                       millesime = EXCLUDED.millesime, is_count = EXCLUDED.is_count, sql_file = EXCLUDED.sql_file""",
                (ind.id, ind.label_fr, ind.unit, ind.theme, fam.header.sources, ind.method.strip(), ind.millesime,
                 ind.is_count, fam.path.name))
        conn.execute("DELETE FROM mart.qpv_indicator WHERE indicator_id = ANY(%s)", (ids,))
        missing = [r for r in fam.header.requires if not _has_rows(conn, r)]
        if missing:
            log.warning("indicator family %s: %s empty or missing, its indicators are absent", fam.header.family,
                        ", ".join(missing))
            for i in ids:
                written[i] = 0
            continue
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in OUTPUT_COLUMNS)
        try:
            conn.execute(sql.SQL("INSERT INTO mart.qpv_indicator ({cols}) SELECT {cols} FROM ({q}) AS f").format(
                cols=cols, q=sql.SQL(fam.sql)))  # the SQL is the project's own file, not user input
        except psycopg.Error as exc:
            raise ConfigError(f"indicator family {fam.path.name} failed: {str(exc).strip()}") from exc
        for i in ids:
            n = conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE indicator_id = %s", (i,)).fetchone()[0]
            written[i] = n
            conn.execute("UPDATE mart.indicator_catalog SET computed_at = now() WHERE indicator_id = %s", (i,))
    rebuild_profile(conn)
    return written


def rebuild_profile(conn: psycopg.Connection) -> None:
    """`mart.qpv_profile`: one row per QPV, one column per indicator computed (scope qpv)."""
    ids = [r[0] for r in conn.execute(
        "SELECT DISTINCT indicator_id FROM mart.qpv_indicator WHERE scope = 'qpv' ORDER BY 1").fetchall()]
    cols = [sql.SQL("max(i.value) FILTER (WHERE i.indicator_id = {}) AS {}").format(sql.Literal(i), sql.Identifier(i))
            for i in ids]
    select = sql.SQL(
        "SELECT q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep{extra} "
        "FROM ref.qpv q LEFT JOIN mart.qpv_indicator i "
        "ON i.code_qp = q.code_qp AND i.generation = q.generation AND i.scope = 'qpv' "
        "GROUP BY q.code_qp, q.generation, q.lib_qp, q.insee_com, q.lib_com, q.dep"
    ).format(extra=sql.SQL("").join(sql.SQL(", ") + c for c in cols))
    conn.execute("DROP VIEW IF EXISTS mart.qpv_profile")
    conn.execute(sql.SQL("CREATE VIEW mart.qpv_profile AS {}").format(select))
    conn.execute("COMMENT ON VIEW mart.qpv_profile IS "
                 "'One row per QPV and generation, one column per indicator (scope qpv); see mart.indicator_catalog'")
    for i in ids:
        label = conn.execute("SELECT label_fr || ' (' || unit || ')' FROM mart.indicator_catalog "
                             "WHERE indicator_id = %s", (i,)).fetchone()
        if label:
            conn.execute(sql.SQL("COMMENT ON COLUMN mart.qpv_profile.{} IS {}").format(
                sql.Identifier(i), sql.Literal(label[0])))
