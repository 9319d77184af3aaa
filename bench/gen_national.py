"""A synthetic national load in the publishers' real layouts, for `bench/bench_national.py` (not real data).

Every département of the COG (metropolitan and DROM, `include/reference`) is a 100 km tile of a grid over
metropolitan France's Lambert-93 extent, cut in communes (19 × 19 cells, 6 × 5 in a DROM): about 35,000 communes
whose outlines follow wavy edges that neighbours share (64 vertices each). On that geography, each in its file
format as the catalogue reads it:
- `v_commune_2026.csv` and `v_mvt_commune_2026.csv`: INSEE's COG layout (one merger per département);
- ADMIN EXPRESS COG: a 7z of one GeoPackage, layers `commune` and `epci` (IGN's layout, WGS84);
- `qpv2024.zip`: ANCT's national archive of the 2024 list, about 1,600 QPV (16 per département, 14 overseas);
- `BPE25.zip`: BPE 2025's 95 columns, 2.9 M rows weighted by commune population;
- Filosofi IRIS 2021 (`BASE_TD_FILO_IRIS_2021_DISP.csv`, zipped): 4 IRIS in each of a département's 40 largest
  communes, about 16,000 rows, some cells under secrecy (`ns`, `s`);
- 500 small GTFS feeds (60 stops, 2,400 stop_times each), five per département.
Deterministic; written once into the benches' data folder (its `national` subfolder, not versioned), with a
MANIFEST.json that names what is there.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_gtfs import make_feed  # noqa: E402
from bench.gen_bpe import _template, bpe_header  # noqa: E402

VERSION = "national-v1"
X0, Y0, TILE = 100_000.0, 6_050_000.0, 100_000.0  # Lambert-93 origin of the grid, tile size (m)
MEMBER_ADMIN = ("ADMIN-EXPRESS-COG_4-0__GPKG_WGS84G_FRA_2026-01-01/ADMIN-EXPRESS-COG/1_DONNEES_LIVRAISON_2026-00000/"
                "ADE-COG_4-0_GPKG_WGS84G_FRA-ED2026-01-01/ADE-COG_4-0_GPKG_WGS84G_FRA-ED2026-01-01.gpkg")
FILO_COLUMNS = ["IRIS", "LIBIRIS", "COM", "LIBCOM", "DISP_TP6021", "DISP_Q121", "DISP_MED21", "DISP_Q321", "DISP_EQ21",
                "DISP_D121", "DISP_D221", "DISP_D321", "DISP_D421", "DISP_D621", "DISP_D721", "DISP_D821", "DISP_D921",
                "DISP_RD21", "DISP_S80S2021", "DISP_GI21", "DISP_PACT21", "DISP_PTSA21", "DISP_PCHO21", "DISP_PBEN21",
                "DISP_PPEN21", "DISP_PPAT21", "DISP_PPSOC21", "DISP_PPFAM21", "DISP_PPMINI21", "DISP_PPLOGT21",
                "DISP_PIMPOT21", "DISP_NOTE21"]


def departements() -> list[dict]:
    """The COG's départements of the metropole and the DROM, with their region."""
    deps = json.loads((ROOT / "include" / "reference" / "cog2026_departements.json").read_text(encoding="utf-8"))
    return [d for d in deps if d["zone"] in ("metro", "drom")]


def communes(deps: list[dict]) -> dict[str, np.ndarray]:
    """Every commune: code, département, région, name, its Lambert-93 cell (x0, y0, size) and population."""
    rng = np.random.default_rng(35)
    cols: dict[str, list] = {k: [] for k in ("com", "dep", "reg", "nom", "x0", "y0", "size", "pop", "rank")}
    for t, d in enumerate(deps):
        tx, ty = X0 + (t % 11) * TILE, Y0 + (t // 11) * TILE
        nx, ny = (19, 19) if d["zone"] == "metro" else (6, 5)
        size = TILE / max(nx, ny)
        pops = np.sort(rng.lognormal(6.3, 1.4, nx * ny))[::-1].round().astype(int) + 20
        for k in range(nx * ny):
            code = f"{d['code']}{k + 1:03d}" if len(d["code"]) == 2 else f"{d['code']}{k + 1:02d}"
            cols["com"].append(code)
            cols["dep"].append(d["code"])
            cols["reg"].append(d["region"])
            cols["nom"].append(f"Commune {k + 1} ({d['nom']})")
            cols["x0"].append(tx + (k % nx) * size)
            cols["y0"].append(ty + (k // nx) * size)
            cols["size"].append(size)
            cols["pop"].append(int(pops[k]) * (40 if k < 8 else 1))  # the first cells are the towns
            cols["rank"].append(k)
    return {k: np.array(v) for k, v in cols.items()}


def _edge(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points from a to b (b excluded) displaced across the edge by a function of the absolute position only,
    so the two communes sharing an edge draw the same line."""
    s = np.linspace(0, 1, n, endpoint=False)[None, :]
    x, y = ax[:, None] + (bx - ax)[:, None] * s, ay[:, None] + (by - ay)[:, None] * s
    wave = 180 * np.sin(x / 700.0 + y / 900.0) * np.sin(np.pi * s)  # 0 at the corners: neighbours meet there
    horizontal = (ay == by)[:, None]
    return x + np.where(horizontal, 0, wave), y + np.where(horizontal, wave, 0)


def outlines(c: dict[str, np.ndarray], n: int = 16):
    """The communes' polygons in Lambert-93 (4 × n vertices)."""
    import shapely

    x0, y0, s = c["x0"], c["y0"], c["size"]
    corners = [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    xs, ys = zip(*(_edge(*corners[i], *corners[(i + 1) % 4], n) for i in range(4)), strict=True)
    ring = np.stack([np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)], axis=2)
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))


def write_cog(c: dict[str, np.ndarray], out: Path) -> None:
    """INSEE's v_commune and v_mvt_commune layouts: the communes, and one 2025 merger per département (a
    commune déléguée numbered 9xx, absent from the current list)."""
    with (out / "v_commune_2026.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["TYPECOM", "COM", "REG", "DEP", "CTCD", "ARR", "TNCC", "NCC", "NCCENR", "LIBELLE", "CAN",
                    "COMPARENT"])
        for com, dep, reg, nom in zip(c["com"], c["dep"], c["reg"], c["nom"], strict=True):
            w.writerow(["COM", com, reg, dep, "", f"{dep}1", "0", nom.upper(), nom, nom, f"{dep}01", ""])
    with (out / "v_mvt_commune_2026.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["MOD", "DATE_EFF", "TYPECOM_AV", "COM_AV", "TNCC_AV", "NCC_AV", "NCCENR_AV", "LIBELLE_AV",
                    "TYPECOM_AP", "COM_AP", "TNCC_AP", "NCC_AP", "NCCENR_AP", "LIBELLE_AP"])
        for com, nom in zip(c["com"][c["rank"] == 1], c["nom"][c["rank"] == 1], strict=True):
            old = com[:-3] + "9" + com[-2:] if len(com) == 5 and com[:3] not in ("971", "972", "973", "974", "976") \
                else com[:3] + "9" + com[-1]
            for typ, code in (("COMD", old), ("COM", com)):
                w.writerow(["32", "2025-01-01", "COM", old, "0", "ANCIENNE", "Ancienne", "Ancienne", typ, code, "0",
                            nom.upper(), nom, nom])


def write_admin_express(c: dict[str, np.ndarray], polys, out: Path) -> Path:
    """IGN's 7z of one GeoPackage: `commune` (with its EPCI) and `epci`, WGS84, geometry column `geometrie`."""
    import geopandas as gpd
    import py7zr
    import pyogrio

    block = (c["rank"] % 19) // 5 + 4 * ((c["rank"] // 19) // 5)  # 4 × 4 blocks of cells per département
    dep_num = np.array([{"2A": "920", "2B": "921"}.get(d, d.zfill(3)) for d in c["dep"]])
    siren = np.char.add(np.char.add("2", dep_num), np.char.zfill(block.astype(str), 5))
    commune = gpd.GeoDataFrame({
        "code_insee": c["com"], "nom_officiel": c["nom"], "code_insee_du_departement": c["dep"],
        "code_insee_de_la_region": c["reg"], "codes_siren_des_epci": siren, "population": c["pop"]},
        geometry=gpd.GeoSeries(polys, crs=2154).to_crs(4326).rename("geometrie"), crs=4326)
    # the EPCI layer's outline: its communes' envelope (the catalogue reads its attributes only)
    b = commune.bounds.assign(code_siren=siren).groupby("code_siren").agg(
        {"minx": "min", "miny": "min", "maxx": "max", "maxy": "max"})
    epci = gpd.GeoDataFrame({"code_siren": b.index, "nom_officiel": "Communauté " + b.index},
                            geometry=gpd.GeoSeries.from_xy(b["minx"], b["miny"]).envelope.union(
                                gpd.GeoSeries.from_xy(b["maxx"], b["maxy"])).envelope.values, crs=4326
                            ).rename_geometry("geometrie")
    target = out / "ADMIN-EXPRESS-COG_4-0__GPKG_WGS84G_FRA_2026-01-01.7z"
    with tempfile.TemporaryDirectory() as tmp:
        gpkg = Path(tmp) / "national.gpkg"
        for name, layer in (("commune", commune), ("epci", epci)):
            pyogrio.write_dataframe(layer, gpkg, layer=name, driver="GPKG", promote_to_multi=True,
                                    layer_options={"GEOMETRY_NAME": "geometrie"})
        with py7zr.SevenZipFile(target, "w") as z:
            z.write(gpkg, MEMBER_ADMIN)
    return target


def write_qpv(c: dict[str, np.ndarray], out: Path) -> tuple[Path, int]:
    """ANCT's archive: 16 QPV per département (14 overseas), two in each of its first towns, 32-vertex outlines."""
    import shapely
    from pyproj import Transformer

    from tests.data.national_qpv2024_fixture import MEMBER, _anct

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    features = []
    angle = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    for dep in dict.fromkeys(c["dep"]):
        idx = np.flatnonzero(c["dep"] == dep)
        n = 16 if len(idx) > 30 else 14
        for q in range(n):
            i = idx[q // 2]
            cx = c["x0"][i] + c["size"][i] * (0.3 if q % 2 == 0 else 0.68)
            cy = c["y0"][i] + c["size"][i] * (0.35 + 0.3 * (q % 2))
            r = 420 + 60 * np.sin(3 * angle + q)
            lon, lat = to_wgs.transform(cx + r * np.cos(angle), cy + r * np.sin(angle))
            ring = np.round(np.column_stack([lon, lat]), 7).tolist()
            geom = shapely.geometry.mapping(shapely.MultiPolygon([shapely.Polygon(ring)]))
            code = f"QN{dep.zfill(3)}{q + 1:02d}{'ABCDEFGHJKLMNPRS'[q]}"
            features.append(_anct(code, f"Quartier {q + 1} de {c['nom'][i]}", c["com"][i], c["nom"][i],
                                  json.loads(json.dumps(geom))))
    features.sort(key=lambda f: f["properties"]["code_qp"])
    target = out / "qpv2024.zip"
    body = json.dumps({"type": "FeatureCollection", "name": "QP2024_France_Hexagonale_Outre_Mer_WGS84",
                       "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                       "features": features}, ensure_ascii=False)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MEMBER, body)
    return target, len(features)


def write_bpe(c: dict[str, np.ndarray], rows: int, out: Path, chunk: int = 250_000) -> Path:
    """BPE 2025's national file: `rows` facilities, each in a commune drawn by population, inside its cell."""
    from pyproj import Transformer

    from bench.gen_bpe import QUALITE, TYPEQU

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    header = bpe_header()
    line = _template(header).format
    rng = np.random.default_rng(2025)
    weight = c["pop"] / c["pop"].sum()
    target = out / "BPE25.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z, \
            z.open("BPE25.csv", "w", force_zip64=True) as raw, io.TextIOWrapper(raw, encoding="cp1252",
                                                                               newline="") as f:
        f.write(";".join(header) + "\n")
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            i = rng.choice(len(weight), n, p=weight)
            x = np.round(c["x0"][i] + c["size"][i] * (0.02 + 0.96 * rng.random(n))).astype(np.int64)
            y = np.round(c["y0"][i] + c["size"][i] * (0.02 + 0.96 * rng.random(n))).astype(np.int64)
            lon, lat = to_wgs.transform(x.astype(float), y.astype(float))
            t = rng.integers(0, len(TYPEQU), n)
            q = rng.integers(0, len(QUALITE), n)
            f.writelines(line(AN="2025", DEPCOM=c["com"][a], DEP=c["dep"][a], REG=c["reg"][a], DOM=TYPEQU[b][0],
                              SDOM=TYPEQU[b][:2], TYPEQU=TYPEQU[b], LAMBERT_X=xx, LAMBERT_Y=yy, LONGITUDE=f"{lo:.6f}",
                              LATITUDE=f"{la:.6f}", QUALITE_XY=QUALITE[e], EPSG="2154", DCIRIS=f"{c['com'][a]}0000")
                         for a, b, xx, yy, e, lo, la in zip(i, t, x, y, q, lon, lat, strict=True))
            done += n
    return target


def write_filosofi(c: dict[str, np.ndarray], out: Path) -> tuple[Path, int]:
    """Filosofi 2021 by IRIS, zipped: 4 IRIS in each of a département's 40 largest communes."""
    rng = np.random.default_rng(21)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(FILO_COLUMNS)
    n = 0
    for i in np.flatnonzero(c["rank"] < 40):
        for k in range(1, 5):
            med = rng.normal(22_000, 3_500)
            vals = [f"{v:.1f}".replace(".", ",") for v in rng.uniform(1, 60, len(FILO_COLUMNS) - 4)]
            vals[0] = f"{rng.uniform(5, 45):.1f}".replace(".", ",")  # poverty rate
            vals[2] = f"{med:.0f}"
            vals[5], vals[12] = f"{0.5 * med:.0f}", f"{1.8 * med:.0f}"  # first and ninth deciles
            vals[15] = f"{rng.uniform(0.2, 0.45):.3f}".replace(".", ",")  # Gini
            if rng.random() < 0.04:
                vals[0] = vals[15] = rng.choice(["ns", "s"])
            w.writerow([f"{c['com'][i]}{k:04d}", f"IRIS {k}", c["com"][i], c["nom"][i], *vals])
            n += 1
    target = out / "BASE_TD_FILO_IRIS_2021_DISP_CSV.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("BASE_TD_FILO_IRIS_2021_DISP.csv", buf.getvalue())
    return target, n


def write_gtfs(c: dict[str, np.ndarray], feeds: int, out: Path) -> list[Path]:
    """Small feeds in the GTFS layout, spread over the départements (five each at 500 feeds)."""
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    deps = list(dict.fromkeys(c["dep"]))
    folder = out / "gtfs"
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(feeds):
        idx = np.flatnonzero(c["dep"] == deps[k % len(deps)])
        x0, y0 = c["x0"][idx].min(), c["y0"][idx].min()
        x1, y1 = (c["x0"][idx] + c["size"][idx]).max(), (c["y0"][idx] + c["size"][idx]).max()
        (lo0, lo1), (la0, la1) = to_wgs.transform([x0, x1], [y0, y1])
        path = folder / f"feed{k:03d}.zip"
        make_feed(path, k, 60, 2_400, box=(lo0, la0, lo1, la1), spread=(0.03, 0.04))
        paths.append(path)
    return paths


def generate(out: Path, *, bpe_rows: int = 2_900_000, feeds: int = 500) -> dict:
    """Write every file (once per VERSION and size) and return what was written."""
    marker = out / "MANIFEST.json"
    key = {"version": VERSION, "bpe_rows": bpe_rows, "feeds": feeds}
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return json.loads(marker.read_text())
    out.mkdir(parents=True, exist_ok=True)
    c = communes(departements())
    write_cog(c, out)
    admin = write_admin_express(c, outlines(c), out)
    qpv, n_qpv = write_qpv(c, out)
    filo, n_iris = write_filosofi(c, out)
    gtfs = write_gtfs(c, feeds, out)
    bpe = write_bpe(c, bpe_rows, out)
    manifest = {"key": key, "communes": len(c["com"]), "qpv": n_qpv, "iris": n_iris, "bpe_rows": bpe_rows,
                "feeds": len(gtfs), "files": {"cog_communes": "v_commune_2026.csv",
                                              "cog_mouvements": "v_mvt_commune_2026.csv",
                                              "commune_contours": admin.name, "epci_names": admin.name,
                                              "qpv_2024": qpv.name, "bpe": bpe.name, "filosofi_iris": filo.name},
                "gtfs": [p.relative_to(out).as_posix() for p in gtfs]}
    marker.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in generate(ROOT / "bench" / "data" / "national").items() if k != "gtfs"},
                     indent=2))
