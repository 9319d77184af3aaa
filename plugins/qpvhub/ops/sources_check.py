"""`qpvhub sources check`: is every production location reachable, and does its layout still match?

For each catalogue entry: resolve its locator (URL, or the data.gouv.fr API), probe the file (HEAD, else a
ranged GET), read its first kilobytes — or, for a ZIP, its central directory (a ranged read of the tail),
for a 7z its header (ranged reads where it points), and of a small file the whole of it — and compare the
header or fields with the columns the entry declares. Never a traceback: an unreachable location is a line
saying why (offline, DNS, HTTP status).
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import json
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from qpvhub.catalog.model import Source
from qpvhub.ingest.archive import SEVENZIP_MAGIC, member_matches
from qpvhub.ingest.fetch import USER_AGENT
from qpvhub.ingest.locate import discover_feeds, resolve_production
from qpvhub.ingest.readers import get_reader
from qpvhub.platform.errors import InputError, QpvhubError
from qpvhub.platform.redact import redact_text, redact_url
from qpvhub.platform.settings import Publishers

HEAD_BYTES = 64 * 1024
WHOLE_BELOW = 8 * 1024**2  # smaller files are read whole: every member can be checked
# INSEE's archives by quartier are checked through their own dictionary, which needs them whole (a few MB each)
WHOLE_BELOW_INSEE = 64 * 1024**2


@dataclass
class Probe:
    """One source's line."""

    source_id: str
    location: str | None = None
    reachable: bool = False
    status: str = ""
    size: int | None = None
    last_modified: str | None = None
    checksum: str | None = None
    layout: str = "not checked"
    drift: list[str] = field(default_factory=list)
    since_last_load: str | None = None  # unchanged / changed, against the last successful run

    @property
    def ok(self) -> bool:
        return self.reachable and not self.drift

    def line(self) -> str:
        size = f"{self.size:,} B".replace(",", " ") if self.size is not None else "size ?"
        parts = [f"{self.source_id:<20}", "reachable" if self.reachable else "UNREACHABLE", self.status, size,
                 f"modified {self.last_modified or '?'}", f"checksum {self.checksum or '?'}"]
        if self.since_last_load:
            parts.append(self.since_last_load)
        parts.append(f"layout DRIFT ({'; '.join(self.drift)})" if self.drift else f"layout {self.layout}")
        return "  ".join(p for p in parts if p)


def _csv_header(head: bytes, source: Source) -> list[str]:
    enc = source.reader.get("encoding", "utf-8-sig")
    text = codecs.getincrementaldecoder("utf-8-sig" if enc.lower().replace("_", "-") in ("utf-8", "utf8")
                                        else enc)(errors="replace").decode(head)
    first = text.splitlines()[0] if text else ""
    return next(csv.reader([first], delimiter=source.reader.get("sep", ",")), [])


def _geojson_properties(head: bytes) -> list[str] | None:
    text = head.decode("utf-8", errors="replace")
    m = re.search(r'"properties"\s*:\s*\{', text)
    if not m:
        return None
    try:
        props, _ = json.JSONDecoder().raw_decode(text[m.end() - 1:])
    except json.JSONDecodeError:
        return None
    return list(props) if isinstance(props, dict) else None


def _dbf_fields(head: bytes) -> list[str]:
    """Field names of a dBase (.dbf) header: 32-byte descriptors after the 32-byte header, ended by 0x0D."""
    out = []
    for off in range(32, len(head) - 31, 32):
        if head[off] == 0x0D:
            break
        out.append(head[off:off + 11].split(b"\x00", 1)[0].decode("latin-1"))
    return out


def _zip_names_from_tail(tail: bytes) -> list[str] | None:
    """Member names from a ZIP's central directory, when it lies within `tail` (the file's last bytes)."""
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return None
    cd_size, = struct.unpack("<I", tail[end + 12:end + 16])
    start = end - cd_size
    if start < 0:
        return None
    names, pos = [], start
    while pos + 46 <= end and tail[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", tail[pos + 28:pos + 34])
        names.append(tail[pos + 46:pos + 46 + n].decode("utf-8", errors="replace"))
        pos += 46 + n + m + k
    return names


class RangedFile(io.RawIOBase):
    """A remote file read by HTTP ranges, seekable: enough for py7zr to read a 7z's header (at its end)
    without downloading the archive."""

    def __init__(self, url: str, size: int, timeout: float) -> None:
        self.url, self.length, self.timeout, self.pos, self.requests = url, size, timeout, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.length + offset}[whence]
        return self.pos

    def read(self, size: int = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self.pos + size)
        if end <= self.pos:
            return b""
        self.requests += 1
        if self.requests > 50:
            raise ValueError("7z header: too many ranged reads")
        r = requests.get(self.url, headers={"User-Agent": USER_AGENT, "Range": f"bytes={self.pos}-{end - 1}"},
                         timeout=self.timeout)
        r.raise_for_status()
        data = r.content[: end - self.pos]
        self.pos += len(data)
        return data


def _7z_names(data: io.RawIOBase | io.BytesIO) -> list[str]:
    """Member names from a 7z's header (py7zr reads the start header, then the header it points at)."""
    import py7zr

    try:
        with py7zr.SevenZipFile(data, "r") as z:
            return [i.filename for i in z.list() if not i.is_directory]
    except py7zr.exceptions.ArchiveError as exc:
        raise ValueError(f"not a readable 7z header ({exc})") from None


def _columns_by_reader(source: Source, data: bytes, name: str) -> list[str]:
    """The columns the entry's own reader finds in a small file (archive extraction, sheet, layer…);
    raises InputError as a load would."""
    import tempfile


    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        options = {**source.reader, **({"release": source.release} if source.release is not None else {})}
        return get_reader(source.format)(path, source.id, options).open().columns


def compare_layout(source: Source, *, head: bytes, whole: bytes | None,
                   members: list[str] | None) -> tuple[str, list[str]]:
    """(what was checked, drift list) for the bytes that could be read."""
    wanted = source.file_columns()
    member = str(source.reader.get("member") or "")
    if head[:6] == SEVENZIP_MAGIC:
        if whole is not None:
            try:
                got = _columns_by_reader(source, whole, "archive.7z")
            except InputError as exc:
                return f"read as {source.format}", [str(exc)]
            missing = [w for w in wanted if w not in got]
            layer = f" layer {source.reader['layer']}" if source.reader.get("layer") else ""
            return f"fields of{layer} ({len(got)})", [f"missing {missing}"] if missing else []
        if members is None:
            return "7z (header not readable without downloading)", []
        kinds = [n for n in members if n.lower().endswith((".gpkg", ".shp", ".geojson", ".json"))
                 and (not member or member_matches(n, member))]
        if not kinds:
            return "7z", [f"no GeoPackage, Shapefile or GeoJSON{' named ' + member if member else ''} among "
                          f"{sorted(members)[:10]}"]
        return f"7z member {kinds[0].rsplit('/', 1)[-1]} present (fields not checked without downloading)", []
    if head[:4] == b"PK\x03\x04" or members is not None:
        if whole is not None:
            zf = zipfile.ZipFile(io.BytesIO(whole))
            members = [n for n in zf.namelist() if not n.endswith("/")]
        if members is None:
            return "ZIP (central directory not readable without downloading)", []
        if source.format == "insee":  # read as a load reads it: dictionary, data files, the variables required
            if whole is None:
                return "ZIP (an INSEE archive is checked whole, through its dictionary: too large to read)", []
            try:
                _columns_by_reader(source, whole, "archive.zip")
            except InputError as exc:
                return "INSEE archive read through its dictionary", [str(exc)]
            return (f"INSEE archive: dictionary and data files read ({len(members)} members), the variables "
                    f"required ({', '.join(source.reader.get('requires', [])) or 'none'}) present"), []
        if source.format == "gtfs":
            missing = [f for f in ("stops.txt", "stop_times.txt", "trips.txt") if not any(
                n.rsplit("/", 1)[-1] == f for n in members)]
            return f"GTFS members ({len(members)})", [f"missing member {m}" for m in missing]
        if source.reader.get("members"):  # several layers by a name pattern (Géorisques' TRI deliveries)
            return _layers_layout(source, members, zf if whole is not None else None, wanted)
        exts = {"csv": (".csv", ".txt"), "shapefile": (".shp",), "geojson": (".geojson", ".json"),
                "vector": (".shp", ".geojson", ".json"), "xlsx": (".xlsx",)}.get(source.format, ())
        candidates = [n for n in members if (member and member_matches(n, member))
                      or (not member and n.lower().endswith(exts))]
        if len(candidates) != 1:
            return "ZIP", [f"member {member or '/'.join(exts)}: {len(candidates)} found among {sorted(members)[:10]}"]
        name = candidates[0]
        if whole is None:
            return f"ZIP member {name} present (fields not checked without downloading)", []
        if name.lower().endswith(".shp"):
            dbf = [n for n in members if n.lower() == name.lower()[:-4] + ".dbf"]
            if not dbf:
                return f"ZIP member {name}", ["the .dbf of the shapefile set is missing"]
            got = _dbf_fields(zf.open(dbf[0]).read(HEAD_BYTES))
            # dBase truncates names to 10 characters
            missing = [w for w in wanted if w[:10] not in got]
            return f"fields of {dbf[0]}", [f"missing {missing}"] if missing else []
        if name.lower().endswith(".xlsx"):  # the header row of the declared sheet, read by the reader itself
            try:
                got = _columns_by_reader(source, zf.read(name), "book.xlsx")
            except InputError as exc:
                return f"workbook {name}", [str(exc)]
            missing = [w for w in wanted if w not in got]
            return f"header of {name}", [f"missing {missing}"] if missing else []
        what, drift = compare_layout(source, head=zf.open(name).read(HEAD_BYTES), whole=None, members=None)
        return f"{what} in {name}", drift
    if source.format == "csv":
        got = _csv_header(head, source)
        missing = [w for w in wanted if w not in got]
        return f"CSV header ({len(got)} columns)", [f"missing {missing}"] if missing else []
    if source.format in ("geojson", "vector"):
        props = _geojson_properties(head)
        if props is None:
            return "GeoJSON (no feature in the first kilobytes)", []
        missing = [w for w in wanted if w not in props]
        return f"GeoJSON properties ({len(props)})", [f"missing {missing}"] if missing else []
    return f"{source.format} (not checked from its first bytes)", []


def _layers_layout(source: Source, members: list[str], zf: zipfile.ZipFile | None,
                   wanted: list[str]) -> tuple[str, list[str]]:
    """The Shapefiles matching `reader.members`: at least one, and (archive read whole) each .dbf with the
    declared fields — the member column is the reader's, not the file's."""
    pattern = str(source.reader["members"]).lower()
    layers = [n for n in members if fnmatch.fnmatch(n.rsplit("/", 1)[-1].lower(), pattern)]
    if not layers:
        return "ZIP", [f"no Shapefile matching {pattern!r} among {sorted(members)[:10]}"]
    if zf is None:
        return f"ZIP: {len(layers)} layer(s) matching {pattern!r} (fields not checked without downloading)", []
    wanted = [w for w in wanted if w != source.reader.get("member_column")]
    drift = []
    for name in layers:
        dbf = [n for n in members if n.lower() == name.lower()[:-4] + ".dbf"]
        if not dbf:
            drift.append(f"{name}: the .dbf of the shapefile set is missing")
            continue
        got = _dbf_fields(zf.open(dbf[0]).read(HEAD_BYTES))
        missing = [w for w in wanted if w[:10] not in got]  # dBase truncates names to 10 characters
        if missing:
            drift.append(f"{name}: missing {missing}")
    return f"fields of {len(layers)} layer(s) matching {pattern!r}", drift


def _probe_departements(source: Source, p: Probe, timeout: float, publishers: Publishers,
                        departements: Sequence[str]) -> Probe:
    """One file per département: each département of the regions probed at the pattern; a 404 is a
    département without a file (reported), and at least one must answer with the declared layout."""
    per = source.collection.per_departement if source.collection else None
    assert per is not None
    p.location = per.url
    if not departements:
        p.status = "no département configured (include/regions): nothing to probe"
        return p
    found, absent, failed = [], [], {}
    for dep in sorted(departements):
        one = probe_source(source.model_copy(update={"collection": None, "url": per.url.format(dep=dep)}),
                           publishers, timeout=timeout)
        if one.reachable:
            found.append((dep, one))
        elif one.status.startswith("HTTP 404"):
            absent.append(dep)
        else:  # offline, every département fails the same way: one reason, its départements listed
            failed.setdefault(one.status, []).append(dep)
    p.reachable = bool(found) and not failed
    p.status = "; ".join(filter(None, [
        f"{len(found)}/{len(departements)} département file(s) answered" if found else "",
        f"none for {', '.join(absent)} (HTTP 404)" if absent else "",
        *(f"{', '.join(deps)}: {why}" for why, deps in failed.items())])) or "nothing answered"
    if found:
        first = found[0][1]
        p.size, p.last_modified, p.checksum = first.size, first.last_modified, first.checksum
        p.layout = f"{first.layout} (dép. {found[0][0]}; each checked the same way)"
        p.drift = [f"dép. {dep}: {d}" for dep, one in found for d in one.drift]
    return p


def _probe_collection(source: Source, p: Probe, timeout: float, publishers: Publishers,
                      departements: Sequence[str] = ()) -> Probe:
    """A collection's catalogue: it answers, and how many feeds it lists (each feed is checked when loaded)."""
    if source.collection and source.collection.per_departement:
        return _probe_departements(source, p, timeout, publishers, departements)
    d = source.collection.discover if source.collection else None
    listed = [f for f in source.feeds() if f.url]
    if d is None:
        p.reachable, p.status = bool(listed), f"{len(listed)} feed(s) listed with a url"
        return p
    p.location = api = publishers.transport_api or d.api
    try:
        found = discover_feeds(source.id, api, d.types, d.exclude, source.feeds(), timeout=timeout)
    except QpvhubError as exc:
        p.status = str(exc)
        return p
    p.reachable = True
    p.status = f"{len(found)} GTFS feed(s) in the catalogue, {len(listed)} listed by hand"
    p.layout = "per feed, when loaded"
    return p


def probe_source(source: Source, publishers: Publishers, *, timeout: float = 20.0, previous: dict | None = None,
                 departements: Sequence[str] = ()) -> Probe:
    """Probe one entry's production location (`publishers`: the catalogues' addresses; `departements`: the
    regions', for one file per département); never raises."""
    p = Probe(source.id)
    if source.collection:
        return _probe_collection(source, p, timeout, publishers, departements)
    if source.series and source.series.current is not None:
        source = source.for_release(source.series.current)  # what a schedule loads: that release's layout
    try:
        located = resolve_production(source, publishers, timeout=timeout)
        if located is None:
            p.status = "no production location; set url in include/sources/" + source.id + ".yml"
            return p
        p.location = redact_url(located.url)
        p.checksum = located.meta.get("checksum")
        p.last_modified = located.meta.get("last_modified")
        p.size = located.meta.get("filesize")
        if located.url.startswith("s3://"):
            p.status = "s3:// (checked by the ingest DAG with the store's credentials)"
            p.reachable = True
            return p
        headers = {"User-Agent": USER_AGENT}
        resp = requests.head(located.url, headers=headers, timeout=timeout, allow_redirects=True)
        if resp.status_code in (403, 405, 501) or resp.status_code >= 500:
            resp = None  # some servers refuse HEAD: the ranged GET below tells
        if resp is not None and resp.status_code >= 400:
            p.status = f"HTTP {resp.status_code} {resp.reason}"
            return p
        size = int(resp.headers["Content-Length"]) if resp is not None and resp.headers.get("Content-Length") else None
        with requests.get(located.url, headers={**headers, "Range": f"bytes=0-{HEAD_BYTES - 1}"}, stream=True,
                          timeout=timeout) as r:
            if r.status_code >= 400:
                p.status = f"HTTP {r.status_code} {r.reason}"
                return p
            p.reachable = True
            p.status = f"HTTP {r.status_code}"
            meta = resp.headers if resp is not None else r.headers
            p.last_modified = p.last_modified or meta.get("Last-Modified")
            p.checksum = p.checksum or (meta.get("ETag") or "").strip('"') or None
            if size is None and r.headers.get("Content-Range", "").rpartition("/")[2].isdigit():
                size = int(r.headers["Content-Range"].rpartition("/")[2])
            if size is None and r.status_code == 200 and r.headers.get("Content-Length"):
                size = int(r.headers["Content-Length"])
            p.size = p.size or size
            ranged = r.status_code == 206
            limit = WHOLE_BELOW_INSEE if source.format == "insee" else WHOLE_BELOW
            small = p.size is not None and p.size <= limit
            body = r.raw.read(limit + 1 if (small or not ranged) else HEAD_BYTES, decode_content=True)
        head = body[:HEAD_BYTES]
        whole = body if (not ranged and len(body) <= limit) or (small and len(body) == p.size) else None
        if whole is None and small and source.format == "insee":  # the server answered a range: fetch it whole
            whole = requests.get(located.url, headers=headers, timeout=timeout).content
        members = None
        if head[:4] == b"PK\x03\x04" and whole is None and ranged and p.size:
            tail = requests.get(located.url, headers={**headers, "Range": f"bytes=-{HEAD_BYTES}"},
                                timeout=timeout).content
            members = _zip_names_from_tail(tail)
        if head[:6] == SEVENZIP_MAGIC and whole is None and ranged and p.size:
            members = _7z_names(RangedFile(located.url, p.size, timeout))
        p.layout, p.drift = compare_layout(source, head=head, whole=whole, members=members)
        if previous:
            same = (previous.get("etag") and p.checksum and previous["etag"].strip('"') == p.checksum) or (
                previous.get("last_modified") and previous["last_modified"] == p.last_modified)
            p.since_last_load = f"{'unchanged' if same else 'changed'} since run {previous['run_id']}"
    except QpvhubError as exc:
        p.status = str(exc)
    except (requests.RequestException, OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        text = redact_text(str(exc), source.url or "")
        dns = re.search(r"Failed to resolve '([^']+)'", text)
        p.status = (f"{type(exc).__name__}: cannot resolve {dns.group(1)} (offline, or a DNS problem)" if dns
                    else f"{type(exc).__name__}: {text[:200]}")
        if p.reachable:  # there, but its layout could not be read: that is a failure too
            p.drift = [p.status]
    return p


def check_sources(sources: dict[str, Source], publishers: Publishers, *, timeout: float = 20.0,
                  previous: dict[str, dict] | None = None, departements: Sequence[str] = ()) -> list[Probe]:
    """Probe every entry (sorted by id); `departements`: the deployment's, for entries with one file each."""
    previous = previous or {}
    out = []
    for sid, s in sorted(sources.items()):
        p = probe_source(s, publishers, timeout=timeout, previous=previous.get(sid), departements=departements)
        p.source_id = sid
        out.append(p)
    return out
