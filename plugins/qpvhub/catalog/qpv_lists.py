"""The QPV lists the hub knows (`include/qpv_lists.yml`): code formats, validity, labels, legal texts.

Every module asks here rather than naming a year: which list a code belongs to, which list is in force,
how a list is called on a partner's page. A 2030 list is a YAML entry, not a code change.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qpvhub.platform.errors import ConfigError


class QpvList(BaseModel):
    """One list of QPV (a generation of perimeters), as a decree defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    year: int = Field(ge=2000, le=2100, description="the list's year: its key everywhere (ref.qpv.generation)")
    prefix: str = Field(pattern=r"^Q[A-Z]$", description="the two letters its codes start with (QP, QN)")
    code_pattern: str = Field(description="regular expression of a whole code of the list")
    code_example: str
    legal_text: str = Field(description="the decree that defines it, as partners cite it")
    in_force_from: dt.date
    in_force_to: dt.date | None = None
    label_fr: str = Field(description="how a page names it (« liste 2024 des QPV »)")
    note_fr: str = Field(description="one sentence for datapackages and pages: the list, its decree, its validity")

    @field_validator("code_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"code_pattern {v!r} is not a regular expression: {exc}") from None
        if not (v.startswith("^") and v.endswith("$")):
            raise ValueError("code_pattern must match a whole code (^…$)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> QpvList:
        if not re.fullmatch(self.code_pattern, self.code_example):
            raise ValueError(f"code_example {self.code_example} does not match code_pattern")
        if not self.code_pattern.startswith("^" + self.prefix):
            raise ValueError(f"code_pattern must start with the prefix {self.prefix}")
        if self.in_force_to is not None and self.in_force_to < self.in_force_from:
            raise ValueError("in_force_to is before in_force_from")
        return self

    @property
    def codes(self) -> str:
        """How its codes look, for a reader: `QN…`."""
        return f"{self.prefix}…"

    def in_force(self, day: dt.date) -> bool:
        return self.in_force_from <= day and (self.in_force_to is None or day <= self.in_force_to)


class QpvLists(BaseModel):
    """Every known list, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lists: list[QpvList] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> QpvLists:
        years = [q.year for q in self.lists]
        prefixes = [q.prefix for q in self.lists]
        if len(set(years)) != len(years) or len(set(prefixes)) != len(prefixes):
            raise ValueError("each list needs its own year and its own prefix")
        if years != sorted(years):
            raise ValueError("lists are given oldest first")
        return self

    @cached_property
    def by_year(self) -> dict[int, QpvList]:
        return {q.year: q for q in self.lists}

    @property
    def years(self) -> list[int]:
        return [q.year for q in self.lists]

    def get(self, year: int) -> QpvList:
        """The list of `year`, or a clear error naming the known ones."""
        try:
            return self.by_year[int(year)]
        except (KeyError, ValueError, TypeError):
            raise ConfigError(f"no QPV list {year!r} (known: {', '.join(map(str, self.years))}; "
                              "include/qpv_lists.yml)") from None

    def in_force(self, day: dt.date | None = None) -> QpvList:
        """The list in force on `day` (today by default): the newest whose period covers it."""
        day = day or dt.date.today()
        current = [q for q in self.lists if q.in_force(day)]
        if not current:
            raise ConfigError(f"no QPV list in force on {day.isoformat()} (include/qpv_lists.yml)")
        return current[-1]

    def of_code(self, code: str) -> QpvList | None:
        """The list a code belongs to (by its whole pattern), None for a code of no list."""
        return next((q for q in self.lists if re.fullmatch(q.code_pattern, code or "")), None)

    @property
    def any_code_pattern(self) -> str:
        """A regular expression matching a code of any list."""
        return "^(" + "|".join(q.code_pattern[1:-1] for q in self.lists) + ")$"

    def describe_codes(self) -> str:
        """« QP… liste 2015, QN… liste 2024 »: for column documentation."""
        return ", ".join(f"{q.codes} {q.label_fr.removesuffix(' des QPV')}" for q in self.lists)


_CACHE: dict[tuple[Path, float], QpvLists] = {}


def load_qpv_lists(path: Path) -> QpvLists:
    """The registry file, validated (cached while the file is unchanged)."""
    import yaml

    try:
        key = (path.resolve(), path.stat().st_mtime)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (the QPV lists registry)") from None
    if key not in _CACHE:
        try:
            _CACHE[key] = QpvLists.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"{path}: invalid QPV lists registry: {exc}") from None
    return _CACHE[key]
