"""Benchmark: the series refresh at national size — 1,400 QPV × 40 indicators × 10 releases.

A synthetic history in the mart's long shape (half the indicators rates, half counts; some releases repeat
the previous release's figures, as SIG Ville files do; a definition change at the 6th release for a few
indicators), folded (`fold_repeats`), its evolutions computed (`evolutions`) and written to the mart
(`mart.qpv_indicator_series`, `mart.qpv_indicator_evolution`) in a database of its own. Merges `series_s`
(target < 60 s) and `series_peak_rss_mb` (target < 1,024) into bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402


def synthetic(n_qpv: int, n_ind: int, n_rel: int, seed: int = 2024) -> tuple[pd.DataFrame, dict]:
    """The long table of every release, and the indicator definitions (units, a definition change)."""
    from qpvhub.indicators.families import IndicatorDef

    rng = np.random.default_rng(seed)
    codes = [f"QP{d:03d}{k:03d}" for d in range(1, 96) for k in range(1, 16)][:n_qpv]
    releases = list(range(2013, 2013 + n_rel))
    defs = {f"ind_{i:02d}": IndicatorDef(id=f"ind_{i:02d}", label_fr=f"indicateur {i}", unit="%" if i % 2 else
                                         "personnes", theme="emploi", method="synthétique", millesime="bench",
                                         comparable_from=releases[min(5, n_rel - 1)] if i % 10 == 3 else None)
            for i in range(n_ind)}
    frames = []
    base = rng.uniform(5, 60, (n_ind, n_qpv))
    for k, r in enumerate(releases):
        repeat = k % 4 == 1  # every fourth release repeats the previous figures
        if not repeat:
            base = base + rng.normal(0, 1.5, base.shape)
        for i, ind in enumerate(defs):
            values = np.round(base[i] * (1 if i % 2 else 40), 1)
            frames.append(pd.DataFrame({
                "indicator_id": ind, "code_qp": codes, "generation": 2015, "scope": "qpv", "value": values,
                "numerator": None, "denominator": None, "millesime": str(r), "source_run_ids": [["bench"]] * n_qpv,
                "release": r}))
    return pd.concat(frames, ignore_index=True), defs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qpv", type=int, default=1400)
    ap.add_argument("--indicators", type=int, default=40)
    ap.add_argument("--releases", type=int, default=10)
    args = ap.parse_args()
    from qpvhub.indicators.series import evolutions, fold_repeats, write_series

    long, defs = synthetic(args.qpv, args.indicators, args.releases)
    with scratch_database("qpvhub_bench_series_") as uri:
        with psycopg.connect(uri) as conn:
            for d in defs.values():
                conn.execute("INSERT INTO mart.indicator_catalog (indicator_id, label_fr, unit, theme, sources, "
                             "method, millesime, sql_file) VALUES (%s, %s, %s, 'emploi', '{}', 'bench', 'bench', "
                             "'bench')", (d.id, d.label_fr, d.unit))
            conn.commit()
        t = time.perf_counter()
        folded = fold_repeats(long)
        fold_s = time.perf_counter() - t
        evo = evolutions(folded, defs)
        evolutions_s = time.perf_counter() - t - fold_s
        with psycopg.connect(uri) as conn:
            write_series(conn, folded, evo, list(defs))
            conn.commit()
        series_s = time.perf_counter() - t
        with psycopg.connect(uri) as conn:
            stored = conn.execute("SELECT count(*) FROM mart.qpv_indicator_series").fetchone()[0]
            n_evo = conn.execute("SELECT count(*) FROM mart.qpv_indicator_evolution").fetchone()[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = ROOT / "bench" / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({
        "series_cells": len(long), "series_qpv": args.qpv, "series_indicators": args.indicators,
        "series_releases": args.releases, "series_rows_stored": stored, "series_evolutions": n_evo,
        "series_fold_s": round(fold_s, 2), "series_evolutions_s": round(evolutions_s, 2),
        "series_s": round(series_s, 2), "series_target_s": 60, "series_peak_rss_mb": round(rss),
    })
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k.startswith("series")}, indent=2))


if __name__ == "__main__":
    main()
