"""Picking a file on its insee.fr page at fetch time (`insee: {page, file}`), against a loopback server that plays
the site: a page whose download links are `/fr/statistiques/fichier/<page>/<name>`, absolute or relative, the form
public code lists a page's files by. INSEE renamed the 2024-list incomes file once (`…_qp24_v2_csv.zip`); an entry
naming the page and the file's form follows such a rename without an edit.

The archive served is the FIXTURE of tests/data/insee_qpv24_fixture.py (generated figures for the real PACA 2024
codes)."""

from __future__ import annotations

import psycopg
import pytest
import yaml
from pydantic import ValidationError

from qpvhub.catalog.model import InseePage, Source
from qpvhub.ingest.locate import resolve_insee
from qpvhub.ingest.pipeline import ingest
from qpvhub.ops.sources_check import probe_source
from qpvhub.platform.errors import FetchError
from qpvhub.platform.settings import Settings
from tests.conftest import ROOT
from tests.data.insee_qpv24_fixture import archive

pytestmark = pytest.mark.postgis

PAGE = 8243167
V2 = "revenus_pauvrete_2021_qp24_v2_csv.zip"
ROWS = 6 * (135 + 1)  # every variable of the 135 QPV of PACA and of the all-QPV line, long

def probe_source_(source, **kw):
    """The probe at the publishers' addresses of this test's environment (its loopback servers)."""
    return probe_source(source, Settings.load().publishers, **kw)



def _page(*files: str) -> bytes:
    """An INSEE page offering `files` (plus its documentation and the spreadsheet version, which must not be
    taken), the first link absolute as insee.fr writes some, the others relative."""
    links = [f"https://www.insee.fr/fr/statistiques/fichier/{PAGE}/{files[0]}"] if files else []
    links += [f"/fr/statistiques/fichier/{PAGE}/{f}" for f in files[1:]]
    links += [f"/fr/statistiques/fichier/{PAGE}/documentation_revenus_qp24.pdf",
              f"/fr/statistiques/fichier/{PAGE}/revenus_pauvrete_2021_qp24_xlsx.zip"]
    body = "".join(f'<li><a href="{u}" class="fichier">Télécharger</a></li>' for u in links)
    return f"<html><body><h1>Revenus, pauvreté et niveau de vie en 2021</h1><ul>{body}</ul></body></html>".encode()


@pytest.fixture
def site(http_source, monkeypatch):
    monkeypatch.setenv("QPVHUB_INSEE_SITE", http_source.base)
    return http_source


@pytest.fixture
def env(site, db_uri, qpvhub_home):
    """This module's environment: its settings read once insee.fr is played on loopback."""
    from qpvhub.platform.env import Env

    return Env.from_settings()


def _publish(site, name: str, data: bytes) -> None:
    """INSEE puts `name` on the page (and only it, of the incomes CSV archives)."""
    site.put(f"fr/statistiques/fichier/{PAGE}/{name}", data)
    site.put(f"fr/statistiques/{PAGE}", _page(name), "text/html")


def test_the_shipped_entry_picks_its_file_on_the_page_and_follows_a_rename(env93, catalog, site) -> None:
    env, cog_url = env93
    src = catalog["filosofi_qpv"]
    assert src.insee == InseePage(page=PAGE, file="revenus_pauvrete_2021_qp24*csv.zip") and src.url is None
    assert src.production == "insee:8243167/revenus_pauvrete_2021_qp24*csv.zip"
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    assert ingest(env, catalog["qpv_2024"], sample=True).status == "success"
    _publish(site, V2, archive("revenus"))
    first = ingest(env, src)  # no url, no --sample: production, resolved on the page
    assert first.status == "success" and first.rows_loaded == ROWS
    with psycopg.connect(env.uri) as conn:
        urls, located = conn.execute("SELECT urls, located FROM meta.source_runs WHERE run_id = %s",
                                     (first.run_id,)).fetchone()
    assert located["kind"] == "insee" and located["page"] == PAGE and located["file"] == V2
    assert urls == [f"{site.base}/fr/statistiques/fichier/{PAGE}/{V2}"]
    # INSEE corrects the file and renames it: the entry follows, nothing edited
    v3 = V2.replace("_v2_", "_v3_")
    site.files.pop(f"fr/statistiques/fichier/{PAGE}/{V2}")
    _publish(site, v3, archive("revenus"))
    again = ingest(env, src, force=True)
    assert again.status == "success" and again.rows_loaded == ROWS
    with psycopg.connect(env.uri) as conn:
        located = conn.execute("SELECT located FROM meta.source_runs WHERE run_id = %s", (again.run_id,)).fetchone()[0]
    assert located["file"] == v3
    assert ("GET", f"fr/statistiques/fichier/{PAGE}/{v3}") in [(m, p) for m, p, _ in site.requests]
    # the page no longer offers any incomes archive: a clear error, and release 2021 stays whole
    site.put(f"fr/statistiques/{PAGE}", _page(), "text/html")
    with pytest.raises(FetchError, match=r"source filosofi_qpv: INSEE page 8243167: no file matches "
                                         r"'revenus_pauvrete_2021_qp24\*csv.zip'; files on the page: "
                                         r"\['documentation_revenus_qp24.pdf', "
                                         r"'revenus_pauvrete_2021_qp24_xlsx.zip'\]"):
        ingest(env, src, force=True)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM src.insee_qpv WHERE dataset = 'revenus' AND release = 2021"
                            ).fetchone() == (ROWS,)


def test_an_ambiguous_page_a_missing_page_and_a_page_without_links_are_clear_errors(site) -> None:
    site.put(f"fr/statistiques/{PAGE}", _page(V2, "revenus_pauvrete_2021_qp24_csv.zip"), "text/html")
    with pytest.raises(FetchError, match=r"INSEE page 8243167: 2 files match 'revenus_pauvrete_2021_qp24\*csv.zip'"
                                         r".* — narrow insee.file"):
        resolve_insee("filosofi_qpv", PAGE, "revenus_pauvrete_2021_qp24*csv.zip",
                      site=Settings.load().publishers.insee_site)
    # an exact name is one file, even beside its older version
    got = resolve_insee("filosofi_qpv", PAGE, V2, site=Settings.load().publishers.insee_site)
    assert got.url == f"{site.base}/fr/statistiques/fichier/{PAGE}/{V2}" and got.meta["file"] == V2
    with pytest.raises(FetchError, match=r"source filosofi_qpv: INSEE page 9999999 not found \(HTTP 404 .*\): a new "
                                         r"millésime has its own page; set insee.page in include/sources/filosofi_qpv"):
        resolve_insee("filosofi_qpv", 9999999, V2, site=Settings.load().publishers.insee_site)
    site.put("fr/statistiques/8000000", b"<html><body>Page en maintenance</body></html>", "text/html")
    with pytest.raises(FetchError, match=r"INSEE page 8000000: no download link .* has the page moved"):
        resolve_insee("filosofi_qpv", 8000000, V2, site=Settings.load().publishers.insee_site)


def test_an_unreachable_site_says_why_in_one_line(monkeypatch) -> None:
    monkeypatch.setenv("QPVHUB_INSEE_SITE", "http://qpvhub-no-such-host.invalid")
    with pytest.raises(FetchError, match=r"^source filosofi_qpv: INSEE page 8243167: insee.fr did not answer "
                                         r"\(cannot resolve qpvhub-no-such-host.invalid "
                                         r"\(offline, or a DNS problem\)\)$"):
        resolve_insee("filosofi_qpv", PAGE, V2, timeout=5, site=Settings.load().publishers.insee_site)


def test_sources_check_resolves_the_page_then_reads_the_members_header(catalog, site) -> None:
    src = catalog["filosofi_qpv"]
    _publish(site, V2, archive("revenus"))
    p = probe_source_(src)
    assert p.reachable and not p.drift, p
    assert p.location == f"{site.base}/fr/statistiques/fichier/{PAGE}/{V2}"
    _publish(site, V2, archive("revenus", drop="DISP_TP60_A21"))
    drifted = probe_source_(src)
    assert drifted.reachable and any("DISP_TP60_A*" in d for d in drifted.drift), drifted
    site.put(f"fr/statistiques/{PAGE}", _page(), "text/html")
    gone = probe_source_(src)
    assert not gone.reachable and "no file matches" in gone.status


def test_one_production_location_per_entry(catalog) -> None:
    raw = yaml.safe_load((ROOT / "include" / "sources" / "filosofi_qpv.yml").read_text(encoding="utf-8"))
    Source.model_validate(raw)
    with pytest.raises(ValidationError, match="give one production location, not url and insee"):
        Source.model_validate({**raw, "url": "https://www.insee.fr/x.zip"})
    assert catalog["filosofi_iris"].insee == InseePage(page=8229323, file="BASE_TD_FILO_IRIS_2021_DISP*CSV.zip")
