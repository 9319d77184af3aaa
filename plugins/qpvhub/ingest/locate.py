"""Where a source's file is now: a plain URL, or a publisher's catalogue resolved at fetch time.

`datagouv: {dataset: <slug>, resource: <resource id or title pattern>, format: zip}` asks the data.gouv.fr
API v1 (`/api/1/datasets/<slug>/`: `last_update`, `resources[]` with `id`, `title`, `url`, `latest`,
`format`, `filesize`, `last_modified`) which resource is current, so that a file republished under a new
URL is followed without editing the catalogue. What the API said is recorded with the run: when the
resource, its date and size are those of the last success, nothing is downloaded (and the download
itself still uses ETag / Last-Modified and the file's SHA-256).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import requests

from qpvhub.platform.errors import FetchError

if TYPE_CHECKING:
    from qpvhub.catalog.model import Source
    from qpvhub.platform.settings import Publishers

DATAGOUV_API = "https://www.data.gouv.fr/api/1"
INSEE_SITE = "https://www.insee.fr"
# a download link of an insee.fr page, absolute or relative (public code lists a page's files the same way)
INSEE_FILE_LINK = re.compile(r"""(?:https?://(?:www\.)?insee\.fr)?(/fr/statistiques/fichier/[0-9]+/[^"'<>\s?#]+\.[A-Za-z0-9]+)""")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _get(url: str, where: str, who: str, accept: str, timeout: float, not_found: str | None = None
         ) -> requests.Response:
    """A publisher's catalogue answer (API or page), or a FetchError naming `where` and what went wrong."""
    try:
        resp = requests.get(url, timeout=(min(timeout, 15.0), timeout), headers={"Accept": accept})
    except requests.RequestException as exc:
        dns = re.search(r"Failed to resolve '([^']+)'", str(exc))
        why = (f"cannot resolve {dns.group(1)} (offline, or a DNS problem)" if dns
               else f"{type(exc).__name__}: {exc}")
        raise FetchError(f"{where}: {who} did not answer ({why})") from None
    if resp.status_code == 404 and not_found:
        raise FetchError(f"{where} not found (HTTP 404 at {url}): {not_found}")
    if resp.status_code >= 400:
        raise FetchError(f"{where}: HTTP {resp.status_code} {resp.reason} at {url}")
    return resp


@dataclass
class Located:
    """The URL to fetch and what the publisher's catalogue said about it (recorded with the run)."""

    url: str
    meta: dict = field(default_factory=dict)

    def same_resource(self, previous: dict | None) -> bool:
        """The catalogue describes the very resource of a previous success (id, date and size known)."""
        if not previous or not self.meta.get("last_modified"):
            return False
        keys = ("resource_id", "last_modified", "filesize", "checksum", "url")
        return all(previous.get(k) == self.meta.get(k) for k in keys)


def resolve_datagouv(source_id: str, dataset: str, resource: str, fmt: str | None = None, *,
                     api: str = DATAGOUV_API, timeout: float = 30.0) -> Located:
    """Pick the dataset's resource (by id, else by title pattern: the most recently modified match); `api`:
    the API's root (QPVHUB_DATAGOUV_API)."""
    url = f"{api.rstrip('/')}/datasets/{dataset}/"
    where = f"source {source_id}: data.gouv.fr dataset {dataset!r}"
    resp = _get(url, where, "the API", "application/json", timeout, "renamed or withdrawn? check its page")
    try:
        doc = resp.json()
        resources = list(doc["resources"])
    except (ValueError, KeyError, TypeError):
        raise FetchError(f"{where}: the API answer at {url} is not a dataset (no resources list)") from None
    if UUID.match(resource.lower()):
        found = [r for r in resources if str(r.get("id", "")).lower() == resource.lower()]
    else:
        pattern = re.compile(resource, re.IGNORECASE)
        found = [r for r in resources if pattern.search(str(r.get("title") or ""))]
        found.sort(key=lambda r: str(r.get("last_modified") or r.get("created_at") or ""), reverse=True)
    if not found:
        titles = [str(r.get("title")) for r in resources][:15]
        raise FetchError(f"{where}: no resource matches {resource!r}; resources: {titles}")
    chosen = found[0]
    got = str(chosen.get("format") or "").lower()
    if fmt and got and got != fmt.lower():
        raise FetchError(f"{where}: resource {chosen.get('title')!r} is now {got!r}, the catalogue expects "
                         f"{fmt!r}: the layout may have changed, check it before loading")
    target = chosen.get("latest") or chosen.get("url")
    if not target:
        raise FetchError(f"{where}: resource {chosen.get('id')} has no url")
    checksum = chosen.get("checksum")
    meta = {"kind": "datagouv", "dataset": dataset, "dataset_last_update": doc.get("last_update"),
            "resource_id": chosen.get("id"), "title": chosen.get("title"), "format": got or None,
            "filesize": chosen.get("filesize"), "last_modified": chosen.get("last_modified"),
            "checksum": checksum.get("value") if isinstance(checksum, dict) else checksum,
            "url": chosen.get("url")}
    return Located(url=str(target), meta=meta)


def resolve_insee(source_id: str, page: int, file: str, *, site: str = INSEE_SITE, timeout: float = 30.0
                  ) -> Located:
    """The download link of insee.fr page `page` whose file name is `file` (a name, or a pattern with * ? [ ]);
    none, or several, is an error naming the files the page offers. `site`: insee.fr's root (QPVHUB_INSEE_SITE)."""
    site = site.rstrip("/")
    from urllib.parse import unquote

    from qpvhub.ingest.archive import member_matches

    url = f"{site}/fr/statistiques/{page}"
    where = f"source {source_id}: INSEE page {page}"
    resp = _get(url, where, "insee.fr", "text/html", timeout,
                f"a new millésime has its own page; set insee.page in include/sources/{source_id}.yml")
    links: dict[str, str] = {}
    for path in INSEE_FILE_LINK.findall(resp.text):
        links.setdefault(posixpath.basename(unquote(path)), path)
    if not links:
        raise FetchError(f"{where}: no download link (/fr/statistiques/fichier/…) on {url}: "
                         f"has the page moved, or its layout changed?")
    found = sorted(name for name in links if member_matches(name, file))
    if len(found) != 1:
        what = "no file matches" if not found else f"{len(found)} files match"
        raise FetchError(f"{where}: {what} {file!r}; files on the page: {sorted(links)[:20]}"
                         + (" — narrow insee.file" if found else ""))
    target = site + links[found[0]]
    meta = {"kind": "insee", "page": page, "file": found[0], "url": target,
            "last_modified": None, "filesize": None, "checksum": None}
    return Located(url=target, meta=meta)


def resolve_production(source: Source, publishers: Publishers, *, timeout: float = 30.0) -> Located | None:
    """Where an entry's production file is now: its catalogue locator resolved (at the publishers' addresses of
    the settings), or its URL; None without one. (The catalogue allows one of `url`, `datagouv`, `insee`.) Runs and
    `sources check` both ask here."""
    if source.datagouv:
        d = source.datagouv
        return resolve_datagouv(source.id, d.dataset, d.resource, d.format, api=publishers.datagouv_api,
                                timeout=timeout)
    if source.insee:
        return resolve_insee(source.id, source.insee.page, source.insee.file, site=publishers.insee_site,
                             timeout=timeout)
    return Located(source.url) if source.url else None


def feed_id_of(slug: str, resource_id: str) -> str:
    """A stable partition id for a discovered feed: the dataset slug, shortened, and 6 hex digits of
    (slug, resource) so that two GTFS resources of one dataset stay apart."""
    import hashlib

    stem = re.sub(r"[^a-z0-9]+", "_", slug.lower()).strip("_")[:22] or "feed"
    if not stem[0].isalpha():
        stem = "f" + stem[:21]
    return f"{stem}_{hashlib.sha1(f'{slug}/{resource_id}'.encode()).hexdigest()[:6]}"


def discover_feeds(source_id: str, api: str, types: list[str], exclude: list[str], listed: list, *,
                   timeout: float = 60.0) -> list[tuple[object, dict]]:
    """Every available GTFS resource of the catalogue's datasets of `types`, as (Feed, located meta);
    a listed feed naming the same dataset keeps its id and title. Fields used are those public code
    confirms (SOURCES.md §9): dataset id, slug, title, type, publisher.name, resources[format, url,
    original_url, is_available, updated, id, title]."""
    from qpvhub.catalog.model import Feed

    url = api
    where = f"source {source_id}: transport.data.gouv.fr"
    resp = _get(url, where, "the API", "application/json", timeout)
    try:
        datasets = list(resp.json())
    except (ValueError, TypeError):
        raise FetchError(f"{where}: the answer at {url} is not a list of datasets") from None
    by_dataset = {f.dataset: f for f in listed if getattr(f, "dataset", None)}
    out: list[tuple[object, dict]] = []
    for d in datasets:
        if not isinstance(d, dict) or d.get("type") not in types:
            continue
        slug, did = str(d.get("slug") or d.get("id") or ""), str(d.get("id") or "")
        if slug in exclude or did in exclude:
            continue
        gtfs = [r for r in d.get("resources") or [] if isinstance(r, dict)
                and str(r.get("format") or "").upper() == "GTFS" and r.get("is_available", True) is not False
                and (r.get("url") or r.get("original_url"))]
        for r in gtfs:
            mine = by_dataset.get(slug) if len(gtfs) == 1 else None
            publisher = (d.get("publisher") or {}).get("name") if isinstance(d.get("publisher"), dict) else None
            feed = Feed(id=mine.id if mine else feed_id_of(slug, str(r.get("id"))),
                        title=mine.title if mine else str(d.get("title") or slug)[:120],
                        publisher=(mine.publisher if mine else "") or publisher or "",
                        url=str(r.get("url") or r.get("original_url")), dataset=slug,
                        licence=mine.licence if mine else str(d.get("licence") or ""))
            meta = {"kind": "transport", "dataset": slug, "resource_id": r.get("id"), "title": r.get("title"),
                    "last_modified": r.get("updated"), "filesize": None, "checksum": None, "url": feed.url}
            out.append((feed, meta))
    ids = [f.id for f, _ in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise FetchError(f"{where}: two resources map to the same feed id {dup}: list them by hand")
    return out
