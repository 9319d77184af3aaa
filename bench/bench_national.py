"""National refresh benchmark (`make bench`): every region, from raw national files to every region's products.

Input: bench/gen_national.py's synthetic national load in the publishers' layouts (about 1,600 QPV of the 2024
list, 35,000 communes with outlines in ADMIN EXPRESS COG's 7z, 2.9 M BPE 2025 rows, 16,000 Filosofi IRIS,
500 small GTFS feeds). In a scratch database and store, one child process does what a national deployment's DAGs
do, in their order: `qpvhub region add --all`, each source ingested once from its file (fetch, raw archive,
read, GX validation, COPY, index, promote; one after the other, in their dependency order, then the GTFS
collection's 500 feeds), the indicators, then
`qpvhub publish --region R` for every region with QPV, two at a time (the 2-core deployment's parallelism), each
its own process as an Airflow task is, larger regions first as the publish DAGs' priority weights order them.
Then every region's products are checked: `sha256sum -c` passes and the profile holds that region's QPV only.
Merges `national_*` into bench/results.json: the end-to-end time, each stage's time and share, the peak RSS (the
largest process of the run: Python, or a Chromium printing fiches) and the counts.

    .venv/bin/python bench/bench_national.py [--bpe-rows 2900000] [--feeds 500] [--publish-workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import CHILD_ENV, host, run_child  # noqa: E402
from bench.gen_national import generate  # noqa: E402

CHILD = r"""
import json, logging, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
from qpvhub.catalog.loader import load_catalog
from qpvhub.catalog.model import Collection, Feed
from qpvhub.catalog.regions import deployment_regions
from qpvhub.cli import main as cli
from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.parts import ingest_collection
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.publish.profile import generations
import great_expectations  # imported before the clock starts, like the rest

data, workers = Path(sys.argv[1]), int(sys.argv[2])
manifest = json.loads((data / "MANIFEST.json").read_text())
stages, t0 = {}, time.perf_counter()

def timed(name, fn):
    t = time.perf_counter()
    out = fn()
    stages[name] = round(time.perf_counter() - t, 2)
    return out

timed("regions", lambda: cli(["region", "add", "--all"]))
env = Env.from_settings()
catalog = load_catalog(env.settings.sources_dir)

for sid in ("cog_communes", "cog_mouvements", "epci_names", "commune_contours", "qpv_2024", "filosofi_iris", "bpe"):
    url = (data / manifest["files"][sid]).as_uri()
    res = timed(f"ingest_{sid}", lambda sid=sid, url=url: ingest(env, catalog[sid], url=url))
    assert res.status == "success", (sid, res)
feeds = [Feed(id=f"reseau{k:03d}", title=f"Réseau {k}", url=(data / p).as_uri())
         for k, p in enumerate(manifest["gtfs"])]
gtfs = catalog["gtfs"].model_copy(update={"collection": Collection(feeds=feeds)})
results = timed("ingest_gtfs", lambda: [r for _, r in ingest_collection(env, gtfs)])
bad = [r for r in results if isinstance(r, BaseException) or r.status != "success"]
assert not bad, bad[:3]
stages["ingest"] = round(sum(v for k, v in stages.items() if k.startswith("ingest_")), 2)
timed("indicators", lambda: run_indicators(env))
regions = deployment_regions(env.settings)
with connect(env.uri) as conn:
    # in the publish DAGs' priority order (factory: the regions with more départements first)
    served = [c for c in sorted(regions, key=lambda c: (-len(regions[c].departements), c))
              if generations(conn, regions[c])]
per_region = {}

def publish(code):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qpvhub.cli", "publish", "--region", code], check=True,
                   stdout=subprocess.DEVNULL)
    per_region[code] = round(time.perf_counter() - t, 2)

def publish_all():
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(publish, served))

timed("publish", publish_all)
with connect(env.uri) as conn:
    counts = dict(conn.execute("SELECT 'qpv', count(*) FROM ref.qpv WHERE generation = 2024 UNION ALL "
                               "SELECT 'communes', count(*) FROM ref.commune_contour UNION ALL "
                               "SELECT 'bpe', count(*) FROM src.bpe UNION ALL "
                               "SELECT 'iris', count(*) FROM src.filosofi_iris UNION ALL "
                               "SELECT 'stops', count(*) FROM src.gtfs_stops UNION ALL "
                               "SELECT 'indicator_values', count(*) FROM mart.qpv_indicator").fetchall())
print(json.dumps({"seconds": time.perf_counter() - t0, "stages": stages, "publish_per_region": per_region,
                  "regions": served, "counts": counts}))
"""


def verify(store: Path, regions_dir: Path) -> dict[str, int]:
    """Every published region: its checksums hold and its profile lists its own QPV only; QPV count per region."""
    import pandas as pd

    from qpvhub.catalog.regions import load_regions

    regions = load_regions(regions_dir, ROOT / "include" / "reference")
    out = {}
    for latest in sorted((store / "published").glob("*/qpv_profil/latest")):
        code = latest.parent.parent.name
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=latest, check=True)
        profile = pd.read_csv(latest / f"qpv_profil_{code}.csv", dtype=str)
        deps = set(regions[code].departements)
        own = profile["code_qp"].str[2:5].map(lambda d: d[1:] if d[0] == "0" else d)
        if not (set(profile["dep"]) <= deps and own.isin(deps).all()):
            raise SystemExit(f"region {code}: its profile holds QPV of another region")
        out[code] = len(profile)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpe-rows", type=int, default=2_900_000)
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--publish-workers", type=int, default=2)
    args = ap.parse_args()
    data = ROOT / "bench" / "data" / "national"
    manifest = generate(data, bpe_rows=args.bpe_rows, feeds=args.feeds)
    from bench.scratch import scratch_database

    with scratch_database("qpvhub_bench_national_") as uri, \
            tempfile.TemporaryDirectory(prefix="qpvhub-bench-national-") as tmp:
        store, regions_dir = Path(tmp) / "store", Path(tmp) / "regions"
        CHILD_ENV.update({"AIRFLOW_CONN_QPVHUB_POSTGIS": uri, "QPVHUB_REGIONS_DIR": str(regions_dir),
                          "AIRFLOW_CONN_QPVHUB_STORE": json.dumps({"conn_type": "fs", "extra": {"path": str(store)}})})
        out, rss = run_child(CHILD, str(data), str(args.publish_workers))
        per_region = verify(store, regions_dir)
        machine = host(uri)
    total = out["seconds"]
    top = ("regions", "ingest", "indicators", "publish")  # one after the other; "ingest" is the sum of the sources
    stages = {k: out["stages"][k] for k in top}
    res = {
        "national_refresh_s": round(total, 1),
        "national_peak_rss_mb": round(rss),
        "national_stage_s": stages,
        "national_stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "national_ingest_s": {k.removeprefix("ingest_"): v for k, v in out["stages"].items() if k not in top},
        "national_publish_per_region_s": out["publish_per_region"],
        "national_publish_workers": args.publish_workers,
        "national_regions_published": len(per_region),
        "national_qpv_per_region": per_region,
        "national_products_verified": sum(per_region.values()) == out["counts"]["qpv"],
        "national_counts": out["counts"] | {"communes_generated": manifest["communes"], "feeds": manifest["feeds"]},
        "national_host": machine,
    }
    if not res["national_products_verified"]:
        raise SystemExit(f"the regions' products hold {sum(per_region.values())} QPV, {out['counts']['qpv']} loaded")
    path = ROOT / "bench" / "results.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(res)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    main()
