"""Credentials never leave the fetch: URLs as recorded, logged and published, and texts that quote them.

A source URL may carry a user and password (`https://user:pass@host/…`), a key in its query (`?apikey=…`,
`?pw=…`, `X-Amz-Signature=…` of a presigned URL) or a local path of the machine (`file:///home/…`). What
is kept in `meta.source_runs`, written in logs and errors, and published in lineage is the URL without
user-info, with only the query parameters known to be harmless (an allow-list of names, with plain short
values: never a denylist of secret-sounding names, which `pass=` or `pw=` escaped), and for local files
the file name only (the SHA-256 recorded beside it identifies the content).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# Query parameters shown: names known to carry no credential (an allow-list: a new name is hidden until
# someone adds it here), with a value of a plain, short shape. Anything else — `pass=`, `pw=`, `key=`,
# `X-Amz-Signature=`, a parameter named after nothing we know — is left out of what is shown.
SAFE_PARAMS = frozenset(name.lower() for name in (
    "year", "annee", "millesime", "release", "edition", "format", "f", "type", "lang", "version", "v", "page",
    "page_size", "per_page", "limit", "offset", "dataset", "resource", "id", "name", "file", "filename",
    "download", "layer", "typename", "typenames", "service", "request", "outputformat", "srsname", "bbox", "crs",
    "code", "code_insee", "insee", "dep", "departement", "region", "reg", "q", "sort", "order", "x-amz-date",
    "x-amz-expires", "x-amz-algorithm", "x-amz-signedheaders"))
PLAIN_VALUE = re.compile(r"^[\w.,:/ +-]{0,64}$")
MASK = "***"


def _is_secret(name: str, value: str = "") -> bool:
    """True unless the parameter is known harmless and its value looks like plain data."""
    return name.lower() not in SAFE_PARAMS or not PLAIN_VALUE.match(value)


def redact_url(url: str) -> str:
    """The URL as it may be shown: no user-info, no secret query parameter, a local file as its name."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.scheme == "file" or (not parts.scheme and url.startswith("/")):
        name = unquote(parts.path).rstrip("/").rsplit("/", 1)[-1]
        return f"file://…/{quote(name)}"
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_secret(k, v)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(url: str) -> list[str]:
    """The substrings of `url` that must not appear anywhere: password, user, secret parameter values,
    and a local file's directory."""
    out: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    if parts.scheme == "file" or (not parts.scheme and url.startswith("/")):
        directory = unquote(parts.path).rsplit("/", 1)[0]
        if directory:
            out += [directory, quote(directory)]
        return out
    for value in (parts.password, parts.username):
        if value:
            out += [value, unquote(value)]
    secret_values = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _is_secret(k, v) and v]
    for v in secret_values:
        out += [v, quote(v, safe=""), quote(v)]
    if secret_values:
        out.append(parts.query)  # libraries quote the query whole (e.g. '…with url: /f.csv?apikey=…')
    return sorted({s for s in out if len(s) >= 3}, key=len, reverse=True)


def redact_text(text: str, *urls: str) -> str:
    """`text` with every URL of `urls` replaced by its redacted form and their secrets masked."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    return text
