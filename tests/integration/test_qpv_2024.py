"""The 2024 QPV list from ANCT's national archive layout, and a third region rolled out with one file.

The sample is the 135 real 2024 QPV of Provence-Alpes-Côte d'Azur rebuilt in ANCT's layout
(`include/sample_data/qpv2024_paca_anct_layout.zip`): it loads where region 93 is configured and is
skipped, with the reason, where it is not (the demo's regions 52 and 53)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from qpvhub.catalog.regions import load_regions
from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import InputError
from qpvhub.publish import publish_region
from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.postgis

ARCHIVE = SAMPLES / "qpv2024_paca_anct_layout.zip"
MEMBER = "GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson"


def test_qpv_2024_sample_loads_135_qpv_of_paca_and_region_93_publishes_the_2024_list(env93, catalog) -> None:
    env, cog_url = env93
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    res = ingest(env, catalog["qpv_2024"], sample=True)
    assert res.status == "success" and res.rows_loaded == 135
    with psycopg.connect(env.uri) as conn:
        n, valid, srid, codes, deps = conn.execute(
            "SELECT count(*), bool_and(ST_IsValid(geom)), min(ST_SRID(geom)), "
            "bool_and(code_qp ~ '^QN[0-9]{3}[0-9]{2}[A-Z]$'), array_agg(DISTINCT dep ORDER BY dep) "
            "FROM ref.qpv WHERE generation = 2024").fetchone()
        area = conn.execute("SELECT ST_Area(geom) / 10000 FROM ref.qpv WHERE code_qp = 'QN01332M'").fetchone()[0]
    assert (n, valid, srid, codes) == (135, True, 2154, True)
    with psycopg.connect(env.uri) as conn:  # the sample has no lib_com: the COG's name for the code (transform)
        names = conn.execute("SELECT count(*) FILTER (WHERE q.lib_com = c.nom), count(*) FROM ref.qpv q "
                             "JOIN ref.commune c USING (insee_com) WHERE q.generation = 2024").fetchone()
    assert names == (135, 135)
    assert deps == ["04", "05", "06", "13", "83", "84"]
    assert 225 < area < 240  # 231.9 ha per the file's provenance (Centre Ville 3e Arrondissement)

    run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        per_gen = dict(conn.execute("SELECT generation, count(*) FROM mart.qpv_indicator "
                                    "WHERE indicator_id = 'superficie_ha' GROUP BY 1").fetchall())
        stats_2024 = conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE generation = 2024 "
                                  "AND indicator_id = 'population'").fetchone()[0]
    assert per_gen == {2024: 135}
    assert stats_2024 == 0  # SIG Ville publishes the 2015 list: statistics absent for 2024, never 0

    regions = load_regions(env.settings.regions_dir, ROOT / "include" / "reference")
    result = publish_region(env, regions["93"])
    assert result.product == "qpv_profil" and {p.product for p in result.parts} == {
        f"qpv_profil_dep{d}" for d in ("04", "05", "06", "13", "83", "84")}
    latest = env.settings.store.path / "published" / "93" / "qpv_profil" / "latest"
    csv = pd.read_csv(latest / "qpv_profil_93.csv", dtype={"dep": str, "insee_com": str})
    assert len(csv) == 135 and set(csv["generation"]) == {2024} and csv["code_qp"].str.startswith("QN").all()
    assert "population" not in csv.columns  # absent, not 0
    pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
    assert pkg["qpvhub"]["qpv_generation"]["list"] == 2024 and "liste 2024" in pkg["title"]


def test_the_sample_outside_the_deployment_is_skipped_with_the_reason(env, catalog) -> None:
    """Regions 52 and 53 only (the demo): PACA's QPV are none of theirs; the run says so and loads nothing."""
    ingest(env, catalog["cog_communes"], sample=True)
    res = ingest(env, catalog["qpv_2024"], sample=True)
    assert res.status == "skipped"
    assert "none of the 135 rows" in res.reason and "22, 29, 35" in res.reason
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM ref.qpv WHERE generation = 2024").fetchone() == (0,)
        status, error = conn.execute("SELECT status, error FROM meta.source_runs WHERE run_id = %s",
                                     (res.run_id,)).fetchone()
    assert status == "skipped" and "deployment's regions" in error


def test_bare_geojson_zip_and_missing_member(env93, catalog, http_source, tmp_path: Path) -> None:
    """The resource was a bare GeoJSON before it became a ZIP: both read the same; a ZIP without the
    member, or a CSV served instead, fails naming what differed and the previous load stays."""
    env, cog_url = env93
    ingest(env, catalog["cog_communes"], url=cog_url)
    with zipfile.ZipFile(ARCHIVE) as zf:
        bare = zf.read(MEMBER)
    res = ingest(env, catalog["qpv_2024"], url=http_source.put("942d4ee8", bare))
    assert res.status == "success" and res.rows_loaded == 135
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SHP/README.txt", "no geojson here")
    with pytest.raises(InputError, match=r"archive: expected member 'GEOJSON/QP2024_France_Hexagonale_Outre_Mer_"
                                         r"WGS84.geojson', found 0 among \['SHP/README.txt'\]"):
        ingest(env, catalog["qpv_2024"], url=http_source.put("moved.zip", buf.getvalue()))
    with pytest.raises(InputError, match=r"not GeoJSON: the file does not start with a JSON object"):
        ingest(env, catalog["qpv_2024"], url=http_source.put("now.csv", b"code_qp;lib_qp\nQN01332M;x\n"))
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM ref.qpv WHERE generation = 2024").fetchone() == (135,)
