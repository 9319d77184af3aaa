"""`make bench`: every benchmark, then one verdict per figure against its target; exit 1 when one misses.

Each bench merges its figures into bench/results.json; a bench that crashes is a miss too, and the others still
run, so that every figure is written before the verdict. TARGETS is the one list of what the README promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = [["bench/bench_ingest.py", "--repeat", "3"], ["bench/bench_indicators.py"], ["bench/bench_series.py"],
           ["bench/bench_gtfs.py"], ["bench/bench_api.py"], ["bench/bench_locate.py"], ["bench/bench_national.py"]]
# figure → (comparison, target, what it says)
TARGETS: dict[str, tuple[str, float, str]] = {
    "ingest_ratio_vs_ogr2ogr": (">=", 2.0, "1M BPE rows, qpvhub end to end against ogr2ogr (median of 3)"),
    "peak_rss_mb": ("<", 1024, "qpvhub's peak memory loading 5M rows"),
    "indicators_s": ("<", 10, "indicator refresh at national size (1,400 QPV, 1M facilities, 100k stops)"),
    "series_s": ("<", 60, "series refresh, 1,400 QPV × 40 indicators × 10 releases"),
    "series_peak_rss_mb": ("<", 1024, "its peak memory"),
    "gtfs_collection_peak_rss_mb": ("<", 1024, "a GTFS collection's peak memory"),
    "api_errors": ("<=", 0, "OGC API errors under concurrent load"),
    "locate_ratio_vs_sjoin": (">=", 1.0, "1M points located against 1,620 QPV, against geopandas"),
    "locate_max_diff_m": ("<=", 5.0, "largest difference with geopandas' distances"),
    "geocode_overhead": ("<=", 1.5, "100k addresses at the geocoder's rate limit, against the limit alone"),
    "national_refresh_s": ("<", 900, "every region from raw national files to published products (1,600 QPV, "
                                     "35k communes, 2.9M BPE rows, 16k IRIS, 500 GTFS feeds)"),
    "national_peak_rss_mb": ("<", 1536, "its largest process's peak memory"),
}


def verdicts(results: dict) -> list[tuple[str, object, str, float, str]]:
    """(figure, value, comparison, target, verdict) for every target; a figure not written is « missing »."""
    ops = {">=": lambda v, t: v >= t, "<": lambda v, t: v < t, "<=": lambda v, t: v <= t}
    out = []
    for key, (op, target, _what) in TARGETS.items():
        value = results.get(key)
        verdict = "missing" if not isinstance(value, int | float) else ("ok" if ops[op](value, target) else "MISSED")
        out.append((key, value, op, target, verdict))
    return out


def main() -> int:
    crashed = []
    for argv in BENCHES:
        print(f"== {' '.join(argv)}", flush=True)
        if subprocess.run([sys.executable, *argv], cwd=ROOT).returncode != 0:
            crashed.append(argv[0])
    path = ROOT / "bench" / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    rows = verdicts(results)
    results["verdicts"] = {k: {"value": v, "target": f"{op} {t:g}", "verdict": d} for k, v, op, t, d in rows}
    path.write_text(json.dumps(results, indent=2) + "\n")
    print("\nfigure                          value      target     verdict")
    for key, value, op, target, verdict in rows:
        print(f"{key:<31} {value!s:<10} {op} {target:<8g} {verdict}")
    bad = [k for k, *_, v in rows if v != "ok"] + [f"{c} exited non-zero" for c in crashed]
    if bad:
        print(f"\nbench: {len(bad)} target(s) missed or not measured: {', '.join(bad)}", file=sys.stderr)
        return 1
    print("\nbench: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
