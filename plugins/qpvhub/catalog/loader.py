"""Reading the catalogue (`include/sources/*.yml`): validated files, clear errors, dependency order.

Each file is validated by its pydantic model; errors name the file, the key and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from qpvhub.catalog.model import Source
from qpvhub.platform.errors import ConfigError


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid catalogue file"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def load_yaml(path: Path) -> dict:
    """A YAML file's top-level mapping, or a ConfigError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_model(path: Path, model: type[BaseModel], key: str) -> Any:
    """Validate a YAML file with `model`; its `key` field must match the file name."""
    try:
        obj = model.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    if path.stem != getattr(obj, key):
        raise ConfigError(f"{path}: {key} {getattr(obj, key)!r} must match the file name ({path.stem}.yml)")
    return obj


def load_source(path: Path) -> Source:
    """Load and validate one source file; the file name must be `<id>.yml`."""
    return load_model(path, Source, "id")


def load_catalog(sources_dir: Path) -> dict[str, Source]:
    """Every source of the catalogue, by id (sorted, so DAG lists are stable); two entries writing one table or
    one partition are refused here, before any run (see `check_ownership`)."""
    sources = {s.id: s for s in (load_source(p) for p in sorted(sources_dir.glob("*.yml")))}
    check_ownership(sources, sources_dir)
    return sources


def check_ownership(sources: dict[str, Source], sources_dir: Path) -> None:
    """A table, or one partition of it (a QPV list, and every release or feed of a series or collection), belongs to
    one entry: a second one would swap out the first's rows at its next load. Entries sharing a table hold
    distinct static partitions of it (`ref.qpv`: generation 2015, generation 2024)."""
    owners: dict[str, list[tuple[Source, object]]] = {}
    for s in sources.values():
        owners.setdefault(s.target.qualified, []).append((s, s.partitioning))
    for table, entries in sorted(owners.items()):
        if len(entries) < 2:
            continue
        for i, (a, pa) in enumerate(entries):
            for b, pb in entries[i + 1:]:
                if pa.kind == pb.kind == "static" and pa.column == pb.column and pa.value != pb.value:
                    continue
                what = (f"partition {pa.column} = {pa.value} of {table}" if pa.kind == pb.kind == "static"
                        and pa.value == pb.value else table)
                raise ConfigError(
                    f"{sources_dir / (b.id + '.yml')}: writes {what}, which {sources_dir / (a.id + '.yml')} already "
                    f"loads: one entry per table or partition, or the second load would replace the first's rows. "
                    f"To serve another region, add the region (`qpvhub region add`): the national entry loads its "
                    f"rows at its next run")


def load_order(sources: dict[str, Source]) -> list[Source]:
    """Sources ordered so each comes after what it depends on; unknown or circular dependencies fail."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(sid: str, chain: tuple[str, ...]) -> None:
        if sid in done:
            return
        if sid not in sources:
            raise ConfigError(f"source {chain[-1]} depends on unknown source {sid!r}")
        if sid in visiting:
            raise ConfigError(f"circular dependency: {' -> '.join((*chain, sid))}")
        visiting.add(sid)
        for dep in sources[sid].depends_on:
            visit(dep, (*chain, sid))
        visiting.discard(sid)
        done.append(sid)

    for sid in sorted(sources):
        visit(sid, ())
    return [sources[s] for s in done]


def resolve_source(ref: str, sources_dir: Path) -> Source:
    """A source given as an id of the catalogue or as a path to a spec file."""
    if ref.endswith((".yml", ".yaml")) or "/" in ref:
        return load_source(Path(ref))
    path = sources_dir / f"{ref}.yml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in sources_dir.glob("*.yml"))) or "none"
        raise ConfigError(f"unknown source {ref!r} (catalogue {sources_dir}: {known})")
    return load_source(path)
