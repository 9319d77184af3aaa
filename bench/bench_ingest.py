"""Ingestion benchmark: qpvhub's read → typed COPY → staging build vs `ogr2ogr -f PostgreSQL`
(PG_USE_COPY=YES) on the same CSV into the same PostGIS, in one run (a ratio, machines are noisy).

Input: the bundled real COG communes file, replicated `--copies` times (codes kept, uniqueness is not
checked by either side at this stage). Writes bench/results.json. Not a test: `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from qpvhub import load
from qpvhub.catalog import load_source
from qpvhub.db import connect, migrate, resolve_uri
from qpvhub.readers import get_reader

ROOT = Path(__file__).resolve().parents[1]


def _make_input(copies: int, work: Path) -> tuple[Path, int]:
    src = (ROOT / "include" / "sample_data" / "cog2026_communes_reg52_53.csv").read_text(encoding="utf-8")
    header, *rows = src.splitlines()
    path = work / "communes.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write(header + "\n")
        for _ in range(copies):
            f.write("\n".join(rows) + "\n")
    return path, len(rows) * copies


def run_qpvhub(uri: str, path: Path) -> float:
    source = load_source(ROOT / "include" / "sources" / "cog_communes.yml")
    source = source.model_copy(update={"row_filter": {}})  # same rows as ogr2ogr
    t0 = time.perf_counter()
    reader = get_reader("csv")(path, source.id, source.reader, batch_size=100_000)
    info = reader.open()
    load.check_columns(source, info.columns, path.name)
    raw, final = load.staging_names(source, "bench")
    with connect(uri) as conn:
        names = load.create_raw_staging(conn, source, raw)
        batches = (load.convert_batch(b, source, path.name, "bench") for b in reader.batches())
        load.copy_batches(conn, raw, names, batches)
        load.build_final(conn, source, raw, final, None, "bench")
        conn.commit()
    took = time.perf_counter() - t0
    with connect(uri) as conn:
        load.drop_staging(conn, source, "bench")
        conn.commit()
    return took


def run_ogr2ogr(uri: str, path: Path) -> float:
    env = {**os.environ, "PG_USE_COPY": "YES"}
    t0 = time.perf_counter()
    subprocess.run(["ogr2ogr", "-f", "PostgreSQL", f"PG:{uri}", str(path), "-nln", "staging.bench_ogr",
                    "-overwrite", "-oo", "AUTODETECT_TYPE=NO", "-lco", "SPATIAL_INDEX=NONE"], check=True, env=env)
    took = time.perf_counter() - t0
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS staging.bench_ogr")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100, help="replications of the 2,893-row file")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("ogr2ogr"):
        raise SystemExit("ogr2ogr not found: apt-get install gdal-bin")
    uri = resolve_uri()
    migrate(uri)
    work = Path(tempfile.mkdtemp(prefix="qpvhub-bench-"))
    try:
        path, rows = _make_input(args.copies, work)
        q = [run_qpvhub(uri, path) for _ in range(args.repeat)]
        o = [run_ogr2ogr(uri, path) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {
        "ingest_rows": rows,
        "qpvhub_s": round(statistics.median(q), 3),
        "ogr2ogr_s": round(statistics.median(o), 3),
        "ingest_ratio_vs_ogr2ogr": round(statistics.median(o) / statistics.median(q), 2),
        "note": "CSV without geometry (COG communes replicated); the 1M-row BPE point benchmark is issue 3",
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
