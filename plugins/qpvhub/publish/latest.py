"""`latest/` of a product is a copy of its newest version: partners read it, so it must stay byte for byte what
that version's `SHA256SUMS` lists — a publish that finds nothing new still checks it and puts back what differs."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from qpvhub.platform.errors import QpvhubError

log = logging.getLogger(__name__)


def read_sums(text: str) -> dict[str, str]:
    """A `SHA256SUMS` (sha256sum's format: digest, two spaces, name) as name → digest."""
    return {name: digest for digest, _, name in (line.partition("  ") for line in text.splitlines()) if name}


def repair(store, base: str, version: str, sums: str, local: dict[str, Path], media: dict[str, str]) -> list[str]:
    """Put back every file of `base/latest/` missing or whose bytes no longer match `sums` (the version's
    SHA256SUMS): from the file just built when it is listed in `local` (same digest), else from the version's
    own copy, checked. Returns the names put back."""
    repaired = []
    for name, digest in read_sums(sums).items():
        key = f"{base}/latest/{name}"
        if store.exists(key) and hashlib.sha256(store.get_bytes(key)).hexdigest() == digest:
            continue
        if name in local:
            store.put_file(key, local[name], media.get(name, "application/octet-stream"))
        else:
            data = store.get_bytes(f"{base}/{version}/{name}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise QpvhubError(f"{base}/latest/{name} differs from version {version}'s SHA256SUMS and the version's "
                                  "own copy does too: republish with a new version")
            store.put_bytes(key, data, media.get(name, "application/octet-stream"))
        repaired.append(name)
    if repaired:
        log.warning("%s/latest/ was no longer version %s: %s put back", base, version, ", ".join(repaired))
    return repaired
