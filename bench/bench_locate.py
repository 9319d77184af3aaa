"""Benchmark: « is this point in a QPV? » at national size, and addresses through a rate-limited geocoder.

Perimeters: 1,620 QPV — the 135 real perimeters of PACA's 2024 list (include/sample_data), copied twelve times
translated across metropolitan France (a GENERATED national set of the real shapes: no national file offline).
Points: 1,000,000, a third at a jittered point inside a perimeter, the rest uniform in the copies' extent.
qpvhub (`Perimeters.locate`: containing QPV and signed distance to the nearest boundary) is timed beside
geopandas doing the same work in the same run (`sjoin` intersects + the distance to the boundary, then
`sjoin_nearest` for the points in none): `locate_ratio_vs_sjoin` = geopandas' time / qpvhub's, target ≥ 1.0; the
answers are compared point by point (`locate_exact_share`, `locate_max_diff_m` ≤ SPACING / 2: qpvhub's k-d tree may
name another of two nearly equidistant QPV for a point outside every QPV).
Then 100,000 addresses through the loopback Géoplateforme (tests/geoplateforme.py) limited to 20 requests/s
with 1,000 lines a request, the client paced at that rate: `geocode_overhead` = elapsed / (requests / rate), the
time the limit alone imposes (target ≤ 1.5: the hub's own work hidden behind the limit). Merges its figures
into bench/results.json and exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from qpvhub.locate.geocode import Geocoder  # noqa: E402
from qpvhub.locate.points import SPACING, Perimeters  # noqa: E402
from tests.geoplateforme import Answer, FakeGeoplateforme, serve  # noqa: E402

SAMPLE = ROOT / "include" / "sample_data" / "qpv2024_paca_anct_layout.zip"
MEMBER = "GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson"


def national(copies: int = 12) -> gpd.GeoDataFrame:
    """The 135 real perimeters, `copies` times, translated on a grid over metropolitan France (Lambert-93)."""
    base = gpd.read_file(f"zip://{SAMPLE}!{MEMBER}").to_crs(2154)[["code_qp", "lib_qp", "insee_com", "geometry"]]
    x0, y0 = base.total_bounds[:2]
    frames = []
    for k in range(copies):
        dx, dy = 150_000 + (k % 4) * 250_000 - x0, 6_250_000 + (k // 4) * 300_000 - y0
        g = base.copy()
        g["geometry"] = g.geometry.translate(dx, dy)
        g["code_qp"] = [f"{c[:5]}{k:02d}{c[-1]}" for c in base["code_qp"]]
        frames.append(g)
    return gpd.GeoDataFrame(np.concatenate([f.values for f in frames]), columns=base.columns, geometry="geometry",
                            crs=2154)


def points(qpv: gpd.GeoDataFrame, n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inside = n // 3
    reps = shapely.get_coordinates(qpv.geometry.representative_point().values)
    pick = rng.integers(0, len(reps), inside)
    xi, yi = reps[pick, 0] + rng.normal(0, 30, inside), reps[pick, 1] + rng.normal(0, 30, inside)
    x0, y0, x1, y1 = qpv.total_bounds
    xo, yo = rng.uniform(x0, x1, n - inside), rng.uniform(y0, y1, n - inside)
    return np.concatenate([xi, xo]), np.concatenate([yi, yo])


def with_geopandas(qpv: gpd.GeoDataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same answer the geopandas way: containing QPV and distance to its boundary, nearest for the others."""
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=2154)
    hit = gpd.sjoin(pts, qpv[["code_qp", "geometry"]], predicate="intersects", how="inner")
    hit = hit[~hit.index.duplicated()]
    dist = np.full(len(pts), np.nan)
    dist[hit.index] = pts.geometry.loc[hit.index].distance(
        qpv.geometry.boundary.iloc[hit["index_right"].to_numpy()].set_axis(hit.index))
    rest = pts.drop(index=hit.index)
    near = gpd.sjoin_nearest(rest, qpv[["code_qp", "geometry"]], distance_col="d")
    near = near[~near.index.duplicated()]
    dist[near.index] = -near["d"].to_numpy()
    return dist


def geocode_bench(n: int = 100_000, rate: float = 20.0, lines: int = 1000) -> dict:
    fake, server = serve(FakeGeoplateforme(rate=rate, retry_after=1 / rate))
    try:
        fake.answers = {f"{i} rue du Banc": Answer(5.4, 43.3, 0.9) for i in range(n)}
        g = Geocoder(fake.url, chunk_lines=lines, backoff=0.05, rate=rate)
        t = time.perf_counter()
        out = g.geocode([[f"{i} rue du Banc"] for i in range(n)], ["adresse"])
        elapsed = time.perf_counter() - t
    finally:
        server.shutdown()
        server.server_close()
    ok = sum(1 for a in out if a.status == "ok")
    floor = (n / lines) / rate
    return {"geocode_addresses": n, "geocode_answered": ok, "geocode_requests": g.requests,
            "geocode_rate_limit_per_s": rate, "geocode_s": round(elapsed, 2), "geocode_floor_s": round(floor, 2),
            "geocode_overhead": round(elapsed / floor, 2), "geocode_overhead_target": 1.5}


def main() -> int:
    qpv = national()
    x, y = points(qpv, 1_000_000)
    t = time.perf_counter()
    per = Perimeters(2024, list(qpv["code_qp"]), list(qpv["lib_qp"]), list(qpv["insee_com"]), qpv.geometry.values)
    found = per.locate(x, y)
    hub_s = time.perf_counter() - t
    t = time.perf_counter()
    peer = with_geopandas(qpv, x, y)
    peer_s = time.perf_counter() - t
    diff = np.abs(found.distance - peer)
    worst = float(np.nanmax(diff))
    exact = float(np.mean(diff[np.isfinite(diff)] <= 1e-6))
    res = {"locate_qpv": len(qpv), "locate_points": len(x), "locate_inside": int((found.distance >= 0).sum()),
           "locate_s": round(hub_s, 2), "locate_points_per_s": round(len(x) / hub_s),
           "locate_geopandas_s": round(peer_s, 2), "locate_ratio_vs_sjoin": round(peer_s / hub_s, 2),
           "locate_ratio_target": 1.0, "locate_exact_share": round(exact, 6),
           "locate_max_diff_m": round(worst, 3), "locate_max_diff_target_m": SPACING / 2}
    res.update(geocode_bench())
    path = ROOT / "bench" / "results.json"
    allres = json.loads(path.read_text()) if path.exists() else {}
    allres.update(res)
    path.write_text(json.dumps(allres, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    missed = [k for k, ok in (("locate_ratio_vs_sjoin", res["locate_ratio_vs_sjoin"] >= 1.0),
                              ("locate_max_diff_m", worst <= SPACING / 2),
                              ("geocode_overhead", res["geocode_overhead"] <= 1.5),
                              ("geocode_answered", res["geocode_answered"] == res["geocode_addresses"])) if not ok]
    if missed:
        print(f"bench_locate: target missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
