"""Bad inputs built from the real files: each fails with a clear message, and what was loaded stays."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import InputError, QpvhubError
from tests.conftest import COG_SAMPLE, SAMPLES

pytestmark = pytest.mark.postgis

FLOOD = SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip"  # Géorisques' per-département layout


def _fingerprint(uri: str, table: str) -> str:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t").fetchone()
    return rows[0]


def _cog_variant(kind: str) -> bytes:
    text = COG_SAMPLE.read_text(encoding="utf-8")
    if kind == "cp1252":
        return text.encode("cp1252", errors="replace")  # declared utf-8 in the catalogue
    if kind == "semicolon":
        return text.replace(",", ";").encode()  # catalogue declares ','
    if kind == "empty":
        return b""
    if kind == "header_only":
        return text.splitlines()[0].encode() + b"\n"
    if kind == "html":
        return b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>"
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "nul":
        lines = text.splitlines(keepends=True)
        lines[10] = lines[10].replace("Begard", "Beg\x00ard").replace(",", ",\x00", 1)
        return "".join(lines).encode()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("cp1252", r"file communes.csv, line \d+: not utf-8 text: byte 0x[0-9a-f]{2} at column \d+ \(a cp1252"),
    ("semicolon", r"file communes.csv, line 1: only one column found with separator ','"),
    ("empty", r"file communes.csv: empty file, expected CSV"),
    ("header_only", r"(?s)validation failed.*expect_table_row_count_to_be_between .*: observed 0"),
    ("html", r"file communes.csv: the server sent an HTML page, not CSV"),
    ("utf16", r"file communes.csv, line \d+: not utf-8 text"),
])
def test_bad_csv_keeps_previous_load(env, catalog, http_source, kind: str, message: str) -> None:
    ok = ingest(env, catalog["cog_communes"], url=http_source.put("good.csv", COG_SAMPLE.read_bytes()))
    assert ok.status == "success"
    before = _fingerprint(env.uri, "ref.commune")
    with pytest.raises(QpvhubError, match=message):
        ingest(env, catalog["cog_communes"], url=http_source.put("communes.csv", _cog_variant(kind)))
    assert _fingerprint(env.uri, "ref.commune") == before
    with psycopg.connect(env.uri) as conn:
        status = conn.execute("SELECT status FROM meta.source_runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]
    assert status == "failed" and staging == 0


def _zip_variant(kind: str, tmp: Path) -> bytes:
    data = FLOOD.read_bytes()
    if kind == "truncated":
        return data[: len(data) // 2]
    out = tmp / "x.zip"
    with zipfile.ZipFile(FLOOD) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            if kind == "traversal":
                z.writestr(f"../{n}", src.read(n))
            elif kind == "absolute":
                z.writestr(f"/tmp/{n}", src.read(n))
            elif kind == "no_prj" and n.endswith(".prj"):
                continue
            elif kind == "broken_prj" and n.endswith(".prj"):
                z.writestr(n, 'PROJCS["Unknown",GEOGCS["unknown",DATUM["x",SPHEROID["y",1,0]]],UNIT["m",1]]')
            elif kind == "unknown_crs" and n.endswith(".prj"):
                z.writestr(n, 'PROJCS["Custom TM",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",'
                              '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["Degree",0.0174532925199433]],'
                              'PROJECTION["Transverse_Mercator"],PARAMETER["False_Easting",123456],'
                              'PARAMETER["False_Northing",0],PARAMETER["Central_Meridian",-1.7],'
                              'PARAMETER["Scale_Factor",0.9996],PARAMETER["Latitude_Of_Origin",0],UNIT["Meter",1]]')
            else:
                z.writestr(n, src.read(n))
        if kind == "bomb":
            z.writestr("padding.dbf", b"\0" * (30 * 1024**2))
    return out.read_bytes()


@pytest.mark.parametrize("kind, message", [
    ("truncated", r"file tri.zip: not a valid zip archive .*truncated download"),
    ("traversal", r"file tri.zip: archive member '\.\./FRG_TRI_RENNES/n_tri.*points outside the archive"),
    ("absolute", r"file tri.zip: archive member '/tmp/FRG_TRI_RENNES/n_tri.*absolute path"),
    ("bomb", r"file tri.zip: archive member 'padding.dbf' expands .*zip bomb refused"),
    ("no_prj", r"file tri.zip: n_tri_rennes_inondable_01_01for_s_035.shp: no .prj file"),
    ("broken_prj", r"file tri.zip/FRG_TRI_RENNES/n_tri_rennes_inondable_01_01for_s_035.shp: cannot be read as "
                   r"a Shapefile: .*CONVERSION"),
    ("unknown_crs", r"source flood_zones: CRS .*Custom TM.* has no EPSG code; declare"),
])
def test_bad_zip_keeps_previous_load(env, catalog, http_source, tmp_path: Path, kind: str, message: str) -> None:
    ok = ingest(env, catalog["flood_zones"], url=http_source.put("good.zip", FLOOD.read_bytes()), feed="dep_35")
    assert ok.status == "success"
    before = _fingerprint(env.uri, "src.flood_zones")
    with pytest.raises(InputError, match=message):
        ingest(env, catalog["flood_zones"], url=http_source.put("tri.zip", _zip_variant(kind, tmp_path)),
               feed="dep_35")
    assert _fingerprint(env.uri, "src.flood_zones") == before
    assert not (tmp_path.parent / "FRG_TRI_RENNES").exists()


def test_geojson_with_swapped_lon_lat_is_caught(env, catalog, http_source) -> None:
    """lat/lon swapped puts Rennes in the Gulf of Aden: the geometry lands far outside the region."""
    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    data = json.loads((SAMPLES / "qpv2015_dept35_esigat_resovilles.geojson").read_text(encoding="utf-8"))
    for f in data["features"]:
        f["geometry"]["coordinates"] = [[[[y, x] for x, y in ring] for ring in poly]
                                        for poly in f["geometry"]["coordinates"]]
    url = http_source.put("swapped.geojson", json.dumps(data).encode())
    src = catalog["qpv_2015"]
    with pytest.raises(QpvhubError) as exc:
        ingest(env, src, url=url)
    # Lambert-93 cannot represent it: the reprojection fails or the bbox check refuses it
    assert "qpv_2015" in str(exc.value)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0] == 0


def test_sha256_of_archived_raw_matches_what_was_served(env, catalog, http_source) -> None:
    body = FLOOD.read_bytes()
    res = ingest(env, catalog["flood_zones"], url=http_source.put("tri.zip", body), feed="dep_35")
    with psycopg.connect(env.uri) as conn:
        key, sha = conn.execute("SELECT raw_key, sha256 FROM meta.source_runs WHERE run_id = %s",
                                (res.run_id,)).fetchone()
    assert sha == hashlib.sha256(body).hexdigest()
    assert env.store.get_bytes(key + ".sha256").decode().startswith(sha)


def test_coordinates_that_cannot_be_reprojected_name_their_feature(env, catalog, http_source) -> None:
    """The review: absurd coordinates failed with PostgreSQL's 'transform: Invalid coordinate', naming no feature.
    The real QPV file with one vertex of its 4th feature at latitude 1e300: the error names that feature."""
    from tests.conftest import QPV_SAMPLE

    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    assert ingest(env, catalog["qpv_2015"], sample=True).status == "success"
    before = _fingerprint(env.uri, "ref.qpv")
    doc = json.loads(QPV_SAMPLE.read_text(encoding="utf-8"))
    ring = doc["features"][3]["geometry"]["coordinates"][0]
    while isinstance(ring[0][0], list):
        ring = ring[0]
    ring[1] = [ring[1][0], 1e300]
    with pytest.raises(InputError, match=r"source qpv_2015, feature 4: coordinates cannot be reprojected from "
                                         r"EPSG:4326 to EPSG:2154"):
        ingest(env, catalog["qpv_2015"], url=http_source.put("absurd.geojson", json.dumps(doc).encode()))
    assert _fingerprint(env.uri, "ref.qpv") == before
