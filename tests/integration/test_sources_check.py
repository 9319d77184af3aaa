"""`qpvhub sources check` against loopback servers: reachable, unchanged, changed, drift, unreachable."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import zipfile

import pytest

from qpvhub.ops.sources_check import check_sources, probe_source
from qpvhub.platform.settings import Settings
from tests.conftest import COG_SAMPLE, SAMPLES


def probe_source_(source, **kw):
    """The probe at the publishers' addresses of this test's environment (its loopback servers)."""
    return probe_source(source, Settings.load().publishers, **kw)


def check_sources_(sources, **kw):
    """check_sources at the publishers' addresses of this test's environment."""
    return check_sources(sources, Settings.load().publishers, **kw)



def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_unchanged_changed_and_drift(catalog, http_source) -> None:
    cog = catalog["cog_communes"].model_copy(update={"url": http_source.put("v_commune.csv", COG_SAMPLE.read_bytes())})
    first = probe_source_(cog)
    assert first.reachable and first.ok and first.size == COG_SAMPLE.stat().st_size
    assert first.layout.startswith("CSV header (12 columns)") and first.checksum
    assert "reachable" in first.line() and "layout CSV header" in first.line()
    previous = {"run_id": "R1", "etag": first.checksum, "last_modified": None}
    assert probe_source_(cog, previous=previous).since_last_load == "unchanged since run R1"
    http_source.put("v_commune.csv", COG_SAMPLE.read_bytes().replace(b"Allineuc", b"Allineuc-sur-Lie"))
    assert probe_source_(cog, previous=previous).since_last_load == "changed since run R1"
    # the publisher renamed a column: drift, naming it
    http_source.put("v_commune.csv", COG_SAMPLE.read_bytes().replace(b'"LIBELLE"', b'"NOM"', 1))
    drift = probe_source_(cog)
    assert drift.reachable and not drift.ok and drift.drift == ["missing ['LIBELLE']"]
    assert "layout DRIFT (missing ['LIBELLE'])" in drift.line()


def test_zip_members_and_shapefile_fields(catalog, http_source, tmp_path) -> None:
    """ANCT's 2024 archive: the GeoJSON member's properties; a ZIP without it is a drift."""
    qpv = catalog["qpv_2024"].model_copy(update={"url": http_source.put(
        "qpv2024.zip", (SAMPLES / "qpv2024_paca_anct_layout.zip").read_bytes())})
    p = probe_source_(qpv)
    assert p.ok and p.layout.startswith("GeoJSON properties (10) in GEOJSON/QP2024_France_Hexagonale")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("GEOJSON/QP2024_autre_nom.geojson", '{"type": "FeatureCollection", "features": []}')
    http_source.put("qpv2024.zip", buf.getvalue())
    p = probe_source_(qpv)
    assert not p.ok and "member GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson: 0 found" in p.drift[0]
    # a zipped shapefile, one member named: the .dbf's fields (dBase cuts names at 10 characters)
    flood = catalog["flood_zones"]
    one = flood.model_copy(update={
        "collection": None, "reader": {"member": "n_tri_rennes_inondable_01_01for_s_035.shp"},
        "columns": {k: c for k, c in flood.columns.items() if k not in ("couche", "livraison")},
        "url": http_source.put("tri.zip", (SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip").read_bytes())})
    p = probe_source_(one)
    assert p.ok and p.layout.startswith("fields of FRG_TRI_RENNES/n_tri_rennes_inondable_01_01for_s_035.dbf"), p.line()


def test_unreachable_is_a_line_never_a_traceback(catalog) -> None:
    port = _closed_port()
    down = catalog["cog_communes"].model_copy(update={"url": f"http://127.0.0.1:{port}/v_commune.csv"})
    dns = catalog["cog_communes"].model_copy(update={"url": "http://qpvhub-no-such-host.invalid/x.csv"})
    nowhere = catalog["cog_communes"].model_copy(update={"url": None})
    probes = check_sources_({"down": down, "dns": dns, "nowhere": nowhere}, timeout=3)
    by_id = {p.source_id: p for p in probes}
    assert [p.source_id for p in probes] == ["dns", "down", "nowhere"]
    assert not any(p.reachable for p in probes)
    assert "ConnectionError" in by_id["down"].status
    assert "cannot resolve qpvhub-no-such-host.invalid" in by_id["dns"].status
    assert by_id["nowhere"].status.startswith("no production location")


@pytest.mark.postgis
def test_cli_exits_1_with_one_line_per_source(env) -> None:
    """The shipped entries without a reachable location here (no network in the tests): one line each."""
    res = subprocess.run([sys.executable, "-m", "qpvhub.cli", "sources", "check", "--source", "bpe",
                          "--source", "sigville_demo", "--timeout", "3"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith(("bpe", "sigville_demo"))]
    assert len(lines) == 2 and all("UNREACHABLE" in line for line in lines), res.stdout
    assert "0/2 sources reachable" in res.stdout


def test_a_zipped_workbook_is_checked_on_its_header_row(catalog, http_source) -> None:
    """INSEE's IRIS reference (ZIP, one .xlsx, header on row 6 of Emboitements_IRIS): the declared columns are
    looked for in that row; a renamed column is a drift."""
    sample = SAMPLES / "reference_IRIS_geo2021_reg52_53_DERIVED.zip"
    iris = catalog["iris_ref"].model_copy(update={"url": http_source.put("ref_iris.zip", sample.read_bytes())})
    p = probe_source_(iris)
    assert p.ok and p.layout == "header of reference_IRIS_geo2021.xlsx", p.line()
    import openpyxl

    with zipfile.ZipFile(sample) as z:
        book = openpyxl.load_workbook(io.BytesIO(z.read("reference_IRIS_geo2021.xlsx")))
    book["Emboitements_IRIS"]["E6"] = "CODE_COMMUNE"  # DEPCOM renamed
    out, buf = io.BytesIO(), io.BytesIO()
    book.save(out)
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("reference_IRIS_geo2024.xlsx", out.getvalue())
    http_source.put("ref_iris.zip", buf.getvalue())
    p = probe_source_(iris)
    assert not p.ok and p.drift == ["missing ['DEPCOM']"]


AE_SAMPLE = SAMPLES / "ADMIN-EXPRESS-COG_4-0__GPKG_WGS84G_FRA_2026-01-01_dep35_DERIVED.7z"


def _admin_express_without(tmp_path, field: str) -> bytes:
    """The ADMIN EXPRESS sample rebuilt with one field of layer `commune` renamed (IGN drifted)."""
    import py7zr
    import pyogrio

    with py7zr.SevenZipFile(AE_SAMPLE) as z:
        z.extractall(tmp_path / "x")
        (name,) = [n for n in z.getnames() if n.endswith(".gpkg")]
    gpkg = tmp_path / "x" / name
    for layer in ("commune", "epci"):
        df = pyogrio.read_dataframe(gpkg, layer=layer)
        if layer == "commune":
            df = df.rename(columns={field: field + "_2027"})
        pyogrio.write_dataframe(df, tmp_path / "drift.gpkg", layer=layer, driver="GPKG", promote_to_multi=True)
    out = tmp_path / "drift.7z"
    with py7zr.SevenZipFile(out, "w") as z:
        z.write(tmp_path / "drift.gpkg", name)
    return out.read_bytes()


def test_a_7z_geopackage_is_read_by_the_entry_reader(catalog, http_source, tmp_path) -> None:
    src = catalog["commune_contours"].model_copy(update={"url": http_source.put("ae.7z", AE_SAMPLE.read_bytes())})
    ok = probe_source_(src)
    assert ok.ok and ok.layout == "fields of layer commune (6)", ok.line()
    src = src.model_copy(update={"url": http_source.put("ae2.7z", _admin_express_without(tmp_path, "population"))})
    drift = probe_source_(src)
    assert drift.reachable and drift.drift == ["missing ['population']"], drift.line()


def test_a_large_7z_is_checked_on_its_header_by_ranges(catalog) -> None:
    """A server that answers ranges: the 7z's directory is read at its end, the GeoPackage found by name."""
    import http.server
    import re
    import threading

    data = AE_SAMPLE.read_bytes()

    class Ranges(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_GET(self) -> None:
            a, b = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers["Range"]).groups()
            chunk = data[int(a):min(int(b), len(data) - 1) + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{int(a) + len(chunk) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ranges)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ADMIN-EXPRESS-COG.7z"
        p = probe_source_(catalog["commune_contours"].model_copy(update={"url": url}))
        data = data[:-40]  # the header cut off: a line saying so, not a traceback
        cut = probe_source_(catalog["commune_contours"].model_copy(update={"url": url}))
    finally:
        server.shutdown()
        server.server_close()
    assert p.ok and p.size == AE_SAMPLE.stat().st_size
    assert p.layout == ("7z member ADE-COG_4-0_GPKG_WGS84G_FRA-ED2026-01-01.gpkg present (fields not checked "
                        "without downloading)")
    assert cut.reachable and not cut.ok and "not a readable 7z header" in cut.line(), cut.line()


def test_a_zipped_csv_is_checked_on_its_member_header(catalog, http_source) -> None:
    """INSEE's BPE25.zip (BPE25.csv inside, 95 columns, cp1252): the declared columns are looked for in the
    member's header; a renamed column the entry needs is a drift naming it."""
    sample = SAMPLES / "BPE25_dep35_FIXTURE.zip"
    bpe = catalog["bpe"].model_copy(update={"url": http_source.put("BPE25.zip", sample.read_bytes())})
    p = probe_source_(bpe)
    assert p.ok and "BPE25.csv" in p.layout, p.line()
    with zipfile.ZipFile(sample) as z:
        text = z.read("BPE25.csv").decode("cp1252")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("BPE25.csv", text.replace(";DEPCOM;", ";CODGEO;", 1).encode("cp1252"))
    http_source.put("BPE25.zip", buf.getvalue())
    p = probe_source_(bpe)
    assert not p.ok and "DEPCOM" in " ".join(p.drift), p.line()


def test_one_file_per_departement_is_probed_for_each_departement(catalog, http_source) -> None:
    """Géorisques' TRI deliveries: each département of the regions at the URL pattern; a 404 is a département
    without a TRI (said, not a failure); the layers matching `reader.members` are checked one by one."""
    sample = (SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip").read_bytes()
    http_source.put("tri_2020_sig_di_35.zip", sample)
    per = catalog["flood_zones"].collection.per_departement.model_copy(
        update={"url": http_source.url("tri_2020_sig_di_{dep}.zip")})
    flood = catalog["flood_zones"].model_copy(update={"collection": catalog["flood_zones"].collection.model_copy(
        update={"per_departement": per})})
    (p,) = check_sources_({"flood_zones": flood}, timeout=3, departements=["22", "35"])
    assert p.ok, p.line()
    assert "1/2 département file(s) answered" in p.status and "none for 22 (HTTP 404)" in p.status
    assert p.layout.startswith("fields of 3 layer(s) matching 'n_tri_*_inondable_*_s_*.shp' (dép. 35")
    # a layer that lost its scenario field: a drift naming the département and the layer
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(sample)) as src, zipfile.ZipFile(buf, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith("_02moy_s_035.dbf"):
                data = data.replace(b"scenario", b"scenarix")  # same length: the header stays valid
            z.writestr(n, data)
    http_source.put("tri_2020_sig_di_35.zip", buf.getvalue())
    (p,) = check_sources_({"flood_zones": flood}, timeout=3, departements=["22", "35"])
    assert not p.ok and p.drift == ["dép. 35: FRG_TRI_RENNES/n_tri_rennes_inondable_01_02moy_s_035.shp: missing "
                                    "['scenario']"], p.drift
    # no département answers: unreachable, each reason said
    (p,) = check_sources_({"flood_zones": flood}, timeout=3, departements=["22"])
    assert not p.reachable and p.status == "none for 22 (HTTP 404)"


def test_a_series_is_checked_in_its_current_release_layout(catalog, http_source) -> None:
    """Filosofi's current release (2021): its member is picked beside the `meta_` file and its DISP_*21 names are
    looked for; the 2019 names the bundled release uses are not asked of the production file."""
    from tests.integration.test_filosofi_releases import _layout_2021

    filo = catalog["filosofi_iris"].model_copy(update={"url": http_source.put("filo.zip", _layout_2021()),
                                                        "insee": None})
    p = probe_source_(filo)
    assert p.ok and "BASE_TD_FILO_IRIS_2021_DISP.csv" in p.layout, p.line()
    http_source.put("filo.zip", _layout_2021(member="BASE_TD_FILO_IRIS_2022_DISP.csv"))
    p = probe_source_(filo)
    assert not p.ok and "member BASE_TD_FILO_IRIS_2021_DISP.csv: 0 found" in " ".join(p.drift), p.line()


def test_an_insee_archive_is_read_through_its_dictionary(catalog, http_source) -> None:
    """INSEE's 2024-list incomes archive (FIXTURE): read as a load reads it, through its `meta_` dictionary; a
    variable renamed with the release's year suffix is no drift (the entry names it by pattern), a variable the
    indicators need missing is, naming it."""
    from tests.data.insee_qpv24_fixture import archive

    src = catalog["filosofi_qpv"].model_copy(update={"url": http_source.put("qp24.zip", archive("revenus")),
                                                      "insee": None})
    p = probe_source_(src)
    assert p.ok and "INSEE archive: dictionary and data files read (3 members)" in p.layout, p.line()
    renamed = archive("revenus").replace(b"DISP_TP60_A21", b"DISP_TP60_A22")
    http_source.put("qp24.zip", renamed)
    assert probe_source_(src).ok
    http_source.put("qp24.zip", archive("revenus", drop="DISP_TP60_A21"))
    p = probe_source_(src)
    assert not p.ok and "DISP_TP60_A*" in " ".join(p.drift) and "release 2021" in " ".join(p.drift), p.line()
