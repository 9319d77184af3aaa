"""PDF of each fiche quartier, printed by headless Chromium from the same HTML (its print stylesheet).

Chromium rather than WeasyPrint: the PDF is then exactly what a partner gets when printing the page from a
browser (same layout engine, same CSS), it writes a tagged PDF (accessible structure), and the tests already
need it. Its creation and modification dates are set to the data's date, and its structure-element IDs (DOM node
numbers, which shifted by one between two CI prints of one page) renumbered by rank. A fiche whose HTML is the one
already published still keeps its published PDF (`Printed`): a re-publish of the same data is the same version
even if Chromium varies in another way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qpvhub.platform.errors import QpvhubError
from qpvhub.publish.latest import read_sums

log = logging.getLogger(__name__)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--no-pdf-header-footer",
         "--run-all-compositor-stages-before-draw"]
_HREF = re.compile(r'<a href="[^"]*"')
_DATES = re.compile(rb"/(CreationDate|ModDate) \(D:\d{14}([^)]*)\)")
_NODE_IDS = re.compile(rb"\(node(\d{8})\)")


def browser(configured: str | None = None) -> str | None:
    """Chromium's executable: `configured` (QPVHUB_CHROMIUM), else chromium / chromium-browser / google-chrome on
    PATH."""
    if configured:
        return configured
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _fixed_dates(pdf: bytes, stamp: str) -> bytes:
    """The PDF with its two dates set to `stamp` (YYYY-MM-DD…): same length, so offsets stay valid."""
    digits = re.sub(r"\D", "", stamp)[:8].ljust(8, "0") + "000000"
    return _DATES.sub(lambda m: b"/" + m.group(1) + b" (D:" + digits.encode() + m.group(2) + b")", pdf)


def _stable_ids(pdf: bytes) -> bytes:
    """The tagged PDF's structure-element IDs (`(node00000033)`, Chromium's DOM node numbers, which can shift by
    one between two prints of the same page) renumbered by rank: same width, so offsets stay valid, and same
    order, so the ID tree stays sorted."""
    rank = {old: b"%08d" % i for i, old in enumerate(sorted(set(_NODE_IDS.findall(pdf))), start=1)}
    return _NODE_IDS.sub(lambda m: b"(node" + rank[m.group(1)] + b")", pdf)


class Printed:
    """The PDFs of a product's newest version, found by the SHA-256 of the HTML each was printed from (its
    SHA256SUMS): read from `latest/`, else from the version itself, whichever still has the listed bytes."""

    def __init__(self, store, base: str) -> None:
        self.store, self.base, self.by_html, self.folders = store, base.rstrip("/"), {}, [f"{base}/latest"]
        if not store.exists(f"{self.base}/latest/SHA256SUMS"):
            return
        sums = read_sums(store.get_bytes(f"{self.base}/latest/SHA256SUMS").decode())
        for name, digest in sums.items():
            if name.endswith(".html") and name[:-5] + ".pdf" in sums:
                self.by_html[digest] = (name[:-5] + ".pdf", sums[name[:-5] + ".pdf"])
        try:  # the version's own folder, named by latest/'s package (damaged there: latest/ alone)
            version = json.loads(store.get_bytes(f"{self.base}/latest/datapackage.json")).get("version")
        except (QpvhubError, ValueError, AttributeError):
            version = None
        self.folders += [f"{self.base}/{version}"] if isinstance(version, str) and version else []

    def get(self, html: bytes) -> bytes | None:
        """The published PDF of this HTML, from the first folder whose copy has its listed digest; else None."""
        found = self.by_html.get(hashlib.sha256(html).hexdigest())
        for folder in self.folders if found else []:
            if self.store.exists(f"{folder}/{found[0]}"):
                data = self.store.get_bytes(f"{folder}/{found[0]}")
                if hashlib.sha256(data).hexdigest() == found[1]:
                    return data
        return None


def print_pdfs(pages: dict[str, Path], out_dir: Path, stamp: str, *, exe: str | None = None,
               workers: int = 2) -> dict[str, Path]:
    """Print each HTML page (name → file) to `out_dir/<name>.pdf`; returns name → PDF path."""
    exe = exe or browser()
    if not exe:
        raise QpvhubError("no Chromium found to print the fiches (install Debian's chromium or set QPVHUB_CHROMIUM)")
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, Path]) -> tuple[str, Path]:
        name, page = item
        target = out_dir / f"{name}.pdf"
        with tempfile.TemporaryDirectory(prefix="qpvhub-chromium-") as tmp:
            # printed without its links: Chromium would write them as absolute file:// paths of this machine
            copy = Path(tmp) / page.name
            copy.write_text(_HREF.sub("<a", page.read_text(encoding="utf-8")), encoding="utf-8")
            run = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}",
                                  copy.as_uri()], capture_output=True, text=True, timeout=180)
        if run.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            raise QpvhubError(f"Chromium could not print {page.name} to PDF (exit {run.returncode}): "
                              f"{run.stderr.strip()[-400:]}")
        target.write_bytes(_stable_ids(_fixed_dates(target.read_bytes(), stamp)))
        return name, target

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(pool.map(one, sorted(pages.items())))
