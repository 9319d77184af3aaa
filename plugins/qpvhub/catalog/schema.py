"""JSON Schemas of the YAML files people edit (catalogue entries, regions, QPV lists), generated from their
pydantic models so that editors complete and check them (each file names its schema on its first line:
`# yaml-language-server: $schema=schema.json`). `qpvhub config schemas` writes them; a test keeps them current.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from qpvhub.catalog.model import Source
from qpvhub.catalog.qpv_lists import QpvLists
from qpvhub.catalog.regions import Region

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "sources/schema.json": (Source, "qpvhub catalogue entry (include/sources/<id>.yml)"),
    "regions/schema.json": (Region, "qpvhub region served (include/regions/<code>.yml)"),
    "qpv_lists.schema.json": (QpvLists, "qpvhub QPV lists registry (include/qpv_lists.yml)"),
}
MODELINE = "# yaml-language-server: $schema="


def schema_text(model: type[BaseModel], title: str) -> str:
    """The model's JSON Schema (draft 2020-12, as pydantic writes it), stable bytes for the same model."""
    schema = model.model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title,
              **{k: v for k, v in schema.items() if k != "title"}}
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write_schemas(include_dir: Path, *, check: bool = False) -> list[Path]:
    """Write every schema under `include_dir` (with `check`, write nothing); return those that were not current."""
    stale = []
    for rel, (model, title) in SCHEMAS.items():
        path = include_dir / rel
        text = schema_text(model, title)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not check:
                path.write_text(text, encoding="utf-8")
    return stale
