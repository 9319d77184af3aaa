"""Lineage and `latest/` stay true, each on a real run: credentials in a source URL reach no published file,
error or analyst table; an encoded path writes nothing outside the work directory; `latest/` holds exactly
its version's files; an unchanged fiche keeps its PDF; a package whose lineage or rules changed is a new
version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.fetch import fetch
from qpvhub.ingest.parts import ingest_samples
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import FetchError
from qpvhub.publish import pdf, publish_region
from tests.conftest import COG_SAMPLE, SAMPLES, as_role

pytestmark = pytest.mark.postgis

PASSWORD, KEY = "s3cr3t-Pa55", "KEY-8d1f0c2e"


def test_credentials_in_a_source_url_reach_no_published_file_and_no_analyst(env, catalog, regions,
                                                                             http_source) -> None:
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    http_source.put("sigville_demo.csv", (SAMPLES / "sigville_qpv2015_DEMO_2022_reg52_53.csv").read_bytes())
    host = http_source.base.removeprefix("http://")
    url = f"http://analyst:{PASSWORD}@{host}/sigville_demo.csv?apikey={KEY}&millesime=2022"
    res = ingest(env, catalog["sigville_demo"], url=url, force=True, release=2022)
    assert res.status == "success"
    assert http_source.requests[-1][1] == "sigville_demo.csv"  # the real URL was fetched
    run_indicators(env)
    publish_region(env, regions["53"])
    published = env.settings.store.path / "published"
    found = subprocess.run(["grep", "-rlE", f"{PASSWORD}|{KEY}", str(published), str(env.settings.store.path)],
                           capture_output=True, text=True)
    assert found.stdout == "", found.stdout  # nothing in the store at all, published or not
    pkg = json.loads((published / "53" / "qpv_profil" / "latest" / "datapackage.json").read_text(encoding="utf-8"))
    urls = {u for r in pkg["qpvhub"]["lineage"] for u in r["urls"]}
    assert f"http://{host}/sigville_demo.csv?millesime=2022" in urls  # still says where it came from
    assert not any(str(env.settings.project) in u for u in urls)  # the samples' local paths are not published
    assert any(u.startswith("file://…/") for u in urls)
    with psycopg.connect(as_role(env.uri, "qpvhub_analyst")) as conn:
        rows = conn.execute("SELECT urls::text, coalesce(error, '') FROM meta.source_runs").fetchall()
    assert rows and not any(PASSWORD in u + e or KEY in u + e for u, e in rows)


def test_a_failing_credentialed_url_leaves_no_secret_in_the_error(env, catalog, http_source) -> None:
    host = http_source.base.removeprefix("http://")
    url = f"http://analyst:{PASSWORD}@{host}/missing.csv?token={KEY}"
    with pytest.raises(FetchError) as exc:
        ingest(env, catalog["cog_communes"], url=url)
    assert "HTTP 404" in str(exc.value) and PASSWORD not in str(exc.value) and KEY not in str(exc.value)
    dead = f"http://analyst:{PASSWORD}@127.0.0.1:9/x.csv?apikey={KEY}"  # nothing listens on port 9
    with pytest.raises(FetchError) as exc:
        fetch(dead, Path("/tmp") / "qpvhub-test-dead", retries=1, timeout=2)
    assert "ConnectionError" in str(exc.value) and PASSWORD not in str(exc.value) and KEY not in str(exc.value)
    with psycopg.connect(env.uri) as conn:
        errors = [r[0] for r in conn.execute("SELECT error FROM meta.source_runs WHERE error IS NOT NULL")]
    assert errors and not any(PASSWORD in e or KEY in e for e in errors)


def test_an_encoded_path_in_a_url_writes_nothing_outside_the_work_directory(env, catalog, http_source,
                                                                            tmp_path: Path) -> None:
    target = tmp_path / "escaped.csv"
    depth = "..%2F" * 12
    escape = depth + str(target).lstrip("/").replace("/", "%2F")
    http_source.put(f"d/{escape}", b"a;b\n1;2\n")
    with pytest.raises(FetchError, match=r"is not a plain file name .*nothing fetched"):
        ingest(env, catalog["cog_communes"], url=f"{http_source.base}/d/{escape}")
    assert not target.exists()
    src = tmp_path / "in" / "cog.csv"
    src.parent.mkdir()
    src.write_bytes(COG_SAMPLE.read_bytes())
    with pytest.raises(FetchError, match=r"is not a plain file name"):
        fetch(src.parent.as_uri() + "/..%2Fevil.csv", tmp_path / "work")
    with pytest.raises(FetchError, match=r"is not a plain file name"):
        fetch(f"{http_source.base}/a%0Ab.csv", tmp_path / "work")
    with psycopg.connect(env.uri) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM meta.source_runs")]
    assert statuses == ["failed"]  # failed clearly, not "unchanged … skipped"


def _load(env, catalog, *ids: str) -> None:
    for sid in ("cog_communes", "qpv_2015", "sigville_demo", *ids):
        assert all(r.status == "success" for r in ingest_samples(env, catalog[sid]))
    run_indicators(env)


def test_withdrawing_a_theme_removes_its_files_from_latest(env, catalog, regions) -> None:
    _load(env, catalog, "flood_zones")
    first = publish_region(env, regions["53"])
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    assert (latest / "qpv_profil_53_theme_climat.csv").exists()
    with psycopg.connect(env.uri) as conn:  # the flood zones are withdrawn: the climate theme goes away
        conn.execute("TRUNCATE src.flood_zones")
    run_indicators(env, force=True)  # withdrawn on purpose: the mart may lose the theme
    second = publish_region(env, regions["53"])
    assert second.version != first.version
    names = sorted(p.relative_to(latest).as_posix() for p in latest.rglob("*") if p.is_file())
    version_dir = env.settings.store.path / "published" / "53" / "qpv_profil" / second.version
    assert names == sorted(p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*")
                           if p.is_file())  # latest/ equals the version
    assert not any("climat" in n or "inondable" in n for n in names)  # its tables and its map
    listed = {line.split("  ", 1)[1] for line in (latest / "SHA256SUMS").read_text().splitlines()}
    assert listed == set(names) - {"SHA256SUMS"}
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=latest, check=True)


def test_an_unchanged_fiche_keeps_its_published_pdf(env, catalog, regions, monkeypatch) -> None:
    """Chromium is not byte-reproducible everywhere: a re-publish must not print an unchanged fiche again, and
    a publish with nothing new puts latest/ back to what its version lists."""
    if pdf.browser() is None:
        pytest.skip("no Chromium on this machine")
    _load(env, catalog)
    printed: list[list[str]] = []
    real = pdf.print_pdfs
    monkeypatch.setattr(pdf, "print_pdfs", lambda pages, *a, **k: printed.append(sorted(pages)) or real(pages, *a, **k))
    first = publish_region(env, regions["53"])
    assert printed == [[f"QP03500{i}" for i in range(1, 7)]]
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    version = latest.parent / first.version
    (latest / "qpv" / "QP035003.pdf").write_bytes(b"%PDF-1.4 damaged")  # no longer the bytes SHA256SUMS lists
    (latest / "qpv" / "QP035004.html").unlink()  # and a file gone from latest/
    printed.clear()
    again = publish_region(env, regions["53"])
    assert printed == []  # every fiche unchanged: each PDF taken from latest/, or from the version when damaged
    assert again.status == "unchanged" and again.version == first.version
    assert (latest / "qpv" / "QP035003.pdf").read_bytes() == (version / "qpv" / "QP035003.pdf").read_bytes()
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=latest, check=True)  # latest/ put back


def test_datapackage_follows_lineage_and_rules_even_with_the_same_files(env, catalog, regions) -> None:
    _load(env, catalog)
    first = publish_region(env, regions["53"])
    again = publish_region(env, regions["53"])
    if again.status != "unchanged":  # say which files changed, for a diagnosis
        base = env.settings.store.path / "published" / "53" / "qpv_profil"
        a, b = ((base / v / "SHA256SUMS").read_text().splitlines() for v in (first.version, again.version))
        pytest.fail(f"a re-publish of the same data made a new version; files that differ: {sorted(set(a) ^ set(b))}")
    # a re-ingest of the same file: same extracts, new lineage
    assert ingest(env, catalog["sigville_demo"], sample=True, force=True).status == "success"
    run_indicators(env)
    second = publish_region(env, regions["53"])
    assert second.status == "published" and second.version != first.version
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    with psycopg.connect(env.uri) as conn:
        run = conn.execute("SELECT run_id FROM meta.source_runs WHERE source_id = 'sigville_demo' "
                           "AND status = 'success' ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    assert run in {r["run_id"] for r in pkg["qpvhub"]["lineage"]}
    # a new threshold that hides nothing more: same data files, the package states the new rule
    third = publish_region(env, regions["53"], threshold=12)
    assert third.status == "published" and third.version != second.version
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    assert pkg["qpvhub"]["statistical_secrecy"]["threshold"] == 12
    assert sorted(third.withdrawn) == sorted([first.version, second.version])  # published at 11 < 12
