"""PDF of each fiche quartier, printed by headless Chromium from the same HTML (its print stylesheet).

Chromium rather than WeasyPrint: the PDF is then exactly what a partner gets when printing the page from a
browser (same layout engine, same CSS), it writes a tagged PDF (accessible structure), and the tests already
need it. Its creation and modification dates are set to the data's date, and its structure-element IDs (DOM node
numbers, which shifted by one between two CI prints of one page) renumbered by rank. A fiche whose HTML is the one
already published still keeps its published PDF (`Printed`): a re-publish of the same data is the same version
even if Chromium varies in another way.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qpvhub.platform.errors import QpvhubError
from qpvhub.publish.latest import read_sums

log = logging.getLogger(__name__)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
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


class Chromium:
    """One headless Chromium printing page after page over the DevTools protocol on a pipe (fds 3 and 4).

    Starting Chromium costs about 0.7 s on a 2-core host and a fiche's print about 0.2 s: a national run's 1,600
    fiches spent most of their time starting browsers when each had its own (`--print-to-pdf`). The print is the one
    `--print-to-pdf` makes (its headless handler's parameters: backgrounds, the page's CSS size, no header or
    footer, tagged PDF) of the page set as the tab's document. `--no-pdf-header-footer` is not passed: with the
    pipe it crashes the renderer (Chromium 156), and `displayHeaderFooter: false` says the same.
    """

    def __init__(self, exe: str, profile: Path, timeout: float = 180.0) -> None:
        self.timeout, self._buf, self._id, self.doing = timeout, b"", 0, "starting"
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        ev_r, ev_w = os.pipe()  # Chromium writes answers and events on fd 4
        # the child's ends moved above 10, then put on 3 and 4 by bash (dash takes one-digit fds only), which
        # execs Chromium: no preexec_fn, as the pages are printed from threads
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, ev_w)]
        for fd in (cmd_r, ev_w):
            os.close(fd)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close(), read when Chromium fails
        try:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$@" 3<&{child[0]} 4>&{child[1]} {child[0]}<&- {child[1]}>&-', "sh", exe,
                 *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
                pass_fds=child, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err)
        finally:
            for fd in child:
                os.close(fd)
        self._w, self._r = cmd_w, ev_r
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable", session=self.session)
            self.frame = self.call("Page.getFrameTree", session=self.session)["frameTree"]["frame"]["id"]
        except BaseException:
            self.close()
            raise

    def _fail(self, why: str = "") -> QpvhubError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._err.seek(0)
        tail = self._err.read().decode(errors="replace").strip()[-400:]
        return QpvhubError(f"Chromium could not print ({self.doing}{why}; exit {self.proc.poll()}): {tail}")

    def _message(self, what: str) -> dict:
        """The next NUL-terminated JSON message from Chromium."""
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], self.timeout)
            chunk = os.read(self._r, 1 << 20) if ready else b""
            if not chunk:
                raise self._fail("" if ready else f": no answer to {what} in {self.timeout:g} s")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             until: str | None = None) -> dict:
        """Send a command, return its result; with `until`, first wait for that event of the session too."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise self._fail() from None
        result, seen = None, until is None
        while result is None or not seen:
            m = self._message(method)
            if m.get("id") == self._id:
                if "error" in m:
                    raise QpvhubError(f"Chromium refused {method} ({self.doing}): {m['error'].get('message')}")
                result = m.get("result", {})
            elif until and m.get("method") == until and m.get("sessionId") == session:
                seen = True
        return result

    def print(self, html: str, name: str) -> bytes:
        """The PDF of a self-contained HTML page (`name` for messages), set as the tab's document rather than
        loaded from a file: the same PDF, byte for byte, without a navigation's cost (a fifth of a fiche's)."""
        self.doing = name
        self.call("Page.setDocumentContent", {"frameId": self.frame, "html": html}, session=self.session)
        out = self.call("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True,
                                            "displayHeaderFooter": False, "generateTaggedPDF": True},
                        session=self.session)
        return base64.b64decode(out["data"])

    def close(self) -> None:
        with contextlib.suppress(OSError, QpvhubError):
            self.call("Browser.close")
        for fd in (self._w, self._r):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


def print_pdfs(pages: dict[str, Path], out_dir: Path, stamp: str, *, exe: str | None = None,
               workers: int = 2) -> dict[str, Path]:
    """Print each HTML page (name → file) to `out_dir/<name>.pdf`; returns name → PDF path. `workers` browsers
    share the pages."""
    exe = exe or browser()
    if not exe:
        raise QpvhubError("no Chromium found to print the fiches (install Debian's chromium or set QPVHUB_CHROMIUM)")
    out_dir.mkdir(parents=True, exist_ok=True)
    items = sorted(pages.items())
    shares = [items[i::max(1, workers)] for i in range(max(1, workers))]

    def share(part: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
        if not part:
            return []
        done = []
        with tempfile.TemporaryDirectory(prefix="qpvhub-chromium-") as tmp:
            chromium = Chromium(exe, Path(tmp) / "profile")
            try:
                for name, page in part:
                    # printed without its links: Chromium would write them as links to about:blank
                    data = chromium.print(_HREF.sub("<a", page.read_text(encoding="utf-8")), page.name)
                    if not data:
                        raise QpvhubError(f"Chromium printed {page.name} to an empty PDF")
                    target = out_dir / f"{name}.pdf"
                    target.write_bytes(_stable_ids(_fixed_dates(data, stamp)))
                    done.append((name, target))
            finally:
                chromium.close()
        return done

    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        return dict(sorted(pair for part in pool.map(share, shares) for pair in part))
