"""INSEE's « Données sur les quartiers 2024 » for region 93: every file of the product loaded through its own
dictionary into one long store, indicators of the 2024 list beside their commune, INSEE's secrecy kept, a new
release's extra variable loaded without a change, a missing one refused before anything is replaced, and BPE
2025 in its layout with INSEE's own QPV assignment checked against the hub's.

TEST FIXTURE: no real archive of the 2024 list can be read offline (tests/data/PROVENANCE.md); the archives
follow INSEE's usual infra-communal layout on the real 135 QPV of PACA and their communes, with generated figures
(tests/data/insee_qpv24_fixture.py), and the BPE file follows the BPE 2025 layout (tests/data/bpe25_fixture.py).
"""

from __future__ import annotations

from html import escape

import pandas as pd
import psycopg
import pytest

from qpvhub.catalog.loader import load_catalog
from qpvhub.catalog.regions import load_regions
from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.ops.monitor import freshness
from qpvhub.ops.sources_check import probe_source
from qpvhub.platform.errors import InputError
from qpvhub.platform.settings import Settings
from qpvhub.publish import pdf, publish_region
from tests.conftest import ROOT
from tests.data import bpe25_fixture
from tests.data.insee_qpv24_fixture import DATASETS, _figure, archive, paca_units

pytestmark = pytest.mark.postgis

ENTRIES = {"population": "insee_qpv24_population", "population_communes": "insee_qpv24_population_communes",
           "estimations": "insee_qpv24_estimations", "revenus": "filosofi_qpv", "defm": "insee_qpv24_defm",
           "caf": "insee_qpv24_caf", "scolarisation": "insee_qpv24_scolarisation", "dnb": "insee_qpv24_dnb",
           "rpls": "insee_qpv24_rpls", "side": "insee_qpv24_side"}
COMMUNES = len({com for _, _, com in paca_units()})  # the 49 communes of PACA's 135 QPV


@pytest.fixture
def loaded(env93, catalog, http_source):
    """Region 93 configured, its COG communes and 2024 QPV loaded, then every INSEE archive and BPE 2025."""
    env, cog_url = env93
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    assert ingest(env, catalog["qpv_2024"], sample=True).status == "success"
    results = {}
    for dataset, sid in ENTRIES.items():
        url = http_source.put(f"{dataset}.zip", archive(dataset))
        results[dataset] = ingest(env, catalog[sid], url=url)
    assert ingest(env, catalog["bpe"], url=http_source.put("BPE25.zip", bpe25_fixture.archive())).status == "success"
    return env, results


def test_every_file_loads_through_its_dictionary_into_one_long_store(loaded) -> None:
    env, results = loaded
    assert {d: r.status for d, r in results.items()} == dict.fromkeys(ENTRIES, "success")
    units = paca_units()
    with psycopg.connect(env.uri) as conn:
        per = dict(conn.execute("SELECT dataset, count(*) FROM src.insee_qpv GROUP BY 1").fetchall())
        parts = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                             "WHERE i.inhparent = 'src.insee_qpv'::regclass ORDER BY 1").fetchall()
        labels = dict(conn.execute("SELECT variable, label FROM src.insee_qpv_labels WHERE dataset = 'caf'"))
        markers = conn.execute("SELECT status, count(*), count(value) FROM src.insee_qpv WHERE dataset = 'defm' "
                               "AND level = 'qpv' GROUP BY 1 ORDER BY 1 NULLS FIRST").fetchall()
        first = conn.execute("SELECT value FROM src.insee_qpv WHERE dataset = 'estimations' AND level = 'qpv' "
                             "AND code_geo = %s AND variable = 'POP_0024'", (units[3][0],)).fetchone()[0]
    # every variable of every level: QPV rows, commune rows, the commune outside its QPV, the all-QPV line
    variables = {d: len(v[3]) for d, v in DATASETS.items()}
    assert per["defm"] == variables["defm"] * (135 + 2 * COMMUNES) and per["revenus"] == 6 * (135 + 1)
    assert per["population"] == 135 and per["population_communes"] == 2 * COMMUNES
    assert [p for (p,) in parts] == sorted(f"insee_qpv_{d}" for d in ENTRIES)  # one partition per dataset
    assert labels == {"ALLOC": DATASETS["caf"][3]["ALLOC"][0], "ALLOC_DEP50": DATASETS["caf"][3]["ALLOC_DEP50"][0],
                      "PERS_COUV": DATASETS["caf"][3]["PERS_COUV"][0]}
    # INSEE's markers are kept as markers, never numbers: the first QPV is `nd` everywhere, the second's first
    # variable is `s`, the third's last is `ns`
    assert markers == [(None, 135 * 2 - 4, 135 * 2 - 4), ("nd", 2, 0), ("ns", 1, 0), ("s", 1, 0)]
    assert first == _figure("POP_0024", 3)
    notes = {f.source_id: f.data_note for f in freshness(env.uri, load_catalog(env.settings.sources_dir))}
    assert notes["filosofi_qpv"] == "releases 2021 loaded" and notes["insee_qpv24_dnb"] == "releases 2025 loaded"


def test_2024_indicators_beside_the_commune_with_insee_secrecy_on_the_fiche(loaded, monkeypatch) -> None:
    env, _ = loaded
    written = run_indicators(env)
    for ind in ("q24_population", "q24_part_moins_25", "filosofi_taux_pauvrete", "q24_demandeurs_emploi_abc",
                "q24_part_demandeurs_1564", "q24_allocataires_caf", "q24_part_allocataires_dependants",
                "q24_eleves", "q24_taux_reussite_dnb", "q24_part_logement_social", "q24_etablissements",
                "q24_equipements_pour_1000_hab"):
        assert written[ind] > 0, (ind, written.absent.get(ind))
    units = paca_units()
    code, com = units[5][0], units[5][2]
    with psycopg.connect(env.uri) as conn:
        rows = {(i, s): (v, st) for i, s, v, st in conn.execute(
            "SELECT indicator_id, scope, value, status FROM mart.qpv_indicator WHERE code_qp = %s", (code,))}
        secret = conn.execute("SELECT indicator_id, scope, value, status FROM mart.qpv_indicator "
                              "WHERE code_qp = %s AND status IS NOT NULL ORDER BY 1, 2", (units[1][0],)).fetchall()
        first = conn.execute("SELECT array_agg(indicator_id) FROM mart.qpv_indicator WHERE code_qp = %s "
                             "AND scope = 'qpv' AND indicator_id LIKE 'q24_%%'", (units[0][0],)).fetchone()[0]
        pop_com = conn.execute("SELECT value FROM src.insee_qpv WHERE dataset = 'population_communes' "
                               "AND code_geo = %s AND variable = 'POPMUNI_COM'", (com,)).fetchone()[0]
    # the QPV's figure and its commune's, from the files
    assert rows[("q24_population", "qpv")] == (_figure("POPMUNI", 5), None)
    assert rows[("q24_population", "commune")] == (pop_com, None)
    assert rows[("q24_part_demandeurs_1564", "qpv")][0] == pytest.approx(
        round(100 * _figure("DEFM_ABC", 5) / _figure("POP_1564", 5), 1))
    assert ("q24_part_demandeurs_1564", "commune_hors_qpv") in rows
    # the second QPV: its first variable of each file is INSEE's `s` — a row without value, status secret, and
    # the share computed on it too; never 0
    assert ("q24_population", "qpv", None, "secret") in secret
    assert ("q24_part_demandeurs_1564", "qpv", None, "secret") in secret
    assert all(v is None for _, _, v, _ in secret)
    assert first is None  # `nd` everywhere: nothing, said « non disponible » on the fiche

    monkeypatch.setattr(pdf, "browser", lambda *a: None)  # the HTML fiches are what is checked here
    region = load_regions(env.settings.regions_dir, ROOT / "include" / "reference")["93"]
    result = publish_region(env, region)
    latest = env.settings.store.path / "published" / "93" / "qpv_profil" / "latest"
    page = (latest / "qpv" / f"{code}.html").read_text(encoding="utf-8")
    for label in ("Population municipale — quartiers 2024", "Taux de pauvreté (seuil de 60 %) — quartiers 2024",
                  "Demandeurs d'emploi (catégories A, B, C) — quartiers 2024", "Allocataires CAF — quartiers 2024",
                  "Élèves résidant dans le quartier — quartiers 2024",
                  "Taux de réussite au diplôme national du brevet — quartiers 2024",
                  "Part des logements sociaux parmi les résidences principales — quartiers 2024",
                  "Équipements pour 1 000 habitants — quartiers 2024"):
        assert escape(label) in page, label
    assert f"{_figure('POPMUNI', 5):,}".replace(",", "\u202f") in page or str(_figure("POPMUNI", 5)) in page
    secret_page = (latest / "qpv" / f"{units[1][0]}.html").read_text(encoding="utf-8")
    assert "secret statistique" in secret_page
    csv = pd.read_csv(latest / "qpv_profil_93.csv", dtype=str, keep_default_na=False).set_index("code_qp")
    assert csv.at[units[1][0], "q24_population"] == ""  # never 0
    assert csv.at[units[1][0], "q24_population__secret"] == "secret statistique"
    assert float(csv.at[code, "q24_population"]) == _figure("POPMUNI", 5)
    assert float(csv.at[code, "q24_population__commune"]) == pop_com
    # the region page's first map is the poverty rate of the 2024 list; SIG Ville's 2015-list rows are not there
    assert "Taux de pauvreté (seuil de 60 %) — quartiers 2024" in (latest / "qpv_profil_93_carte.svg").read_text()
    assert "Population municipale</" not in page and "None" not in page
    datapackage = (latest / "datapackage.json").read_text(encoding="utf-8")
    assert "q24_part_allocataires_dependants" in datapackage and "ALLOC_DEP50" in datapackage
    quality = (env.settings.store.path / "quality" / "93" / "index.html").read_text(encoding="utf-8")
    assert "Rattachement des équipements aux quartiers" in quality
    assert result.status in ("published", "unchanged")


def test_bpe_2025_reprojects_each_row_and_checks_insee_qpv_assignment(loaded, capsys) -> None:
    """The BPE 2025 layout: each row from its own CRS (an overseas row in EPSG:5490 lands where its WGS84
    says); INSEE's QP2024 against the hub's join, rate printed by `qpvhub indicators` and kept in meta."""
    from qpvhub.cli import main as cli

    env, _ = loaded
    with psycopg.connect(env.uri) as conn:
        n, deps = conn.execute("SELECT count(*), array_agg(DISTINCT dep ORDER BY dep) FROM src.bpe").fetchone()
    # region 93 only: the Guadeloupe row is outside the deployment, left out by the region filter
    assert "971" not in deps and n == len([r for r in bpe25_fixture.facilities() if r["DEP"] != "971"])
    assert cli(["indicators"]) == 0
    out = capsys.readouterr().out
    assert "check bpe: the publisher's QPV (list 2024) and the hub's point-in-perimeter join agree for" in out
    facilities = [r for r in bpe25_fixture.facilities() if r["DEP"] != "971"]
    disagree = [r for r in facilities if r["QUALI_QP2024"] in ("2", "3")]
    with psycopg.connect(env.uri) as conn:
        compared, agreeing, rate, by_quality = conn.execute(
            "SELECT compared, agreeing, rate, by_quality FROM meta.qpv_assignment_check ORDER BY computed_at DESC "
            "LIMIT 1").fetchone()
        listed = conn.execute("SELECT quality, count(*) FROM meta.qpv_assignment_disagreement GROUP BY 1 "
                              "ORDER BY 1").fetchall()
    assert compared == len(facilities)
    # the invented disagreements are found, by INSEE's quality flag (a representative point exactly on a
    # neighbour's edge may add one more: the assertion allows what the geometry decides, never fewer)
    assert dict(listed)["3"] == sum(r["QUALI_QP2024"] == "3" for r in facilities)
    assert dict(listed)["2"] <= sum(r["QUALI_QP2024"] == "2" for r in facilities)
    assert agreeing == compared - sum(n for _, n in listed) and rate == pytest.approx(agreeing / compared)
    assert by_quality["1"]["compared"] == sum(r["QUALI_QP2024"] == "1" for r in facilities)
    assert f"agree for {agreeing}/{compared} rows" in out and disagree


def test_overseas_row_is_reprojected_from_its_own_crs(env93, catalog, http_source) -> None:
    from qpvhub.cli import main as cli

    env, _ = env93
    assert cli(["region", "add", "01", "--bbox=-61.9,15.8,-60.9,16.6", "--contact", "pole@example.org"]) == 0
    res = ingest(env, catalog["bpe"], url=http_source.put("BPE25.zip", bpe25_fixture.archive()))
    assert res.status == "success"
    _, lon, lat = bpe25_fixture.ABYMES
    with psycopg.connect(env.uri) as conn:
        epsg, x, y = conn.execute("SELECT epsg, ST_X(ST_Transform(geom, 4326)), ST_Y(ST_Transform(geom, 4326)) "
                                  "FROM src.bpe WHERE dep = '971'").fetchone()
    assert epsg == 5490 and x == pytest.approx(lon, abs=1e-5) and y == pytest.approx(lat, abs=1e-5)


def test_a_new_release_with_one_more_variable_loads_and_one_without_a_needed_variable_is_refused(
        loaded, catalog, http_source) -> None:
    env, _ = loaded
    src = catalog["insee_qpv24_defm"]
    more = http_source.put("defm2025.zip", archive("defm", extra_variable=True))
    assert ingest(env, src, url=more, release=2025).status == "success"
    with psycopg.connect(env.uri) as conn:
        new = conn.execute("SELECT q.label, count(*) FROM src.insee_qpv q WHERE dataset = 'defm' AND release = 2025 "
                           "AND variable = 'NOUVELLE_VAR' GROUP BY 1").fetchone()
        releases = conn.execute("SELECT array_agg(DISTINCT release ORDER BY release) FROM src.insee_qpv "
                                "WHERE dataset = 'defm'").fetchone()[0]
    assert new == ("Variable ajoutée par cette édition (FIXTURE)", 135 + 2 * COMMUNES) and releases == [2024, 2025]

    without = http_source.put("defm2026.zip", archive("defm", drop="DEFM_ABC"))
    with pytest.raises(InputError) as exc:
        ingest(env, src, url=without, release=2025, force=True)
    message = str(exc.value)
    assert "insee_qpv24_defm" in message and "defm" in message and "release 2025" in message
    assert "DEFM_ABC" in message
    with psycopg.connect(env.uri) as conn:  # the release loaded stays whole, the earlier one too
        kept = conn.execute("SELECT release, count(*) FROM src.insee_qpv WHERE dataset = 'defm' GROUP BY 1 "
                            "ORDER BY 1").fetchall()
    assert kept == [(2024, 2 * (135 + 2 * COMMUNES)), (2025, 3 * (135 + 2 * COMMUNES))]


def test_sources_check_reads_the_archive_through_its_dictionary(catalog, http_source) -> None:
    """On the first day online: the real archive read as a load reads it; a variable the indicators need
    missing is drift, named, before any load."""
    src = catalog["insee_qpv24_caf"].model_copy(update={"insee": None})
    good = probe_source(src.model_copy(update={"url": http_source.put("caf.zip", archive("caf"))}),
                        Settings.load().publishers)
    assert good.ok and "INSEE archive: dictionary and data files read" in good.layout, good.line()
    bad = probe_source(src.model_copy(update={"url": http_source.put("caf2.zip", archive("caf", drop="ALLOC_DEP50"))}),
                       Settings.load().publishers)
    assert not bad.ok and "ALLOC_DEP50" in " ".join(bad.drift), bad.line()


def _cells(dataset: str) -> dict[tuple[str, str, str], str]:
    """(level, code, variable) → raw cell of the FIXTURE archive, read with zipfile and csv only (not the reader)."""
    import csv
    import io
    import zipfile

    _page, _name, members, _variables = DATASETS[dataset]
    out = {}
    with zipfile.ZipFile(io.BytesIO(archive(dataset))) as zf:
        for member in zf.namelist():
            if member.startswith("meta_"):
                continue
            level = next(lv for suffix, lv in members.items() if member.endswith(suffix))
            for row in csv.DictReader(io.StringIO(zf.read(member).decode("utf-8")), delimiter=";"):
                for var, raw in row.items():
                    if var not in ("CODGEO", "LIBGEO"):
                        out[(level, row["CODGEO"], var)] = raw
    return out


def _expected(parts: list[str | None], compute) -> float | str | None:
    """INSEE's `s` in any input: secret; another marker or no cell: absent; else the figure."""
    if any(p == "s" for p in parts):
        return "secret"
    if any(p is None or p in ("ns", "nd", "so", "") for p in parts):
        return None
    return compute(*[float(p.replace(",", ".")) for p in parts])


def test_every_2024_indicator_matches_the_archives(loaded) -> None:
    """Each indicator of the 2024 list, for every QPV and scope, recomputed from the archives with csv and shapely
    (never the project's SQL or reader): the figure, « secret » where INSEE's `s` is an input, no row otherwise."""
    import geopandas as gpd

    from tests.data.insee_qpv24_fixture import MEMBER, SAMPLE

    env, _ = loaded
    run_indicators(env)
    c = {d: _cells(d) for d in DATASETS}
    units = paca_units()
    def rate(a: float, b: float) -> float | None:  # PostgreSQL's round(numeric): half away from zero
        return _round(100 * a / b, "0.1") if b else None

    qpv = gpd.read_file(f"zip://{SAMPLE}!{MEMBER}").to_crs(2154)
    pts = [r for r in bpe25_fixture.facilities() if r["DEP"] != "971"]
    points = gpd.GeoSeries(gpd.points_from_xy([float(r["LAMBERT_X"]) for r in pts],
                                              [float(r["LAMBERT_Y"]) for r in pts]), crs=2154)
    inside_any = points.apply(lambda p: bool(qpv.geometry.intersects(p).any()))
    want: dict[tuple[str, str, str], float | str] = {}

    def put(ind: str, code: str, scope: str, value) -> None:
        if value is not None:
            want[(ind, code, scope)] = value

    for code, _name, com in units:
        poly = qpv.loc[qpv["code_qp"] == code, "geometry"].iloc[0]
        scopes = {"qpv": ("qpv", code), "commune": ("commune", com), "commune_hors_qpv": ("commune_hors_qpv", com)}
        pop_com = [c["population_communes"].get(("commune", com, v)) for v in ("POPMUNI_COM", "POPMUNI_QP")]
        put("q24_population", code, "qpv", _expected([c["population"].get(("qpv", code, "POPMUNI"))], lambda a: a))
        put("q24_population", code, "commune", _expected(pop_com, lambda a, b: a))
        put("q24_population", code, "commune_hors_qpv", _expected(pop_com, lambda a, b: a - b))
        for scope, key in scopes.items():
            g = lambda d, v, key=key: c[d].get((*key, v))  # noqa: E731
            put("q24_part_moins_25", code, scope, _expected([g("estimations", "POP_0024"), g("estimations", "POP_TOT")],
                                                            rate))
            put("q24_part_60_plus", code, scope, _expected([g("estimations", "POP_60P"), g("estimations", "POP_TOT")],
                                                           rate))
            put("q24_demandeurs_emploi_abc", code, scope, _expected([g("defm", "DEFM_ABC")], lambda a: a))
            put("q24_part_demandeurs_1564", code, scope,
                _expected([g("defm", "DEFM_ABC"), g("estimations", "POP_1564")], rate))
            put("q24_allocataires_caf", code, scope, _expected([g("caf", "ALLOC")], lambda a: a))
            put("q24_part_allocataires_dependants", code, scope, _expected([g("caf", "ALLOC_DEP50"), g("caf", "ALLOC")],
                                                                           rate))
            put("q24_eleves", code, scope, _expected([g("scolarisation", "ELEV_TOT")], lambda a: a))
            put("q24_candidats_dnb", code, scope, _expected([g("dnb", "DNB_PRES")], lambda a: a))
            put("q24_taux_reussite_dnb", code, scope, _expected([g("dnb", "DNB_ADMIS"), g("dnb", "DNB_PRES")], rate))
            put("q24_logements_sociaux", code, scope, _expected([g("rpls", "LS_TOT")], lambda a: a))
            put("q24_part_logement_social", code, scope, _expected([g("rpls", "LS_TOT"), g("rpls", "RP_TOT")], rate))
            put("q24_etablissements", code, scope, _expected([g("side", "ETAB_TOT")], lambda a: a))
        for ind, var in (("filosofi_taux_pauvrete", "DISP_TP60_A21"), ("filosofi_revenu_disponible_median",
                                                                       "DISP_MED_A21"),
                         ("filosofi_part_prestations_sociales", "DISP_PPSOC_A21"),
                         ("filosofi_rapport_interdecile", "DISP_RD_A21")):
            put(ind, code, "qpv", _expected([c["revenus"].get(("qpv", code, var))], lambda a: a))
        of_com = [i for i, r in enumerate(pts) if r["DEPCOM"] == com]
        n = {"qpv": int(points.intersects(poly).sum()), "commune": len(of_com),
             "commune_hors_qpv": sum(1 for i in of_com if not inside_any.iloc[i])}
        pop = {"qpv": _expected([c["population"].get(("qpv", code, "POPMUNI"))], lambda a: a),
               "commune": _expected(pop_com, lambda a, b: a),
               "commune_hors_qpv": _expected(pop_com, lambda a, b: a - b)}
        for scope, p in pop.items():
            put("q24_equipements_pour_1000_hab", code, scope,
                p if p in (None, "secret") else _round(1000 * n[scope] / p, "0.01") if p else None)
    with psycopg.connect(env.uri) as conn:
        got = {(i, code, s): ("secret" if st == "secret" else v) for i, code, s, v, st in conn.execute(
            "SELECT indicator_id, code_qp, scope, value, status FROM mart.qpv_indicator WHERE generation = 2024 "
            "AND (indicator_id LIKE 'q24\\_%%' OR indicator_id LIKE 'filosofi\\_%%')")}
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    wrong = {k: (got[k], v) for k, v in want.items()
             if not (got[k] == v if isinstance(v, str) else got[k] == pytest.approx(v, abs=1e-9))}
    assert not wrong, list(wrong.items())[:5]
    assert {i for i, _, _ in want} == {i for f in ("population", "emploi", "emploi_part", "caf", "scolarisation",
                                                   "dnb", "logement", "entreprises", "services", "revenus")
                                       for i in _family_ids(f"{f}_qpv2024")}


def _round(x: float, step: str) -> float:
    """As PostgreSQL rounds a double cast to numeric (15 significant digits, half away from zero)."""
    from decimal import ROUND_HALF_UP, Decimal

    return float(Decimal(f"{x:.15g}").quantize(Decimal(step), ROUND_HALF_UP))


def _family_ids(family: str) -> set[str]:
    import re

    text = (ROOT / "sql" / "indicators" / f"{family}.sql").read_text(encoding="utf-8")
    return set(re.findall(r"^--   - id: (\w+)", text, re.M))
