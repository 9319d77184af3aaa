"""Generate a point CSV in INSEE's BPE 2025 detail layout for benchmarks (not real data).

The header is the bundled BPE 2025 sample's (95 columns); the columns the catalogue entry reads are filled
(commune, IRIS, département, région, year, domain, type, Lambert-93 and WGS84 coordinates, quality, EPSG),
the others left empty as in the sample. Commune codes are real (bundled COG sample, regions 52 and 53),
equipment types are BPE 2024 codes; positions are random inside the regions' Lambert-93 extent.
Deterministic for a given row count.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
TYPEQU = ["A208", "A203", "A206", "B104", "B105", "B201", "B207", "C107", "C109", "C201", "C301",
          "D279", "D307", "D502", "E107", "F111", "F113", "F307", "G102"]
QUALITE = ["B", "A", "M"]
SAMPLE = ROOT / "include" / "sample_data" / "BPE25_dep35_FIXTURE.zip"


def bpe_header() -> list[str]:
    """The BPE 2025 header, from the bundled sample (one definition of the layout)."""
    with zipfile.ZipFile(SAMPLE) as z, z.open("BPE25.csv") as f:
        return f.readline().decode("cp1252").rstrip("\r\n").split(";")


def _template(header: list[str]) -> str:
    """A line with a {field} placeholder in each filled column, nothing in the others."""
    filled = {"AN", "DEPCOM", "DEP", "REG", "DOM", "SDOM", "TYPEQU", "LAMBERT_X", "LAMBERT_Y", "LONGITUDE",
              "LATITUDE", "QUALITE_XY", "EPSG", "DCIRIS"}
    return ";".join("{" + h + "}" if h in filled else "" for h in header) + "\n"


def generate(rows: int, path: Path, chunk: int = 500_000) -> Path:
    """Write `rows` rows to `path` (skipped when it already holds that many)."""
    marker = path.with_suffix(".rows")
    if path.exists() and marker.exists() and marker.read_text() == f"{rows} BPE25":
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with (ROOT / "include" / "sample_data" / "v_commune_2026_reg52_53_DERIVED.csv").open(encoding="utf-8") as f:
        communes = [(r["COM"], r["DEP"], r["REG"]) for r in csv.DictReader(f) if r["TYPECOM"] == "COM"]
    bboxes = {}
    for p in sorted((ROOT / "include" / "regions").glob("*.yml")):
        r = yaml.safe_load(p.read_text(encoding="utf-8"))
        bboxes[r["code"]] = r["bbox"]
    to_l93 = Transformer.from_crs(4326, 2154, always_xy=True)
    header = bpe_header()
    line = _template(header).format
    rng = np.random.default_rng(rows)
    codes = np.array([c[0] for c in communes])
    deps = np.array([c[1] for c in communes])
    regs = np.array([c[2] for c in communes])
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(";".join(header) + "\n")
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
            lines = [line(AN="2025", DEPCOM=codes[a], DEP=deps[a], REG=regs[a], DOM=TYPEQU[b][0], SDOM=TYPEQU[b][:2],
                          TYPEQU=TYPEQU[b], LAMBERT_X=c, LAMBERT_Y=d, LONGITUDE=f"{lo:.6f}", LATITUDE=f"{la:.6f}",
                          QUALITE_XY=QUALITE[e], EPSG="2154", DCIRIS=f"{codes[a]}0000")
                     for a, b, c, d, e, lo, la in zip(i, t, x, y, q, lon, lat, strict=True)]
            out.writelines(lines)
            done += n
    marker.write_text(f"{rows} BPE25")
    return path


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(generate(n, ROOT / "bench" / "data" / f"bpe_{n}.csv"))
