"""qpvhub's configuration: one object, read once from the environment by the entry point, passed down.

Every setting is an environment variable declared here, and only here (a test fails on `os.environ`
anywhere else in the package). Airflow connections are the convention for the two services (DESIGN
§3): `AIRFLOW_CONN_QPVHUB_POSTGIS` (a postgresql:// URI or an Airflow JSON connection) and
`AIRFLOW_CONN_QPVHUB_STORE` (JSON: `aws` with endpoint_url + bucket, or `fs` with path); unset, the
embedded defaults live under `QPVHUB_HOME`. `docs/configuration.md` is generated from these classes
(`qpvhub config docs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from qpvhub.platform.errors import ConfigError

POSTGIS_VAR = "AIRFLOW_CONN_QPVHUB_POSTGIS"
STORE_VAR = "AIRFLOW_CONN_QPVHUB_STORE"
CHECKOUT = Path(__file__).resolve().parents[3]  # the project root holding include/ and sql/ (this checkout)


class Section(BaseSettings):
    """One concern's settings; each field is the environment variable `<env_prefix><FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="QPVHUB_", extra="ignore", frozen=True)
    title: ClassVar[str] = ""

    @classmethod
    def env_name(cls, field: str) -> str:
        return (cls.model_config.get("env_prefix") or "") + field.upper()


class Connections(Section):
    model_config = SettingsConfigDict(env_prefix="AIRFLOW_CONN_QPVHUB_", extra="ignore", frozen=True)
    title: ClassVar[str] = "Connections (Airflow's convention, read by the CLI too)"
    postgis: str = Field("", description="PostGIS: a postgresql:// URI or an Airflow JSON connection; unset: the "
                                         "embedded cluster under QPVHUB_HOME/pg, started on demand", repr=False)
    store: str = Field("", description='Object store, JSON: {"conn_type": "aws", "login": KEY, "password": SECRET, '
                                       '"extra": {"endpoint_url": "http://…:9000", "bucket": "qpvhub"}} for MinIO/S3, '
                                       'or {"conn_type": "fs", "extra": {"path": "…"}}; unset: QPVHUB_HOME/store',
                       repr=False)


class Paths(Section):
    title: ClassVar[str] = "Paths"
    home: Path | None = Field(None, description="Working directory of the embedded defaults (cluster, store, "
                                                "Airflow); default `<project>/.qpvhub`")
    project_dir: Path | None = Field(None, description="Project root holding include/ and sql/; default this checkout")
    regions_dir: Path | None = Field(None, description="The deployment's region files, when not include/regions")
    system_dir: Path = Field(Path("/var/lib/qpvhub"), description="Where the embedded cluster of a project "
                                                                  "directory the postgres user cannot enter lives")
    pg_bindir: Path | None = Field(None, description="PostgreSQL server binaries for the embedded cluster; default "
                                                     "the newest under /usr/lib/postgresql with PostGIS")


class Http(Section):
    model_config = SettingsConfigDict(env_prefix="QPVHUB_HTTP_", extra="ignore", frozen=True)
    title: ClassVar[str] = "Downloads"
    timeout: float = Field(60.0, gt=0, description="Seconds a source's server may take to answer")
    retries: int = Field(3, ge=1, description="Attempts per download (5xx, 429 and network errors are retried)")
    backoff: float = Field(1.0, ge=0, description="First wait between attempts, doubled each time (seconds)")


class Runs(Section):
    title: ClassVar[str] = "Runs"
    stale_run_hours: float = Field(6.0, gt=0, description="A run still 'running' after this long (a worker killed "
                                                          "without its failure callback) no longer blocks a new one")


class Publishers(Section):
    title: ClassVar[str] = "Publishers' catalogues (tests play them on loopback)"
    datagouv_api: str = Field("https://www.data.gouv.fr/api/1", description="data.gouv.fr API v1 root")
    insee_site: str = Field("https://www.insee.fr", description="insee.fr root, whose pages list their files")
    transport_api: str | None = Field(None, description="transport.data.gouv.fr's dataset list; default the "
                                                        "catalogue's (collection.discover.api)")


class Monitoring(Section):
    title: ClassVar[str] = "Monitoring"
    stale_factor: float = Field(2.0, gt=0, description="A source is stale after this many schedule intervals "
                                                       "(plus a day) without a confirmed load")
    webhook_url: str | None = Field(None, description="Failures are posted here as {\"text\": …} (Mattermost, "
                                                      "Slack, Tchap)", repr=False)
    alert_email: str | None = Field(None, description="Failures are mailed here (comma-separated) through "
                                                      "Airflow's [smtp] settings")


class Publication(Section):
    title: ClassVar[str] = "Publication"
    secrecy_threshold: int = Field(11, ge=1, description="Counts below it, and values computed on them, are not "
                                                         "published (statistical secrecy)")
    chromium: str | None = Field(None, description="Chromium executable that prints the fiches to PDF; default "
                                                   "chromium on PATH")


class Api(Section):
    model_config = SettingsConfigDict(env_prefix="QPVHUB_API_", extra="ignore", frozen=True)
    title: ClassVar[str] = "OGC API"
    url: str | None = Field(None, description="The API's public address, linked from the region pages")
    python: Path | None = Field(None, description="Python of the API's own virtualenv; default .venv-api/bin/python")
    database_url: str | None = Field(None, description="The API's connection (role qpvhub_api) for a configured "
                                                       "PostGIS; the embedded cluster's is generated", repr=False)


class Scheduling(Section):
    title: ClassVar[str] = "Airflow"
    db_pool: str = Field("default_pool", description="Pool of the heavy database tasks (`make airflow` creates "
                                                     "qpvhub_db)")
    task_retries: int = Field(2, ge=0, description="Retries of a failed task (exponential backoff)")
    airflow_db: str = Field("airflow", description="Airflow's metadata database on the PostGIS server (`make "
                                                   "airflow`)")


class Locate(Section):
    model_config = SettingsConfigDict(env_prefix="QPVHUB_LOCATE_", extra="ignore", frozen=True)
    title: ClassVar[str] = "Address and point lookup (qpvhub locate)"
    geocoder_url: str = Field("https://data.geopf.fr/geocodage/search/csv/",
                              description="IGN Géoplateforme's batch geocoder (CSV in, CSV out; shared/SOURCES.md §12)")
    score_min: float = Field(0.7, ge=0, le=1, description="A geocoding score under it makes the row « a_verifier »: "
                                                          "the geocoder answers ok even to nonsense")
    margin_m: float = Field(20.0, ge=0, description="A point closer than this to a QPV boundary is « a_verifier »")
    chunk_lines: int = Field(5000, ge=1, description="Lines per request to the geocoder (its limit is higher)")
    chunk_bytes: int = Field(8 * 1024**2, ge=1024, description="Bytes per request to the geocoder, at most")
    rate_per_s: float = Field(40.0, gt=0, description="Requests per second sent to the geocoder, at most (its "
                                                      "documented limit is 50; a 429 is honoured all the same)")
    retention_days: int = Field(7, ge=1, description="Days a partner's result stays in its outbox (MinIO lifecycle "
                                                     "rule, a sweep on the local store)")


SECTIONS: dict[str, type[Section]] = {
    "connections": Connections, "paths": Paths, "http": Http, "runs": Runs, "publishers": Publishers,
    "monitoring": Monitoring, "publication": Publication, "api": Api, "scheduling": Scheduling, "locate": Locate}


class StoreSettings(BaseModel):
    """Where objects go: `fs` (local directory) or `s3` (MinIO or any S3 endpoint)."""

    model_config = ConfigDict(frozen=True)
    kind: str
    path: Path | None = None
    endpoint: str | None = None
    secure: bool = False
    access_key: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False)
    bucket: str | None = None
    region: str = "us-east-1"
    prefix: str = ""


class Settings(BaseModel):
    """The resolved configuration of one process: every section, and what is derived from them."""

    model_config = ConfigDict(frozen=True)
    connections: Connections
    paths: Paths
    http: Http
    runs: Runs
    publishers: Publishers
    monitoring: Monitoring
    publication: Publication
    api: Api
    scheduling: Scheduling
    locate: Locate
    project: Path
    home: Path
    postgis_uri: str | None = Field(repr=False)  # None → the embedded cluster under home
    store: StoreSettings

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read every section from the environment now (the entry point calls this once)."""
        try:
            sections = {name: section() for name, section in SECTIONS.items()}
        except ValidationError as exc:
            raise ConfigError(_env_errors(exc)) from None
        paths: Paths = sections["paths"]
        project = (paths.project_dir or CHECKOUT).resolve()
        home = (paths.home or project / ".qpvhub").resolve()
        values = {**sections, "project": project, "home": home,
                  "postgis_uri": parse_postgis(sections["connections"].postgis),
                  "store": parse_store(sections["connections"].store, home)}
        return cls(**{**values, **overrides})

    @property
    def include_dir(self) -> Path:
        return self.project / "include"

    @property
    def sources_dir(self) -> Path:
        return self.include_dir / "sources"

    @property
    def regions_dir(self) -> Path:
        return (self.paths.regions_dir or self.include_dir / "regions").resolve()

    @property
    def reference_dir(self) -> Path:
        return self.include_dir / "reference"

    @property
    def qpv_lists_path(self) -> Path:
        return self.include_dir / "qpv_lists.yml"

    @property
    def sql_dir(self) -> Path:
        return self.project / "sql"


def load_settings() -> Settings:
    """The environment's settings, read now (`Settings.load`)."""
    return Settings.load()


def _env_errors(exc: ValidationError) -> str:
    """A section's validation errors, naming the environment variables."""
    title = exc.title
    section = next((s for s in SECTIONS.values() if s.__name__ == title), None)
    lines = ["invalid configuration:"]
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        name = section.env_name(field) if section else field
        lines.append(f"  - {name}={err.get('input')!r}: {err['msg']}")
    return "\n".join(lines)


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


def parse_postgis(raw: str) -> str | None:
    """A libpq URI from `AIRFLOW_CONN_QPVHUB_POSTGIS`'s value (URI or Airflow JSON form); None when empty."""
    raw = (raw or "").strip()
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


def parse_store(raw: str, home: Path) -> StoreSettings:
    """Store settings from `AIRFLOW_CONN_QPVHUB_STORE`'s value, or the local directory under `home`."""
    raw = (raw or "").strip()
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


def quiet_libraries() -> None:
    """Settings the libraries read from the environment themselves: GX's usage statistics off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def inherited_environment(keys: Iterable[str] | None = None, **extra: str) -> dict[str, str]:
    """The environment a child process starts with: this one's (or only `keys` of it), plus `extra`."""
    base: Mapping[str, str] = os.environ
    kept = dict(base) if keys is None else {k: base[k] for k in keys if k in base}
    return {**kept, **extra}


def reference_markdown() -> str:
    """docs/configuration.md: every variable, its default and what it does, from the classes above."""
    lines = ["# Configuration", "",
             "Generated by `qpvhub config docs` from `plugins/qpvhub/platform/settings.py`; a test checks it is "
             "current. Every setting is an environment variable, read once when a command or an Airflow task "
             "starts. Airflow connections are the convention for PostGIS and the object store: the CLI reads the "
             "same names. Secrets belong in the environment or a secrets backend, never in git.", ""]
    for section in SECTIONS.values():
        lines += [f"## {section.title}", "", "| variable | default | what it does |", "|---|---|---|"]
        for name, field in section.model_fields.items():
            default = field.default
            shown = "(unset)" if default in (None, "") else f"`{default}`"
            text = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{section.env_name(name)}` | {shown} | {text} |")
        lines.append("")
    return "\n".join(lines)
