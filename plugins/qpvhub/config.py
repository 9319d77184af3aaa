"""Settings from the environment, with one set of names for Airflow and the CLI (DESIGN.md §3).

`AIRFLOW_CONN_QPVHUB_POSTGIS` (a postgresql:// URI or Airflow JSON connection) and
`AIRFLOW_CONN_QPVHUB_STORE` (JSON: `aws` with endpoint_url + bucket, or `fs` with path). When unset,
the embedded defaults live under `QPVHUB_HOME` (default `<project>/.qpvhub`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from qpvhub.errors import ConfigError

POSTGIS_VAR = "AIRFLOW_CONN_QPVHUB_POSTGIS"
STORE_VAR = "AIRFLOW_CONN_QPVHUB_STORE"


def project_dir() -> Path:
    """The project root holding include/ and sql/: `QPVHUB_PROJECT_DIR`, else this checkout."""
    env = os.environ.get("QPVHUB_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StoreSettings:
    """Where objects go: `fs` (local directory) or `s3` (MinIO or any S3 endpoint)."""

    kind: str
    path: Path | None = None
    endpoint: str | None = None
    secure: bool = False
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    bucket: str | None = None
    region: str = "us-east-1"
    prefix: str = ""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process."""

    home: Path
    project: Path
    postgis_uri: str | None  # None → embedded cluster under home
    store: StoreSettings
    regions_path: Path | None = None  # QPVHUB_REGIONS_DIR: the deployment's region files, if not the project's

    @property
    def sources_dir(self) -> Path:
        return self.project / "include" / "sources"

    @property
    def regions_dir(self) -> Path:
        return self.regions_path or self.project / "include" / "regions"

    @property
    def sql_dir(self) -> Path:
        return self.project / "sql"


def _parse_json_conn(var: str, raw: str) -> dict:
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{var} is not valid JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(conn, dict):
        raise ConfigError(f"{var} must be a JSON object")
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{var}: 'extra' is a string that is not JSON") from exc
    conn["extra"] = extra
    return conn


def postgis_uri_from_env(environ: dict[str, str] | None = None) -> str | None:
    """Return a libpq URI from `AIRFLOW_CONN_QPVHUB_POSTGIS`, accepting URI or Airflow JSON form."""
    env = os.environ if environ is None else environ
    raw = env.get(POSTGIS_VAR, "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        conn = _parse_json_conn(POSTGIS_VAR, raw)
        if conn.get("conn_type", "postgres") not in ("postgres", "postgresql"):
            raise ConfigError(f"{POSTGIS_VAR}: conn_type must be 'postgres', got {conn.get('conn_type')!r}")
        user = quote(str(conn.get("login") or ""), safe="")
        pwd = quote(str(conn.get("password") or ""), safe="")
        auth = f"{user}:{pwd}@" if pwd else (f"{user}@" if user else "")
        port = f":{conn['port']}" if conn.get("port") else ""
        db = conn.get("schema") or conn.get("database") or "postgres"
        return f"postgresql://{auth}{conn.get('host') or 'localhost'}{port}/{db}"
    scheme = urlsplit(raw).scheme
    if scheme == "postgres":
        return "postgresql" + raw[len("postgres") :]
    if scheme != "postgresql":
        raise ConfigError(f"{POSTGIS_VAR} must be a postgresql:// URI or JSON connection, got scheme {scheme!r}")
    return raw


def store_from_env(home: Path, environ: dict[str, str] | None = None) -> StoreSettings:
    """Return store settings from `AIRFLOW_CONN_QPVHUB_STORE`, or the local directory default."""
    env = os.environ if environ is None else environ
    raw = env.get(STORE_VAR, "").strip()
    if not raw:
        return StoreSettings(kind="fs", path=home / "store")
    if not raw.startswith("{"):
        raise ConfigError(f"{STORE_VAR} must be a JSON connection ({{\"conn_type\": \"aws\"|\"fs\", ...}})")
    conn = _parse_json_conn(STORE_VAR, raw)
    ctype = conn.get("conn_type")
    extra = conn["extra"]
    if ctype == "fs":
        path = extra.get("path")
        if not path:
            raise ConfigError(f"{STORE_VAR}: conn_type 'fs' needs extra.path")
        return StoreSettings(kind="fs", path=Path(path).expanduser().resolve())
    if ctype in ("aws", "s3", "minio"):
        endpoint = extra.get("endpoint_url")
        bucket = extra.get("bucket") or extra.get("bucket_name")
        if not endpoint or not bucket:
            raise ConfigError(f"{STORE_VAR}: conn_type 'aws' needs extra.endpoint_url and extra.bucket")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{STORE_VAR}: endpoint_url must be http(s)://host:port, got {endpoint!r}")
        return StoreSettings(
            kind="s3",
            endpoint=parts.netloc,
            secure=parts.scheme == "https",
            access_key=unquote(str(conn.get("login") or "")) or None,
            secret_key=unquote(str(conn.get("password") or "")) or None,
            bucket=bucket,
            region=extra.get("region_name") or extra.get("region") or "us-east-1",
            prefix=(extra.get("prefix") or "").strip("/"),
        )
    raise ConfigError(f"{STORE_VAR}: conn_type must be 'aws' or 'fs', got {ctype!r}")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Resolve settings from the environment (read anew on every call: tests change it)."""
    env = os.environ if environ is None else environ
    project = Path(env["QPVHUB_PROJECT_DIR"]).resolve() if env.get("QPVHUB_PROJECT_DIR") else project_dir()
    home = Path(env.get("QPVHUB_HOME") or project / ".qpvhub").resolve()
    return Settings(
        home=home,
        project=project,
        postgis_uri=postgis_uri_from_env(env),
        store=store_from_env(home, env),
        regions_path=Path(env["QPVHUB_REGIONS_DIR"]).resolve() if env.get("QPVHUB_REGIONS_DIR") else None,
    )
