"""What every step needs, resolved once from the settings: the PostGIS URI and the object store."""

from __future__ import annotations

from dataclasses import dataclass

from qpvhub.platform.db import require_migrated, resolve_uri
from qpvhub.platform.settings import Settings
from qpvhub.platform.store import Store, open_store


@dataclass
class Env:
    """Settings, the PostGIS URI and the store of one process (a CLI command, an Airflow task)."""

    settings: Settings
    uri: str
    store: Store

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, check_schema: bool = True) -> Env:
        """The environment of `settings` (read from the environment when not given). With `check_schema`, a
        database behind the code is refused with the command that migrates it: steps never migrate."""
        settings = settings or Settings.load()
        uri = resolve_uri(settings)
        if check_schema:
            require_migrated(uri, settings.sql_dir)
        return cls(settings=settings, uri=uri, store=open_store(settings.store))
