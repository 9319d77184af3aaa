"""Benchmark: the OGC API under load — 200 concurrent requests for a collection page, then 200 for vector
tiles, from a local client, against `qpvhub api` on the demo's published layers (run `make demo` first;
it is run here when the layers are missing). Merges `api_*` into bench/results.json: p50/p95 latency in ms
and errors (target: 0 errors).
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QPVHUB = ROOT / ".venv" / "bin" / "qpvhub"
N = 200


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _timed(url: str) -> tuple[float, bool]:
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            ok = r.status == 200
    except OSError:
        ok = False
    return (time.perf_counter() - t) * 1000, ok


def _burst(urls: list[str]) -> dict:
    """Every URL at once (one thread each): latency percentiles and errors."""
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        results = list(pool.map(_timed, urls))
    ms = sorted(m for m, _ in results)
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "errors": sum(not ok for _, ok in results)}


def main() -> None:
    sys.path.insert(0, str(ROOT / "plugins"))
    import psycopg

    from qpvhub.platform.env import Env

    env = Env.from_settings()
    with psycopg.connect(env.uri) as conn:
        ready = conn.execute("SELECT to_regclass('pub.qpv_profil_53') IS NOT NULL").fetchone()[0]
    if not ready:
        subprocess.run([str(QPVHUB), "demo"], check=True, stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(QPVHUB), "api", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if _timed(base + "/healthz")[1]:
                break
            time.sleep(0.25)
        pages = [f"{base}/collections/pub.arrets_transport/items?limit=100&offset={100 * (k % 15)}" for k in range(N)]
        x0, y0 = _tile(-1.72, 48.13, 14)  # Rennes
        tiles = [f"{base}/collections/pub.qpv_profil_53/tiles/WebMercatorQuad/14/{x0 + k % 6}/{y0 + (k // 6) % 5}"
                 for k in range(N)]
        _burst(pages[:10])  # warm the pool
        items, mvt = _burst(pages), _burst(tiles)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    path = ROOT / "bench" / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({"api_concurrent_requests": N, "api_items_p50_ms": items["p50_ms"], "api_p95_ms": items["p95_ms"],
                "api_items_max_ms": items["max_ms"], "api_tiles_p50_ms": mvt["p50_ms"],
                "api_tiles_p95_ms": mvt["p95_ms"], "api_tiles_max_ms": mvt["max_ms"],
                "api_errors": items["errors"] + mvt["errors"]})
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k.startswith("api_")}, indent=2))


if __name__ == "__main__":
    main()
