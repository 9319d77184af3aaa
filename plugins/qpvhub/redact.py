"""Credentials never leave the fetch: URLs as recorded, logged and published, and texts that quote them.

A source URL may carry a user and password (`https://user:pass@host/…`), an API key in its query
(`?apikey=…`, `X-Amz-Signature=…` of a presigned URL) or a local path of the machine (`file:///home/…`).
What is kept in `meta.source_runs`, written in logs and errors, and published in lineage is the URL
without user-info, without secret-looking query parameters, and for local files the file name only
(the SHA-256 recorded beside it identifies the content).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

SECRET_PARAM = re.compile(
    r"(^x-amz-(?!date$|expires$|signedheaders$)|key|token|secret|passw|pwd|signature|sig$|credential|auth|session)",
    re.IGNORECASE)
MASK = "***"


def _is_secret(name: str) -> bool:
    return bool(SECRET_PARAM.search(name))


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
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_secret(k)])
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
    secret_values = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _is_secret(k) and v]
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
