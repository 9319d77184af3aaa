"""Configuration: one settings object, one set of names (AIRFLOW_CONN_QPVHUB_*, QPVHUB_*), embedded defaults."""

import json
import re
from pathlib import Path

import pytest

from qpvhub.platform.errors import ConfigError
from qpvhub.platform.settings import SECTIONS, Settings, parse_postgis, parse_store, reference_markdown
from tests.conftest import ROOT


def test_postgis_unset_means_embedded() -> None:
    assert parse_postgis("") is None


def test_postgis_uri_and_airflow_postgres_scheme() -> None:
    assert parse_postgis("postgresql://u:p@h:5433/db") == "postgresql://u:p@h:5433/db"
    # Airflow writes postgres:// for its postgres connection type; libpq wants postgresql://
    assert parse_postgis("postgres://u@h/db") == "postgresql://u@h/db"


def test_postgis_airflow_json_connection() -> None:
    raw = json.dumps({"conn_type": "postgres", "host": "db", "port": 5432, "login": "loader",
                      "password": "s3cr@t/x", "schema": "qpvhub"})
    assert parse_postgis(raw) == "postgresql://loader:s3cr%40t%2Fx@db:5432/qpvhub"


def test_postgis_bad_scheme_is_named() -> None:
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_QPVHUB_POSTGIS.*mysql"):
        parse_postgis("mysql://h/db")


def test_store_default_is_local_directory_under_home(tmp_path: Path) -> None:
    s = parse_store("", tmp_path)
    assert s.kind == "fs" and s.path == tmp_path / "store"


def test_store_fs_and_aws_connections(tmp_path: Path) -> None:
    fs = parse_store(json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path / "x")}}), tmp_path)
    assert fs.kind == "fs" and fs.path == tmp_path / "x"
    aws = parse_store(json.dumps({"conn_type": "aws", "login": "KEY", "password": "SECRET",
                                  "extra": {"endpoint_url": "https://minio.example:9000", "bucket": "qpvhub"}}),
                      tmp_path)
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
        parse_store(raw, tmp_path)


def test_settings_read_once_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPVHUB_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("QPVHUB_HTTP_TIMEOUT", "7.5")
    monkeypatch.setenv("QPVHUB_SECRECY_THRESHOLD", "15")
    monkeypatch.delenv("AIRFLOW_CONN_QPVHUB_STORE", raising=False)
    s = Settings.load()
    assert s.home == tmp_path / "h" and s.store.path == tmp_path / "h" / "store"
    assert (s.sources_dir / "qpv_2015.yml").exists() and s.qpv_lists_path.exists()
    assert s.http.timeout == 7.5 and s.publication.secrecy_threshold == 15
    monkeypatch.setenv("QPVHUB_HTTP_TIMEOUT", "9")
    assert s.http.timeout == 7.5  # an object read once, not a view of the environment
    assert "postgis_uri" not in repr(s) or "None" in repr(s)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPVHUB_HTTP_RETRIES", "three")
    with pytest.raises(ConfigError, match=r"QPVHUB_HTTP_RETRIES='three'"):
        Settings.load()


def test_every_variable_has_a_description_and_the_reference_is_current() -> None:
    for section in SECTIONS.values():
        for name, field in section.model_fields.items():
            assert field.description, f"{section.env_name(name)} has no description"
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale: `qpvhub config docs > docs/configuration.md`")


def test_no_environment_read_outside_the_settings_module() -> None:
    offenders = []
    for path in (ROOT / "plugins" / "qpvhub").rglob("*.py"):
        if path.name == "settings.py" and path.parent.name == "platform":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bos\.environ\b|\bos\.getenv\b|\bgetenv\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"read the environment through qpvhub.platform.settings only: {offenders}"
