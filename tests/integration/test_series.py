"""Time series across releases (SIG Ville files): every release kept as a partition, per-release layouts,
history and evolutions in the mart, what is comparable, and the history published with secrecy per year.

The releases are the real SIG Ville / ONPV files of regions 52 and 53 (`include/sample_data/sigville_series/`),
served over HTTP on loopback where a test needs a URL."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import psycopg
import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import ConfigError, FetchError, QpvhubError
from qpvhub.publish import publish_region
from tests.conftest import ROOT, as_role

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

SERIES = ROOT / "include" / "sample_data" / "sigville_series"


def _file(kind: str, release: int) -> Path:
    name = f"sigville_qpv2015_{kind}_{release}_reg52_53.csv"
    return SERIES / name if release != 2022 else ROOT / "include" / "sample_data" / name


def _column(kind: str, release: int, code: str, column: str) -> float | None:
    """A value read straight from the publisher's file (`;`, decimal comma, narrow no-break spaces)."""
    text = _file(kind, release).read_text(encoding="utf-8-sig")
    for row in csv.DictReader(io.StringIO(text), delimiter=";"):
        if row["CODGEO"] == code:
            v = row[column].replace("\u202f", "").replace(" ", "").replace(",", ".")
            return float(v) if v else None
    raise AssertionError(f"{code} not in {kind} {release}")


def _load(env, catalog, *ids: str) -> None:
    for sid in ("cog_communes", "qpv_2015", *ids):
        src = catalog[sid]
        releases = sorted(src.series.samples) if src.series else [None]
        for r in releases:
            assert ingest(env, src, sample=True, release=r).status == "success", (sid, r)


def test_every_release_is_kept_and_the_mart_has_their_history(env, catalog) -> None:
    _load(env, catalog, "sigville_ipro", "sigville_demo")
    run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        parts = conn.execute("SELECT release, count(*) FROM src.sigville_ipro GROUP BY 1 ORDER BY 1").fetchall()
        n = conn.execute("SELECT count(DISTINCT release) FROM mart.qpv_indicator_series "
                         "WHERE indicator_id = 'taux_emploi'").fetchone()[0]
        rows = conn.execute("SELECT release, releases, value FROM mart.qpv_indicator_series WHERE code_qp = "
                            "'QP035002' AND indicator_id = 'taux_emploi' AND scope = 'qpv' ORDER BY release"
                            ).fetchall()
        latest = conn.execute("SELECT value, millesime FROM mart.qpv_indicator WHERE code_qp = 'QP035002' "
                              "AND indicator_id = 'taux_emploi'").fetchone()
        tables = conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = "
                              "'src.sigville_ipro'::regclass ORDER BY 1").fetchall()
        # staging's source_run_id default (the run's id) stays in staging: not on the parent, not on a release
        defaults = conn.execute("SELECT count(*) FROM pg_attrdef d JOIN pg_inherits i ON d.adrelid IN "
                                "(i.inhrelid, i.inhparent) WHERE i.inhparent = 'src.sigville_ipro'::regclass"
                                ).fetchone()[0]
    assert defaults == 0
    assert parts == [(r, 78) for r in (2017, 2018, 2019, 2021, 2022)]
    assert [t[0] for t in tables] == [f"src.sigville_ipro_{r}" for r in (2017, 2018, 2019, 2021, 2022)]
    assert n >= 3
    # Villejean's employment rate in every release equals the files' TX_TOT_EMPL
    per_release = {r: v for release, rs, v in rows for r in rs}
    assert per_release == {r: _column("IPRO", r, "QP035002", "TX_TOT_EMPL") for r in (2017, 2018, 2019, 2021, 2022)}
    # 2018 repeats 2017's figures (every QPV): stored once, both releases named
    assert rows[0][:2] == (2017, [2017, 2018])
    assert latest == (per_release[2022], "2022")  # mart.qpv_indicator is the newest release


def test_no_evolution_across_a_change_of_definition_and_the_reason_is_kept(env, catalog) -> None:
    _load(env, catalog, "sigville_ipro")
    run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        evo = conn.execute(
            "SELECT release_from, release_to, evolution, unit, reason FROM mart.qpv_indicator_evolution WHERE "
            "code_qp = 'QP035002' AND indicator_id = 'part_emploi_precaire' ORDER BY 1").fetchall()
        rate = conn.execute(
            "SELECT release_from, release_to, evolution, unit FROM mart.qpv_indicator_evolution WHERE code_qp = "
            "'QP035002' AND indicator_id = 'taux_emploi' AND release_from = 2019").fetchone()
        count = conn.execute(
            "SELECT evolution, unit FROM mart.qpv_indicator_evolution WHERE code_qp = 'QP035002' AND "
            "indicator_id = 'demandeurs_emploi_abc' AND release_from = 2021").fetchone()
    by_pair = {(a, b): (e, u, r) for a, b, e, u, r in evo}
    crossing = by_pair[(2019, 2021)]  # TX_TOT_EPREC (2019) → TX_TOT_EDLIM (2021)
    assert crossing[0] is None and "définition changée à l'édition 2021" in crossing[2] and "EDLIM" in crossing[2]
    eprec = _column("IPRO", 2019, "QP035002", "TX_TOT_EPREC") - _column("IPRO", 2017, "QP035002", "TX_TOT_EPREC")
    assert by_pair[(2017, 2019)][:2] == (pytest.approx(eprec), "points")  # same definition: computed
    assert rate == (2019, 2021, pytest.approx(_column("IPRO", 2021, "QP035002", "TX_TOT_EMPL")
                                              - _column("IPRO", 2019, "QP035002", "TX_TOT_EMPL")), "points")
    a, b = _column("IPRO", 2021, "QP035002", "ABC"), _column("IPRO", 2022, "QP035002", "ABC")
    assert count == (pytest.approx(100 * (b - a) / a), "%")  # counts: in %


def test_reloading_a_release_changes_nothing_and_an_older_one_does_not_become_latest(env, catalog) -> None:
    src = catalog["sigville_ipro"]
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    assert ingest(env, src, sample=True, release=2022).status == "success"
    assert ingest(env, src, sample=True, release=2019).status == "success"  # older, after
    with psycopg.connect(env.uri) as conn:
        before = conn.execute("SELECT release, source_run_id, count(*) FROM src.sigville_ipro GROUP BY 1, 2 "
                              "ORDER BY 1").fetchall()
    again = ingest(env, src, sample=True, release=2022)
    assert again.status == "skipped"  # the same file for the same release
    run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        after = conn.execute("SELECT release, source_run_id, count(*) FROM src.sigville_ipro GROUP BY 1, 2 "
                             "ORDER BY 1").fetchall()
        latest = conn.execute("SELECT DISTINCT millesime FROM mart.qpv_indicator WHERE indicator_id = "
                              "'taux_emploi'").fetchall()
    assert after == before and [r[0] for r in after] == [2019, 2022]
    assert latest == [("2022",)]
    # reloading one release (forced) swaps that partition only
    ingest(env, src, sample=True, release=2019, force=True)
    with psycopg.connect(env.uri) as conn:
        forced = dict((r, rid) for r, rid, _ in conn.execute(
            "SELECT release, source_run_id, count(*) FROM src.sigville_ipro GROUP BY 1, 2").fetchall())
    assert forced[2022] == dict((r, rid) for r, rid, _ in before)[2022]
    assert forced[2019] != dict((r, rid) for r, rid, _ in before)[2019]


def test_bad_releases_are_refused_clearly(env, catalog, http_source) -> None:
    src = catalog["sigville_ipro"]
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    # a header that matches no declared layout: the 2021 file (EDLIM) given as release 2018 (EPREC)
    url = http_source.put("IPRO_2021.csv", _file("IPRO", 2021).read_bytes())
    with pytest.raises(QpvhubError, match=r"TX_TOT_EPREC") as exc:
        ingest(env, src, url=url, release=2018)
    assert "IPRO_2021.csv" in str(exc.value)
    with pytest.raises(ConfigError, match=r"release '20l9' is not a year"):
        ingest(env, src, url=url, release="20l9")
    with pytest.raises(ConfigError, match=r"no layout declared for release 2015 \(layouts: 2017–2018, 2019–2020, "
                                          r"2021–now\)"):
        ingest(env, src, url=url, release=2015)
    # the same release from two different files: which one is right is a human choice
    assert ingest(env, src, url=url, release=2021).status == "success"
    other = http_source.put("IPRO_2022.csv", _file("IPRO", 2022).read_bytes())
    with pytest.raises(FetchError, match=r"release 2021 is already loaded from .*IPRO_2021.csv.*differs: refused"):
        ingest(env, src, url=other, release=2021)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT DISTINCT release FROM src.sigville_ipro").fetchall() == [(2021,)]
    with pytest.raises(QpvhubError, match="not a series"):
        ingest(env, catalog["qpv_2015"], sample=True, release=2019)


def test_analysts_query_the_evolutions(env, catalog) -> None:
    _load(env, catalog, "sigville_ipro")
    run_indicators(env)
    # the analyst guide's query: how has the employment rate moved in Villejean, release by release?
    with psycopg.connect(as_role(env.uri, "qpvhub_analyst")) as conn:
        rows = conn.execute(
            "SELECT release, value, evolution, evolution_note FROM mart.theme_emploi_series "
            "WHERE code_qp = 'QP035002' AND indicator_id = 'taux_emploi' AND scope = 'qpv' ORDER BY release"
        ).fetchall()
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            conn.execute("DELETE FROM mart.qpv_indicator_series")  # read-only, like the rest of the mart
    assert [r[0] for r in rows] == [2017, 2019, 2021, 2022] and rows[0][2] is None
    assert rows[1][2] == pytest.approx(rows[1][1] - rows[0][1])


def test_history_is_published_with_secrecy_in_every_year(env, catalog, regions) -> None:
    _load(env, catalog, "sigville_demo", "sigville_ipro", "sigville_revn")
    run_indicators(env)
    publish_region(env, regions["53"], threshold=1500)
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    rows = list(csv.DictReader((latest / "qpv_profil_53_series.csv").open(encoding="utf-8")))
    cleunay = [r for r in rows if r["code_qp"] == "QP035006" and r["indicator_id"] == "population"
               and r["scope"] == "qpv"]
    # Cleunay's population (about 1,300) is under 1,500 in every release: hidden in each, and so is its evolution
    assert cleunay and all(r["value"] == "" and r["value__secret"] == "secret statistique" for r in cleunay)
    assert all(r["evolution"] == "" for r in cleunay)
    counts = [r for r in rows if r["indicator_id"] in ("population", "demandeurs_emploi_abc") and r["value"]]
    assert counts and all(float(r["value"]) >= 1500 for r in counts)
    precarious = [r for r in rows if r["code_qp"] == "QP035002" and r["indicator_id"] == "part_emploi_precaire"
                  and r["release"] == "2021"]
    assert precarious[0]["evolution"] == "" and "définition changée" in precarious[0]["evolution_note"]
    fr = (latest / "qpv_profil_53_series.fr.csv").read_text(encoding="utf-8-sig")
    assert fr.splitlines()[0].startswith("code_qp;generation;")
    assert "QP035002;2015;Villejean;35238;Rennes;35;taux_emploi;qpv;2022;2022;2022;35,8;" in fr  # decimal comma
    fiche = (latest / "qpv" / "QP035002.html").read_text(encoding="utf-8")
    assert "Dernière évolution" in fiche and "= 2017" in fiche  # 2018 repeats 2017, said as such


def test_a_2024_fiche_shows_the_2015_series_it_replaces_apart(env, catalog, regions, monkeypatch) -> None:
    """Continuity across lists: the 2024 fiche of Villejean shows the 2015-list series of the quartier it
    replaces (ref.qpv_correspondence), labelled « liste 2015, périmètre différent », never joined to its own
    evolution; hidden cells stay hidden (the 2015 table's secrecy). The 2024 perimeters are the FIXTURE copy of the
    2015 ones (tests/data/qpv_2024_test.yml), the series the real SIG Ville releases."""
    from qpvhub.catalog.loader import load_source
    from qpvhub.publish import pdf

    _load(env, catalog, "sigville_demo", "sigville_ipro")
    assert ingest(env, load_source(ROOT / "tests" / "data" / "qpv_2024_test.yml"), sample=True).status == "success"
    run_indicators(env)
    monkeypatch.setattr(pdf, "browser", lambda *a: None)
    publish_region(env, regions["53"], threshold=1500)
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    page = (latest / "qpv" / "QN03502M.html").read_text(encoding="utf-8")
    assert "Avant 2024 : quartiers de la liste 2015 (périmètre différent)" in page
    assert "Villejean" in page and "QP035002</span> — liste 2015, périmètre différent" in page
    before = page.split("Avant 2024", 1)[1]
    rate = _column("IPRO", 2022, "QP035002", "TX_TOT_EMPL")
    assert f"{rate:.1f}".replace(".", ",") in before  # the 2015 quartier's employment rate, 2022 release
    # the 2024 quartier has no series of its own: its evolution says so, nothing of 2015 is folded into it
    assert "pas encore d'évolution" in page.split("Avant 2024", 1)[0]
    # Cleunay's population is under the threshold in every release: hidden there too
    cleunay = (latest / "qpv" / "QN03506I.html").read_text(encoding="utf-8").split("Avant 2024", 1)[1]
    row = next(r for r in cleunay.split("<tr>") if "Population municipale" in r)
    cells = re.findall(r'<td class="v">(.*?)</td>', row)
    assert cells and all(c == "—" or "secret statistique" in c or re.fullmatch(r'<span class="same">= \d{4}</span>', c)
                         for c in cells), cells
    assert any("secret statistique" in c for c in cells)


def test_a_rate_on_a_count_hidden_in_any_release_is_hidden_in_every_release(env, catalog, regions) -> None:
    """The review's case: Cleunay's population is hidden (under 1,500) in every release that has a DEMO file;
    2017 and 2019 have none, so their rates had been published beside a fiche saying they are hidden."""
    _load(env, catalog, "sigville_demo", "sigville_ipro", "sigville_revn")
    run_indicators(env)
    publish_region(env, regions["53"], threshold=1500)
    latest = env.settings.store.path / "published" / "53" / "qpv_profil" / "latest"
    rows = list(csv.DictReader((latest / "qpv_profil_53_series.csv").open(encoding="utf-8")))
    rates = ("taux_emploi", "part_emploi_precaire", "taux_pauvrete", "revenu_disponible_median")
    cleunay = [r for r in rows if r["code_qp"] == "QP035006" and r["indicator_id"] in rates and r["scope"] == "qpv"]
    years = {y for r in cleunay for y in r["releases"].split()}
    assert {"2017", "2019"} <= years  # the releases without a population figure are there…
    assert all(r["value"] == "" and r["value__secret"] == "secret statistique" for r in cleunay)  # …and hidden
    fr = (latest / "qpv_profil_53_series.fr.csv").read_text(encoding="utf-8-sig")
    assert not any(line.startswith("QP035006;") and ";taux_emploi;qpv;" in line and ";41,9;" in line
                   for line in fr.splitlines())
    for name in ("qpv_profil_53_dep35", "qpv_profil_dep35"):  # the département's copy, whatever its name
        dep = env.settings.store.path / "published" / "53" / name / "latest" / f"{name}_series.csv"
        if dep.exists():
            assert ",QP035006," not in dep.read_text(encoding="utf-8") or all(
                r["value"] == "" for r in csv.DictReader(dep.open(encoding="utf-8"))
                if r["code_qp"] == "QP035006" and r["indicator_id"] in rates)
    fiche = (latest / "qpv" / "QP035006.html").read_text(encoding="utf-8")
    assert "41,9" not in fiche and "40,7" not in fiche and "12 976" not in fiche and "12 976" not in fiche


def test_a_table_loaded_before_releases_were_kept_becomes_a_release(empty_db: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 010 on a deployment that loaded SIG Ville once (plain table, primary key on code_qp): the
    rows become the partition of the release they were loaded as, and the next release loads beside them."""
    from qpvhub.catalog.loader import load_catalog
    from qpvhub.ingest import stage
    from qpvhub.platform.env import Env
    from tests.conftest import converted, loaded_before

    monkeypatch.setenv("AIRFLOW_CONN_QPVHUB_POSTGIS", empty_db)
    monkeypatch.setenv("QPVHUB_HOME", str(tmp_path / "home"))
    catalog = load_catalog(ROOT / "include" / "sources")
    spec = catalog["sigville_ipro"].for_release(2022)
    cols = ", ".join(f'"{n}" {stage._pg_type(spec, n)}' for n in spec.columns if n != "release")
    applied = loaded_before(
        empty_db, tmp_path, "010",
        f"CREATE TABLE src.sigville_ipro ({cols}, source_run_id text, PRIMARY KEY (code_qp))",
        "INSERT INTO src.sigville_ipro (code_qp, lib_qp, taux_emploi, source_run_id) VALUES "
        "('QP035002', 'Villejean', 35.8, 'old'), ('QP035003', 'Les Clôteaux', 44.1, 'old')", "sigville_ipro", "2022")
    assert "010" in applied
    assert converted(empty_db, "src.sigville_ipro", "release, code_qp, taux_emploi") == (
        "p", [(2022, "QP035002", 35.8), (2022, "QP035003", 44.1)], "2022")
    env = Env.from_settings()
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    assert ingest(env, catalog["sigville_ipro"], sample=True, release=2021).status == "success"
    with psycopg.connect(empty_db) as conn:
        per_release = conn.execute("SELECT release, count(*) FROM src.sigville_ipro GROUP BY 1 ORDER BY 1").fetchall()
    assert per_release == [(2021, 78), (2022, 2)]  # the next release beside the converted one


NATIONAL = ROOT / "tests" / "data"  # national files' heads: header, `Ensemble`, QPV of 01, 13 and 35 (PROVENANCE.md)
MIRROR = "https://raw.githubusercontent.com/aubryprieur/streamlit_data_territoire/7618e8e946ed4a83af2706d48335db333f06e32b"


def test_the_production_url_names_the_release_and_the_national_file_loads(env, catalog, http_source) -> None:
    """The shipped entries, their host moved to loopback and nothing else changed: `--release 2019` fetches that
    release's national file (the url's `{release}` filled), drops the national total line (`Ensemble`) and the
    other regions, and loads Ille-et-Vilaine's QPV with the figures of the bundled cut of the same release."""
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    for kind, sid in (("DEMO", "sigville_demo"), ("REVN", "sigville_revn"), ("IPRO", "sigville_ipro")):
        src = catalog[sid]
        assert src.url.startswith(MIRROR + "/") and src.url.endswith(f"/{kind}_{{release}}.csv")
        path = src.url[len(MIRROR) + 1:].replace("{release}", "2019")
        http_source.put(path, (NATIONAL / f"sigville_qpv2015_{kind}_2019_national_CUT.csv").read_bytes())
        here = src.model_copy(update={"url": src.url.replace(MIRROR, http_source.base),
                                      "quality": src.quality.model_copy(update={"min_rows": 1})})
        res = ingest(env, here, release=2019)
        assert res.status == "success" and res.rows_loaded == 7, (sid, res)
        assert http_source.requests[-1][1] == path
        with psycopg.connect(env.uri) as conn:
            codes = [r[0] for r in conn.execute(f"SELECT code_qp FROM src.{sid} WHERE release = 2019 ORDER BY 1")]
            urls = conn.execute("SELECT urls FROM meta.source_runs WHERE run_id = %s", (res.run_id,)).fetchone()[0]
        assert len(codes) == 7 and all(c.startswith("QP035") for c in codes), codes
        assert [u.rsplit("/", 1)[-1] for u in urls] == [f"{kind}_2019.csv"], urls
    with psycopg.connect(env.uri) as conn:
        rate = conn.execute("SELECT taux_emploi FROM src.sigville_ipro WHERE release = 2019 AND code_qp = 'QP035002'"
                            ).fetchone()[0]
    assert rate == pytest.approx(_column("IPRO", 2019, "QP035002", "TX_TOT_EMPL"))
    # without the declared exclusion, the total line is not a QPV: the code check stops the load, and names it
    ipro = catalog["sigville_ipro"]
    bare = ipro.model_copy(update={"url": ipro.url.replace(MIRROR, http_source.base), "row_exclude": {},
                                   "quality": ipro.quality.model_copy(update={"min_rows": 1})})
    with pytest.raises(QpvhubError, match=r"'code_qp'.*e\.g\. \['Ensemble'\]"):
        ingest(env, bare, release=2019, force=True)
    with psycopg.connect(env.uri) as conn:  # the release loaded before stays whole
        assert conn.execute("SELECT count(*) FROM src.sigville_ipro WHERE release = 2019").fetchone()[0] == 7
