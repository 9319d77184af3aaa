"""Configuration: one set of names (AIRFLOW_CONN_QPVHUB_*), embedded defaults when unset."""

import json
from pathlib import Path

import pytest
from qpvhub.config import load_settings, postgis_uri_from_env, store_from_env
from qpvhub.errors import ConfigError


def test_postgis_unset_means_embedded() -> None:
    assert postgis_uri_from_env({}) is None


def test_postgis_uri_and_airflow_postgres_scheme() -> None:
    assert postgis_uri_from_env({"AIRFLOW_CONN_QPVHUB_POSTGIS": "postgresql://u:p@h:5433/db"}) == "postgresql://u:p@h:5433/db"
    # Airflow writes postgres:// for its postgres connection type; libpq wants postgresql://
    assert postgis_uri_from_env({"AIRFLOW_CONN_QPVHUB_POSTGIS": "postgres://u@h/db"}) == "postgresql://u@h/db"


def test_postgis_airflow_json_connection() -> None:
    raw = json.dumps({"conn_type": "postgres", "host": "db", "port": 5432, "login": "loader",
                      "password": "s3cr@t/x", "schema": "qpvhub"})
    assert postgis_uri_from_env({"AIRFLOW_CONN_QPVHUB_POSTGIS": raw}) == "postgresql://loader:s3cr%40t%2Fx@db:5432/qpvhub"


def test_postgis_bad_scheme_is_named() -> None:
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_QPVHUB_POSTGIS.*mysql"):
        postgis_uri_from_env({"AIRFLOW_CONN_QPVHUB_POSTGIS": "mysql://h/db"})


def test_store_default_is_local_directory_under_home(tmp_path: Path) -> None:
    s = store_from_env(tmp_path, {})
    assert s.kind == "fs" and s.path == tmp_path / "store"


def test_store_fs_and_aws_connections(tmp_path: Path) -> None:
    fs = store_from_env(tmp_path, {"AIRFLOW_CONN_QPVHUB_STORE": json.dumps(
        {"conn_type": "fs", "extra": {"path": str(tmp_path / "x")}})})
    assert fs.kind == "fs" and fs.path == tmp_path / "x"
    aws = store_from_env(tmp_path, {"AIRFLOW_CONN_QPVHUB_STORE": json.dumps(
        {"conn_type": "aws", "login": "KEY", "password": "SECRET",
         "extra": {"endpoint_url": "https://minio.example:9000", "bucket": "qpvhub"}})})
    assert (aws.kind, aws.endpoint, aws.secure, aws.bucket, aws.access_key) == (
        "s3", "minio.example:9000", True, "qpvhub", "KEY")
    assert "SECRET" not in repr(aws)


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"conn_type": "aws", "extra": {"bucket": "b"}}), "endpoint_url"),
    (json.dumps({"conn_type": "ftp"}), "'aws' or 'fs'"),
    (json.dumps({"conn_type": "fs", "extra": {}}), "extra.path"),
])
def test_store_errors_say_what_is_wrong(tmp_path: Path, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        store_from_env(tmp_path, {"AIRFLOW_CONN_QPVHUB_STORE": raw})


def test_settings_home_and_project(tmp_path: Path) -> None:
    s = load_settings({"QPVHUB_HOME": str(tmp_path / "h")})
    assert s.home == tmp_path / "h"
    assert (s.sources_dir / "qpv_2015.yml").exists()
    assert s.store.path == tmp_path / "h" / "store"
