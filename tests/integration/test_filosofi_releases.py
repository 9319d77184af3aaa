"""Filosofi by IRIS as a series: the bundled 2019 release and the current 2021 one in INSEE's 2021 layout
(zip with the data file and its metadata file, DISP_*21 names, `ns`/`nd` for values not released, COG 2022)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import psycopg
import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.parts import ingest_samples
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import QpvhubError
from tests.conftest import ROOT, converted, loaded_before

pytestmark = pytest.mark.postgis

FILO_2019 = ROOT / "include" / "sample_data" / "insee_filosofi2019_disp_iris_reg52_53.csv"
MEMBER_2021 = "BASE_TD_FILO_IRIS_2021_DISP.csv"
# three Rennes IRIS whose 2019 values are all published: one cell each becomes a not-released code
NOT_RELEASED = {"352380101": ("DISP_TP6021", "ns"), "352380104": ("DISP_MED21", "nd"), "352380105": ("DISP_GI21", "s")}


def _layout_2021(member: str = MEMBER_2021) -> bytes:
    """TEST FIXTURE: the real 2019 rows written in INSEE's 2021 layout — a zip holding the data file and its
    metadata file (`meta_…`, as public code that reads it skips), variables suffixed 21, `;`, decimal comma,
    three cells replaced by INSEE's not-released codes. Without LIBIRIS/COM/LIBCOM, which public evidence
    does not confirm for 2021: the entry must not need them. The values are 2019's, not 2021's."""
    with FILO_2019.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    keep = [i for i, h in enumerate(rows[0]) if h not in ("LIBIRIS", "COM", "LIBCOM")]
    header = [re.sub(r"19$", "21", rows[0][i]) for i in keep]  # DISP_MED19 → DISP_MED21, DISP_S80S2019 → …2021
    out = io.StringIO()
    w = csv.writer(out, delimiter=";", lineterminator="\n")
    w.writerow(header)
    for row in rows[1:]:
        cells = [row[i] for i in keep]
        if cells[0] in NOT_RELEASED:
            name, code = NOT_RELEASED[cells[0]]
            cells[header.index(name)] = code
        w.writerow(cells)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, out.getvalue())
        z.writestr(f"meta_{MEMBER_2021}", "COD_VAR;LIB_VAR;LIB_VAR_LONG\nIRIS;Code de l'IRIS;Code de l'IRIS\n")
    return buf.getvalue()


def _reference(env, catalog) -> None:
    for sid in ("cog_communes", "cog_mouvements", "qpv_2015"):
        assert all(r.status == "success" for r in ingest_samples(env, catalog[sid]))


def _status(env, catalog) -> str:
    """What `qpvhub status` says of the entry's data."""
    from qpvhub.ops.monitor import freshness

    return next(f.data_note for f in freshness(env.uri, catalog) if f.source_id == "filosofi_iris")


def test_the_2021_release_loads_beside_the_bundled_2019_one(env, catalog, http_source) -> None:
    _reference(env, catalog)
    assert [r.status for r in ingest_samples(env, catalog["filosofi_iris"])] == ["success"]  # 2019, offline
    assert _status(env, catalog) == "releases 2019 loaded; the current release, 2021, is not"
    url = http_source.put("BASE_TD_FILO_IRIS_2021_DISP_CSV.zip", _layout_2021())
    res = ingest(env, catalog["filosofi_iris"], url=url)  # no --release: the current one, 2021
    assert res.status == "success" and res.rows_loaded == 1021, res
    assert res.translation["from"] == 2022  # the 2021 release's own geography
    assert [t["code"] + "→" + t["to"] for t in res.translation["columns"]["insee_com"]["translated"]] == ["49069→49126"]
    with psycopg.connect(env.uri) as conn:
        per_release = conn.execute("SELECT release, count(*) FROM src.filosofi_iris GROUP BY 1 ORDER BY 1").fetchall()
        cells = dict(conn.execute(
            "SELECT code_iris, ARRAY[taux_pauvrete, revenu_disponible_median, indice_gini] FROM src.filosofi_iris "
            "WHERE release = 2021 AND code_iris = ANY(%s)", (list(NOT_RELEASED),)).fetchall())
        communes = conn.execute("SELECT count(*) FILTER (WHERE insee_com <> left(code_iris, 5)), "
                                "count(*) FILTER (WHERE insee_com = '49126') FROM src.filosofi_iris "
                                "WHERE release = 2021").fetchone()
        part = conn.execute("SELECT part, millesime FROM meta.source_runs WHERE run_id = %s", (res.run_id,)).fetchone()
    assert per_release == [(2019, 1021), (2021, 1021)]
    assert cells["352380101"][0] is None and cells["352380104"][1] is None and cells["352380105"][2] is None
    assert all(v is not None for v in cells["352380104"][::2])  # only the not-released cell is NULL
    assert communes[0] == communes[1] > 0  # the commune is the IRIS code's, moved where it merged since
    assert part == ("2021", "2021")
    assert _status(env, catalog) == "releases 2019, 2021 loaded"
    run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        latest = conn.execute("SELECT DISTINCT millesime FROM mart.qpv_indicator "
                              "WHERE indicator_id = 'taux_pauvrete_iris_median'").fetchall()
        releases = conn.execute("SELECT DISTINCT unnest(releases) FROM mart.qpv_indicator_series "
                                "WHERE indicator_id = 'taux_pauvrete_iris_median' ORDER BY 1").fetchall()
    assert latest == [("2021",)]  # the newest release is the one indicators read
    assert releases == [(2019,), (2021,)]


def test_a_2021_archive_without_its_member_fails_and_the_previous_load_stays(env, catalog, http_source) -> None:
    _reference(env, catalog)
    good = http_source.put("BASE_TD_FILO_IRIS_2021_DISP_CSV.zip", _layout_2021())
    assert ingest(env, catalog["filosofi_iris"], url=good).status == "success"
    bad = http_source.put("renamed.zip", _layout_2021(member="BASE_TD_FILO_IRIS_2021_DISP_V2.csv"))
    with pytest.raises(QpvhubError, match=r"filosofi_iris.*renamed\.zip.*one CSV in the archive named "
                                          r"BASE_TD_FILO_IRIS_2021_DISP\.csv"):
        ingest(env, catalog["filosofi_iris"], url=bad, force=True)  # forced: another file for release 2021
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT release, count(*) FROM src.filosofi_iris GROUP BY 1").fetchall() == [(2021, 1021)]


def test_a_release_without_a_layout_is_refused_naming_the_file_to_edit(env, catalog, http_source) -> None:
    url = http_source.put("BASE_TD_FILO_DISP_IRIS_2020_CSV.zip", _layout_2021())
    with pytest.raises(QpvhubError, match=r"filosofi_iris: no layout declared for release 2020.*"
                                          r"include/sources/filosofi_iris\.yml"):
        ingest(env, catalog["filosofi_iris"], url=url, release=2020)


def test_migration_013_keeps_a_filosofi_table_loaded_before_as_its_release(empty_db: str, tmp_path: Path, http_source,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment that loaded Filosofi 2019 as a plain table (primary key code_iris, lib_iris): after 013 its
    rows are release 2019, and 2021 loads beside them."""
    from qpvhub.catalog.loader import load_catalog

    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_POSTGIS", empty_db)
    monkeypatch.setenv("QPVHUB_HOME", str(tmp_path / "home"))
    applied = loaded_before(
        empty_db, tmp_path, "013",
        "CREATE TABLE src.filosofi_iris (code_iris text PRIMARY KEY, lib_iris text, insee_com text, "
        "taux_pauvrete double precision, revenu_disponible_median double precision, revenu_disponible_d1 double "
        "precision, revenu_disponible_d9 double precision, indice_gini double precision, "
        "part_prestations_sociales double precision, source_run_id text)",
        "INSERT INTO src.filosofi_iris (code_iris, lib_iris, insee_com, taux_pauvrete, source_run_id) "
        "VALUES ('352380101', 'Villejean', '35238', 40.2, 'old')", "filosofi_iris", "2019")
    assert "013" in applied
    assert converted(empty_db, "src.filosofi_iris", "release, code_iris, taux_pauvrete") == (
        "p", [(2019, "352380101", 40.2)], "2019")
    from qpvhub.platform.env import Env

    env = Env.from_settings()
    catalog = load_catalog(ROOT / "include" / "sources")
    for sid in ("cog_communes", "cog_mouvements"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    url = http_source.put("BASE_TD_FILO_IRIS_2021_DISP_CSV.zip", _layout_2021())
    assert ingest(env, catalog["filosofi_iris"], url=url).status == "success"
    with psycopg.connect(empty_db) as conn:
        per_release = conn.execute("SELECT release, count(*) FROM src.filosofi_iris GROUP BY 1 ORDER BY 1").fetchall()
    assert per_release == [(2019, 1), (2021, 1021)]
