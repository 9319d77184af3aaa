"""Every file path and `qpvhub.…` module a doc, a docstring or a comment cites exists: a reader following one
never lands on a file that moved, and the docs move with the code."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "plugins" / "qpvhub"
TOP = ("plugins", "include", "sql", "tests", "bench", "docs", "dags")
SUBPACKAGES = tuple(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
PATH_RE = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP + SUBPACKAGES) + r")/[\w./-]*\w)")
MODULE_RE = re.compile(r"(?<![\w/])qpvhub(?:\.[a-z_][a-z0-9_]*)+")
LINK_RE = re.compile(r"\]\(([^)#\s:]+)(?:#[^)]*)?\)")
PLACEHOLDER = re.compile(r"[<{*…]|NNN|\.\.\.")
GENERATED = {"bench/results.json"}  # written by `make bench`, not committed


def _texts() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    code = [p for d in ("plugins", "dags", "bench") for p in sorted((ROOT / d).rglob("*.py"))]
    return docs + code


def _path_exists(token: str) -> bool:
    token = token.rstrip(".")
    if token.split("/", 1)[0] in SUBPACKAGES and not (ROOT / token).exists():
        return (PACKAGE / token).exists()
    return (ROOT / token).exists()


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        obj = importlib.import_module(name)
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("path", _texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_and_modules_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    missing = []
    for m in PATH_RE.finditer(text):  # a path followed by a placeholder is a pattern (`quality/sources/<id>/`)
        token, after = m.group(1), text[m.end():m.end() + 2]
        if PLACEHOLDER.search(token + after) or token.rstrip(".") in GENERATED:
            continue
        if not _path_exists(token):
            missing.append(token)
    for m in MODULE_RE.finditer(text):  # `qpvhub.ingest.promote.x_promote__mutmut_*`: a pattern of names
        if PLACEHOLDER.search(text[m.end():m.end() + 1]) or "mutmut" in m.group(0):
            continue
        if not _module_exists(m.group(0).rstrip(".")):
            missing.append(m.group(0))
    if path.suffix == ".md":
        for link in LINK_RE.findall(text):
            if not PLACEHOLDER.search(link) and not (path.parent / link).exists():
                missing.append(link)
    assert not missing, f"{path.relative_to(ROOT)} cites what does not exist: {sorted(set(missing))}"


def test_no_reference_to_the_design_notes_outside_the_repository() -> None:
    """The design notes live in docs/architecture.md; nothing cites a DESIGN.md the clone does not have."""
    cited = [str(p.relative_to(ROOT)) for p in [*_texts(), ROOT / "pyproject.toml"]
             if "DESIGN.md" in p.read_text(encoding="utf-8")]
    assert not cited, f"cite docs/architecture.md instead of DESIGN.md in {cited}"
