"""Reader interface and the checks every reader shares (HTML error pages, empty files)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from qpvhub.platform.errors import InputError


@dataclass
class ReaderOutput:
    """What a reader found before streaming: the columns and the CRS of the geometries."""

    columns: list[str]
    crs: str | None = None
    geometry_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sniff_not_data(path: Path, source: str, expected: str) -> None:
    """Refuse empty files and HTML pages (an error page served with status 200) before parsing."""
    with path.open("rb") as f:
        head = f.read(2048)
    if not head.strip():
        raise InputError(f"empty file, expected {expected}", source=source, file=path.name)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
        text.startswith(b"<") and b"<html" in text
    ):
        raise InputError(f"the server sent an HTML page, not {expected} (an error or login page?)",
                         source=source, file=path.name)


class Reader(ABC):
    """Base class: subclasses set `format` and implement `open` and `batches`."""

    format: ClassVar[str]
    expected: ClassVar[str]

    def __init__(self, path: Path, source: str, options: dict[str, Any] | None = None,
                 batch_size: int = 50_000) -> None:
        self.path, self.source, self.options, self.batch_size = path, source, options or {}, batch_size
        # (first, last) day the data is valid for, set by readers that can tell (GTFS calendars)
        self.period: tuple | None = None
        self.keep: list[str] | None = None  # the columns the load reads (None: all)

    def keep_only(self, columns: list[str]) -> None:
        """Read only these columns (a reader may still return others; the load ignores them)."""
        self.keep = list(columns)

    def error(self, message: str, **where: Any) -> InputError:
        return InputError(message, source=self.source, file=self.path.name, **where)

    @abstractmethod
    def open(self) -> ReaderOutput:
        """Check the file and describe it (columns, CRS) without reading it all."""

    @abstractmethod
    def batches(self) -> Iterator[pd.DataFrame]:
        """Stream the rows as DataFrames of about `batch_size` rows (whole parsed blocks for CSV)."""
