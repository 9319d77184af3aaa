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
import os
import re

API_ROLE = "qpvhub_api"


def api_uri(env) -> str:
    """`postgresql://qpvhub_api:…@host:port/db`: the embedded cluster's (its generated password), or for a
    configured server `QPVHUB_API_DATABASE_URL` (the administrator's URI is never handed to the server)."""
    if os.environ.get("QPVHUB_API_DATABASE_URL"):
        return os.environ["QPVHUB_API_DATABASE_URL"]
    if env.settings.postgis_uri:
        from qpvhub.errors import ConfigError

        raise ConfigError("a configured PostGIS needs QPVHUB_API_DATABASE_URL: the API connects as qpvhub_api "
                          "(give it a password: ALTER ROLE qpvhub_api PASSWORD '…')")
    from qpvhub.embedded import EmbeddedCluster

    return EmbeddedCluster(env.settings.home / "pg").uri("qpvhub", API_ROLE)


def api_environment(env) -> dict[str, str]:
    """The server process's environment: the database as qpvhub_api, schema pub only, a title."""
    uri = api_uri(env)
    user = re.match(r"^[a-z]+://([^:@/]+)", uri)
    if not user or user.group(1) != API_ROLE:
        from qpvhub.errors import ConfigError

        raise ConfigError(f"the API must connect as {API_ROLE}, not {user.group(1) if user else '?'}")
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE")}
    return {**keep, "DATABASE_URL": uri, "TIPG_DB_SCHEMAS": json.dumps(["pub"]),
            "TIPG_DB_EXCLUDE_TABLES": json.dumps([]), "TIPG_NAME": "qpvhub — quartiers prioritaires (OGC API)",
            "TIPG_MAX_FEATURES_PER_QUERY": "10000", "TIPG_DEFAULT_FEATURES_LIMIT": "10",
            "TIPG_DB_ONLY_SPATIAL_TABLES": "true"}
