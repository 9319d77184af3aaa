"""Benchmark: every network of a region — 30 GTFS feeds of a mid-size network each (≈ 1,500 stops,
1,000,000 stop_times), loaded as one collection (a partition per feed) vs one after the other as separate
entries (one table per network, the way before collections). Synthetic feeds inside Bretagne's box (real
layout, invented positions and times). Merges `gtfs_*` into bench/results.json: wall times, their ratio,
the peak RSS of each way (target < 1 GiB).

    .venv/bin/python bench/bench_gtfs.py [--feeds 30] [--stop-times 1000000]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import run_child  # noqa: E402

BOX = (-5.0, 47.4, -1.2, 48.8)  # inside region 53 (Bretagne), EPSG:4326

CHILD = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING)
from pathlib import Path
from qpvhub.catalog.loader import load_source
from qpvhub.catalog.model import Collection, Feed
from qpvhub.ingest.parts import ingest_collection
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.env import Env
import great_expectations  # imported before the clock starts
src = load_source(Path(sys.argv[1]))
paths = sorted(Path(sys.argv[2]).glob("*.zip"))
env = Env.from_settings()
feeds = [Feed(id=f"bench{k:02d}", title=f"réseau {k}", url=p.as_uri()) for k, p in enumerate(paths)]
t = time.perf_counter()
if sys.argv[3] == "collection":
    one = src.model_copy(update={"id": "bench_gtfs", "collection": Collection(feeds=feeds),
                                 "target": src.target.model_copy(update={"table": "bench_gtfs_stops"})})
    res = [r for _, r in ingest_collection(env, one, force=True)]
    bad = [r for r in res if isinstance(r, BaseException)]
    assert not bad, bad
else:  # one entry per network, each its own table (no partition), one after the other
    for f in feeds:
        one = src.for_feed(f).model_copy(update={
            "id": f"bench_{f.id}", "collection": None, "part": None,
            "target": src.target.model_copy(update={"table": f"bench_gtfs_{f.id}", "partition": None})})
        assert ingest(env, one, force=True).status == "success"
print(json.dumps({"seconds": time.perf_counter() - t, "feeds": len(feeds)}))
"""


def make_feed(path: Path, k: int, n_stops: int, n_stop_times: int, seed: int = 14,
              box: tuple[float, float, float, float] = BOX, spread: tuple[float, float] = (0.05, 0.07)) -> None:
    """One synthetic feed in the GTFS layout: stops around a centre inside `box` (WGS84; standard deviation
    `spread` in degrees of latitude, longitude), trips of 20 stops, a year's calendar."""
    rng = np.random.default_rng(seed + k)
    cx, cy = rng.uniform(box[0] + 0.2, box[2] - 0.2), rng.uniform(box[1] + 0.2, box[3] - 0.2)
    stops = pd.DataFrame({"stop_id": [f"S{k}_{i}" for i in range(n_stops)], "stop_name": [f"Arrêt {i}"
                                                                                          for i in range(n_stops)],
                          "stop_lat": np.round(cy + rng.normal(0, spread[0], n_stops), 6),
                          "stop_lon": np.round(cx + rng.normal(0, spread[1], n_stops), 6)})
    per_trip = 20
    n_trips = n_stop_times // per_trip
    trip = np.repeat(np.arange(n_trips), per_trip)
    seq = np.tile(np.arange(1, per_trip + 1), n_trips)
    start = 5 * 3600 + (np.arange(n_trips) * 37) % (20 * 3600)  # through the day, some past midnight
    secs = np.repeat(start, per_trip) + (seq - 1) * 90
    hh, mm, ss = secs // 3600, (secs % 3600) // 60, secs % 60
    times = pd.Series(hh).astype(str).str.zfill(2) + ":" + pd.Series(mm).astype(str).str.zfill(2) + ":" + \
        pd.Series(ss).astype(str).str.zfill(2)
    stop_times = pd.DataFrame({"trip_id": "T" + pd.Series(trip).astype(str), "arrival_time": times,
                               "departure_time": times,
                               "stop_id": np.array(stops["stop_id"])[rng.integers(0, n_stops, len(trip))],
                               "stop_sequence": seq})
    trips = pd.DataFrame({"route_id": "R1", "service_id": np.where(np.arange(n_trips) % 3, "WEEK", "ALL"),
                          "trip_id": [f"T{i}" for i in range(n_trips)]})
    calendar = pd.DataFrame({"service_id": ["WEEK", "ALL"], "monday": [1, 1], "tuesday": [1, 1],
                             "wednesday": [1, 1], "thursday": [1, 1], "friday": [1, 1], "saturday": [0, 1],
                             "sunday": [0, 1], "start_date": ["20260105", "20260105"],
                             "end_date": ["20261231", "20261231"]})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, df in (("stops.txt", stops), ("stop_times.txt", stop_times), ("trips.txt", trips),
                         ("calendar.txt", calendar)):
            buf = io.StringIO()
            df.to_csv(buf, index=False)
            z.writestr(name, buf.getvalue())
        z.writestr("agency.txt", "agency_id,agency_name,agency_url,agency_timezone\nA,Réseau,https://example.org,"
                                 "Europe/Paris\n")
        z.writestr("routes.txt", "route_id,agency_id,route_short_name,route_type\nR1,A,1,3\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=30)
    ap.add_argument("--stops", type=int, default=1500)
    ap.add_argument("--stop-times", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qpvhub-bench-gtfs-"))
    try:
        for k in range(args.feeds):
            make_feed(work / f"feed{k:02d}.zip", k, args.stops, args.stop_times)
        spec = str(ROOT / "include" / "sources" / "gtfs.yml")
        together, rss_c = run_child(CHILD, spec, str(work), "collection")
        apart, rss_s = run_child(CHILD, spec, str(work), "separate")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = ROOT / "bench" / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({
        "gtfs_feeds": args.feeds, "gtfs_stops_per_feed": args.stops, "gtfs_stop_times_per_feed": args.stop_times,
        "gtfs_collection_s": round(together["seconds"], 1), "gtfs_one_after_the_other_s": round(apart["seconds"], 1),
        "gtfs_ratio_vs_one_after_the_other": round(apart["seconds"] / together["seconds"], 2),
        "gtfs_collection_peak_rss_mb": round(rss_c), "gtfs_one_after_the_other_peak_rss_mb": round(rss_s),
    })
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k.startswith("gtfs")}, indent=2))


if __name__ == "__main__":
    main()
