"""Addresses to points through IGN's Géoplateforme batch geocoder (`POST …/geocodage/search/csv/`).

What is sent is the minimum: a row number and the address columns named (never the partner's other columns).
Requests are split under the service's size limits (`chunk_lines`, `chunk_bytes`); HTTP 429 waits `Retry-After`,
5xx and network errors are retried with backoff; a response missing rows (truncated) is asked again once, then
its missing rows are « non localisé » with that reason. The answer's `result_status` reads `ok` even for
nonsense: the caller gates on `result_score` (shared/SOURCES.md §12).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import requests

from qpvhub.platform.errors import FetchError

log = logging.getLogger(__name__)

ROW_ID = "qpvhub_ligne"  # the only column sent besides the address ones
RESULT = ("longitude", "latitude", "result_score", "result_type", "result_label", "result_citycode",
          "result_city", "result_status")


@dataclass
class Geocoded:
    """One address's answer (None where the geocoder gave nothing)."""

    lon: float | None
    lat: float | None
    score: float | None
    type: str | None
    label: str | None
    citycode: str | None
    city: str | None
    status: str  # ok | not-found | skipped | error


MISSING = Geocoded(None, None, None, None, None, None, None, "error")


class Geocoder:
    """A client of the batch service; `session` may be shared (tests count its requests)."""

    def __init__(self, url: str, *, chunk_lines: int = 5000, chunk_bytes: int = 8 * 1024**2, timeout: float = 120.0,
                 retries: int = 5, backoff: float = 1.0, session: requests.Session | None = None,
                 rate: float | None = None) -> None:
        self.url, self.chunk_lines, self.chunk_bytes = url, chunk_lines, chunk_bytes
        self.interval = 1 / rate if rate else 0.0  # paced under the service's limit: 429s are the exception
        self._last = 0.0
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.session = session or requests.Session()
        self.requests = 0
        self.waited = 0.0  # seconds spent honouring Retry-After

    def geocode(self, rows: Sequence[Sequence[str]], columns: Sequence[str], *, postcode: str | None = None,
                citycode: str | None = None) -> list[Geocoded]:
        """The answer for each row (`rows`: values of `columns`, in order), in input order."""
        out: list[Geocoded] = [MISSING] * len(rows)
        for start, chunk in self._chunks(rows, columns):
            answer = self._post(chunk, columns, postcode, citycode)
            missing = [i for i in range(len(chunk)) if i not in answer]
            if missing:  # truncated: ask again for what is missing, once
                log.warning("geocoder: %d of %d rows missing from a response, asked again", len(missing), len(chunk))
                again = self._post([chunk[i] for i in missing], columns, postcode, citycode)
                answer.update({missing[j]: g for j, g in again.items()})
            for i, g in answer.items():
                if 0 <= i < len(chunk):
                    out[start + i] = g
        return out

    def _chunks(self, rows: Sequence[Sequence[str]], columns: Sequence[str]) -> Iterator[tuple[int, list]]:
        start, chunk, size = 0, [], 0
        for i, row in enumerate(rows):
            line = sum(len(str(v).encode()) + 3 for v in row) + 12
            if chunk and (len(chunk) >= self.chunk_lines or size + line > self.chunk_bytes):
                yield start, chunk
                start, chunk, size = i, [], 0
            chunk.append(row)
            size += line
        if chunk:
            yield start, chunk

    def _body(self, chunk: list, columns: Sequence[str]) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([ROW_ID, *columns])
        for i, row in enumerate(chunk):
            w.writerow([i, *row])
        return buf.getvalue().encode("utf-8")

    def _post(self, chunk: list, columns: Sequence[str], postcode: str | None,
              citycode: str | None) -> dict[int, Geocoded]:
        addr = [c for c in columns if c not in (postcode, citycode)]
        form = [("columns", c) for c in addr]
        form += [("postcode", postcode)] if postcode else []
        form += [("citycode", citycode)] if citycode else []
        body = self._body(chunk, columns)
        wait = self.backoff
        for attempt in range(1, self.retries + 1):
            pause = self._last + self.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._last = time.monotonic()
            self.requests += 1
            try:
                resp = self.session.post(self.url, data=form, files={"data": ("adresses.csv", body, "text/csv")},
                                         timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise FetchError(f"geocoder {self.url}: {type(exc).__name__} after {attempt} attempts") from None
                time.sleep(wait)
                wait *= 2
                continue
            if resp.status_code == 429:
                pause = _retry_after(resp.headers.get("Retry-After"), wait)
                self.waited += pause
                log.info("geocoder: HTTP 429, waiting %.1f s as asked", pause)
                time.sleep(pause)
                continue
            if resp.status_code >= 500 and attempt < self.retries:
                time.sleep(wait)
                wait *= 2
                continue
            if resp.status_code >= 400:
                raise FetchError(f"geocoder {self.url}: HTTP {resp.status_code} {resp.reason}")
            return _parse(resp.content)
        raise FetchError(f"geocoder {self.url}: still refused (HTTP 429 or 5xx) after {self.retries} attempts")


def _retry_after(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _parse(content: bytes) -> dict[int, Geocoded]:
    """Row number → answer; a line cut short (a truncated response) is left out, to be asked again."""
    text = content.decode("utf-8-sig", errors="replace")
    first = text.split("\n", 1)[0]
    sep = max((",", ";", "\t"), key=first.count)
    out: dict[int, Geocoded] = {}
    reader = csv.DictReader(io.StringIO(text), delimiter=sep)
    if not reader.fieldnames or ROW_ID not in reader.fieldnames:
        return out
    width = len(reader.fieldnames)
    try:
        for row in reader:
            if None in row or len(row) < width or any(row.get(k) is None for k in reader.fieldnames):
                continue  # fewer fields than the header: cut short
            try:
                i = int(row[ROW_ID])
            except (TypeError, ValueError):
                continue
            out[i] = Geocoded(_number(row.get("longitude")), _number(row.get("latitude")),
                              _number(row.get("result_score")), row.get("result_type") or None,
                              row.get("result_label") or None, row.get("result_citycode") or None,
                              row.get("result_city") or None, (row.get("result_status") or "ok").strip())
    except csv.Error:
        pass  # a quote left open at the cut: what was read stands, the rest is asked again
    return out
