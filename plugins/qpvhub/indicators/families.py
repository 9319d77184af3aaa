"""The indicator families (`sql/indicators/*.sql`): their documented headers, validated and ordered.

Each file is one family: a YAML header in `--` comments (between `-- ---` lines) documents its
indicators (id, French label, unit, theme, method, millésime), the sources it reads and the tables it
requires; the SQL after it returns (indicator_id, code_qp, generation, scope, value, numerator,
denominator, millesime, source_run_ids). It takes parameters, never text substitution: `%(generation)s`,
the QPV list its header declares, and `%(release_<source>)s`, the release of each series source it reads.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qpvhub.platform.errors import ConfigError

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

    def release_param(self, source_id: str) -> str:
        """The SQL parameter naming the release a series source is read at: `%(release_<source id>)s`."""
        return f"release_{source_id}"

    def params(self, releases: dict[str, int]) -> dict[str, object]:
        """The family's SQL parameters: its QPV list (`generation`) and the release of each series it reads."""
        out: dict[str, object] = {self.release_param(s): r for s, r in releases.items()}
        if self.header.generation is not None:
            out["generation"] = self.header.generation
        return out


class DerivedHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(pattern=r"^ref\.[a-z_][a-z0-9_]*$")
    requires: list[str]


def split_header(path: Path, model: type[BaseModel]) -> tuple[BaseModel, str]:
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
    header, body = split_header(path, FamilyHeader)
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


SCOPE_SUFFIX = {"qpv": "", "commune": "__commune", "commune_hors_qpv": "__hors_qpv"}


def theme_view_name(theme: str) -> str:
    """`mart.theme_<theme without accents>`: 'socio-démographie' → theme_socio_demographie."""
    ascii_ = unicodedata.normalize("NFKD", theme).encode("ascii", "ignore").decode()
    return "theme_" + re.sub(r"[^a-z0-9]+", "_", ascii_.lower()).strip("_")
