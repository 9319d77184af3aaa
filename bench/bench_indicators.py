"""Benchmark: the indicator refresh on a national-size synthetic load.

1,400 QPV outlines replicated from the six real Ille-et-Vilaine ones (bundled sample) and translated
across metropolitan France's Lambert-93 extent, 1,000,000 points in the BPE layout (half within 3 km of
a QPV: facilities are urban; half anywhere) and 100,000 transit stops within 4 km of a QPV. Synthetic
positions, real shapes and real BPE type codes. Times `run_indicators` (derived tables + every family
whose inputs exist + the mart's GX suite + swap) and merges `indicators_s` into bench/results.json.
Runs in a database of its own.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402

TYPEQU = ["A101", "A203", "A206", "B101", "B102", "B201", "B203", "C101", "C104", "C201", "C301",
          "D201", "D301", "D502", "E107", "F101", "F113", "F303", "G102"]
EXTENT = (120_000, 6_150_000, 1_050_000, 7_050_000)  # metropolitan France, Lambert-93 (m)
DEPS = [f"{d:02d}" for d in range(1, 96) if d != 20]


def load_synthetic(uri: str, n_qpv: int, n_points: int, n_stops: int, seed: int = 2015) -> None:
    """Write ref.qpv (generation 2015), src.bpe and src.gtfs_stops directly, shaped as the loader leaves them."""
    rng = np.random.default_rng(seed)
    real = gpd.read_file(ROOT / "include" / "sample_data" / "qpv2015_dept35_esigat_resovilles.geojson").to_crs(2154)
    shapes = [shapely.force_2d(g) for g in real.geometry]
    centroids = [g.centroid for g in shapes]
    xs = rng.uniform(EXTENT[0], EXTENT[2], n_qpv)
    ys = rng.uniform(EXTENT[1], EXTENT[3], n_qpv)
    qpv_buf = io.StringIO()
    per_dep: dict[str, int] = {}
    qdeps = []
    for k in range(n_qpv):
        i = k % len(shapes)
        g = shapely.affinity.translate(shapes[i], xs[k] - centroids[i].x, ys[k] - centroids[i].y)
        dep = DEPS[k % len(DEPS)]
        per_dep[dep] = per_dep.get(dep, 0) + 1
        qdeps.append(dep)
        code = f"QP0{dep}{per_dep[dep]:03d}"
        qpv_buf.write(f"{code}\tQPV synthétique {k}\t2015\t{dep}001\tSynthétique\t{dep}\tSRID=2154;{g.wkt}\tbench\n")
    near = n_points // 2
    which = rng.integers(0, n_qpv, near)
    r, a = 3000 * np.sqrt(rng.random(near)), rng.uniform(0, 2 * np.pi, near)
    px = np.concatenate([xs[which] + r * np.cos(a), rng.uniform(EXTENT[0], EXTENT[2], n_points - near)])
    py = np.concatenate([ys[which] + r * np.sin(a), rng.uniform(EXTENT[1], EXTENT[3], n_points - near)])
    pdeps = np.concatenate([np.array(qdeps)[which], np.array(DEPS)[rng.integers(0, len(DEPS), n_points - near)]])
    types = np.array(TYPEQU)[rng.integers(0, len(TYPEQU), n_points)]
    with psycopg.connect(uri) as conn:
        conn.execute("SET ROLE qpvhub_loader")
        conn.execute("TRUNCATE ref.qpv")
        with conn.cursor().copy("COPY ref.qpv (code_qp, lib_qp, generation, insee_com, lib_com, dep, geom, "
                                "source_run_id) FROM STDIN") as cp:
            cp.write(qpv_buf.getvalue())
        conn.execute("DROP TABLE IF EXISTS src.bpe")
        conn.execute("CREATE TABLE src.bpe (insee_com text NOT NULL, code_iris text, dep text NOT NULL, annee integer, "
                     "typequ text NOT NULL, qualite_xy text, qualite_geoloc text, epsg integer, qp2024 text, "
                     "quali_qp2024 text, source_run_id text, geom geometry(Point, 2154) NOT NULL)")  # BPE 2025
        with conn.cursor().copy("COPY src.bpe (insee_com, dep, annee, typequ, source_run_id, geom) FROM STDIN") as cp:
            for j in range(0, n_points, 200_000):
                sl = slice(j, j + 200_000)
                cp.write("".join(f"{d}001\t{d}\t2018\t{t}\tbench\tSRID=2154;POINT({x:.0f} {y:.0f})\n"
                                 for d, t, x, y in zip(pdeps[sl], types[sl], px[sl], py[sl], strict=True)))
        conn.execute("CREATE INDEX ON src.bpe USING gist (geom)")
        # transit stops: clustered around the QPV like urban networks, with weekday departures
        w = rng.integers(0, n_qpv, n_stops)
        r, a = 4000 * np.sqrt(rng.random(n_stops)), rng.uniform(0, 2 * np.pi, n_stops)
        sx, sy = xs[w] + r * np.cos(a), ys[w] + r * np.sin(a)
        dep = rng.integers(0, 300, n_stops)
        conn.execute("DROP TABLE IF EXISTS src.gtfs_stops")
        conn.execute("CREATE TABLE src.gtfs_stops (feed_id text NOT NULL DEFAULT 'bench', network text NOT NULL "
                     "DEFAULT 'réseau synthétique', stop_id text, stop_name text, location_type integer, "
                     "departures_weekday_avg double precision, source_run_id text, "
                     "geom geometry(Point, 2154) NOT NULL, PRIMARY KEY (feed_id, stop_id))")
        with conn.cursor().copy("COPY src.gtfs_stops (stop_id, stop_name, departures_weekday_avg, source_run_id, geom) "
                                "FROM STDIN") as cp:
            cp.write("".join(f"S{k}\tarrêt {k}\t{d}\tbench\tSRID=2154;POINT({x:.0f} {y:.0f})\n"
                             for k, (d, x, y) in enumerate(zip(dep, sx, sy, strict=True))))
        conn.execute("CREATE INDEX ON src.gtfs_stops USING gist (geom)")
        conn.execute("INSERT INTO meta.source_runs (run_id, source_id, status, millesime, finished_at) "
                     "VALUES ('bench', 'bpe', 'success', '2018', now()) ON CONFLICT DO NOTHING")
        conn.commit()
        conn.execute("ANALYZE src.bpe")
        conn.execute("ANALYZE src.gtfs_stops")
        conn.execute("ANALYZE ref.qpv")
        conn.commit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qpv", type=int, default=1400)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--stops", type=int, default=100_000)
    args = ap.parse_args()
    import tempfile

    from qpvhub.indicators.runner import run_indicators
    from qpvhub.platform.env import Env
    from qpvhub.platform.settings import Settings
    from qpvhub.platform.store import LocalStore

    with scratch_database("qpvhub_bench_ind_") as uri:
        t = time.perf_counter()
        load_synthetic(uri, args.qpv, args.points, args.stops)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        written = run_indicators(Env(Settings.load(), uri, LocalStore(Path(tempfile.mkdtemp(prefix="qpvhub-bench-")))))
        indicators_s = time.perf_counter() - t
    path = ROOT / "bench" / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({
        "indicators_qpv": args.qpv, "indicators_points": args.points, "indicators_stops": args.stops,
        "indicators_s": round(indicators_s, 2), "indicators_target_s": 10,
        "indicators_values": sum(written.values()), "indicators_synthetic_load_s": round(load_s, 2),
        "indicators_step_s": dict(sorted(written.seconds.items(), key=lambda kv: -kv[1])),
    })
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k.startswith("indicators")}, indent=2))


if __name__ == "__main__":
    main()
