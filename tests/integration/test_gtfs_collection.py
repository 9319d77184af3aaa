"""Every transport network of the regions: feeds discovered in transport.data.gouv.fr's catalogue (played on
loopback with its documented JSON shape) or listed by hand, each loaded, validated and swapped as its own
partition of src.gtfs_stops. The feeds are the two real ones of region 53 (STAR 2016, Sailcoop 2025)."""

from __future__ import annotations

import io
import json
import zipfile

import psycopg
import pytest

from qpvhub.catalog.model import Feed
from qpvhub.ingest.parts import ingest_collection
from qpvhub.ingest.pipeline import ingest
from qpvhub.ops.monitor import freshness
from qpvhub.platform.env import Env
from qpvhub.platform.errors import QpvhubError
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

STAR = (SAMPLES / "gtfs_star_rennes_20160419.zip").read_bytes()
SAILCOOP = (SAMPLES / "gtfs_sailcoop_glenan_2025.zip").read_bytes()


def _rezip(data: bytes, *, drop: str | None = None, move_to: tuple[float, float] | None = None,
           edit: tuple[str, str, str] | None = None) -> bytes:
    """The feed with one file left out, (FIXTURE) its stops moved elsewhere in France, or one text replaced
    in one file (`edit`: file, old, new)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == drop:
                continue
            body = zin.read(info)
            if edit and info.filename == edit[0]:
                body = body.decode("utf-8-sig").replace(edit[1], edit[2], 1).encode()
            if move_to and info.filename.endswith("stops.txt"):
                lines = body.decode("utf-8-sig").splitlines()
                head = lines[0].split(",")
                ilat, ilon = head.index("stop_lat"), head.index("stop_lon")
                rows = []
                for k, line in enumerate(lines[1:]):
                    cells = line.split(",")
                    cells[ilat], cells[ilon] = f"{move_to[0] + k / 1000:.5f}", f"{move_to[1] + k / 1000:.5f}"
                    rows.append(",".join(cells))
                body = "\n".join([lines[0], *rows]).encode()
            zout.writestr(info, body)
    return out.getvalue()


def _catalogue(http_source, feeds: dict[str, tuple[str, str]]) -> None:
    """The catalogue's /api/datasets: public-transit datasets with their resources, as documented."""
    datasets = [
        {"id": f"id-{slug}", "slug": slug, "title": title, "type": "public-transit",
         "publisher": {"name": f"AOM {title}"}, "covered_area": [{"type": "aom"}],
         "resources": [{"id": f"r-{slug}", "title": f"{slug}.zip", "format": "GTFS", "is_available": True,
                        "updated": "2025-03-01T10:00:00Z", "url": http_source.url(path)},
                       {"id": f"n-{slug}", "format": "NeTEx", "url": http_source.url("netex.zip")}]}
        for slug, (title, path) in feeds.items()]
    datasets += [
        {"id": "id-velos", "slug": "velos", "title": "Vélos", "type": "bike-scooter-sharing",
         "resources": [{"id": "r-v", "format": "GTFS", "url": http_source.url("velos.zip")}]},
        {"id": "id-off", "slug": "hors-service", "title": "Hors service", "type": "public-transit",
         "resources": [{"id": "r-off", "format": "GTFS", "is_available": False, "url": http_source.url("off.zip")}]},
    ]
    http_source.put("api/datasets", json.dumps(datasets).encode(), "application/json")


def _setup(env, catalog, http_source, monkeypatch):
    """The reference geography loaded, and the environment of the rest of the test: transport.data.gouv.fr
    played on loopback (settings are read once, so they are read again here)."""
    for sid in ("cog_communes", "qpv_2015"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    monkeypatch.setenv("QPVHUB_TRANSPORT_API", http_source.url("api/datasets"))
    return Env.from_settings()


def test_discovered_feeds_load_as_partitions_and_a_broken_one_fails_alone(env, catalog, http_source,
                                                                           monkeypatch) -> None:
    env = _setup(env, catalog, http_source, monkeypatch)
    http_source.put("star.zip", STAR)
    http_source.put("sailcoop.zip", SAILCOOP)
    http_source.put("marseille.zip", _rezip(SAILCOOP, move_to=(43.30, 5.37)))  # FIXTURE: outside the regions
    http_source.put("broken.zip", _rezip(SAILCOOP, drop="stop_times.txt"))
    _catalogue(http_source, {"star-rennes": ("STAR", "star.zip"), "sailcoop-glenan": ("Sailcoop", "sailcoop.zip"),
                             "rtm-marseille": ("RTM", "marseille.zip"), "moved": ("Réseau déplacé", "gone.zip"),
                             "cassé": ("Réseau cassé", "broken.zip")})
    results = {f.id.rsplit("_", 1)[0]: r for f, r in ingest_collection(env, catalog["gtfs"])}
    assert set(results) == {"star_rennes", "sailcoop_glenan", "rtm_marseille", "moved", "cass"}  # not bikes, not off
    assert results["star_rennes"].status == "success" and results["sailcoop_glenan"].status == "success"
    assert results["rtm_marseille"].status == "skipped"
    assert "none of the 3 rows of marseille.zip is in the deployment's regions" in results["rtm_marseille"].reason
    assert isinstance(results["moved"], QpvhubError) and "404" in str(results["moved"])
    assert isinstance(results["cass"], QpvhubError) and "stop_times.txt" in str(results["cass"])
    assert "source gtfs" in str(results["cass"])
    with psycopg.connect(env.uri) as conn:
        per_feed = dict(conn.execute("SELECT network, count(*) FROM src.gtfs_stops GROUP BY 1").fetchall())
        parts = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'src.gtfs_stops'::regclass"
                             ).fetchone()[0]
        failed = conn.execute("SELECT part, error FROM meta.source_runs WHERE source_id = 'gtfs' AND status = "
                              "'failed' ORDER BY part").fetchall()
    assert per_feed == {"STAR": 1493, "Sailcoop": 3} and parts == 2
    assert len(failed) == 2 and all(p.startswith(("moved_", "cass_")) for p, _ in failed)
    # run again: nothing changed in the catalogue, the two loaded feeds are not downloaded again
    before = len(http_source.requests)
    again = {f.id.rsplit("_", 1)[0]: r for f, r in ingest_collection(env, catalog["gtfs"])}
    assert again["star_rennes"].status == again["sailcoop_glenan"].status == "skipped"
    fetched = [name for _, name, _ in http_source.requests[before:]]
    assert "star.zip" not in fetched and "sailcoop.zip" not in fetched
    # Sailcoop leaves the catalogue: its stops stay, and the feed is flagged
    _catalogue(http_source, {"star-rennes": ("STAR", "star.zip")})
    ingest_collection(env, catalog["gtfs"])
    with psycopg.connect(env.uri) as conn:
        kept = conn.execute("SELECT count(*) FROM src.gtfs_stops WHERE network = 'Sailcoop'").fetchone()[0]
    f = {x.source_id.split("/")[-1].rsplit("_", 1)[0]: x for x in freshness(env.uri, {"gtfs": catalog["gtfs"]})}
    assert kept == 3 and "is no longer in the catalogue" in f["sailcoop_glenan"].last_error


def test_reloading_one_feed_leaves_the_other_untouched(env, catalog) -> None:
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    assert all(r.status == "success" for _, r in ingest_collection(env, catalog["gtfs"], sample=True))
    with psycopg.connect(env.uri) as conn:
        before = dict(conn.execute("SELECT feed_id, min(source_run_id) FROM src.gtfs_stops GROUP BY 1").fetchall())
    res = ingest(env, catalog["gtfs"], sample=True, feed="sailcoop", force=True)
    assert res.status == "success"
    with psycopg.connect(env.uri) as conn:
        after = dict(conn.execute("SELECT feed_id, min(source_run_id) FROM src.gtfs_stops GROUP BY 1").fetchall())
        previous = conn.execute("SELECT count(*) FROM src.gtfs_stops_sailcoop__previous").fetchone()[0]
    assert after["star"] == before["star"] and after["sailcoop"] == res.run_id != before["sailcoop"]
    assert previous == 3  # the replaced partition is kept beside, as for every swap
    with pytest.raises(QpvhubError, match="a collection of feeds"):
        ingest(env, catalog["gtfs"], sample=True)
    with pytest.raises(QpvhubError, match="no listed feed 'tan'"):
        ingest(env, catalog["gtfs"], sample=True, feed="tan")


def test_status_shows_each_feed_and_its_expiry(env, catalog) -> None:
    """Per feed: the STAR feed ended in 2016, Sailcoop's season on 2025-09-30 — both expired today."""
    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    ingest_collection(env, catalog["gtfs"], sample=True)
    f = {x.source_id: x for x in freshness(env.uri, {"gtfs": catalog["gtfs"]})}
    assert set(f) == {"gtfs/star", "gtfs/sailcoop"}
    assert f["gtfs/sailcoop"].state == "expired" and f["gtfs/sailcoop"].data_note.startswith("expired since 2025-09-30")
    assert f["gtfs/star"].state == "expired" and f["gtfs/star"].data_note.startswith("expired since 2016-06-12")
    assert f["gtfs/sailcoop"].rows == 3
    # each feed's own validity and reference week; ISO dates are not read day-first (2016-05-09 stays in May)
    assert "valid 2016-05-09 → 2016-06-12, reference week of 2016-05-09" in f["gtfs/star"].data_note
    assert "valid 2025-04-01 → 2025-09-30, reference week of 2025-06-30" in f["gtfs/sailcoop"].data_note
    with psycopg.connect(env.uri) as conn:
        weeks = dict(conn.execute("SELECT feed_id, min(reference_week)::text FROM src.gtfs_stops GROUP BY 1"))
    assert weeks == {"star": "2016-05-09", "sailcoop": "2025-06-30"}


def test_feed_ids_are_stable_and_a_listed_feed_keeps_its_id(http_source, monkeypatch) -> None:
    from qpvhub.ingest.locate import discover_feeds, feed_id_of

    _catalogue(http_source, {"star-rennes": ("STAR", "star.zip")})
    api = http_source.url("api/datasets")
    found = discover_feeds("gtfs", api, ["public-transit"], [], [])
    assert [f.id for f, _ in found] == [feed_id_of("star-rennes", "r-star-rennes")] == ["star_rennes_" + found[0][0]
                                                                                        .id[-6:]]
    listed = [Feed(id="star", title="STAR (Rennes Métropole)", dataset="star-rennes")]
    (feed, meta), = discover_feeds("gtfs", api, ["public-transit"], [], listed)
    assert (feed.id, feed.title, meta["resource_id"], meta["last_modified"]) == (
        "star", "STAR (Rennes Métropole)", "r-star-rennes", "2025-03-01T10:00:00Z")
    assert discover_feeds("gtfs", api, ["public-transit"], ["star-rennes"], []) == []


@pytest.mark.parametrize("edit, message", [
    (("stop_times.txt", "S25_JA_CCN_STN_0000,10:30:00,10:30:00", "S25_JA_CCN_STN_0000,10:30:00,10h30"),
     r"file gtfs_sailcoop_glenan_2025.zip, line 3, column 'departure_time': stop_times.txt: departure_time "
     r"'10h30' is not a GTFS time"),
    (("calendar.txt", "S25_AMJ,1,0,0,0,1,1,0,20250401,20250630\n", ""), None),
])
def test_gtfs_quality_is_checked_per_feed(env, catalog, tmp_path, edit, message) -> None:
    """A feed with a time that is no GTFS time, or whose calendar runs nothing, fails naming feed, file, line."""
    from pathlib import Path

    from qpvhub.catalog.model import Feed

    for sid in ("cog_communes", "qpv_2015"):
        ingest(env, catalog[sid], sample=True)
    bad = SAILCOOP
    if edit[0] == "calendar.txt":  # every service line gone: the calendar runs nothing
        with zipfile.ZipFile(io.BytesIO(SAILCOOP)) as z:
            head = z.read("calendar.txt").decode("utf-8-sig").splitlines()[0]
        bad = _rezip(SAILCOOP, drop="calendar.txt")
        out = io.BytesIO(bad)
        with zipfile.ZipFile(out, "a") as z:
            z.writestr("calendar.txt", head + "\n")
        bad = out.getvalue()
        message = "calendar.txt and calendar_dates.txt define no service"
    else:
        bad = _rezip(SAILCOOP, edit=edit)
    path = Path(tmp_path) / "gtfs_sailcoop_glenan_2025.zip"
    path.write_bytes(bad)
    feed = Feed(id="sailcoop", title="Sailcoop", url=path.as_uri())
    with pytest.raises(QpvhubError, match=message) as exc:
        ingest(env, catalog["gtfs"], feed=feed)
    assert "source gtfs" in str(exc.value)


def test_an_unreachable_catalogue_does_not_stop_the_listed_feeds(env, catalog, http_source, monkeypatch) -> None:
    """The review: with transport.data.gouv.fr out of reach, the whole collection aborted, feeds listed by hand
    included; a listed feed with a url but no sample was skipped offline without a word; listed feeds were said
    'no longer in the catalogue'. Now the listed feeds load, one line says discovery failed, nothing is flagged,
    and every feed left out says why."""
    from qpvhub.ingest.parts import run_parts

    env = _setup(env, catalog, http_source, monkeypatch)
    http_source.put("star.zip", STAR)
    _catalogue(http_source, {"sailcoop-glenan": ("Sailcoop", "sailcoop.zip")})
    http_source.put("sailcoop.zip", SAILCOOP)
    gtfs = catalog["gtfs"]
    assert run_parts(env, gtfs).failed == []  # a discovered feed loaded once: it is in the table now
    listed = gtfs.collection.model_copy(update={"feeds": [
        gtfs.collection.feeds[0].model_copy(update={"url": http_source.url("star.zip")}),
        gtfs.collection.feeds[1].model_copy(update={"url": http_source.url("sailcoop.zip"), "sample": None})]})
    offline = gtfs.model_copy(update={"collection": listed})
    monkeypatch.setenv("QPVHUB_TRANSPORT_API", "http://127.0.0.1:9/api/datasets")  # nothing listens there
    env = Env.from_settings()
    run = run_parts(env, offline)
    lines = "\n".join(run.lines())
    assert not run.failed, lines
    assert "gtfs: discovery failed, the 2 listed feed(s) load" in lines
    assert {o.label for o in run.outcomes} == {"gtfs/star", "gtfs/sailcoop"}
    assert "no longer in the catalogue" not in lines
    with psycopg.connect(env.uri) as conn:
        flagged = conn.execute("SELECT count(*) FROM meta.source_runs WHERE error LIKE '%no longer in the catalogue%'"
                               ).fetchone()[0]
    assert flagged == 0  # the discovered feed keeps its stops, unflagged: discovery did not answer, it did not drop it
    sample = run_parts(env, offline, sample=True)
    assert [o.label for o in sample.outcomes] == ["gtfs/star"]
    assert any(line.startswith("gtfs/sailcoop: no bundled sample, not loaded offline") for line in sample.lines())
