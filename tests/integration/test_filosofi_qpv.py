"""INSEE's incomes and poverty by QPV of the 2024 list (`filosofi_qpv`): the statistics the 2024 fiches had none of.

TEST FIXTURE: no real file of INSEE's `revenus_pauvrete_2021_qp24_v2_csv.zip` is available offline, and the hub
bundles none (real statistics are not invented for a demo). `qp24_archive()` writes one in the layout public code
shows for the same release on the 2015 list (`revenu-disponible-qp15-2021_QP.csv` beside its `meta_` file and
`…_ENSQP.csv`; `;`, decimal comma, CODGEO, `DISP_*_A21`), for the 135 real QPV codes of PACA's 2024 list plus two
of other regions; its figures are generated, not INSEE's."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import psycopg
import pytest
from qpvhub.catalog import load_regions
from qpvhub.errors import InputError
from qpvhub.indicators import run_indicators
from qpvhub.monitor import freshness
from qpvhub.pipeline import ingest
from qpvhub.publish import pdf, publish_region

from tests.conftest import SAMPLES

pytestmark = pytest.mark.postgis

QPV_ARCHIVE = SAMPLES / "qpv2024_paca_anct_layout.zip"
QPV_MEMBER = "GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson"
HEADER = ["CODGEO", "DISP_MED_A21", "DISP_TP60_A21", "DISP_PPSOC_A21", "DISP_D1_A21", "DISP_D9_A21", "DISP_RD_A21"]
OUTSIDE = ["QN07501M", "QN05901M"]  # FIXTURE codes of départements 75 and 59: not the deployment's


def paca_codes() -> list[str]:
    with zipfile.ZipFile(QPV_ARCHIVE) as zf:
        features = json.loads(zf.read(QPV_MEMBER))["features"]
    return sorted(f["properties"]["code_qp"] for f in features)


def fixture_rows() -> list[list[str]]:
    """One row per QPV (TEST FIXTURE figures): the first not released at all (`nd`), the second with its poverty
    rate under secrecy (`s`), the third with the social-benefit share `ns`; INSEE's decimal comma."""
    rows = []
    for i, code in enumerate([*paca_codes(), *OUTSIDE]):
        med, d1 = 11000 + 97 * i, 6000 + 31 * i
        d9 = med * 2
        row = [code, str(med), f"{22 + i % 40},{i % 10}", f"{12 + i % 20},5", str(d1), str(d9),
               f"{d9 / d1:.1f}".replace(".", ",")]
        rows.append(row)
    rows[0][1:] = ["nd"] * 6
    rows[1][2] = "s"
    rows[2][3] = "ns"
    return rows


def qp24_archive(*, member: str = "revenu-disponible-qp24-2021_QP.csv", header: list[str] | None = None) -> bytes:
    """The FIXTURE archive in INSEE's layout: the per-QPV file, its metadata file and the all-QPV aggregate."""
    head = header or HEADER
    data = "\n".join(";".join(r) for r in [head, *fixture_rows()]) + "\n"
    meta = "COD_VAR;LIB_VAR;COD_MOD;LIB_MOD\n" + "".join(
        f"CODGEO;Code géographique;{c};Quartier {c}\n" for c in paca_codes()[:3])
    ens = ";".join(head) + "\n00;15800;43,1;31,2;7800;28000;3,6\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta_indic-revenu-disponible-qp24-2021_QP.csv", meta.encode("utf-8"))
        zf.writestr(member, data.encode("utf-8"))
        zf.writestr("revenu-disponible-qp24-2021_ENSQP.csv", ens.encode("utf-8"))
    return buf.getvalue()


def _number(text: str) -> float | None:
    return None if text in ("nd", "s", "ns", "so") else float(text.replace(",", "."))


@pytest.fixture
def loaded93(env93, catalog, http_source):
    """Region 93 configured, its COG communes and 2024 QPV loaded, then INSEE's 2024-list file (FIXTURE)."""
    env, cog_url = env93
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    assert ingest(env, catalog["qpv_2024"], sample=True).status == "success"
    res = ingest(env, catalog["filosofi_qpv"], url=http_source.put("qp24.zip", qp24_archive()))
    return env, res


def test_incomes_of_the_2024_list_load_and_reach_the_fiches_of_region_93(loaded93, catalog, http_source,
                                                                            monkeypatch) -> None:
    """Loaded for region 93 only, INSEE's unreleased values NULL, indicators and products of the 2024 list; then
    a renamed member and a drifted header fail clearly and keep the load."""
    env, res = loaded93
    assert res.status == "success" and res.validation["success"]
    assert res.rows_loaded == 135  # the two QPV of other regions left out; the ENSQP aggregate and meta_ not read
    rows = {r[0]: r for r in fixture_rows()}
    codes = paca_codes()
    with psycopg.connect(env.uri) as conn:
        releases = conn.execute("SELECT array_agg(DISTINCT release) FROM src.filosofi_qpv").fetchone()[0]
        nulls = conn.execute(
            "SELECT count(*) FILTER (WHERE taux_pauvrete IS NULL), count(*) FILTER (WHERE revenu_disponible_median "
            "IS NULL), count(*) FILTER (WHERE part_prestations_sociales IS NULL) FROM src.filosofi_qpv").fetchone()
        got = dict(conn.execute("SELECT code_qp, taux_pauvrete FROM src.filosofi_qpv").fetchall())
        run = conn.execute("SELECT part, millesime FROM meta.source_runs WHERE run_id = %s", (res.run_id,)).fetchone()
    assert releases == [2021] and run == ("2021", "2021")
    notes = {f.source_id: f.data_note for f in freshness(env.uri, catalog)}
    assert notes["filosofi_qpv"] == "releases 2021 loaded"
    assert nulls == (2, 1, 2)  # `nd` row: all; `s`: the rate only; `ns`: the share only — never 0
    assert all(got[c] == _number(rows[c][2]) for c in codes)

    run_indicators(env.uri, env.settings.sql_dir)
    columns = {"filosofi_revenu_disponible_median": 1, "filosofi_taux_pauvrete": 2,
               "filosofi_part_prestations_sociales": 3, "filosofi_rapport_interdecile": 6}
    with psycopg.connect(env.uri) as conn:
        values = {(i, c): v for i, c, v in conn.execute(
            "SELECT indicator_id, code_qp, value FROM mart.qpv_indicator WHERE indicator_id LIKE 'filosofi_%'")}
        mart = conn.execute(
            "SELECT generation, count(*), min(millesime), max(millesime) FROM mart.qpv_indicator "
            "WHERE indicator_id = 'filosofi_taux_pauvrete' GROUP BY 1").fetchall()
        series = conn.execute("SELECT DISTINCT release FROM mart.qpv_indicator_series "
                              "WHERE indicator_id = 'filosofi_revenu_disponible_median'").fetchall()
        sigville = conn.execute("SELECT count(*) FROM mart.qpv_indicator WHERE indicator_id = 'taux_pauvrete'"
                                ).fetchone()[0]
    assert mart == [(2024, 133, "2021", "2021")]  # 135 QPV less the two not released
    # every indicator of every QPV is the file's figure, and a figure INSEE does not release has no row
    want = {(i, c): _number(rows[c][k]) for i, k in columns.items() for c in codes}
    assert values == {key: v for key, v in want.items() if v is not None}
    assert series == [(2021,)] and sigville == 0  # SIG Ville's 2015-list indicator untouched

    monkeypatch.setattr(pdf, "browser", lambda: None)  # the extracts are what is checked: 135 PDFs would take ~80 s
    result = publish_region(env, load_regions(env.settings.regions_dir)["93"])
    assert result.product == "qpv_profil"
    latest = env.settings.store.path / "published" / "93" / "qpv_profil" / "latest"
    csv = pd.read_csv(latest / "qpv_profil_93.csv", dtype={"dep": str, "insee_com": str}).set_index("code_qp")
    assert len(csv) == 135 and set(csv["generation"]) == {2024}
    for code in codes[:6]:
        figure = _number(rows[code][2])
        assert (pd.isna(csv.at[code, "filosofi_taux_pauvrete"]) if figure is None
                else csv.at[code, "filosofi_taux_pauvrete"] == pytest.approx(figure)), code
    # the product's map and the region page's first map are the poverty rate of the 2024 list
    assert (latest / "qpv_profil_93_carte_indicateur_filosofi_taux_pauvrete.svg").is_file()
    assert "Taux de pauvreté (seuil de 60 %) — quartiers 2024" in (latest / "qpv_profil_93_carte.svg").read_text()
    # the 2024 fiches show these rows and leave out SIG Ville's, which describe the 2015 list only
    page = (latest / "qpv" / f"{codes[5]}.html").read_text(encoding="utf-8")
    assert "Taux de pauvreté (seuil de 60 %) — quartiers 2024" in page and "Population municipale" not in page
    assert csv.at[codes[5], "lib_com"] in page and "None" not in page  # the commune named (the COG's name)

    # Bad files for the release (replacing it is a human choice: --force): each fails naming source, what was
    # expected and what came; the release loaded stays whole.
    src = catalog["filosofi_qpv"]
    renamed = http_source.put("renamed.zip", qp24_archive(member="revenus-qp24-2021.csv"))
    with pytest.raises(InputError, match=r"filosofi_qpv.*revenu-disponible-\*_QP\.csv.*found \[") as exc:
        ingest(env, src, url=renamed, force=True)
    assert "revenus-qp24-2021.csv" in str(exc.value)  # what the archive holds, named
    drifted = http_source.put("drift.zip", qp24_archive(header=[*HEADER[:2], "DISP_TP60_A22", *HEADER[3:]]))
    with pytest.raises(InputError, match=r"filosofi_qpv.*DISP_TP60_A21"):
        ingest(env, src, url=drifted, force=True)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*), count(taux_pauvrete) FROM src.filosofi_qpv").fetchone() == (135, 133)
