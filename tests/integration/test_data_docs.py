"""GX Data Docs of each run and the region's quality page, rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.publish import publish_region
from qpvhub.quality.gx import docs_prefix

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is required for this test: make setup installs it"
    return exe


def _render(url: str, tmp: Path, *, screenshot: Path | None = None) -> str:
    args = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,1000",
            "--virtual-time-budget=3000"]
    if screenshot:
        subprocess.run([*args, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run([*args, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout


def test_data_docs_and_quality_page_render(env, catalog, regions, tmp_path: Path) -> None:
    for sid in ("cog_communes", "qpv_2015"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    from qpvhub.indicators.runner import run_indicators

    run_indicators(env)
    publish_region(env, regions["53"])
    with psycopg.connect(env.uri) as conn:
        run_id = conn.execute("SELECT run_id FROM meta.source_runs WHERE source_id = 'qpv_2015'").fetchone()[0]
    store = env.settings.store.path
    docs = store / docs_prefix("qpv_2015", run_id)
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.html"))
    assert "index.html" in pages and any(p.startswith("validations/qpv_2015/") for p in pages)

    # GX's own page for the validation run: it lists the suite's expectations
    validation_page = docs / next(p for p in pages if p.startswith("validations/qpv_2015/"))
    dom = _render(validation_page.as_uri(), tmp_path)
    assert "qpv_2015" in dom and "code_qp" in dom
    assert re.search(r"[Ss]uccess|Succeeded|✔", dom)

    # the region page: rendered, with a working link to that run's Data Docs
    page = store / "quality" / "53" / "index.html"
    shot = tmp_path / "quality_53.png"
    dom = _render(page.as_uri(), tmp_path, screenshot=shot)
    assert "Qualité des données — Bretagne (53)" in dom and "qpv_2015" in dom
    link = re.search(r'href="([^"]+qpv_2015[^"]+index\.html)"', dom).group(1)
    assert (page.parent / link).resolve() == (docs / "index.html").resolve()
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifest = (store / "published/53/qpv_profil/latest/datapackage.json").read_text(encoding="utf-8")
    assert '"key": "quality/53/index.html"' in manifest
