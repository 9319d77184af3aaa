"""Resolving a data.gouv.fr dataset's current resource at fetch time, against a loopback server that plays
the API v1 with its documented shape (`/api/1/datasets/<slug>/`: `last_update`, `resources[]` with `id`,
`title`, `url`, `latest`, `format`, `filesize`, `last_modified`)."""

from __future__ import annotations

import json

import psycopg
import pytest

from qpvhub.catalog.model import DataGouv
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import FetchError
from tests.conftest import COG_SAMPLE

pytestmark = pytest.mark.postgis

SLUG = "code-officiel-geographique-cog"
RID = "a1b2c3d4-0000-4000-8000-000000000001"


def _dataset(base: str, *, path: str, modified: str, size: int, fmt: str = "csv", title: str = "Communes 2026",
             rid: str = RID) -> bytes:
    return json.dumps({
        "id": "5c8f", "slug": SLUG, "title": "Code officiel géographique", "last_update": modified,
        "resources": [
            {"id": "ffff0000-0000-4000-8000-000000000009", "title": "Documentation", "format": "pdf",
             "url": f"{base}/doc.pdf", "latest": f"{base}/doc.pdf", "filesize": 10,
             "last_modified": "2020-01-01T00:00:00"},
            {"id": rid, "title": title, "format": fmt, "url": f"{base}/{path}",
             "latest": f"{base}/api/1/datasets/r/{rid}", "filesize": size, "last_modified": modified},
        ]}).encode()


@pytest.fixture
def api(http_source, monkeypatch):
    monkeypatch.setenv("QPVHUB_DATAGOUV_API", f"{http_source.base}/api/1")
    return http_source


@pytest.fixture
def env(api, db_uri, qpvhub_home):
    """This module's environment: its settings read once the loopback API's address is set."""
    from qpvhub.platform.env import Env

    return Env.from_settings()


def _entry(catalog, resource: str = r"^communes 20\d\d$", fmt: str | None = "csv"):
    src = catalog["cog_communes"]
    return src.model_copy(update={"url": None, "datagouv": DataGouv(dataset=SLUG, resource=resource, format=fmt)})


def _file_gets(api) -> list[str]:
    return [name for _, name, _ in api.requests if name != f"api/1/datasets/{SLUG}/"]


def test_resolve_download_skip_move_and_change(env, catalog, api) -> None:
    body = COG_SAMPLE.read_bytes()
    api.put(f"api/1/datasets/r/{RID}", body)  # the stable "latest" URL of the resource
    api.put(f"api/1/datasets/{SLUG}/", _dataset(api.base, path="v1/communes.csv", modified="2026-01-10T08:00:00",
                                                 size=len(body)), "application/json")
    src = _entry(catalog)
    first = ingest(env, src)
    assert first.status == "success" and first.rows_loaded == 2430
    with psycopg.connect(env.uri) as conn:
        urls, located = conn.execute("SELECT urls, located FROM meta.source_runs WHERE run_id = %s",
                                     (first.run_id,)).fetchone()
    assert located["resource_id"] == RID and located["last_modified"] == "2026-01-10T08:00:00"
    assert urls == [f"{api.base}/api/1/datasets/r/{RID}"]
    # the API describes the same resource: nothing downloaded
    n = len(_file_gets(api))
    assert ingest(env, src).status == "skipped" and len(_file_gets(api)) == n
    # republished (new date), same bytes: asked again (ETag: 304 Not Modified), skipped
    api.put(f"api/1/datasets/{SLUG}/", _dataset(api.base, path="v2/communes.csv", modified="2026-02-01T08:00:00",
                                                 size=len(body)), "application/json")
    assert ingest(env, src).status == "skipped" and len(_file_gets(api)) == n + 1
    # a new file (checksum and date change): loaded
    changed = body.replace(b"Allineuc", b"Allineuc-sur-Lie", 1)
    api.put(f"api/1/datasets/r/{RID}", changed)
    api.put(f"api/1/datasets/{SLUG}/", _dataset(api.base, path="v3/communes.csv", modified="2026-03-01T08:00:00",
                                                 size=len(changed)), "application/json")
    third = ingest(env, src)
    assert third.status == "success"
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT nom FROM ref.commune WHERE insee_com = '22001'").fetchone() == ("Allineuc-sur-Lie",)


def test_the_api_says_no_and_the_previous_load_stays(env, catalog, api) -> None:
    body = COG_SAMPLE.read_bytes()
    api.put(f"api/1/datasets/r/{RID}", body)
    api.put(f"api/1/datasets/{SLUG}/", _dataset(api.base, path="c.csv", modified="2026-01-10", size=len(body)),
            "application/json")
    assert ingest(env, _entry(catalog)).status == "success"
    with psycopg.connect(env.uri) as conn:
        before = conn.execute("SELECT count(*), max(source_run_id) FROM ref.commune").fetchone()
    # the dataset was renamed: 404
    with pytest.raises(FetchError, match=r"source cog_communes: data.gouv.fr dataset 'autre-slug' not found "
                                         r"\(HTTP 404"):
        ingest(env, _entry(catalog).model_copy(update={"datagouv": DataGouv(dataset="autre-slug", resource=RID)}))
    # no resource with that title any more: the titles are listed
    with pytest.raises(FetchError, match=r"no resource matches '\^communes 2027\$'; resources: \['Documentation', "
                                         r"'Communes 2026'\]"):
        ingest(env, _entry(catalog, resource="^communes 2027$"))
    # the publisher changed the format (CSV now a ZIP): refused before downloading
    api.put(f"api/1/datasets/{SLUG}/", _dataset(api.base, path="c.zip", modified="2026-04-01", size=9, fmt="zip"),
            "application/json")
    with pytest.raises(FetchError, match=r"resource 'Communes 2026' is now 'zip', the catalogue expects 'csv'"):
        ingest(env, _entry(catalog))
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*), max(source_run_id) FROM ref.commune").fetchone() == before
