"""publish.latest.repair: latest/ put back to its version's SHA256SUMS, from the new build or the version."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qpvhub.platform.errors import QpvhubError
from qpvhub.platform.store import LocalStore
from qpvhub.publish import latest

BASE = "published/53/qpv_profil"


def _published(tmp_path: Path) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    files = {"a.csv": b"code;x\nQP035001;1\n", "datapackage.json": b'{"version": "v1"}\n'}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
    for folder in ("v1", "latest"):
        for name, data in files.items():
            store.put_bytes(f"{BASE}/{folder}/{name}", data)
        store.put_bytes(f"{BASE}/{folder}/SHA256SUMS", sums.encode())
    return store, sums


def test_an_intact_latest_is_left_alone(tmp_path: Path) -> None:
    store, sums = _published(tmp_path)
    assert latest.repair(store, BASE, "v1", sums, {}, {}) == []


def test_damaged_or_missing_files_come_back_from_the_build_or_the_version(tmp_path: Path) -> None:
    store, sums = _published(tmp_path)
    store.put_bytes(f"{BASE}/latest/a.csv", b"code;x\nQP035001;999\n")
    store.delete(f"{BASE}/latest/datapackage.json")
    build = tmp_path / "a.csv"
    build.write_bytes(b"code;x\nQP035001;1\n")
    assert latest.repair(store, BASE, "v1", sums, {"a.csv": build}, {}) == ["a.csv", "datapackage.json"]
    assert store.get_bytes(f"{BASE}/latest/a.csv") == build.read_bytes()
    assert store.get_bytes(f"{BASE}/latest/datapackage.json") == b'{"version": "v1"}\n'


def test_a_file_damaged_in_latest_and_in_its_version_is_an_error(tmp_path: Path) -> None:
    store, sums = _published(tmp_path)
    for folder in ("latest", "v1"):
        store.put_bytes(f"{BASE}/{folder}/datapackage.json", b"{}")
    with pytest.raises(QpvhubError, match=r"latest/datapackage\.json differs from version v1's SHA256SUMS"):
        latest.repair(store, BASE, "v1", sums, {}, {})


def test_printed_finds_a_published_pdf_by_its_html_in_latest_then_in_the_version(tmp_path: Path) -> None:
    from qpvhub.publish.pdf import Printed

    store = LocalStore(tmp_path / "store")
    html, pdf = b"<html>QP035002</html>", b"%PDF-1.7 fiche"
    files = {"qpv/QP035002.html": html, "qpv/QP035002.pdf": pdf, "datapackage.json": b'{"version": "v1"}'}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
    for folder in ("v1", "latest"):
        for name, data in {**files, "SHA256SUMS": sums.encode()}.items():
            store.put_bytes(f"{BASE}/{folder}/{name}", data)
    assert Printed(store, BASE).get(html) == pdf and Printed(store, BASE).get(b"<html>changed</html>") is None
    store.put_bytes(f"{BASE}/latest/qpv/QP035002.pdf", b"damaged")
    assert Printed(store, BASE).get(html) == pdf  # the version's copy
    store.put_bytes(f"{BASE}/latest/datapackage.json", b"not json")
    assert Printed(store, BASE).get(html) is None  # no version to fall back on: printed again
    assert Printed(store, "published/53/nothing_yet").get(html) is None
