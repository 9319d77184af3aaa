"""Extract writers, one per format: same inputs give byte-identical files.

Rows come sorted by (generation, code_qp); floats are rounded; GeoPackage timestamps are pinned to
the data's own date (GDAL's OGR_CURRENT_DATE) so a re-publish of unchanged data changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

FLOAT_DIGITS = 6
# OWASP's CSV injection rule: a text cell a spreadsheet would read as a formula (=, +, -, @, tab, carriage
# return first) is written after an apostrophe, which spreadsheets show as text and do not display.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMULA_RULE = ("les cellules de texte qui commencent par =, +, -, @, une tabulation ou un retour chariot sont écrites "
                "après une apostrophe (') pour qu'aucun tableur ne les évalue (OWASP, injection CSV) ; les nombres "
                "restent des nombres")


def formula_safe(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell that could start a formula neutralised (FORMULA_RULE); numbers untouched."""
    out = df.copy()
    for c in out.columns:
        col = out[c]
        if col.dtype.kind in "fiub" or not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
            continue
        texts = col.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START))
        if texts.any():
            out[c] = col.astype(object).where(~texts, "'" + col.astype(str))
    return out


def _round(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = gdf.copy()
    integers = set(gdf.attrs.get("integers", ()))
    for c in out.columns:
        if c in integers:  # counts: 8883, not 8883.0, in every format
            out[c] = out[c].round().astype("Int64")
        elif c != "geometry" and out[c].dtype.kind == "f":
            out[c] = out[c].round(FLOAT_DIGITS)
    return out


def write_geojson(gdf: gpd.GeoDataFrame, path: Path, *, layer: str, description: str, stamp: str) -> None:
    """GeoJSON RFC 7946 in EPSG:4326, coordinates to 7 decimals (~1 cm)."""
    pyogrio.write_dataframe(_round(gdf.to_crs(4326)), path, driver="GeoJSON", layer=layer,
                            layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": "7", "WRITE_NAME": "NO"})


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, *, layer: str, description: str, stamp: str) -> None:
    """GeoPackage 1.2 in EPSG:2154 (Lambert-93), with the layer's description: the version Debian stable's GDAL 3.6
    and QGIS LTR read without warning (GDAL 3.8+ writes 1.4 by default)."""
    before = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp})
    try:
        pyogrio.write_dataframe(_round(gdf.to_crs(2154)), path, driver="GPKG", layer=layer,
                                dataset_options={"VERSION": "1.2"},
                                layer_options={"DESCRIPTION": description, "IDENTIFIER": layer})
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": before})


def write_parquet(gdf: gpd.GeoDataFrame, path: Path, *, layer: str, description: str, stamp: str) -> None:
    """GeoParquet 1.x in EPSG:4326, WKB geometries."""
    _round(gdf.to_crs(4326)).to_parquet(path, index=False, compression="zstd", schema_version="1.0.0")


def _table(gdf: gpd.GeoDataFrame):
    """Attributes without geometry, plus `lon`/`lat` of a point inside each polygon (EPSG:4326)."""
    df = _round(gdf.copy())
    pts = gdf.to_crs(2154).representative_point().to_crs(4326)
    df = df.drop(columns="geometry")
    df["lon"] = pts.x.round(6)
    df["lat"] = pts.y.round(6)
    return df


def write_csv(gdf: gpd.GeoDataFrame, path: Path, *, layer: str, description: str, stamp: str) -> None:
    """CSV UTF-8, `,`, no geometry column: a point inside each polygon as `lon`, `lat` (EPSG:4326).

    Polygons as WKT would break spreadsheets (cells over 32,767 characters); the GeoJSON, GeoPackage
    and GeoParquet files carry the perimeters.
    """
    df = formula_safe(_table(gdf))
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, float_format=None)
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_csv_fr(gdf: gpd.GeoDataFrame, path: Path, *, layer: str, description: str, stamp: str) -> None:
    """The same table for French spreadsheets: `;` separator, UTF-8 with BOM, decimal comma."""
    df = formula_safe(_table(gdf))
    buf = io.StringIO()
    df.to_csv(buf, index=False, sep=";", decimal=",", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    path.write_text(buf.getvalue(), encoding="utf-8-sig")


WRITERS: dict[str, tuple[str, str, Callable[..., None]]] = {
    # format: (file extension, media type, writer)
    "geojson": ("geojson", "application/geo+json", write_geojson),
    "gpkg": ("gpkg", "application/geopackage+sqlite3", write_gpkg),
    "parquet": ("parquet", "application/vnd.apache.parquet", write_parquet),
    "csv": ("csv", "text/csv", write_csv),
    "csv_fr": ("fr.csv", "text/csv", write_csv_fr),
}
