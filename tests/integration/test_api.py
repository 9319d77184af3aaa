"""The OGC API (tipg, own virtualenv) on the demo's published layers, read with real clients: GDAL's OAPIF
driver, OWSLib's Features client, a decoded vector tile — and what the API's role can and cannot reach."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import geopandas as gpd
import psycopg
import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.parts import ingest_samples
from qpvhub.platform.env import Env
from qpvhub.publish import publish_region
from tests.conftest import ROOT, as_role

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

API_PYTHON = ROOT / ".venv-api" / "bin" / "python"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def publish_demo(env, catalog, regions) -> None:
    """The demo published at threshold 1,500 (so that some cells are secret)."""
    for sid in ("cog_communes", "cog_mouvements", "epci_names", "qpv_2015", "commune_contours", "sigville_demo",
                "sigville_revn", "gtfs"):
        ingest_samples(env, catalog[sid])
    run_indicators(env)
    publish_region(env, regions["53"], threshold=1500)


def healthy(base: str, attempts: int = 120) -> bool:
    """The server answers /healthz (waiting for it to start, polling every quarter of a second)."""
    for _ in range(attempts):
        try:
            if json.loads(_get(base + "/healthz")) == {"ping": "pong!"}:
                return True
        except OSError:
            time.sleep(0.25)
    return False


@contextlib.contextmanager
def serving(env) -> Iterator[tuple[str, subprocess.Popen]]:
    """`qpvhub api` serving the published layers as qpvhub_api: (its base URL, the `qpvhub api` process)."""
    assert API_PYTHON.exists(), "the API server's virtualenv is made by `make setup` (make api-deps)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child_env = {**os.environ, "QPVHUB_API_DATABASE_URL": as_role(env.uri, "qpvhub_api")}
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "qpvhub"), "api", "--port", str(port)], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        if not healthy(base):
            proc.terminate()
            raise AssertionError(f"the API did not start: {proc.communicate(timeout=10)[0][-3000:]}")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        # SIGTERM to `qpvhub api` stops the server it runs too: nothing listens on the port any more
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect(("127.0.0.1", port))


@pytest.fixture
def api(env, catalog, regions) -> Iterator[str]:
    """The demo published at threshold 1,500 and `qpvhub api` serving it."""
    publish_demo(env, catalog, regions)
    with serving(env) as (base, _proc):
        yield base


def test_gdal_reads_the_collections_and_the_profile(api: str, env) -> None:
    assert shutil.which("ogrinfo"), "GDAL's ogrinfo is installed by make setup (gdal-bin)"
    listing = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{api}/"], capture_output=True, text=True,
                             check=True).stdout
    for name in ("pub.qpv_profil_53", "pub.arrets_transport"):  # (no BPE loaded here: no facilities layer)
        assert name in listing
    info = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{api}/", "pub.qpv_profil_53"], capture_output=True,
                          text=True, check=True).stdout
    assert "Feature Count: 6" in info
    # the perimeters as served (CRS84), measured in Lambert-93: the published superficie_ha
    gj = json.loads(_get(f"{api}/collections/pub.qpv_profil_53/items?limit=100"))
    gdf = gpd.GeoDataFrame.from_features(gj["features"], crs=4326).to_crs(2154)
    assert len(gdf) == 6
    for area, ha in zip(gdf.geometry.area / 10_000, gdf["superficie_ha"], strict=True):
        assert area == pytest.approx(ha, rel=2e-3)
    coll = json.loads(_get(f"{api}/collections/pub.qpv_profil_53"))
    desc = coll["description"]  # the table's comment
    assert desc.startswith("Profil des QPV de la région Bretagne (53)") and "secret statistique" in desc
    assert coll["title"].startswith("Profil des QPV de la région Bretagne (53)")  # French, not the table's name
    stops = json.loads(_get(f"{api}/collections/pub.arrets_transport"))
    assert stops["title"].startswith("Arrêts de transport en commun") and "WGS84 (CRS84) dans l'API" in \
        stops["description"]  # the CRS statement is true of what the API serves
    villejean = json.loads(_get(f"{api}/collections/pub.qpv_profil_53/items/QP035002"))["properties"]
    assert villejean["population"] == 8883 and isinstance(villejean["population"], int)  # a count, not 8883.0


def test_owslib_pages_through_a_layer(api: str, env) -> None:
    from owslib.ogcapi.features import Features

    client = Features(api + "/")
    seen: list = []
    offset = 0
    while True:
        page = client.collection_items("pub.arrets_transport", limit=250, offset=offset)
        seen += [f["properties"]["stop_id"] + "@" + f["properties"]["feed_id"] for f in page["features"]]
        if page["numberReturned"] < 250:
            break
        offset += 250
    with psycopg.connect(env.uri) as conn:
        n = conn.execute("SELECT count(*) FROM src.gtfs_stops WHERE coalesce(location_type, 0) = 0").fetchone()[0]
    assert len(seen) == len(set(seen)) == n == page["numberMatched"]  # every stop once, across pages


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Protocol Buffers wire format: (field number, varint value or bytes) of each field of a message."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            n = varint()
            yield number, buf[i:i + n]
            i += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, buf[i:i + size]
            i += size
        else:
            raise AssertionError(f"wire type {wire} is not in the MVT spec")


def _varints(buf: bytes) -> list[int]:
    """A packed repeated varint field's values."""
    out, value, shift = [], 0, 0
    for b in buf:
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            out.append(value)
            value, shift = 0, 0
    return out


def decode_mvt(data: bytes) -> dict[str, list[dict]]:
    """Mapbox Vector Tile 2.1 (layers → features' properties), decoded here from the spec's protobuf
    schema: Tile.layers = 3; Layer: name 1, features 2, keys 3, values 4; Feature: tags 2 (packed key/value
    index pairs); Value: string 1, double 3, int64 4, uint64 5, bool 7."""
    import struct

    out: dict[str, list[dict]] = {}
    for number, layer in _fields(data):
        if number != 3:
            continue
        name, keys, values, features = "", [], [], []
        for n, v in _fields(layer):
            if n == 1:
                name = v.decode()
            elif n == 2:
                features.append(v)
            elif n == 3:
                keys.append(v.decode())
            elif n == 4:
                (k, raw), = list(_fields(v))
                values.append(raw.decode() if k == 1 else struct.unpack("<d", raw)[0] if k == 3 else
                              struct.unpack("<f", raw)[0] if k == 2 else bool(raw) if k == 7 else raw)
        props = []
        for f in features:
            tags = _varints(next((v for n, v in _fields(f) if n == 2), b""))  # packed key/value indexes
            props.append({keys[tags[k]]: values[tags[k + 1]] for k in range(0, len(tags), 2)})
        out[name] = props
    return out


def test_a_vector_tile_at_rennes_holds_the_qpv_of_the_tile(api: str) -> None:
    x, y = _tile(-1.7085, 48.1200, 13)  # Villejean, Rennes
    data = _get(f"{api}/collections/pub.qpv_profil_53/tiles/WebMercatorQuad/13/{x}/{y}")
    layers = decode_mvt(data)
    assert set(layers) == {"qpv_profil_53"}  # the layer named after its collection's table, not "default"
    codes = {p["code_qp"] for props in layers.values() for p in props}
    assert "QP035002" in codes and "QP035001" not in codes  # Saint-Malo is far from this tile


def test_a_secret_cell_of_the_extracts_is_secret_in_the_api(api: str, env) -> None:
    gj = json.loads(_get(f"{api}/collections/pub.qpv_profil_53/items/QP035006"))
    props = gj["properties"]
    assert props["population"] is None and props["population__secret"] == "secret statistique"
    csv = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest" / "qpv_profil_53.csv"
    import pandas as pd

    row = pd.read_csv(csv, dtype=str).set_index("code_qp").loc["QP035006"]
    assert row.isna()["population"] and row["population__secret"] == "secret statistique"
    # no hidden count is reachable by filtering either
    hits = json.loads(_get(f"{api}/collections/pub.qpv_profil_53/items?population__secret=secret%20statistique"))
    assert all(f["properties"]["population"] is None for f in hits["features"])


def test_the_api_role_reads_pub_only_and_writes_nothing(env) -> None:
    uri = as_role(env.uri, "qpvhub_api")
    with psycopg.connect(env.uri) as conn:  # a published layer to try to write to
        conn.execute("SET ROLE qpvhub_loader")
        conn.execute("CREATE TABLE IF NOT EXISTS pub.probe (id int PRIMARY KEY)")
        conn.commit()
    with psycopg.connect(uri, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pub.probe").fetchone()[0] == 0
        for stmt in ("SELECT * FROM meta.source_runs", "SELECT * FROM src.sigville_demo",
                     "SELECT * FROM mart.qpv_indicator", "SELECT * FROM ref.qpv", "CREATE TABLE staging.x (a int)",
                     "INSERT INTO pub.probe VALUES (1)", "CREATE TABLE pub.mine (a int)", "DROP TABLE pub.probe"):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable)):
                conn.execute(stmt)


def test_region_page_says_how_to_add_the_api_in_qgis(env, catalog, regions, monkeypatch) -> None:
    monkeypatch.setenv("QPVHUB_API_URL", "https://api.pole-qpv.example/")
    env = Env.from_settings()  # settings are read once: this run's, with the API's address
    for sid in ("cog_communes", "qpv_2015"):
        ingest_samples(env, catalog[sid])
    run_indicators(env)
    publish_region(env, regions["53"])
    page = (env.settings.store.path / "published" / "53" / "index.html").read_text(encoding="utf-8")
    assert '<a href="https://api.pole-qpv.example/">' in page and "Ajouter une couche WFS / OGC API" in page
    assert "https://api.pole-qpv.example/collections/pub.qpv_profil_53/tiles/WebMercatorQuad/{z}/{x}/{y}" in page
