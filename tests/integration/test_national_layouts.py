"""Catalogue entries read the publishers' national containers and the bundled samples alike.

`qpv_2015`'s production file is ANCT's national archive on data.gouv.fr: a ZIP of Shapefiles
(`QP_METROPOLE_LB93.*`, EPSG:2154, and an overseas set in WGS84), fields CODE_QP, NOM_QP, COMMUNE_QP
(shared/SOURCES.md §2). The bundled sample is RésO Villes' GeoJSON with the same fields. Here the
sample's six real QPV are rewritten in the national archive's layout, and read by the same entry.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import geopandas as gpd
import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import InputError
from tests.conftest import SAMPLES

pytestmark = pytest.mark.postgis

QPV_SAMPLE = SAMPLES / "qpv2015_dept35_esigat_resovilles.geojson"


def _national_archive(tmp_path: Path, *, multi_commune: bool = True) -> bytes:
    gdf = gpd.read_file(QPV_SAMPLE)[["CODE_QP", "NOM_QP", "COMMUNE_QP", "geometry"]]
    if multi_commune:  # the national file names every commune of a QPV, the main one first
        gdf.loc[gdf.CODE_QP == "QP035003", "COMMUNE_QP"] = "Rennes, Saint-Jacques-de-la-Lande"
    out = tmp_path / "national"
    out.mkdir()
    gdf.to_crs(2154).to_file(out / "QP_METROPOLE_LB93.shp", encoding="utf-8")
    gdf.to_file(out / "QP_METROPOLEOUTREMER_WGS84_EPSG4326.shp", encoding="utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(out.iterdir()):
            zf.write(p, p.name)
    return buf.getvalue()


def test_qpv_2015_reads_the_national_zip_of_shapefiles_and_the_geojson_sample(env, catalog, http_source,
                                                                                 tmp_path: Path) -> None:
    ingest(env, catalog["cog_communes"], sample=True)
    url = http_source.put("qp-politiquedelaville-shp.zip", _national_archive(tmp_path))
    res = ingest(env, catalog["qpv_2015"], url=url)
    assert res.status == "success" and res.rows_loaded == 6
    with psycopg.connect(env.uri) as conn:
        national = conn.execute("SELECT code_qp, insee_com, round(ST_Area(geom)) FROM ref.qpv "
                                "WHERE generation = 2015 ORDER BY 1").fetchall()
    assert dict((c, i) for c, i, _ in national)["QP035003"] == "35238"  # Rennes, the first name
    assert ingest(env, catalog["qpv_2015"], sample=True, force=True).status == "success"
    with psycopg.connect(env.uri) as conn:
        sample = conn.execute("SELECT code_qp, insee_com, round(ST_Area(geom)) FROM ref.qpv "
                              "WHERE generation = 2015 ORDER BY 1").fetchall()
    assert [r[:2] for r in sample] == [r[:2] for r in national]
    for (_, _, a), (_, _, b) in zip(sample, national, strict=True):
        assert abs(a - b) <= max(2.0, 1e-4 * a)  # the same perimeters, through two CRSs and containers


def test_an_archive_without_the_member_names_what_it_holds(env, catalog, http_source) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("LISEZMOI.txt", "moved")
    with pytest.raises(InputError, match=r"archive: expected member 'QP_METROPOLE_LB93.shp', found 0 among "
                                         r"\['LISEZMOI.txt'\]"):
        ingest(env, catalog["qpv_2015"], url=http_source.put("qp.zip", buf.getvalue()))


AE_SAMPLE = SAMPLES / "ADMIN-EXPRESS-COG_4-0__GPKG_WGS84G_FRA_2026-01-01_dep35_DERIVED.7z"


def _seven_zip(tmp_path: Path, files: dict[str, Path]) -> bytes:
    import py7zr

    out = tmp_path / "out.7z"
    with py7zr.SevenZipFile(out, "w") as z:
        for arcname, path in files.items():
            z.write(path, arcname)
    return out.read_bytes()


def _reference(env, catalog) -> None:
    for sid in ("cog_communes", "cog_mouvements", "epci_names"):
        assert ingest(env, catalog[sid], sample=True).status == "success"


def test_commune_outlines_read_ign_7z_geopackage(env, catalog) -> None:
    """The sample is IGN's container (7z → GeoPackage, layer `commune`, field names of ADMIN EXPRESS 4.0):
    the multi-valued EPCI field is reduced to its first SIREN and the EPCI gets its name from layer `epci`."""
    _reference(env, catalog)
    res = ingest(env, catalog["commune_contours"], sample=True)
    assert res.status == "success" and res.rows_loaded == 332
    src = gpd.read_file(SAMPLES / "communes_dept35_datafrance.geojson")
    with psycopg.connect(env.uri) as conn:
        rennes = conn.execute("SELECT nom, population, siren_epci, nom_epci, ST_SRID(geom) FROM ref.commune_contour "
                              "WHERE insee_com = '35238'").fetchone()
        total = conn.execute("SELECT sum(population) FROM ref.commune_contour").fetchone()[0]
    expected = src.set_index("insee_com").loc["35238"]
    assert rennes == ("Rennes", int(expected.population_municipale), "243500139", "Rennes Métropole", 2154)
    assert total == src.population_municipale.astype(int).sum()


def test_a_truncated_or_wrong_7z_names_what_is_wrong_and_keeps_the_load(env, catalog, http_source,
                                                                         tmp_path: Path) -> None:
    _reference(env, catalog)
    assert ingest(env, catalog["commune_contours"], sample=True).status == "success"
    body = AE_SAMPLE.read_bytes()
    with pytest.raises(InputError, match=r"source commune_contours, file ae\.7z: not a valid 7z archive \(.*\); "
                                         r"truncated download\?"):
        ingest(env, catalog["commune_contours"], url=http_source.put("ae.7z", body[: len(body) // 2]))
    readme = tmp_path / "LISEZMOI.txt"
    readme.write_text("livraison sans GeoPackage")
    with pytest.raises(InputError, match=r"archive: expected one Shapefile, GeoJSON or GeoPackage, found 0 among "
                                         r"\['ADMIN-EXPRESS-COG/LISEZMOI.txt'\]"):
        ingest(env, catalog["commune_contours"], url=http_source.put("empty.7z", _seven_zip(
            tmp_path, {"ADMIN-EXPRESS-COG/LISEZMOI.txt": readme})))
    other = tmp_path / "other.gpkg"
    gpd.read_file(QPV_SAMPLE).to_file(other, layer="quartier", driver="GPKG")
    with pytest.raises(InputError, match=r"file layer\.7z: cannot be read as a vector dataset .*: Layer 'commune' "
                                         r"could not be opened"):
        ingest(env, catalog["commune_contours"], url=http_source.put("layer.7z", _seven_zip(
            tmp_path, {"x/ADE.gpkg": other})))
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM ref.commune_contour").fetchone()[0] == 332
