"""Object storage: the local directory and the S3 protocol (moto's server, real minio client code)."""

from pathlib import Path

import pytest

from qpvhub.platform.settings import StoreSettings, parse_store
from qpvhub.platform.store import LocalStore, S3Store, StoreError, open_store


def _s3(conn: dict, tmp_path: Path) -> S3Store:
    import json

    settings = parse_store(json.dumps(conn), tmp_path)
    store = open_store(settings)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["fs", "s3"])
def store(request, tmp_path: Path):
    if request.param == "fs":
        return LocalStore(tmp_path / "store")
    conn = request.getfixturevalue("s3_store_conn")
    return _s3(conn, tmp_path)


@pytest.mark.s3
def test_roundtrip_list_delete(store, tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"\x00\x01qpv" * 1000)
    store.put_file("raw/qpv_2015/2026-11-28/r1/a.bin", f)
    store.put_bytes("raw/qpv_2015/2026-11-28/r1/a.bin.sha256", b"abc  a.bin\n")
    store.put_bytes("published/53/x/latest/SHA256SUMS", b"x")
    assert store.get_bytes("raw/qpv_2015/2026-11-28/r1/a.bin") == f.read_bytes()
    prefix = "raw/qpv_2015/2026-11-28/r1/"
    assert store.list("raw/qpv_2015/") == [prefix + "a.bin", prefix + "a.bin.sha256"]
    assert store.exists("published/53/x/latest/SHA256SUMS")
    store.delete("published/53/x/latest/SHA256SUMS")
    assert not store.exists("published/53/x/latest/SHA256SUMS")
    out = tmp_path / "back.bin"
    store.download("raw/qpv_2015/2026-11-28/r1/a.bin", out)
    assert out.read_bytes() == f.read_bytes()


@pytest.mark.s3
def test_a_listing_is_every_key_with_the_prefix_whatever_its_folder(store) -> None:
    """A prefix is a string, not a folder (S3's listing): the local store walks the prefix's folder only, and
    answers the same."""
    keys = ["published/53/qpv_profil/latest/SHA256SUMS", "published/53/qpv_profil/v1/a.csv",
            "published/53/qpv_profil_dep35/latest/SHA256SUMS", "published/52/qpv_profil/latest/SHA256SUMS",
            "quality/sources/gtfs/r1/docs/index.html", "top.txt"]
    for key in keys:
        store.put_bytes(key, b"x")
    assert store.list("published/53/qpv_profil/") == keys[:2]
    assert store.list("published/53/qpv_profil") == keys[:3]  # and the départements' products
    assert store.list("published/5") == sorted([*keys[:3], keys[3]])
    assert store.list("published/53/qpv_profil/latest/SHA256SUMS") == keys[:1]
    assert store.list("published/54/") == [] and store.list("nowhere/at/all/") == []
    assert store.list("") == sorted(keys) and store.list("t") == ["top.txt"]


@pytest.mark.s3
@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b"])
def test_bad_keys_are_refused(store, key: str) -> None:
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes(key, b"x")


@pytest.mark.s3
def test_missing_object_error_names_it(store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nope.txt"):
        store.get_bytes("published/nope.txt")
    with pytest.raises(StoreError, match="nope.zip"):
        store.download("raw/x/nope.zip", tmp_path / "nope.zip")


def test_unreachable_s3_endpoint_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = StoreSettings(kind="s3", endpoint=f"127.0.0.1:{port}", access_key="k", secret_key="s",
                             bucket="qpvhub")
    with pytest.raises(StoreError, match=f"object store 127.0.0.1:{port} unreachable"):
        S3Store(settings, retries=0)


def test_a_local_download_is_a_link_the_store_never_writes_through(tmp_path: Path) -> None:
    """Staging a national file does not copy it again (a hard link), and the copy cannot change under the
    reader: objects are replaced by rename, never rewritten in place."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes("raw/bpe/r1/BPE24.zip", b"first")
    out = tmp_path / "work" / "BPE24.zip"
    out.parent.mkdir()
    store.download("raw/bpe/r1/BPE24.zip", out)
    assert out.stat().st_ino == (tmp_path / "store" / "raw/bpe/r1/BPE24.zip").stat().st_ino
    store.put_bytes("raw/bpe/r1/BPE24.zip", b"second")
    assert out.read_bytes() == b"first" and store.get_bytes("raw/bpe/r1/BPE24.zip") == b"second"


@pytest.mark.s3
def test_a_consumed_file_is_moved_in_and_a_kept_one_copied(store, tmp_path: Path) -> None:
    """`consume`: the caller gives the file up (a run's download), so the local store renames it in instead of
    writing it a second time; without it the caller's file stays its own. An upload is a copy either way."""
    kept, given = tmp_path / "kept.bin", tmp_path / "given.bin"
    kept.write_bytes(b"kept")
    given.write_bytes(b"given")
    inode = given.stat().st_ino
    store.put_file("raw/x/r1/kept.bin", kept)
    store.put_file("raw/x/r1/given.bin", given, consume=True)
    assert store.get_bytes("raw/x/r1/kept.bin") == b"kept" and store.get_bytes("raw/x/r1/given.bin") == b"given"
    assert kept.read_bytes() == b"kept"
    if isinstance(store, LocalStore):
        assert not given.exists()
        root = tmp_path / "store" / "raw/x/r1"
        moved, copied = (root / "given.bin").stat(), (root / "kept.bin").stat()
        assert moved.st_ino == inode  # renamed, not copied
        # open data, served by a web server running as another account: 0644, either way
        assert moved.st_mode & 0o777 == copied.st_mode & 0o777 == 0o644
        kept.write_bytes(b"changed")  # a copied-in file is independent of the caller's
        assert store.get_bytes("raw/x/r1/kept.bin") == b"kept"


def test_local_store_modes_serve_what_is_published_and_keep_partners_files_private(tmp_path) -> None:
    """Published pages and extracts are world-readable (0644, folders 0755) though the objects are written
    through mkstemp (0600); a partner's files and folders are its owner's only (0600 / 0700)."""
    import os

    store = LocalStore(tmp_path / "store")
    old = os.umask(0o077)  # even under a strict umask
    try:
        store.put_bytes("published/53/index.html", b"<html></html>")
        store.put_bytes("partners/ville/inbox/a.csv", b"adresse\n")
    finally:
        os.umask(old)
    root = tmp_path / "store"
    assert (root / "published/53/index.html").stat().st_mode & 0o777 == 0o644
    assert (root / "published/53").stat().st_mode & 0o777 == 0o755
    assert (root / "partners/ville/inbox/a.csv").stat().st_mode & 0o777 == 0o600
    assert {(root / d).stat().st_mode & 0o777 for d in ("partners", "partners/ville", "partners/ville/inbox")} == {
        0o700}
