"""fetch() over real HTTP on loopback: size limit, truncated bodies, conditional requests, file URLs."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from qpvhub.ingest.fetch import fetch
from qpvhub.platform.errors import FetchError
from tests.conftest import COG_SAMPLE


def test_size_limit(http_source, tmp_path: Path) -> None:
    url = http_source.put("communes.csv", COG_SAMPLE.read_bytes())
    with pytest.raises(FetchError, match=r"/communes.csv: larger than the size limit of 1000 bytes"):
        fetch(url, tmp_path, max_bytes=1000, retries=1)


def test_conditional_get_and_checksum(http_source, tmp_path: Path) -> None:
    body = COG_SAMPLE.read_bytes()
    url = http_source.put("communes.csv", body)
    got = fetch(url, tmp_path / "a")
    assert got.sha256 == hashlib.sha256(body).hexdigest() and got.bytes == len(body) and got.etag
    again = fetch(url, tmp_path / "b", etag=got.etag)
    assert again.not_modified and again.path is None


def test_a_file_of_many_chunks_is_hashed_whole_and_in_order(http_source, tmp_path: Path) -> None:
    """The SHA-256 is computed beside the write, chunk by chunk (1 MiB): over HTTP and from a file URL."""
    body = COG_SAMPLE.read_bytes() * 60  # 11 MB: more chunks than the hasher's queue holds
    assert len(body) > 9 * (1 << 20)
    (tmp_path / "src").mkdir()
    local = tmp_path / "src" / "big.csv"
    local.write_bytes(body)
    for i, url in enumerate((http_source.put("big.csv", body), local.as_uri())):
        got = fetch(url, tmp_path / str(i))
        assert got.sha256 == hashlib.sha256(body).hexdigest() and got.bytes == len(body)
        assert got.path.read_bytes() == body


def test_file_url_and_missing_file(tmp_path: Path) -> None:
    got = fetch(COG_SAMPLE.as_uri(), tmp_path)
    assert got.path.read_bytes() == COG_SAMPLE.read_bytes()
    with pytest.raises(FetchError, match="no such file"):
        fetch((tmp_path / "nope.csv").as_uri(), tmp_path)
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.org/x.csv", tmp_path)


@pytest.fixture
def lying_server():
    """Announces more bytes than it sends, then closes the connection (a cut download)."""
    body = COG_SAMPLE.read_bytes()[:5000]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 2))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/communes.csv"
    server.shutdown()
    server.server_close()


def test_truncated_download_is_an_error(lying_server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"communes.csv: .*(truncated|IncompleteRead|ProtocolError|Connection)"):
        fetch(lying_server, tmp_path, retries=2, backoff=0.01)


@pytest.fixture
def silent_server():
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow.csv"
    sock.close()


def test_timeout_is_an_error_after_retries(silent_server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"slow.csv: ReadTimeout"):
        fetch(silent_server, tmp_path, timeout=0.5, retries=2, backoff=0.01)
