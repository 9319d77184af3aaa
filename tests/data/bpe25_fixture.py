"""FIXTURE: INSEE's BPE 2025 detail file (`BPE25.zip` holding `BPE25.csv`) for the 135 real QPV of PACA's 2024 list
and one facility in Guadeloupe, in the publisher's layout (95 columns, `;`, a per-row EPSG; the header is the one
of the bundled `BPE25_dep35_FIXTURE.zip`, see include/sample_data/PROVENANCE.md). The perimeters are real (ANCT's
sample); the facilities, their positions and INSEE's QPV assignment (QP2024, QUALI_QP2024) are INVENTED so that
both agreements and disagreements occur:

- two facilities inside each QPV, assigned to it by "INSEE" with quality 1 (sure);
- every tenth QPV, one more inside it that "INSEE" assigns to no QPV, with quality 3 (random);
- every fifteenth QPV, one 300 m outside its perimeter that "INSEE" assigns to it, with quality 2 (probable);
- one facility in Les Abymes (971), Lambert_X/Y in EPSG:5490 (RGAF09 / UTM 20N), as overseas rows are.

`archive()` returns the ZIP bytes; `facilities()` the rows as dicts (for the tests' expectations).
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import geopandas as gpd
from pyproj import Transformer

from tests.data.insee_qpv24_fixture import MEMBER, SAMPLE

DEP35 = Path(__file__).resolve().parents[2] / "include" / "sample_data" / "BPE25_dep35_FIXTURE.zip"
ABYMES = ("97101", -61.5048, 16.2710)  # a point of Les Abymes (WGS84)


def header() -> list[str]:
    """The BPE 2025 header, from the bundled sample (one definition of the layout)."""
    with zipfile.ZipFile(DEP35) as z, z.open("BPE25.csv") as f:
        return f.readline().decode("cp1252").strip().split(";")


def facilities() -> list[dict[str, str]]:
    qpv = gpd.read_file(f"zip://{SAMPLE}!{MEMBER}").to_crs(2154).sort_values("code_qp").reset_index(drop=True)
    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    cols = header()
    rows = []

    def row(depcom: str, typequ: str, x: float, y: float, epsg: int, lon: float, lat: float, qp: str,
            quality: str) -> dict[str, str]:
        out = dict.fromkeys(cols, "")
        dep = depcom[:3] if depcom.startswith("97") else depcom[:2]
        out.update({"AN": "2025", "DEPCOM": depcom, "DEP": dep, "REG": "01" if dep == "971" else "93",
                    "DOM": typequ[0], "SDOM": typequ[:2], "TYPEQU": typequ, "LAMBERT_X": f"{x:.0f}",
                    "LAMBERT_Y": f"{y:.0f}", "LONGITUDE": f"{lon:.7f}", "LATITUDE": f"{lat:.7f}", "EPSG": str(epsg),
                    "QUALITE_XY": "B", "QUALITE_GEOLOC": "11", "QP2024": qp, "QUALI_QP2024": quality})
        return out

    for i, q in qpv.iterrows():
        p = q.geometry.representative_point()
        inside = [(p.x, p.y), (p.x + 1, p.y)]
        for j, (x, y) in enumerate(inside):
            lon, lat = to_wgs.transform(x, y)
            rows.append(row(q["insee_com"], ("D307", "C107")[j], x, y, 2154, lon, lat, q["code_qp"], "1"))
        if i % 10 == 0:
            lon, lat = to_wgs.transform(p.x, p.y + 1)
            rows.append(row(q["insee_com"], "B201", p.x, p.y + 1, 2154, lon, lat, "", "3"))
        if i % 15 == 0:
            ring = q.geometry.buffer(300).exterior if q.geometry.geom_type == "Polygon" else \
                q.geometry.buffer(300).convex_hull.exterior
            far = ring.interpolate(0)
            lon, lat = to_wgs.transform(far.x, far.y)
            rows.append(row(q["insee_com"], "A206", far.x, far.y, 2154, lon, lat, q["code_qp"], "2"))
    com, lon, lat = ABYMES
    x, y = Transformer.from_crs(4326, 5490, always_xy=True).transform(lon, lat)
    rows.append(row(com, "D307", x, y, 5490, lon, lat, "", "_Z"))
    return rows


def archive() -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header(), delimiter=";", lineterminator="\n")
    w.writeheader()
    w.writerows(facilities())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("BPE25.csv", buf.getvalue().encode("cp1252"))
    return out.getvalue()
