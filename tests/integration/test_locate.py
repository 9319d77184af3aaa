"""« Is this address in a QPV? » on the real perimeters bundled — the 2015 list of Ille-et-Vilaine and the 2024 list of
Provence-Alpes-Côte d'Azur —: coordinates and addresses (through a loopback Géoplateforme playing the documented
CSV batch service: not-found, nonsense answered ok with a low score, a 429, a truncated response), the partners'
inbox → outbox workflow on the local store and on S3, the /locate endpoint, and no personal data kept anywhere.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import shapely
from pyproj import Transformer

from qpvhub.cli import main as cli
from qpvhub.ingest.pipeline import ingest
from qpvhub.locate import job
from qpvhub.locate.geocode import Geocoder
from qpvhub.locate.partners import inbox, outbox, policy, process_inboxes, sweep
from qpvhub.platform.env import Env
from tests.geoplateforme import Answer, FakeGeoplateforme, serve

pytestmark = pytest.mark.postgis
TO_WGS = Transformer.from_crs(2154, 4326, always_xy=True)


@pytest.fixture
def perimeters(env93, catalog):
    """Regions 52, 53 and 93: the COG, the 2015 perimeters of dép. 35 and the 2024 ones of PACA, all real."""
    env, cog_url = env93
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    assert ingest(env, catalog["qpv_2015"], sample=True).status == "success"
    assert ingest(env, catalog["qpv_2024"], sample=True).status == "success"
    return env


@pytest.fixture
def geoplateforme(monkeypatch):
    fake, server = serve(FakeGeoplateforme())
    monkeypatch.setenv("QPVHUB_LOCATE_GEOCODER_URL", fake.url)
    yield fake
    server.shutdown()
    server.server_close()


def _qpv(env: Env, where: str, params: tuple = ()) -> tuple[str, str, shapely.Geometry]:
    with psycopg.connect(env.uri) as conn:
        code, com, wkb = conn.execute(f"SELECT code_qp, insee_com, ST_AsBinary(geom) FROM ref.qpv WHERE {where} "
                                      "ORDER BY code_qp LIMIT 1", params).fetchone()
    return code, com, shapely.from_wkb(bytes(wkb))


def _lonlat(p: shapely.Point) -> tuple[str, str]:
    lon, lat = TO_WGS.transform(p.x, p.y)
    return f"{lon:.8f}", f"{lat:.8f}"


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text), delimiter=";"))


def test_points_on_both_lists_with_distance_and_statut(perimeters, tmp_path, capsys) -> None:
    env = perimeters
    _, _, villejean = _qpv(env, "code_qp = 'QP035002'")
    code24, com24, paca = _qpv(env, "generation = 2024 AND code_qp LIKE 'QN013%%'")
    edge = paca.buffer(20).exterior.interpolate(0)  # 20 m outside its boundary
    rows = [("villejean", *_lonlat(villejean.representative_point())),
            ("marseille", *_lonlat(paca.representative_point())), ("bord", *_lonlat(edge)), ("vide", "", ""),
            ("faux", "abc", "43,3")]
    src = tmp_path / "points.csv"
    src.write_text("id;lon;lat\n" + "".join(";".join(r) + "\n" for r in rows), encoding="utf-8")
    assert cli(["locate", str(src), "-o", str(tmp_path / "out.csv"), "--lon", "lon", "--lat", "lat",
                "--liste-2015"]) == 0
    assert "5 lignes : 1 dans_qpv, 1 hors_qpv, 1 a_verifier, 2 non_localise" in capsys.readouterr().out
    out = {r["id"]: r for r in _rows(tmp_path / "out.csv")}
    assert list(out) == [r[0] for r in rows]  # every input row, in order, its columns kept
    v = out["villejean"]
    assert (v["statut"], v["qpv_2024_code"], v["statut_2015"], v["qpv_2015_code"]) == (
        "hors_qpv", "", "dans_qpv", "QP035002")
    assert float(v["qpv_2015_distance_limite_m"]) > 0 > float(v["qpv_2024_distance_limite_m"])
    m = out["marseille"]
    assert (m["statut"], m["qpv_2024_code"], m["commune_insee"]) == ("dans_qpv", code24, com24) and m["qpv_2024_nom"]
    b = out["bord"]
    assert b["statut"] == "a_verifier" and b["qpv_2024_code"] == "" and float(b["qpv_2024_distance_limite_m"]) == -20.0
    assert b["motif"] == "à 20 m d'une limite de QPV (marge 20 m)"
    assert (out["vide"]["statut"], out["vide"]["motif"]) == ("non_localise", "coordonnées absentes")
    assert (out["faux"]["statut"], out["faux"]["motif"], out["faux"]["lon"]) == (
        "non_localise", "coordonnées invalides", "abc")


def test_addresses_through_the_geoplateforme(perimeters, geoplateforme, tmp_path, monkeypatch, capsys) -> None:
    """A Marseille address answered with its arrondissement (13203) lands in the right QPV, its commune 13055;
    nonsense answered ok with a low score, a street-level answer, an unknown address; a 429 honoured and a
    truncated response asked again; only the address columns are sent."""
    env = perimeters
    code, _, poly = _qpv(env, "generation = 2024 AND insee_com = '13055'")
    lon, lat = (float(v) for v in _lonlat(poly.representative_point()))
    geoplateforme.answers = {
        "12 rue de la République Marseille": Answer(lon, lat, 0.93, citycode="13203",
                                                    city="Marseille 3e Arrondissement"),
        "zzz qsdf Marseille": Answer(lon, lat, 0.31, type="street", citycode="13203", city="Marseille"),
        "rue de Lyon Marseille": Answer(lon, lat, 0.88, type="street", citycode="13215", city="Marseille"),
    }
    geoplateforme.statuses = [(429, {"Retry-After": "1"})]
    geoplateforme.truncate = 1
    monkeypatch.setenv("QPVHUB_LOCATE_CHUNK_LINES", "2")
    src = tmp_path / "adresses.csv"
    src.write_text("nom;adresse;ville;cp\nA;12 rue de la République;Marseille;13003\nB;zzz qsdf;Marseille;13000\n"
                   "C;rue de Lyon;Marseille;13015\nD;1 chemin inconnu;Nulle-Part;99999\nE;;;\n", encoding="utf-8")
    started = time.monotonic()
    assert cli(["locate", str(src), "-o", str(tmp_path / "out.csv"), "--address", "adresse", "ville",
                "--postcode", "cp"]) == 0
    assert time.monotonic() - started >= 1  # the Retry-After was honoured
    out = {r["nom"]: r for r in _rows(tmp_path / "out.csv")}
    a = out["A"]
    with psycopg.connect(env.uri) as conn:  # the name is the COG's (a FIXTURE name for PACA in the tests)
        name = conn.execute("SELECT nom FROM ref.commune WHERE insee_com = '13055'").fetchone()[0]
    assert (a["statut"], a["qpv_2024_code"], a["commune_insee"], a["commune_nom"]) == ("dans_qpv", code, "13055",
                                                                                       name)
    assert a["geocodage_score"] == "0.93" and a["geocodage_type"] == "housenumber"
    assert out["B"]["statut"] == "a_verifier" and "score de géocodage 0,31 sous le seuil 0,7" in out["B"]["motif"]
    assert out["C"]["statut"] == "a_verifier" and "adresse localisée à la rue seulement" in out["C"]["motif"]
    assert (out["D"]["statut"], out["D"]["motif"], out["D"]["adresse"]) == (
        "non_localise", "adresse non trouvée par le géocodeur", "1 chemin inconnu")
    assert (out["E"]["statut"], out["E"]["motif"]) == ("non_localise", "adresse vide")
    # 4 addresses in requests of 2 lines, one 429 and one truncated response asked again
    assert geoplateforme.rows == 4 + 2 and geoplateforme.requests == 2 + 1 + 1  # the cut one lost both its rows
    assert all(f["columns"] == ["adresse", "ville"] and f["postcode"] == ["cp"] for f in geoplateforme.forms)
    assert geoplateforme.headers == [["qpvhub_ligne", "adresse", "ville", "cp"]] * len(geoplateforme.forms)
    assert "5 lignes : 1 dans_qpv, 0 hors_qpv, 2 a_verifier, 2 non_localise" in capsys.readouterr().out


def test_a_geocoder_that_keeps_refusing_fails_clearly(perimeters, geoplateforme, tmp_path) -> None:
    geoplateforme.statuses = [(503, {})] * 10
    g = Geocoder(geoplateforme.url, retries=3, backoff=0.01)
    src = tmp_path / "a.csv"
    src.write_text("adresse\n1 rue X\n", encoding="utf-8")
    with psycopg.connect(perimeters.uri) as conn, pytest.raises(Exception, match=r"geocoder .*HTTP 503"):
        job.locate_file(conn, src, tmp_path / "out.csv", job.Spec(address=["adresse"]), geocoder=g)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.partial").exists()


def test_a_large_file_is_streamed_in_blocks(perimeters, tmp_path, monkeypatch) -> None:
    """10 MB of coordinates: read and written block by block, never whole (memory stays bounded; its peak is
    measured by `make bench`)."""
    _, _, paca = _qpv(perimeters, "generation = 2024")
    lon, lat = _lonlat(paca.representative_point())
    src = tmp_path / "big.csv"
    line = f"une-ligne-de-texte-pour-le-volume;{lon};{lat}\n"
    n = 10 * 1024**2 // len(line) + 1
    with src.open("w", encoding="utf-8") as f:
        f.write("texte;lon;lat\n")
        f.writelines(line for _ in range(n))
    seen = []
    real = job.Locator.block

    def spy(self, header, rows, spec):
        seen.append(len(rows))
        return real(self, header, rows, spec)

    monkeypatch.setattr(job.Locator, "block", spy)
    with psycopg.connect(perimeters.uri) as conn:
        summary = job.locate_file(conn, src, tmp_path / "out.csv", job.Spec(lon="lon", lat="lat"), block=20_000)
    assert src.stat().st_size >= 10 * 1024**2 and summary.rows == n and summary.statuts["dans_qpv"] == n
    assert max(seen) == 20_000 and sum(seen) == n and len(seen) == -(-n // 20_000)


def _drop(env: Env, partner: str, name: str, text: str) -> str:
    key = inbox(partner) + name
    env.store.put_bytes(key, text.encode("utf-8"), "text/csv")
    return key


def test_partner_inbox_to_outbox_and_sweep_on_the_local_store(perimeters, geoplateforme) -> None:
    env = Env.from_settings()
    code, _, poly = _qpv(env, "generation = 2024 AND insee_com = '13055'")
    lon, lat = (float(v) for v in _lonlat(poly.representative_point()))
    geoplateforme.answers = {"12 rue de la République Marseille": Answer(lon, lat, 0.95, citycode="13203")}
    key = _drop(env, "ville-marseille", "beneficiaires.csv",
                "Nom;Adresse;Commune;Code_postal\nA;12 rue de la République;Marseille;13003\n")
    other = _drop(env, "asso-nord", "points.csv", f"id,longitude,latitude\n1,{lon},{lat}\n")
    done = process_inboxes(env)
    assert sorted(d.partner for d in done) == ["asso-nord", "ville-marseille"] and not any(d.error for d in done)
    assert not env.store.exists(key) and not env.store.exists(other)  # the inputs are gone
    result = env.store.get_bytes(outbox("ville-marseille") + "beneficiaires_localise.csv").decode("utf-8-sig")
    assert f";dans_qpv;;{code};" in result and "13055" in result
    assert ",dans_qpv," in env.store.get_bytes(outbox("asso-nord") + "points_localise.csv").decode("utf-8-sig")
    with psycopg.connect(env.uri) as conn:
        runs = conn.execute("SELECT partner, status, rows, statuts FROM meta.locate_runs ORDER BY 1").fetchall()
    assert runs == [("asso-nord", "success", 1, {"dans_qpv": 1}), ("ville-marseille", "success", 1, {"dans_qpv": 1})]
    # past the retention, the sweep removes the results
    path = env.store.root / outbox("asso-nord") / "points_localise.csv"
    old = time.time() - 8 * 86400
    os.utime(path, (old, old))
    assert sweep(env) == [outbox("asso-nord") + "points_localise.csv"]
    assert env.store.exists(outbox("ville-marseille") + "beneficiaires_localise.csv")


def test_a_bad_partner_file_stays_in_its_inbox_with_the_reason(perimeters, geoplateforme) -> None:
    env = Env.from_settings()
    key = _drop(env, "ville-marseille", "sans_colonnes.csv", "Nom;Age\nA;40\n")
    (done,) = process_inboxes(env)
    assert done.error and "no coordinate nor address column recognised" in done.error
    assert env.store.exists(key)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT status, rows FROM meta.locate_runs").fetchall() == [("failed", None)]


def test_partner_workflow_on_s3_with_each_partner_policy(perimeters, s3_store_conn, geoplateforme) -> None:
    """On the S3 protocol (moto, through the minio client): the result is readable with the partner's policy and
    not with another's; the outbox carries the retention as a lifecycle rule."""
    from minio import Minio

    env = Env.from_settings()
    _, _, poly = _qpv(env, "generation = 2024")
    lon, lat = _lonlat(poly.representative_point())
    _drop(env, "ville-marseille", "points.csv", f"id;lon;lat\n1;{lon};{lat}\n")
    (done,) = process_inboxes(env)
    assert done.result_key == outbox("ville-marseille") + "points_localise.csv" and done.link
    assert env.store.client.get_bucket_lifecycle(env.store.bucket).rules[0].expiration.days == 7
    doc = policy(env.store.bucket, "ville-marseille")
    assert f"{env.store.bucket}/partners/ville-marseille/outbox/*" in doc and "asso-nord" not in doc
    assert cli(["partner", "policy", "ville-marseille"]) == 0
    mine, theirs = _iam_users(s3_store_conn, env.store.bucket, ("ville-marseille", "asso-nord"))
    endpoint = s3_store_conn["extra"]["endpoint_url"].split("://", 1)[1]
    as_me = Minio(endpoint, access_key=mine[0], secret_key=mine[1], secure=False)
    as_them = Minio(endpoint, access_key=theirs[0], secret_key=theirs[1], secure=False)
    assert b";dans_qpv;" in _enforced(lambda: as_me.get_object(env.store.bucket, done.result_key).read())
    with pytest.raises(Exception, match="AccessDenied"):
        _enforced(lambda: as_them.get_object(env.store.bucket, done.result_key).read())


def _iam_users(conn: dict, bucket: str, partners: tuple[str, ...]) -> list[tuple[str, str]]:
    """One IAM user per partner on the moto server, with the partner's policy attached."""
    import boto3

    iam = boto3.client("iam", endpoint_url=conn["extra"]["endpoint_url"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    out = []
    for p in partners:
        iam.create_user(UserName=p)
        iam.put_user_policy(UserName=p, PolicyName="qpvhub", PolicyDocument=policy(bucket, p))
        k = iam.create_access_key(UserName=p)["AccessKey"]
        out.append((k["AccessKeyId"], k["SecretAccessKey"]))
    return out


def _enforced(fn):
    """Run `fn` with moto checking IAM policies (it does not by default), then back to open."""
    import moto.settings as ms
    from moto.core.authorization import ActionAuthenticatorMixin

    before = ActionAuthenticatorMixin.request_count
    saved = ms.INITIAL_NO_AUTH_ACTION_COUNT
    ms.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        return fn()
    finally:
        ms.INITIAL_NO_AUTH_ACTION_COUNT = saved
        ActionAuthenticatorMixin.request_count = before


def test_no_personal_data_is_kept_anywhere(perimeters, geoplateforme, tmp_path, caplog, capsys) -> None:
    """A lookup by addresses (CLI) and a partner's file (inbox → outbox): the addresses and the coordinates appear
    in the results only — not in the store's other objects, the logs, the output of the commands, nor any table of
    the database (pg_dump of every schema, data included)."""
    import logging

    caplog.set_level(logging.DEBUG)
    env = Env.from_settings()
    _, _, poly = _qpv(env, "generation = 2024 AND insee_com = '13055'")
    lon, lat = (float(v) for v in _lonlat(poly.representative_point()))
    secrets = ["17 impasse des Secrets", "Rue Confidentielle Dupont", f"{lon:.6f}", f"{lat:.6f}"]
    geoplateforme.answers = {"17 impasse des Secrets Marseille": Answer(lon, lat, 0.9, citycode="13203"),
                             "Rue Confidentielle Dupont Marseille": Answer(lon, lat, 0.9, citycode="13203")}
    src = tmp_path / "in.csv"
    src.write_text("adresse;ville\n17 impasse des Secrets;Marseille\n", encoding="utf-8")
    assert cli(["locate", str(src), "-o", str(tmp_path / "resultat.csv"), "--address", "adresse", "ville"]) == 0
    _drop(env, "ville-marseille", "suivi.csv", "adresse;commune\nRue Confidentielle Dupont;Marseille\n")
    (done,) = process_inboxes(env)
    assert not done.error
    seen = {"logs": caplog.text, "output": "".join(capsys.readouterr())}
    for path in env.settings.store.path.rglob("*"):
        if path.is_file() and "/outbox/" not in path.as_posix():
            seen[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for path in (env.settings.home).rglob("*"):  # working files: none left behind
        if path.is_file() and "store" not in path.parts and "pg" not in path.parts:
            seen[str(path)] = path.read_bytes().decode("utf-8", "replace")
    dump = subprocess.run(["pg_dump", "--data-only", "--inserts", env.uri], capture_output=True, text=True, check=True)
    seen["database"] = dump.stdout
    assert len(seen["database"]) > 10_000 and "locate_runs" in seen["database"]
    leaks = {where: [s for s in secrets if s in text] for where, text in seen.items()}
    assert not {k: v for k, v in leaks.items() if v}, leaks
    # the results themselves do hold them: the grep would see a leak
    assert secrets[1] in env.store.get_bytes(done.result_key).decode("utf-8-sig")


def test_one_point_over_http_beside_the_ogc_api(perimeters) -> None:
    """GET /locate?lon=…&lat=… answers from the perimeters' index as the API's read-only role, on both lists;
    bad coordinates are refused in French."""
    import json
    import urllib.error
    import urllib.request

    from tests.integration.test_api import serving

    env = perimeters
    _, _, villejean = _qpv(env, "code_qp = 'QP035002'")
    code24, com24, paca = _qpv(env, "generation = 2024 AND code_qp LIKE 'QN013%%'")

    def get(base: str, **params) -> tuple[int, dict]:
        url = f"{base}/locate?" + "&".join(f"{k}={v}" for k, v in params.items())
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with serving(env) as (base, _proc):
        lon, lat = _lonlat(paca.representative_point())
        status, body = get(base, lon=lon, lat=lat)
        assert status == 200 and body["liste_2024"]["statut"] == "dans_qpv"
        assert (body["liste_2024"]["qpv_code"], body["liste_2024"]["commune_insee"]) == (code24, com24)
        lon, lat = _lonlat(villejean.representative_point())
        status, body = get(base, lon=lon, lat=lat, liste="2015,2024")
        assert body["liste_2015"]["qpv_code"] == "QP035002" and body["liste_2015"]["statut"] == "dans_qpv"
        assert body["liste_2024"]["statut"] == "hors_qpv" and body["liste_2024"]["distance_limite_m"] < -1000
        lon, lat = _lonlat(paca.buffer(20).exterior.interpolate(0))
        assert get(base, lon=lon, lat=lat)[1]["liste_2024"]["statut"] == "a_verifier"
        for bad in ({"lon": "abc", "lat": "43"}, {"lon": "5.4", "lat": "95"},
                    {"lon": "5.4", "lat": "43", "liste": "1999"}):
            status, body = get(base, **bad)
            assert status == 400 and body["description"].startswith("paramètre"), (bad, body)
    with psycopg.connect(env.uri) as conn:  # the nearest perimeter comes from the GiST index, not a scan
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT code_qp FROM pub.qpv_perimetre WHERE generation = 2024 ORDER BY geom <-> "
            "ST_Transform(ST_SetSRID(ST_MakePoint(5.4, 43.3), 4326), 2154) LIMIT 1").fetchall())
    assert "Index Scan" in plan, plan
