"""A loopback server playing IGN Géoplateforme's batch geocoder (`POST /geocodage/search/csv/`), as documented in
shared/SOURCES.md §12: multipart form with the CSV in `data`, repeatable `columns`, optional `postcode` and
`citycode`; the answer is the input CSV with the added `longitude, latitude, result_*` columns, `result_status`
`ok` / `not-found` / `skipped` — `ok` even for nonsense, with a low score. Scripted: HTTP statuses to answer first
(a 429 with `Retry-After`), responses cut short, a rate limit in requests per second. Used by the tests and the
bench; it keeps counts of what it received, never writes it anywhere.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import http.server
import io
import threading
import time
from dataclasses import dataclass, field

ADDED = ["longitude", "latitude", "result_score", "result_score_next", "result_label", "result_type", "result_id",
         "result_banId", "result_housenumber", "result_name", "result_street", "result_postcode", "result_city",
         "result_context", "result_citycode", "result_oldcitycode", "result_oldcity", "result_district",
         "result_status"]


@dataclass
class Answer:
    lon: float
    lat: float
    score: float
    type: str = "housenumber"
    label: str = ""
    citycode: str = ""
    city: str = ""
    status: str = "ok"


@dataclass
class FakeGeoplateforme:
    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)  # the address columns joined by " " → answer
    statuses: list[tuple[int, dict]] = field(default_factory=list)  # answered first, one per request
    truncate: int = 0  # this many next responses are cut in the middle of a line
    rate: float | None = None  # requests per second allowed (a token bucket of `rate` tokens); beyond: 429
    retry_after: float = 1.0
    requests: int = 0
    rows: int = 0
    forms: list[dict] = field(default_factory=list)  # form fields (column names), never the data
    headers: list[list[str]] = field(default_factory=list)  # the data's header line (column names)
    _last: float = 0.0
    _tokens: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, body: bytes, ctype: str) -> tuple[int, dict, bytes]:
        with self.lock:
            self.requests += 1
            if self.statuses:
                status, headers = self.statuses.pop(0)
                return status, headers, b"{\"code\": %d}" % status
            now = time.monotonic()
            if self.rate:
                tokens = self.rate if self._tokens is None else self._tokens
                tokens = min(self.rate, tokens + (now - self._last) * self.rate)
                self._last = now
                if tokens < 1:
                    self._tokens = tokens
                    busy = b'{"code": 429, "message": "Too Many Requests"}'
                    return 429, {"Retry-After": f"{self.retry_after:g}"}, busy
                self._tokens = tokens - 1
            cut = self.truncate > 0
            self.truncate -= cut
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        form: dict[str, list[str]] = {}
        data = b""
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "data":
                data = part.get_payload(decode=True)
            else:
                form.setdefault(name, []).append(part.get_content().strip())
        self.forms.append({k: list(v) for k, v in form.items()})
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        rows = list(reader)
        header = list(reader.fieldnames or [])
        with self.lock:
            self.rows += len(rows)
            self.headers.append(header)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([*header, *ADDED])
        for row in rows:
            key = " ".join(row[c].strip() for c in form.get("columns", []) if row.get(c, "").strip())
            a = self.answers.get(key)
            if a is None:
                w.writerow([*row.values(), "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
                            "not-found" if key else "skipped"])
                continue
            w.writerow([*row.values(), f"{a.lon:.6f}", f"{a.lat:.6f}", f"{a.score:.4f}", "", a.label, a.type, "x",
                        "", "", "", "", "", a.city, "", a.citycode, "", "", "", a.status])
        text = out.getvalue().encode("utf-8")
        if cut:
            text = text[: max(len(text) // 2, text.index(b"\n") + 5)]
        return 200, {"Content-Type": "text/csv; charset=utf-8"}, text


def serve(fake: FakeGeoplateforme) -> tuple[FakeGeoplateforme, http.server.ThreadingHTTPServer]:
    """Start the server on a free loopback port; `fake.url` is its batch endpoint."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            status, headers, body = fake.respond(self.rfile.read(n), self.headers.get("Content-Type", ""))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/geocodage/search/csv/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake, server
