"""Sources on an older commune geography load translated to the deployment's COG (qpvhub.ingest.cog)."""

import csv
import io
import json
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from qpvhub.catalog.model import Source
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import QpvhubError

pytestmark = pytest.mark.postgis

ROOT = Path(__file__).resolve().parents[2]
IRIS_2021 = ROOT / "include" / "sample_data" / "insee_iris_ref_2021_reg52_53.csv"


def _reference(env, catalog) -> None:
    for sid in ("cog_communes", "cog_mouvements"):
        assert ingest(env, catalog[sid], sample=True).status == "success"


def _run(env, source_id: str) -> dict:
    with psycopg.connect(env.uri) as conn:
        return conn.execute("SELECT cog_translation FROM meta.source_runs WHERE source_id = %s AND status = 'success' "
                            "ORDER BY finished_at DESC LIMIT 1", (source_id,)).fetchone()[0]


def test_iris_2021_loads_translated_to_cog_2026(env, catalog) -> None:
    _reference(env, catalog)
    res = ingest(env, catalog["iris_ref"], sample=True)
    assert res.status == "success" and res.rows_loaded == 3680 and res.validation["success"]
    report = _run(env, "iris_ref")
    assert (report["from"], report["to"], report["events_until"]) == (2021, 2026, "2025-01-01")
    col = report["columns"]["insee_com"]
    # 17 communes of the 2021 file no longer exist; they carry 23 IRIS (counted in the file itself)
    with IRIS_2021.open(encoding="utf-8", newline="") as f:
        per_commune = Counter(r["DEPCOM"] for r in csv.DictReader(f, delimiter=";"))
    gone = {t["code"] for t in col["translated"]}
    assert col["codes"] == len(gone) == 17 and col["rows"] == sum(per_commune[c] for c in gone) == 23
    step = "2025-01-01 changement de code dû à un transfert de chef-lieu (50): 49069 → 49126"
    assert {"code": "49069", "to": "49126", "events": [step]} in col["translated"]
    assert col["split"] == [{"code": "85084", "into": ["85165", "85212"]}]
    with psycopg.connect(env.uri) as conn:
        dangling = conn.execute("SELECT count(*) FROM ref.iris i WHERE NOT EXISTS "
                                "(SELECT 1 FROM ref.commune c WHERE c.insee_com = i.insee_com)").fetchone()[0]
        cambout = conn.execute("SELECT insee_com, lib_com FROM ref.iris WHERE code_iris = '220270000'").fetchone()
    assert dangling == 0
    assert cambout == ("22241", "Le Cambout")  # the code moves, the file's own name stays


def test_filosofi_commune_renumbered_in_2025(env, catalog) -> None:
    _reference(env, catalog)
    assert ingest(env, catalog["filosofi_iris"], sample=True).status == "success"
    col = _run(env, "filosofi_iris")["columns"]["insee_com"]
    assert [t["code"] + "→" + t["to"] for t in col["translated"]] == ["49069→49126"]
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM src.filosofi_iris WHERE insee_com = '49069'").fetchone()[0] == 0
        moved = conn.execute("SELECT count(*) FROM src.filosofi_iris WHERE code_iris LIKE '49069%'").fetchone()[0]
    assert moved == col["rows"] > 0


def test_without_the_events_the_load_fails_and_the_previous_stays(env, catalog) -> None:
    _reference(env, catalog)
    assert ingest(env, catalog["iris_ref"], sample=True).status == "success"
    with psycopg.connect(env.uri) as conn:
        conn.execute("DROP TABLE ref.commune_mouvement CASCADE")
        conn.commit()
    with pytest.raises(QpvhubError, match=r"iris_ref: its commune codes are on COG 2021, the deployment's on COG 2026.*"
                                          r"qpvhub ingest cog_mouvements"):
        ingest(env, catalog["iris_ref"], sample=True, force=True)
    with psycopg.connect(env.uri) as conn:
        failed = conn.execute("SELECT sha256, raw_key FROM meta.source_runs WHERE source_id = 'iris_ref' "
                              "AND status = 'failed'").fetchall()
        assert failed == [(None, None)]  # refused before downloading
        assert conn.execute("SELECT count(*) FROM ref.iris").fetchone()[0] == 3680
        assert conn.execute("SELECT insee_com FROM ref.iris WHERE code_iris = '220270000'").fetchone()[0] == "22241"


def _per_commune_spec(url: str) -> Source:
    return Source.model_validate({
        "id": "iris_par_commune", "title": "IRIS par commune (2021)", "publisher": "test", "licence": "LO",
        "url": url, "format": "csv", "reader": {"sep": ";"}, "millesime": "2021",
        "columns": {"insee_com": {"source": "COM", "description": "commune"},
                    "nom": {"source": "LIBCOM", "description": "nom"},
                    "nb_iris": {"source": "NB_IRIS", "type": "integer", "description": "IRIS"}},
        "keys": ["insee_com"], "target": {"schema": "src", "table": "iris_par_commune"},
        "depends_on": ["cog_communes", "cog_mouvements"],
        "cog": {"columns": ["insee_com"], "merged": "aggregate"},
        "quality": {"checks": [{"check": "references", "column": "insee_com", "table": "ref.commune"}]}})


def test_table_keyed_by_commune_merges_rows(env, catalog, http_source) -> None:
    """A commune-keyed table of the 2021 geography (the number of IRIS per commune, counted from INSEE's
    2021 IRIS reference) becomes one row per 2026 commune: counts summed, the chief town's name kept."""
    _reference(env, catalog)
    with IRIS_2021.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    counts = Counter(r["DEPCOM"] for r in rows)
    names = {r["DEPCOM"]: r["LIBCOM"] for r in rows}
    out = io.StringIO()
    out.write("COM;LIBCOM;NB_IRIS\n")
    for code in sorted(counts):
        out.write(f"{code};{names[code]};{counts[code]}\n")
    res = ingest(env, _per_commune_spec(http_source.put("iris2021.csv", out.getvalue().encode())))
    assert res.status == "success" and res.validation["success"]
    col = _run(env, "iris_par_commune")["columns"]["insee_com"]
    with psycopg.connect(env.uri) as conn:
        got = dict(conn.execute("SELECT insee_com, nb_iris FROM src.iris_par_commune").fetchall())
        plumieux = conn.execute("SELECT nom, nb_iris FROM src.iris_par_commune WHERE insee_com = '22241'").fetchone()
    # Plumieux (2025) = Le Cambout + Coëtlogon + Plumieux of 2021; Orée d'Anjou only changed its code
    assert plumieux == ("Plumieux", counts["22027"] + counts["22043"] + counts["22241"])
    assert got["49126"] == counts["49069"] and "49069" not in got
    assert sum(got.values()) == sum(counts.values()) == 3680  # nothing lost, nothing counted twice
    assert len(got) == len(counts) - col["rows_merged"] and col["rows_merged"] == 16  # 17 gone, one only renumbered
    assert res.rows_loaded == len(got)  # what the table holds, not the rows before merging (the review: 1,232 vs 1,202)


def _per_commune_file(http_source) -> str:
    with IRIS_2021.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    counts, names = Counter(r["DEPCOM"] for r in rows), {r["DEPCOM"]: r["LIBCOM"] for r in rows}
    body = "COM;LIBCOM;NB_IRIS\n" + "".join(f"{c};{names[c]};{counts[c]}\n" for c in sorted(counts))
    return http_source.put("iris2021.csv", body.encode())


def test_older_codes_without_cog_say_how_to_translate_them(env, catalog, http_source) -> None:
    """A file on the 2021 geography declared without `cog:` fails its reference check: the message says what to
    declare; with `cog:` but the default `merged: attach` on a table keyed by commune, the duplicated key is named
    and `merged: aggregate` suggested."""
    from qpvhub.platform.errors import ValidationFailed

    _reference(env, catalog)
    url = _per_commune_file(http_source)
    spec = _per_commune_spec(url)
    plain = spec.model_copy(update={"cog": None, "depends_on": ["cog_communes"]})
    with pytest.raises(ValidationFailed, match=r"(?s)insee_com.*hint: codes of \['insee_com'\] match no commune.*"
                                               r"declare `cog: \{columns: \['insee_com'\], year: "):
        ingest(env, plain)
    attach = spec.model_copy(update={"cog": spec.cog.model_copy(update={"merged": "attach"})})
    with pytest.raises(QpvhubError, match=r"communes merged since COG 2021 .*insee_com is this table's key: .*"
                                          r"22241 \(3 rows\).*merged: aggregate"):
        ingest(env, attach)


def test_aggregate_unions_geometries(env, catalog, http_source) -> None:
    """Outlines of merged communes become one outline (synthetic squares: no outline of a commune that
    no longer exists is bundled)."""
    _reference(env, catalog)
    square = [[[-1.90, 48.10], [-1.89, 48.10], [-1.89, 48.11], [-1.90, 48.11], [-1.90, 48.10]]]
    right = [[[-1.89, 48.10], [-1.88, 48.10], [-1.88, 48.11], [-1.89, 48.11], [-1.89, 48.10]]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": "35062", "nom": "La Chapelle-Janson", "population": 1300},
         "geometry": {"type": "Polygon", "coordinates": square}},
        {"type": "Feature", "properties": {"code": "35112", "nom": "Fleurigné", "population": 1100},
         "geometry": {"type": "Polygon", "coordinates": right}}]}
    spec = Source.model_validate({
        "id": "contours_2023", "title": "t", "publisher": "test", "licence": "LO", "format": "geojson",
        "url": http_source.put("c.geojson", json.dumps(fc).encode()), "millesime": "2023",
        "columns": {"insee_com": {"source": "code", "description": "c"}, "nom": {"source": "nom", "description": "n"},
                    "population": {"source": "population", "type": "integer", "description": "p"}},
        "geometry": {"type": "MultiPolygon"}, "keys": ["insee_com"], "depends_on": ["cog_mouvements"],
        "target": {"schema": "src", "table": "contours_2023"},
        "cog": {"columns": ["insee_com"], "merged": "aggregate"}})
    assert ingest(env, spec).status == "success"
    with psycopg.connect(env.uri) as conn:
        rows = conn.execute("SELECT insee_com, nom, population, ST_NumGeometries(geom), round(ST_Area(geom)) "
                            "FROM src.contours_2023").fetchall()
        parts = conn.execute("SELECT round(ST_Area(ST_Transform(ST_GeomFromGeoJSON(%s), 2154))) * 2",
                             (json.dumps({"type": "Polygon", "coordinates": square}),)).fetchone()[0]
    assert len(rows) == 1
    code, nom, pop, n, area = rows[0]
    assert (code, nom, pop, n) == ("35062", "La Chapelle-Janson", 2400, 1)
    assert abs(area - parts) / parts < 0.01
