"""The OGC API server's settings: tipg over schema `pub`, as role `qpvhub_api` (reads `pub` only).

tipg was chosen over pygeoapi: it is built for PostGIS (it reads tables' columns, types, comments and
primary keys from the catalogue itself, so each collection's description and fields come from the
comments the publication writes), serves OGC API – Features and – Tiles (MVT from `ST_AsMVT`) from one
process with no per-layer configuration file, and is asynchronous (asyncpg). pygeoapi needs a YAML
resource per layer, and a separate provider for tiles (it serves pre-generated tiles or an external
tile server). Both need a newer FastAPI/Starlette or Flask than Airflow's: the server gets its own
virtualenv (`.venv-api`), Airflow's environment is not touched.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from qpvhub.platform.embedded import EmbeddedCluster
from qpvhub.platform.env import Env
from qpvhub.platform.errors import ConfigError
from qpvhub.platform.settings import inherited_environment

API_ROLE = "qpvhub_api"


def api_uri(env: Env) -> str:
    """`postgresql://qpvhub_api:…@host:port/db`: the embedded cluster's (its generated password), or for a
    configured server `QPVHUB_API_DATABASE_URL` (the administrator's URI is never handed to the server)."""
    if env.settings.api.database_url:
        return env.settings.api.database_url
    if env.settings.postgis_uri:
        raise ConfigError("a configured PostGIS needs QPVHUB_API_DATABASE_URL: the API connects as qpvhub_api "
                          "(give it a password: ALTER ROLE qpvhub_api PASSWORD '…')")
    return EmbeddedCluster(env.settings.home / "pg", env.settings).uri("qpvhub", API_ROLE)


def api_environment(env: Env) -> dict[str, str]:
    """The server process's environment: the database as qpvhub_api, schema pub only, a title."""
    uri = api_uri(env)
    user = re.match(r"^[a-z]+://([^:@/]+)", uri)
    if not user or user.group(1) != API_ROLE:
        raise ConfigError(f"the API must connect as {API_ROLE}, not {user.group(1) if user else '?'}")
    return inherited_environment(
        ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE"), DATABASE_URL=uri,
        TIPG_DB_SCHEMAS=json.dumps(["pub"]), TIPG_DB_EXCLUDE_TABLES=json.dumps([]),
        TIPG_NAME="qpvhub — quartiers prioritaires (OGC API)", TIPG_MAX_FEATURES_PER_QUERY="10000",
        TIPG_DEFAULT_FEATURES_LIMIT="10", TIPG_DB_ONLY_SPATIAL_TABLES="true",
        # the extents tipg would read from pg_stat_user_tables, which the API's role may not read (015_api_bounds)
        TIPG_DB_SPATIAL_EXTENT="false",
        TIPG_SET_MVT_LAYERNAME="true")  # a tile layer named after its collection (pub.qpv_profil_53), not "default"


log = logging.getLogger(__name__)
RESTARTS = 5  # deaths within RESTART_WINDOW seconds before the supervisor gives up
RESTART_WINDOW = 60.0


def serve(env: Env, python: Path, host: str, port: int) -> int:
    """Run the API server (uvicorn + tipg in its own virtualenv) in the foreground and keep it running: a server
    that dies (a crash, a kill) is started again after a short pause, unless it dies RESTARTS times within a
    minute (then this exits with its status). SIGTERM (systemd, docker stop, a test) and Ctrl-C stop both."""
    app_dir = env.settings.project / "include" / "api"
    stopping = False
    deaths: list[float] = []
    with tempfile.TemporaryDirectory(prefix="qpvhub-api-") as cwd:  # tipg reads a .env in its directory
        while True:
            with subprocess.Popen([str(python), "-m", "uvicorn", "qpvhub_api_app:app", "--app-dir", str(app_dir),
                                   "--host", host, "--port", str(port), "--log-level", "warning"],
                                  env=api_environment(env), cwd=cwd) as proc:

                def stop(*_: object, proc: subprocess.Popen = proc) -> None:
                    nonlocal stopping
                    stopping = True
                    proc.terminate()

                previous = signal.signal(signal.SIGTERM, stop)
                try:
                    while True:
                        try:
                            status = proc.wait()
                            break
                        except KeyboardInterrupt:  # Ctrl-C reached the server too: let it finish
                            stopping = True
                finally:
                    signal.signal(signal.SIGTERM, previous)
            if stopping:
                return status
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            if len(deaths) >= RESTARTS:
                log.error("the API server died %d times within %.0f s (last status %s): not restarted", len(deaths),
                          RESTART_WINDOW, status)
                return status or 1
            log.error("the API server exited with status %s: restarted", status)
            time.sleep(min(2 ** (len(deaths) - 1), 8) * 0.5)
