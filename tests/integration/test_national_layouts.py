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
from qpvhub.errors import InputError
from qpvhub.pipeline import ingest

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
    with pytest.raises(InputError, match=r"archive: no Shapefile or GeoJSON named QP_METROPOLE_LB93.shp among "
                                         r"\['LISEZMOI.txt'\]"):
        ingest(env, catalog["qpv_2015"], url=http_source.put("qp.zip", buf.getvalue()))
