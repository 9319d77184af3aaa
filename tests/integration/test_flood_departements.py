"""Géorisques' flood surfaces come as one ZIP per département (`tri_2020_sig_di_<dep>.zip`), played here on
loopback: each département of the regions is its own partition of src.flood_zones; a département without a
TRI has no file (HTTP 404) and is skipped with that reason; when no département has one, the location
itself is wrong and the run fails, keeping what was loaded. The file is the bundled FIXTURE of dép. 35."""

from __future__ import annotations

import psycopg
import pytest

from qpvhub.ingest.parts import ingest_collection
from qpvhub.platform.errors import FetchError
from tests.conftest import SAMPLES

pytestmark = pytest.mark.postgis

TRI_35 = (SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip").read_bytes()


def _at_loopback(catalog, http_source):
    src = catalog["flood_zones"]
    url = http_source.url("di_2020/tri_2020_sig_di_{dep}.zip")
    per = src.collection.per_departement.model_copy(update={"url": url})
    return src.model_copy(update={"collection": src.collection.model_copy(update={"per_departement": per})})


def test_each_departement_a_partition_and_the_ones_without_a_tri_skipped(env, catalog, http_source) -> None:
    http_source.put("di_2020/tri_2020_sig_di_35.zip", TRI_35)
    results = {feed.id: res for feed, res in ingest_collection(env, _at_loopback(catalog, http_source))}
    # the nine départements of regions 52 and 53, each asked for once
    assert sorted(results) == [f"dep_{d}" for d in ("22", "29", "35", "44", "49", "53", "56", "72", "85")]
    assert results["dep_35"].status == "success" and results["dep_35"].rows_loaded == 3
    skipped = {k: r for k, r in results.items() if k != "dep_35"}
    assert all(r.status == "skipped" for r in skipped.values())
    assert "no file for dep_22 at http://127.0.0.1:" in skipped["dep_22"].reason
    assert "tri_2020_sig_di_22.zip (HTTP 404)" in skipped["dep_22"].reason
    with psycopg.connect(env.uri) as conn:
        rows = conn.execute("SELECT livraison, couche, id_s_inond, scenario, ST_SRID(geom) FROM src.flood_zones "
                            "ORDER BY couche").fetchall()
        runs = conn.execute("SELECT part, status, error FROM meta.source_runs WHERE source_id = 'flood_zones' "
                            "ORDER BY part").fetchall()
    # one row per layer, the same identifier in each: the layer's name keeps them apart
    assert rows == [("dep_35", f"n_tri_rennes_inondable_01_{s.lower()}_s_035", "SIN_1", s, 2154)
                    for s in ("01For", "02Moy", "04Fai")]
    assert [(p, s) for p, s, _ in runs] == [(k, "success" if k == "dep_35" else "skipped") for k in sorted(results)]
    assert all("HTTP 404" in e for p, s, e in runs if s == "skipped")
    # one département asked for, without a file: its skip, not "the location moved"
    ((feed, res),) = ingest_collection(env, _at_loopback(catalog, http_source), only="dep_22")
    assert feed.id == "dep_22" and res.status == "skipped" and "(HTTP 404)" in res.reason


def test_no_departement_answering_is_a_failure_and_keeps_the_last_load(env, catalog, http_source) -> None:
    src = _at_loopback(catalog, http_source)
    http_source.put("di_2020/tri_2020_sig_di_35.zip", TRI_35)
    ingest_collection(env, src)
    http_source.files.clear()  # the publisher moved its files: every département answers 404
    with pytest.raises(FetchError, match=r"source flood_zones: no file at http://127\.0\.0\.1:\d+/di_2020/"
                                         r"tri_2020_sig_di_\{dep\}\.zip for any of the 9 département\(s\) "
                                         r"\(HTTP 404 each\): has the location moved\?"):
        ingest_collection(env, src)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM src.flood_zones WHERE livraison = 'dep_35'").fetchone()[0] == 3


def test_a_layer_without_a_declared_column_is_named(env, catalog, http_source) -> None:
    """Every layer read must have every column the load reads: the one that lacks it is named; the last load stays."""
    import io
    import zipfile

    src = _at_loopback(catalog, http_source)
    http_source.put("di_2020/tri_2020_sig_di_35.zip", TRI_35)
    assert ingest_collection(env, src, only="dep_35")[0][1].status == "success"

    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(TRI_35)) as zin, zipfile.ZipFile(buf, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n.endswith("_04fai_s_035.dbf"):
                data = data.replace(b"id_tri", b"id_trx")  # same length: a valid header, the field renamed
            zout.writestr(n, data)
    http_source.put("di_2020/tri_2020_sig_di_35.zip", buf.getvalue())
    results = dict(ingest_collection(env, src, only="dep_35"))
    (err,) = results.values()
    assert isinstance(err, Exception)
    assert str(err).startswith("source flood_zones, file tri_2020_sig_di_35.zip/FRG_TRI_RENNES/"
                               "n_tri_rennes_inondable_01_04fai_s_035.shp, column 'id_tri': missing column(s) "
                               "['id_tri']"), str(err)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM src.flood_zones WHERE livraison = 'dep_35'").fetchone()[0] == 3
