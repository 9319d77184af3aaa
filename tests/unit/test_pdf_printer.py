"""The fiches' printer: one Chromium per worker prints page after page over the DevTools pipe; a browser that dies
or cannot start is a clear error naming the page, never a hang or a missing PDF."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qpvhub.platform.errors import QpvhubError
from qpvhub.publish import pdf

needs_chromium = pytest.mark.skipif(pdf.browser() is None, reason="Chromium not installed")


def _pages(tmp_path: Path, n: int) -> dict[str, Path]:
    out = {}
    for i in range(n):
        page = tmp_path / f"QN0{i:02d}.html"
        page.write_text(f'<!doctype html><html lang="fr"><title>Fiche {i}</title><h1>Quartier n° {i}</h1>'
                        f'<p><a href="../index.html">retour</a></p></html>', encoding="utf-8")
        out[page.stem] = page
    return out


@needs_chromium
def test_every_page_printed_tagged_dated_and_without_local_links(tmp_path) -> None:
    printed = pdf.print_pdfs(_pages(tmp_path, 5), tmp_path / "pdf", "2026-12-06", workers=2)
    assert sorted(printed) == [f"QN0{i:02d}" for i in range(5)]
    for name, path in printed.items():
        data = path.read_bytes()
        assert data.startswith(b"%PDF-") and b"/StructTreeRoot" in data  # tagged
        assert b"(D:20261206000000" in data  # dated with the data's date
        assert b"file://" not in data and b"about:blank" not in data  # links removed before printing
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert "Pages:           1" in info
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
        assert f"Quartier n° {int(name[3:])}" in text  # each PDF is its own page's


def test_a_browser_that_dies_is_an_error_naming_it(tmp_path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(QpvhubError, match=r"Chromium could not print \(starting; exit 3\): cannot open display"):
        pdf.print_pdfs(_pages(tmp_path, 2), tmp_path / "pdf", "2026-12-06", exe=str(fake))
    assert not list((tmp_path / "pdf").glob("*.pdf"))


def test_no_chromium_is_said(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pdf, "browser", lambda configured=None: None)
    with pytest.raises(QpvhubError, match="no Chromium found"):
        pdf.print_pdfs(_pages(tmp_path, 1), tmp_path / "pdf", "2026-12-06")
