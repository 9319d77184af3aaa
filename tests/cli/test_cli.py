"""The `qpvhub` command as a user runs it: a subprocess, real PostGIS, the configured store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import QPV_SAMPLE

pytestmark = pytest.mark.postgis


def _qpvhub(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qpvhub.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture
def cli_env(db_uri: str, tmp_path: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["AIRFLOW_CONN_QPVHUB_POSTGIS"] = db_uri
    env["AIRFLOW_CONN_QPVHUB_STORE"] = json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path / "store")}})
    env["QPVHUB_HOME"] = str(tmp_path / "home")
    return env


def _counts(uri: str) -> dict[str, int]:
    with psycopg.connect(uri) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("ref.qpv", "ref.commune", "mart.qpv_indicator")}


def test_demo_twice_uses_configured_connections_and_changes_no_row_count(cli_env, db_uri, tmp_path) -> None:
    first = _qpvhub("demo", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "qpv_2015: 6 rows loaded" in first.stdout and "region 53: published" in first.stdout
    # what to open next, in French, and no password anywhere in what the demo prints (review: the analyst's was)
    assert "À ouvrir maintenant" in first.stdout and "published/53/index.html" in first.stdout
    assert "qpv_profil/latest/qpv/QP035001.html" in first.stdout
    # only real data reach the products, and the products say which QPV list they describe
    for sid in ("bpe", "flood_zones"):
        assert f"→ {sid}: its bundled file is a FIXTURE (invented figures or positions), not loaded" in first.stdout
    assert "→ insee_qpv24_caf: no offline sample, not loaded" in first.stdout
    assert "QPV list 2015 →" in first.stdout and "décrivent la liste 2015 des QPV (décret 2014-1750)" in first.stdout
    from urllib.parse import urlsplit

    secret = urlsplit(db_uri).password
    assert not secret or secret not in first.stdout + first.stderr
    counts = _counts(db_uri)
    assert (counts["ref.qpv"], counts["ref.commune"]) == (6, 2430)
    with psycopg.connect(db_uri) as conn:
        themes = conn.execute("SELECT count(DISTINCT theme) FROM mart.indicator_catalog c "
                              "WHERE EXISTS (SELECT 1 FROM mart.qpv_indicator i WHERE i.indicator_id = c.indicator_id)"
                              ).fetchone()[0]
    # every theme whose sources bundle real files; services (BPE) and climat (flood zones) bundle FIXTURES only,
    # which the demo leaves out: no invented figure reaches its products
    assert themes == 4
    assert (tmp_path / "store" / "published" / "53" / "qpv_profil" / "latest" / "SHA256SUMS").exists()
    assert not (tmp_path / "home" / "pg").exists()  # the configured PostGIS, not the embedded one
    second = _qpvhub("demo", env=cli_env)
    assert second.returncode == 0, second.stderr
    assert "unchanged since the last successful load, skipped" in second.stdout
    assert "region 53: unchanged" in second.stdout
    assert _counts(db_uri) == counts
    status = _qpvhub("status", env=cli_env)
    assert status.returncode == 0 and "qpv_2015" in status.stdout and "skipped" in status.stdout


def test_bad_input_exits_non_zero_with_a_clear_message(cli_env, db_uri, tmp_path) -> None:
    assert _qpvhub("ingest", "cog_communes", "--sample", env=cli_env).returncode == 0
    assert _qpvhub("ingest", "qpv_2015", "--sample", env=cli_env).returncode == 0
    before = _counts(db_uri)
    bad = tmp_path / "QPV.geojson"
    bad.write_text(QPV_SAMPLE.read_text(encoding="utf-8").replace('"NOM_QP"', '"NOM"'), encoding="utf-8")
    res = _qpvhub("ingest", "qpv_2015", "--url", bad.as_uri(), env=cli_env)
    assert res.returncode == 1
    assert res.stderr.strip().startswith(
        "qpvhub ingest: error: source qpv_2015, file QPV.geojson, column 'NOM_QP': missing column(s) ['NOM_QP']")
    assert "Traceback" not in res.stderr
    assert _counts(db_uri) == before


def test_unknown_source_and_spec_file_path(cli_env, tmp_path) -> None:
    res = _qpvhub("ingest", "nope", env=cli_env)
    assert res.returncode == 1 and "unknown source 'nope'" in res.stderr
    spec = tmp_path / "broken.yml"
    spec.write_text("id: broken\ntitle: x\n", encoding="utf-8")
    res = _qpvhub("ingest", str(spec), env=cli_env)
    assert res.returncode == 1 and "broken.yml: invalid catalogue file" in res.stderr and "publisher" in res.stderr


def test_validate_without_loading(cli_env, db_uri, tmp_path) -> None:
    assert _qpvhub("ingest", "cog_communes", "--sample", env=cli_env).returncode == 0
    ok = _qpvhub("validate", "qpv_2015", "--sample", env=cli_env)
    assert ok.returncode == 0, ok.stderr
    assert "qpv_2015: 6 rows read, 6 would load" in ok.stdout and ok.stdout.rstrip().endswith("VALID")
    bad = tmp_path / "QPV.geojson"
    bad.write_text(QPV_SAMPLE.read_text(encoding="utf-8").replace('"QP035004"', '"QN03504M"'), encoding="utf-8")
    res = _qpvhub("validate", "qpv_2015", "--file", str(bad), env=cli_env)
    assert res.returncode == 1
    assert "✗ expect_column_values_to_match_regex on 'code_qp'" in res.stdout and "QN03504M" in res.stdout
    assert "INVALID (policy block: would block the load)" in res.stdout
    with psycopg.connect(db_uri) as conn:  # nothing loaded, recorded or left behind
        assert conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM meta.source_runs WHERE source_id = 'qpv_2015'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0] == 0


def test_relative_url_is_read_and_a_typo_is_not_a_failed_run(cli_env, db_uri, tmp_path) -> None:
    """`--url` takes a path relative to the working directory (recorded as its file:// URL); a path that does not
    exist, like a wrong release or feed, stops the command before any run is recorded: `status` stays clean."""
    work = tmp_path / "work"
    (work / "files").mkdir(parents=True)
    (work / "files" / "QPV.geojson").write_bytes(QPV_SAMPLE.read_bytes())
    for args in (["ingest", "qpv_2015", "--url", "files/QPV.geojsn"],
                 ["ingest", "qpv_2015", "--url", "file:///nowhere/QPV.geojson"],
                 ["ingest", "sigville_demo", "--sample", "--release", "20222"],
                 ["ingest", "gtfs", "--sample", "--feed", "stra"]):
        res = subprocess.run([sys.executable, "-m", "qpvhub.cli", *args], capture_output=True, text=True,
                             env=cli_env, cwd=work, timeout=300)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "no such file (" + str(work / "files" / "QPV.geojsn") + ")" in _qpvhub(
        "ingest", "qpv_2015", "--url", str(work / "files" / "QPV.geojsn"), env=cli_env).stderr
    with psycopg.connect(db_uri) as conn:
        assert conn.execute("SELECT count(*) FROM meta.source_runs").fetchone()[0] == 0
    status = _qpvhub("status", env=cli_env).stdout
    assert "FAILING" not in status and "failed" not in status
    assert _qpvhub("ingest", "cog_communes", "--sample", env=cli_env).returncode == 0
    res = subprocess.run([sys.executable, "-m", "qpvhub.cli", "ingest", "qpv_2015", "--url", "files/QPV.geojson"],
                         capture_output=True, text=True, env=cli_env, cwd=work, timeout=300)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(db_uri) as conn:
        urls = conn.execute("SELECT urls FROM meta.source_runs WHERE source_id = 'qpv_2015'").fetchone()[0]
    assert urls == ["file://…/QPV.geojson"]  # resolved; the record keeps a local file's name, not the server's paths
