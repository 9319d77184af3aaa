"""Generate a point CSV in INSEE BPE "ensemble géolocalisé" layout for benchmarks (not real data).

Commune codes are real (bundled COG sample, regions 52 and 53), equipment types are real BPE codes;
positions are random inside the regions' Lambert-93 extent. Deterministic for a given row count.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import yaml
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
TYPEQU = ["A101", "A203", "A206", "B101", "B102", "B201", "B203", "C101", "C104", "C201", "C301",
          "D201", "D301", "D502", "E107", "F101", "F113", "F303", "G102"]
QUALITE = ["Bonne", "Acceptable", "Mauvaise"]


def generate(rows: int, path: Path, chunk: int = 500_000) -> Path:
    """Write `rows` rows to `path` (skipped when it already holds that many)."""
    marker = path.with_suffix(".rows")
    if path.exists() and marker.exists() and marker.read_text() == str(rows):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with (ROOT / "include" / "sample_data" / "v_commune_2026_reg52_53_DERIVED.csv").open(encoding="utf-8") as f:
        communes = [(r["COM"], r["DEP"], r["REG"]) for r in csv.DictReader(f) if r["TYPECOM"] == "COM"]
    bboxes = {}
    for p in sorted((ROOT / "include" / "regions").glob("*.yml")):
        r = yaml.safe_load(p.read_text(encoding="utf-8"))
        bboxes[r["code"]] = r["bbox"]
    to_l93 = Transformer.from_crs(4326, 2154, always_xy=True)
    rng = np.random.default_rng(rows)
    codes = np.array([c[0] for c in communes])
    deps = np.array([c[1] for c in communes])
    regs = np.array([c[2] for c in communes])
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("REG;DEP;DEPCOM;DCIRIS;AN;TYPEQU;LAMBERT_X;LAMBERT_Y;QUALITE_XY\n")
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            i = rng.integers(0, len(codes), n)
            box = np.array([bboxes[r] for r in regs[i]])  # each point inside its commune's region box
            u, v = 0.005 + 0.99 * rng.random(n), 0.005 + 0.99 * rng.random(n)  # keep off the box edges
            lon = box[:, 0] + u * (box[:, 2] - box[:, 0])
            lat = box[:, 1] + v * (box[:, 3] - box[:, 1])
            xf, yf = to_l93.transform(lon, lat)
            x, y = np.round(xf).astype(np.int64), np.round(yf).astype(np.int64)
            t = rng.integers(0, len(TYPEQU), n)
            q = rng.integers(0, len(QUALITE), n)
            lines = [f"{regs[a]};{deps[a]};{codes[a]};{codes[a]}0000;2018;{TYPEQU[b]};{c};{d};{QUALITE[e]}\n"
                     for a, b, c, d, e in zip(i, t, x, y, q, strict=True)]
            out.writelines(lines)
            done += n
    marker.write_text(str(rows))
    return path


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(generate(n, ROOT / "bench" / "data" / f"bpe_{n}.csv"))
