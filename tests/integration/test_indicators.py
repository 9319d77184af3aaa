"""The indicators mart on the bundled Rennes sample: every theme computed in PostGIS, and values
recomputed independently with geopandas/shapely from the same real files."""

from __future__ import annotations

import csv
import importlib
import io
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd
import psycopg
import pytest
import shapely
from psycopg import sql

from tests.conftest import BPE_SAMPLE, ROOT, SAMPLES, _with_db, as_role

pytestmark = pytest.mark.postgis

THEMES = {"socio-démographie", "emploi", "mobilité", "services", "climat", "géographie"}

def _env_of(uri: str, project: Path):
    """An environment on `uri` whose project is `project` (its own sql/, the checkout's include/)."""
    from qpvhub.platform.env import Env
    from qpvhub.platform.settings import Settings
    from qpvhub.platform.store import LocalStore

    if not (project / "include").exists():
        (project / "include").symlink_to(ROOT / "include")
    return Env(settings=Settings.load(project=project), uri=uri, store=LocalStore(project / "store"))



@pytest.fixture(scope="module")
def mart(pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every catalogue source loaded from its bundled sample, then the indicators: one database for the module."""
    from qpvhub.catalog.loader import load_catalog, load_order
    from qpvhub.indicators.runner import run_indicators
    from qpvhub.ingest.parts import ingest_samples
    from qpvhub.platform.db import migrate
    from qpvhub.platform.env import Env

    name = "qpvhub_ind_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    uri = _with_db(pg_admin_uri, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_QPVHUB_POSTGIS", uri)
        mp.setenv("QPVHUB_HOME", str(tmp_path_factory.mktemp("home")))
        mp.delenv("AIRFLOW_CONN_QPVHUB_STORE", raising=False)
        migrate(uri, ROOT / "sql")
        env = Env.from_settings()
        catalog = load_catalog(ROOT / "include" / "sources")
        for source in load_order(catalog):
            # every bundled release of a series, every feed of a collection (STAR, Sailcoop)
            for res in ingest_samples(env, source):
                # the 2024 sample is PACA's: nothing for regions 52 and 53 (tests/integration/test_qpv_2024.py)
                assert res.status == ("skipped" if source.id == "qpv_2024" else "success"), (source.id, res.reason)
        run_indicators(env)
        yield uri
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _values(uri: str, indicator: str, scope: str = "qpv") -> dict[str, float]:
    with psycopg.connect(uri) as conn:
        return dict(conn.execute("SELECT code_qp, value FROM mart.qpv_indicator WHERE indicator_id = %s "
                                 "AND scope = %s AND generation = 2015", (indicator, scope)).fetchall())


@pytest.fixture(scope="module")
def qpv() -> gpd.GeoDataFrame:
    return gpd.read_file(SAMPLES / "qpv2015_dept35_esigat_resovilles.geojson").to_crs(2154).set_index("CODE_QP")


def _points(gdf: gpd.GeoDataFrame) -> gpd.GeoSeries:
    return gdf.geometry.to_crs(2154)


def test_profile_has_one_row_per_qpv_and_every_theme(mart: str) -> None:
    with psycopg.connect(mart) as conn:
        n_profile, n_qpv = conn.execute(
            "SELECT (SELECT count(*) FROM mart.qpv_profile), (SELECT count(*) FROM ref.qpv)").fetchone()
        themes = {r[0] for r in conn.execute(
            "SELECT DISTINCT c.theme FROM mart.qpv_indicator i JOIN mart.indicator_catalog c USING (indicator_id)")}
        per_qpv = dict(conn.execute(
            "SELECT i.code_qp, array_agg(DISTINCT c.theme ORDER BY c.theme) FROM mart.qpv_indicator i "
            "JOIN mart.indicator_catalog c USING (indicator_id) WHERE i.code_qp <> 'QP035001' GROUP BY 1"))
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'mart'")}
        undocumented = conn.execute(
            "SELECT c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'mart' AND c.relkind IN ('r', 'v') "
            "AND a.attnum > 0 AND NOT a.attisdropped AND col_description(c.oid, a.attnum) IS NULL "
            "AND a.attname NOT IN ('code_qp', 'generation', 'lib_qp', 'insee_com', 'lib_com', 'dep')").fetchall()
    assert n_profile == n_qpv == 6
    assert themes == THEMES
    # the five Rennes QPV are inside every sample's coverage (Saint-Malo is outside the STAR network)
    assert per_qpv == dict.fromkeys(["QP035002", "QP035003", "QP035004", "QP035005", "QP035006"], sorted(THEMES))
    assert {"theme_socio_demographie", "theme_emploi", "theme_mobilite", "theme_services", "theme_climat",
            "theme_geographie", "qpv_profile"} <= views
    assert undocumented == []


def test_area_matches_geopandas(mart: str, qpv: gpd.GeoDataFrame) -> None:
    got = _values(mart, "superficie_ha")
    for code, geom in qpv.geometry.items():
        assert got[code] == pytest.approx(geom.area / 10_000, rel=1e-3), code


def test_stops_within_300m_and_covered_share_match_shapely(mart: str, qpv: gpd.GeoDataFrame) -> None:
    with zipfile.ZipFile(SAMPLES / "gtfs_star_rennes_20160419.zip") as z:
        stops = pd.read_csv(z.open("stops.txt"), dtype=str)
    stops = stops[stops["location_type"].fillna("0").isin(["0", ""])]
    pts = gpd.GeoSeries(gpd.points_from_xy(stops.stop_lon.astype(float), stops.stop_lat.astype(float)),
                        crs=4326).to_crs(2154)
    cover = shapely.union_all(pts.buffer(300, quad_segs=8).values)
    n300, inside, share, dist = (_values(mart, i) for i in
                                 ("arrets_300m", "arrets_dans_qpv", "part_surface_300m_arret", "distance_arret_m"))
    assert set(n300) == {"QP035002", "QP035003", "QP035004", "QP035005", "QP035006"}  # not Saint-Malo
    for code in n300:
        geom = qpv.geometry[code]
        assert n300[code] == int((pts.distance(geom) <= 300).sum()), code
        assert inside[code] == int(pts.within(geom).sum()), code
        assert share[code] == pytest.approx(100 * geom.intersection(cover).area / geom.area, abs=0.15), code
        expected = 0 if inside[code] else round(pts.distance(geom).min())
        assert dist[code] == pytest.approx(expected, abs=1), code
        assert n300[code] > 0


def test_networks_serving_each_qpv_match_the_feeds(mart: str, qpv: gpd.GeoDataFrame) -> None:
    """Every loaded feed counts: the networks with a stop within 300 m, from each GTFS zip read with pandas."""
    feeds = {"star": ("STAR (Rennes Métropole)", "gtfs_star_rennes_20160419.zip"),
             "sailcoop": ("Sailcoop (Concarneau ⇄ Les Glénan)", "gtfs_sailcoop_glenan_2025.zip")}
    near: dict[str, set[str]] = {}
    for feed, (_, name) in feeds.items():
        with zipfile.ZipFile(SAMPLES / name) as z:
            stops = pd.read_csv(z.open("stops.txt"), dtype=str)
        if "location_type" in stops:
            stops = stops[stops["location_type"].fillna("0").isin(["0", ""])]
        pts = gpd.GeoSeries(gpd.points_from_xy(stops.stop_lon.astype(float), stops.stop_lat.astype(float)),
                            crs=4326).to_crs(2154)
        for code in qpv.index:
            if (pts.distance(qpv.geometry[code]) <= 300).any():
                near.setdefault(code, set()).add(feed)
    got = _values(mart, "reseaux_300m")
    assert got == {code: float(len(fs)) for code, fs in near.items()}  # Saint-Malo: no network, absent
    with psycopg.connect(as_role(mart, "qpvhub_analyst")) as conn:
        named = conn.execute("SELECT code_qp, feed_id, network FROM mart.qpv_networks ORDER BY 1, 2").fetchall()
        per_feed = dict(conn.execute("SELECT feed_id, count(*) FROM src.gtfs_stops GROUP BY 1").fetchall())
    assert named == [(code, f, feeds[f][0]) for code in sorted(near) for f in sorted(near[code])]
    assert {c for c, *_ in named} == {"QP035002", "QP035003", "QP035004", "QP035005", "QP035006"}
    assert per_feed == {"star": 1493, "sailcoop": 3}  # both feeds loaded, as partitions of one table


def test_job_offers_within_5km_and_in_the_isochrone_match(mart: str, qpv: gpd.GeoDataFrame) -> None:
    offers = _points(gpd.read_file(SAMPLES / "offres.geojson"))
    got = _values(mart, "offres_emploi_5km")
    assert set(got) == set(qpv.index)  # offers reach Saint-Malo too
    for code, n in got.items():
        assert n == int((offers.distance(qpv.geometry[code]) <= 5000).sum()), code
    iso = gpd.read_file(SAMPLES / "isochrones_qp035002_resovilles.geojson").to_crs(2154)
    tc30 = iso[(iso.AA_MODE == "TC") & (iso.AA_MINS == "30")].geometry.union_all()
    assert _values(mart, "offres_emploi_tc_30min") == {"QP035002": float(offers.intersects(tc30).sum())}
    near = offers.distance(qpv.geometry["QP035002"]) <= 5000
    share = round(100 * int((near & offers.intersects(tc30)).sum()) / int(near.sum()), 1)
    assert _values(mart, "part_offres_tc_30min") == {"QP035002": pytest.approx(share)}
    ratio = _values(mart, "demandeurs_par_offre_5km")
    demandeurs = _values(mart, "demandeurs_emploi_abc")
    for code, v in ratio.items():
        assert v == pytest.approx(round(demandeurs[code] / got[code], 2)), code


def test_facilities_by_domain_within_500m_match(mart: str, qpv: gpd.GeoDataFrame) -> None:
    bpe = pd.read_csv(BPE_SAMPLE, sep=";", dtype=str, encoding="cp1252").dropna(
        subset=["LAMBERT_X", "LAMBERT_Y"])
    pts = gpd.GeoSeries(gpd.points_from_xy(bpe.LAMBERT_X.astype(float), bpe.LAMBERT_Y.astype(float)), crs=2154)
    for dom in "ABCDEFG":
        got = _values(mart, f"equipements_500m_dom_{dom.lower()}")
        mask = bpe.TYPEQU.str.startswith(dom).to_numpy()
        for code, geom in qpv.geometry.items():
            assert got[code] == int((pts[mask].distance(geom) <= 500).sum()), (dom, code)


def test_flood_shares_match_shapely_for_qpv_and_commune_outside_qpv(mart: str, qpv: gpd.GeoDataFrame) -> None:
    archive = SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip"
    with zipfile.ZipFile(archive) as z:  # every flood-surface layer of the delivery, not the TRI perimeter
        layers = [n for n in z.namelist() if "_inondable_" in n and n.endswith(".shp")]
    flood = pd.concat([gpd.read_file(f"zip://{archive}!{n}") for n in layers]).to_crs(2154)
    assert sorted(flood.scenario) == ["01For", "02Moy", "04Fai"]
    zone = flood.geometry.union_all()
    strong = flood[flood.scenario.str.startswith("01For")].geometry.union_all()
    medium = flood[flood.scenario.str.startswith(("01For", "02Moy"))].geometry.union_all()
    got, got_strong = _values(mart, "part_surface_inondable"), _values(mart, "part_surface_inondable_forte")
    got_medium = _values(mart, "part_surface_inondable_moyenne")
    assert got, "the fixture's flood bands cross Rennes"
    for code, v in got.items():
        geom = qpv.geometry[code]
        assert v == pytest.approx(100 * geom.intersection(zone).area / geom.area, abs=0.1), code
        assert got_strong[code] == pytest.approx(100 * geom.intersection(strong).area / geom.area, abs=0.1), code
        assert got_medium[code] == pytest.approx(100 * geom.intersection(medium).area / geom.area, abs=0.1), code
    communes = gpd.read_file(SAMPLES / "communes_dept35_datafrance.geojson").to_crs(2154).set_index("insee_com")
    rennes = communes.geometry["35238"]
    hors = rennes.difference(qpv.geometry.union_all())
    hors_share = _values(mart, "part_surface_inondable", "commune_hors_qpv")["QP035002"]
    assert hors_share == pytest.approx(100 * hors.intersection(zone).area / hors.area, abs=0.1)


def _sigville(name: str) -> dict[str, dict[str, str]]:
    text = (SAMPLES / name).read_text(encoding="utf-8-sig")
    return {r["CODGEO"]: r for r in csv.DictReader(io.StringIO(text), delimiter=";")}


def _num(cell: str) -> float:
    return float(re.sub(r"[\s\u202f\xa0]", "", cell).replace(",", "."))


def test_population_and_commune_outside_qpv_match_the_sigville_file(mart: str) -> None:
    demo = _sigville("sigville_qpv2015_DEMO_2022_reg52_53.csv")
    qpv, com, hors = (_values(mart, "population", s) for s in ("qpv", "commune", "commune_hors_qpv"))
    for code in qpv:
        row = demo[code]
        assert qpv[code] == _num(row["POP_MUN"])
        assert com[code] == _num(row["POP_COM"])
        assert hors[code] == _num(row["POP_COM"]) - _num(row["POP_COM_QP"])
    revn = _sigville("sigville_qpv2015_REVN_2022_reg52_53.csv")
    assert _values(mart, "taux_pauvrete")["QP035004"] == _num(revn["QP035004"]["TP60"])
    with psycopg.connect(mart) as conn:
        mil = {r[0] for r in conn.execute(
            "SELECT millesime FROM mart.qpv_indicator WHERE indicator_id = 'population'")}
    assert mil == {"2022"}


def test_reference_geography_shares_and_epci(mart: str) -> None:
    with psycopg.connect(mart) as conn:
        shares = dict(conn.execute("SELECT code_qp, sum(share_of_qpv) FROM ref.qpv_commune GROUP BY 1"))
        main = conn.execute("SELECT count(*) FROM ref.qpv q JOIN ref.qpv_commune c USING (generation, code_qp) "
                            "WHERE c.insee_com = q.insee_com").fetchone()[0]
        epci = conn.execute("SELECT nom_epci, n_communes FROM ref.epci WHERE siren_epci = '243500139'").fetchone()
        pieces = conn.execute("SELECT max(ST_NPoints(geom)) FROM ref.qpv_subdivided").fetchone()[0]
        same = conn.execute(
            "SELECT max(ST_Area(ST_SymDifference(q.geom, s.g))) FROM ref.qpv q JOIN (SELECT code_qp, "
            "ST_Multi(ST_Union(geom)) g FROM ref.qpv_subdivided GROUP BY 1) s USING (code_qp)").fetchone()[0]
    assert set(shares) == {f"QP03500{i}" for i in range(1, 7)}
    assert all(0.97 <= s <= 1.0001 for s in shares.values()), shares
    assert main == 6  # each QPV overlaps the commune it is published with
    assert epci == ("Rennes Métropole", 43)
    assert pieces <= 65 and same < 1  # m²: the pieces rebuild the perimeter


def test_missing_source_gives_absent_indicators_not_zero(db_uri: str, qpvhub_home: Path) -> None:
    from qpvhub.catalog.loader import load_catalog
    from qpvhub.indicators.runner import run_indicators
    from qpvhub.ingest.pipeline import ingest
    from qpvhub.platform.env import Env

    env = Env.from_settings()
    catalog = load_catalog(ROOT / "include" / "sources")
    for sid in ("cog_communes", "qpv_2015", "rennes_bus_stops"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    written = run_indicators(env)
    assert written["superficie_ha"] == 6
    assert written["arrets_300m"] == written["part_surface_inondable"] == written["population"] == 0
    with psycopg.connect(db_uri) as conn:
        ids = {r[0] for r in conn.execute("SELECT DISTINCT indicator_id FROM mart.qpv_indicator")}
        cols = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = 'mart' AND table_name = 'qpv_profile'")}
    assert ids == {"superficie_ha"}  # nb_communes needs the commune outlines
    assert "arrets_300m" not in cols and "superficie_ha" in cols


def test_correspondence_between_generations_comes_from_geometry(db_uri: str, qpvhub_home: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    from qpvhub.catalog.loader import load_catalog, load_source
    from qpvhub.indicators.runner import run_indicators
    from qpvhub.ingest.pipeline import ingest
    from qpvhub.platform.env import Env

    env = Env.from_settings()
    catalog = load_catalog(ROOT / "include" / "sources")
    spec = tmp_path / "qpv_2024_test.yml"
    shutil.copy(ROOT / "tests" / "data" / "qpv_2024_test.yml", spec)
    for source in (catalog["cog_communes"], catalog["qpv_2015"]):
        assert ingest(env, source, sample=True).status == "success"
    run_indicators(env)
    with psycopg.connect(db_uri) as conn:
        assert conn.execute("SELECT count(*) FROM ref.qpv_correspondence").fetchone()[0] == 0  # one generation
    assert ingest(env, load_source(spec), sample=True).status == "success"
    run_indicators(env)
    with psycopg.connect(db_uri) as conn:
        pairs = conn.execute("SELECT code_qp_2015, code_qp_2024, round(share_of_2015::numeric, 3), "
                             "round(share_of_2024::numeric, 3) FROM ref.qpv_correspondence ORDER BY 1").fetchall()
        area = dict(conn.execute("SELECT generation, count(*) FROM mart.qpv_indicator "
                                 "WHERE indicator_id = 'superficie_ha' GROUP BY 1"))
    # the fixture's 2024 perimeters are the 2015 ones (tests/data/PROVENANCE.md): each pair overlaps fully
    assert [(a, b[:5]) for a, b, *_ in pairs] == [(f"QP03500{i}", f"QN035{i:02d}"[:5]) for i in range(1, 7)]
    assert all(s15 == s24 == 1 for *_, s15, s24 in pairs)
    assert area == {2015: 6, 2024: 6}


def test_analyst_guide_queries_run_as_the_analyst(mart: str) -> None:
    """Every SQL block of docs/analyst_guide.md runs, read-only, as qpvhub_analyst and returns rows."""
    guide = (ROOT / "docs" / "analyst_guide.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", guide, re.S)
    assert len(blocks) >= 3
    analyst = as_role(mart, "qpvhub_analyst")
    with psycopg.connect(analyst) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "qpvhub_analyst"
        for block in blocks:
            rows = conn.execute(block).fetchall()
            assert rows, block
        # read-only by default; switched off here to prove the privileges themselves refuse writes
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        conn.commit()
        for stmt in ("INSERT INTO mart.indicator_catalog (indicator_id) VALUES ('x')",
                     "UPDATE mart.qpv_indicator SET value = 0", "DELETE FROM ref.qpv",
                     "CREATE TABLE mart.mine (a int)", "CREATE VIEW mart.v AS SELECT 1"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
            conn.rollback()


def test_mart_suite_results_are_kept(mart: str) -> None:
    with psycopg.connect(mart) as conn:
        rows = conn.execute("SELECT run_id, count(*), bool_and(success) FROM meta.validation_results "
                            "WHERE suite = 'mart_qpv_indicator' GROUP BY 1").fetchall()
        n_ranged = conn.execute("SELECT count(*) FROM mart.indicator_catalog").fetchone()[0]
    assert len(rows) == 1 and rows[0][0].startswith("indicators-") and rows[0][2] is True
    assert rows[0][1] == 4 + n_ranged  # keys, code format, millésime, a profile per QPV; one range per indicator


def test_per_qpv_maps_show_the_stops_and_facilities_within_500m(mart: str, qpv: gpd.GeoDataFrame) -> None:
    import xml.etree.ElementTree as ET

    from qpvhub.publish.portal import qpv_maps_svg

    with psycopg.connect(mart) as conn:
        maps = qpv_maps_svg(conn, qpv.reset_index().rename(columns={"CODE_QP": "code_qp", "NOM_QP": "lib_qp"}))
    with zipfile.ZipFile(SAMPLES / "gtfs_star_rennes_20160419.zip") as z:
        stops = pd.read_csv(z.open("stops.txt"), dtype=str)
    stops = stops[stops["location_type"].fillna("0").isin(["0", ""])]
    pts = gpd.GeoSeries(gpd.points_from_xy(stops.stop_lon.astype(float), stops.stop_lat.astype(float)),
                        crs=4326).to_crs(2154)
    svg = ET.fromstring(maps["QP035005"])
    circles = svg.findall("{http://www.w3.org/2000/svg}circle[@data-kind='stop']")
    assert len(circles) == int((pts.distance(qpv.geometry["QP035005"]) <= 500).sum()) > 0
    assert sorted(maps) == sorted(qpv.index)


# ------------------------------------------------------------------ every indicator, recomputed independently
# Each check reads the bundled files with csv / pandas / geopandas / shapely only (never the project's SQL
# or readers) and compares with the mart. INDEPENDENT_CHECKS names, for every indicator of the registry,
# the test that recomputes it: adding an indicator without a check fails test_every_indicator_has_a_check.

INDEPENDENT_CHECKS = {
    "superficie_ha": "test_area_matches_geopandas",
    "nb_communes": "test_communes_spanned_match_the_outlines",
    "arrets_300m": "test_stops_within_300m_and_covered_share_match_shapely",
    "reseaux_300m": "test_networks_serving_each_qpv_match_the_feeds",
    "arrets_dans_qpv": "test_stops_within_300m_and_covered_share_match_shapely",
    "part_surface_300m_arret": "test_stops_within_300m_and_covered_share_match_shapely",
    "distance_arret_m": "test_stops_within_300m_and_covered_share_match_shapely",
    "departs_jour_ouvre_300m": "test_weekday_departures_within_300m_match_the_gtfs_files",
    "offres_emploi_5km": "test_job_offers_within_5km_and_in_the_isochrone_match",
    "offres_emploi_tc_30min": "test_job_offers_within_5km_and_in_the_isochrone_match",
    "part_offres_tc_30min": "test_job_offers_within_5km_and_in_the_isochrone_match",
    "demandeurs_par_offre_5km": "test_job_offers_within_5km_and_in_the_isochrone_match",
    **{f"equipements_500m_dom_{d}": "test_facilities_by_domain_within_500m_match" for d in "abcdefg"},
    "equipements_500m": "test_facilities_per_inhabitant_match_the_files",
    "equipements_pour_1000_hab": "test_facilities_per_inhabitant_match_the_files",
    "equipements_500m_pour_1000_hab": "test_facilities_per_inhabitant_match_the_files",
    "part_surface_inondable": "test_flood_shares_match_shapely_for_qpv_and_commune_outside_qpv",
    "part_surface_inondable_forte": "test_flood_shares_match_shapely_for_qpv_and_commune_outside_qpv",
    "part_surface_inondable_moyenne": "test_flood_shares_match_shapely_for_qpv_and_commune_outside_qpv",
    "population": "test_population_and_commune_outside_qpv_match_the_sigville_file",
    "part_moins_25": "test_sigville_rates_and_counts_are_the_files_values",
    "part_60_plus": "test_sigville_rates_and_counts_are_the_files_values",
    "part_etrangers": "test_sigville_rates_and_counts_are_the_files_values",
    "demandeurs_emploi_abc": "test_sigville_rates_and_counts_are_the_files_values",
    "taux_emploi": "test_sigville_rates_and_counts_are_the_files_values",
    "part_emploi_precaire": "test_sigville_rates_and_counts_are_the_files_values",
    "taux_pauvrete": "test_sigville_rates_and_counts_are_the_files_values",
    "revenu_disponible_median": "test_sigville_rates_and_counts_are_the_files_values",
    "taux_pauvrete_iris_median": "test_iris_medians_of_the_main_commune_match_filosofi",
    "revenu_disponible_median_iris_median": "test_iris_medians_of_the_main_commune_match_filosofi",
    # checked where region 93 (the only 2024 list offline) is rolled out: module::test
    **dict.fromkeys(["filosofi_taux_pauvrete", "filosofi_revenu_disponible_median",
                     "filosofi_part_prestations_sociales", "filosofi_rapport_interdecile",
                     "q24_population", "q24_part_moins_25", "q24_part_60_plus", "q24_demandeurs_emploi_abc",
                     "q24_part_demandeurs_1564", "q24_allocataires_caf", "q24_part_allocataires_dependants",
                     "q24_eleves", "q24_candidats_dnb", "q24_taux_reussite_dnb", "q24_logements_sociaux",
                     "q24_part_logement_social", "q24_etablissements", "q24_equipements_pour_1000_hab"],
                    "test_insee_qpv24::test_every_2024_indicator_matches_the_archives"),
}


def test_every_indicator_has_a_check() -> None:
    """The registry's ids (read from the family headers as text) and the checks above are the same set."""
    ids = set()
    for path in sorted((ROOT / "sql" / "indicators").glob("*.sql")):
        ids |= set(re.findall(r"^--   - id: (\w+)", path.read_text(encoding="utf-8"), re.M))
    assert len(ids) >= 35
    missing = sorted(ids - set(INDEPENDENT_CHECKS))
    assert not missing, f"indicators without an independent check: {missing}"
    assert not sorted(set(INDEPENDENT_CHECKS) - ids), "checks of indicators that no longer exist"
    def exists(ref: str) -> bool:
        module, _, name = ref.rpartition("::")
        return hasattr(importlib.import_module(f"tests.integration.{module}"), name) if module else ref in globals()

    assert {t for t in INDEPENDENT_CHECKS.values() if not exists(t)} == set()


def _main_commune() -> dict[str, str]:
    """QPV code → INSEE code of its main commune, by name in the COG sample (csv only)."""
    with (SAMPLES / "v_commune_2026_reg52_53_DERIVED.csv").open(encoding="utf-8") as f:
        by_name = {(r["DEP"], r["LIBELLE"]): r["COM"] for r in csv.DictReader(f) if r["TYPECOM"] == "COM"}
    qpv = gpd.read_file(SAMPLES / "qpv2015_dept35_esigat_resovilles.geojson")
    return {code: by_name[("35", name)] for code, name in zip(qpv.CODE_QP, qpv.COMMUNE_QP, strict=True)}


def test_sigville_rates_and_counts_are_the_files_values(mart: str) -> None:
    """SIG Ville values are published as the files give them: every QPV of the sample, each indicator."""
    demo = _sigville("sigville_qpv2015_DEMO_2022_reg52_53.csv")
    ipro = _sigville("sigville_qpv2015_IPRO_2022_reg52_53.csv")
    revn = _sigville("sigville_qpv2015_REVN_2022_reg52_53.csv")
    pairs = {"part_moins_25": (demo, "TX_TOT_0A24"), "part_60_plus": (demo, "TX_TOT_60ETPLUS"),
             "part_etrangers": (demo, "TX_TOT_ET"), "demandeurs_emploi_abc": (ipro, "ABC"),
             "taux_emploi": (ipro, "TX_TOT_EMPL"), "part_emploi_precaire": (ipro, "TX_TOT_EDLIM"),
             "taux_pauvrete": (revn, "TP60"), "revenu_disponible_median": (revn, "DISP_Q2")}
    codes = {f"QP03500{i}" for i in range(1, 7)}
    for ind, (rows, col) in pairs.items():
        got = _values(mart, ind)
        expected = {c: _num(rows[c][col]) for c in codes if rows[c][col].strip()}
        assert got == expected, ind
        assert expected, ind


def test_iris_medians_of_the_main_commune_match_filosofi(mart: str) -> None:
    text = (SAMPLES / "insee_filosofi2019_disp_iris_reg52_53.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    main = _main_commune()
    for ind, col in (("taux_pauvrete_iris_median", "DISP_TP6019"),
                     ("revenu_disponible_median_iris_median", "DISP_MED19")):
        got = _values(mart, ind, "commune")
        assert set(got) == set(main), ind
        for code, com in main.items():
            vals = pd.Series([_num(r[col]) for r in rows if r["COM"] == com and r[col].strip()])
            assert got[code] == pytest.approx(round(vals.median(), 1), abs=0.051), (ind, code)


def test_facilities_per_inhabitant_match_the_files(mart: str, qpv: gpd.GeoDataFrame) -> None:
    bpe = pd.read_csv(BPE_SAMPLE, sep=";", dtype=str, encoding="cp1252")
    located = bpe.dropna(subset=["LAMBERT_X", "LAMBERT_Y"])
    pts = gpd.GeoSeries(gpd.points_from_xy(located.LAMBERT_X.astype(float), located.LAMBERT_Y.astype(float)),
                        crs=2154)
    demo = _sigville("sigville_qpv2015_DEMO_2022_reg52_53.csv")
    main = _main_commune()
    everything = qpv.geometry.union_all()
    n500, per_500 = _values(mart, "equipements_500m"), _values(mart, "equipements_500m_pour_1000_hab")
    per_qpv, per_com, per_hors = (_values(mart, "equipements_pour_1000_hab", s)
                                  for s in ("qpv", "commune", "commune_hors_qpv"))
    for code, geom in qpv.geometry.items():
        pop, pop_com = _num(demo[code]["POP_MUN"]), _num(demo[code]["POP_COM"])
        pop_hors = pop_com - _num(demo[code]["POP_COM_QP"])
        near = int((pts.distance(geom) <= 500).sum())
        inside = int(pts.intersects(geom).sum())
        in_com = main[code] == located.DEPCOM
        n_com = int((main[code] == bpe.DEPCOM).sum())  # the commune's facilities, located or not
        n_hors = int((in_com.to_numpy() & ~pts.intersects(everything).to_numpy()).sum())
        assert n500[code] == near, code
        assert per_500[code] == pytest.approx(round(1000 * near / pop, 2)), code
        assert per_qpv[code] == pytest.approx(round(1000 * inside / pop, 2)), code
        assert per_com[code] == pytest.approx(round(1000 * n_com / pop_com, 2)), code
        assert per_hors[code] == pytest.approx(round(1000 * n_hors / pop_hors, 2)), code


def test_communes_spanned_match_the_outlines(mart: str, qpv: gpd.GeoDataFrame) -> None:
    communes = gpd.read_file(SAMPLES / "communes_dept35_datafrance.geojson").to_crs(2154)
    got = _values(mart, "nb_communes")
    for code, geom in qpv.geometry.items():
        shares = communes.geometry.intersection(geom).area / geom.area
        assert got[code] == int((shares >= 0.005).sum()), code
    assert got["QP035003"] >= 1


def test_weekday_departures_within_300m_match_the_gtfs_files(mart: str, qpv: gpd.GeoDataFrame) -> None:
    """From calendar.txt, calendar_dates.txt, trips.txt and stop_times.txt: the Monday–Sunday week with the
    most active service-days inside the feed's validity, each stop's departures (pickup allowed) per
    weekday averaged over Monday–Friday, summed over the stops within 300 m."""
    with zipfile.ZipFile(SAMPLES / "gtfs_star_rennes_20160419.zip") as z:
        def read(name: str, **kw) -> pd.DataFrame:
            return pd.read_csv(z.open(name), dtype=str, keep_default_na=False, **kw)
        cal, dates, trips = read("calendar.txt"), read("calendar_dates.txt"), read("trips.txt")
        st = read("stop_times.txt", usecols=lambda c: c in ("trip_id", "stop_id", "pickup_type"))
        stops = read("stops.txt")
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    def active(day: pd.Timestamp) -> set[str]:
        ymd = day.strftime("%Y%m%d")
        on = set(cal[(cal[days[day.weekday()]] == "1") & (cal.start_date <= ymd) & (cal.end_date >= ymd)].service_id)
        ex = dates[dates.date == ymd]
        return (on | set(ex[ex.exception_type == "1"].service_id)) - set(ex[ex.exception_type == "2"].service_id)

    bounds = pd.to_datetime(pd.concat([cal.start_date, cal.end_date, dates.date]), format="%Y%m%d")
    start, end = bounds.min(), bounds.max()
    monday = start + pd.Timedelta(days=(7 - start.weekday()) % 7)
    best, best_n = None, -1
    while monday + pd.Timedelta(days=6) <= end:
        n = sum(len(active(monday + pd.Timedelta(days=i))) for i in range(7))
        if n > best_n:
            best, best_n = monday, n
        monday += pd.Timedelta(days=7)
    st = st[st.get("pickup_type", pd.Series("", index=st.index)) != "1"]
    per_stop = pd.Series(0.0, index=stops.stop_id)
    for i in range(5):
        running = trips[trips.service_id.isin(active(best + pd.Timedelta(days=i)))].trip_id
        per_stop = per_stop.add(st[st.trip_id.isin(running)].groupby("stop_id").size(), fill_value=0)
    avg = (per_stop / 5).round(1)
    stops = stops[stops.location_type.replace("", "0") == "0"]
    pts = gpd.GeoSeries(gpd.points_from_xy(stops.stop_lon.astype(float), stops.stop_lat.astype(float)),
                        crs=4326, index=stops.stop_id).to_crs(2154)
    got = _values(mart, "departs_jour_ouvre_300m")
    assert set(got) == {f"QP03500{i}" for i in range(2, 7)}
    for code, value in got.items():
        near = pts[pts.distance(qpv.geometry[code]) <= 300].index
        assert value == pytest.approx(avg.reindex(near).fillna(0).sum(), abs=0.5), code


def test_a_family_computing_another_list_than_it_declares_is_refused(mart: str, tmp_path: Path) -> None:
    """`generation` in a family's header is what the fiches rely on to leave it out of the other list's: a family
    whose values say otherwise stops the run, naming it, and the mart keeps its values."""
    import shutil

    from qpvhub.indicators.runner import run_indicators
    from qpvhub.platform.errors import ConfigError

    sql_dir = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sql_dir)
    fam = sql_dir / "indicators" / "geographie.sql"
    fam.write_text(fam.read_text(encoding="utf-8").replace("-- family: geographie\n",
                                                           "-- family: geographie\n-- generation: 2024\n", 1),
                   encoding="utf-8")
    with psycopg.connect(mart) as conn:
        before = conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE indicator_id = 'superficie_ha'").fetchone()
    with pytest.raises(ConfigError, match=r"geographie.sql declares generation 2024 but computed values for QPV of "
                                          r"the list\(s\) \[2015\]"):
        run_indicators(_env_of(mart, tmp_path), only=["geographie"])
    with psycopg.connect(mart) as conn:
        assert conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE indicator_id = 'superficie_ha'"
                            ).fetchone() == before != (0,)
