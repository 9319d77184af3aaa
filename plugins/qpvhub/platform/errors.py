"""Error types that carry where a problem is (source, file, line/feature, column), for clear messages."""

from __future__ import annotations


class QpvhubError(Exception):
    """Base error: its message is meant for the person running the pipeline."""


class ConfigError(QpvhubError):
    """A connection variable, catalogue or region file is wrong."""


class FetchError(QpvhubError):
    """A source could not be downloaded or read from its URL (`http_status`: the server's answer, if any)."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class InputError(QpvhubError):
    """The bytes of a source do not match what its catalogue entry declares."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        file: str | None = None,
        line: int | None = None,
        feature: int | None = None,
        column: str | None = None,
    ) -> None:
        self.source, self.file, self.line, self.feature, self.column = source, file, line, feature, column
        where = []
        if source:
            where.append(f"source {source}")
        if file:
            where.append(f"file {file}")
        if line is not None:
            where.append(f"line {line}")
        if feature is not None:
            where.append(f"feature {feature}")
        if column:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ValidationFailed(QpvhubError):
    """A quality suite in `block` mode failed: nothing was promoted."""

    def __init__(self, source: str, summary: str, report: dict | None = None) -> None:
        self.source, self.report = source, report or {}
        super().__init__(f"source {source}: validation failed, nothing promoted\n{summary}")



class DatabaseError(QpvhubError):
    """PostgreSQL failed during a step (connection lost, disk full…): the step's transaction was rolled back."""


class ConcurrentRunError(QpvhubError):
    """Another run of the same source is in progress: this one does not start."""


class NothingForRegions(QpvhubError):
    """A national file has rows, none of them in the deployment's regions: nothing to load, not a failure
    of the file (the run is recorded as skipped with this reason; the previous load stays)."""
