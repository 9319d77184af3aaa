"""Vector formats read through GDAL/OGR (pyogrio's Arrow stream): GeoJSON now, SHP/GPKG next."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyogrio
from pyogrio.errors import DataSourceError, FieldError, GeometryError

from qpvhub.readers.base import Reader, ReaderOutput, sniff_not_data


class OgrReader(Reader):
    """Shared OGR streaming: WKB geometries, 1-based feature numbers, CRS from the file."""

    format = "ogr"
    expected = "a vector dataset"

    def check(self) -> None:
        sniff_not_data(self.path, self.source, self.expected)

    def open(self) -> ReaderOutput:
        self.check()
        try:
            info = pyogrio.read_info(self.path)
        except (DataSourceError, FieldError, GeometryError, RuntimeError) as exc:
            raise self.error(f"cannot be read as {self.expected}: {str(exc).strip()}") from None
        crs = self.options.get("crs") or info.get("crs")
        if not crs:
            raise self.error("no CRS in the file and none declared (reader.crs in the catalogue)")
        return ReaderOutput(columns=list(info["fields"]), crs=crs, geometry_type=info.get("geometry_type"),
                            extra={"features": int(info.get("features") or 0)})

    def batches(self) -> Iterator[pd.DataFrame]:
        offset = 0
        try:
            with pyogrio.open_arrow(self.path, batch_size=self.batch_size, use_pyarrow=True) as (meta, reader):
                geom_col = meta.get("geometry_name") or "wkb_geometry"
                for batch in reader:
                    df = _to_pandas(batch)
                    wkb = df.pop(geom_col) if geom_col in df.columns else pd.Series([None] * len(df))
                    df = df.drop(columns=[c for c in ("OGC_FID",) if c in df.columns])
                    df["__wkb"] = wkb.to_numpy()
                    df["__feature"] = range(offset + 1, offset + len(df) + 1)
                    offset += len(df)
                    yield df
        except (DataSourceError, FieldError, GeometryError) as exc:
            raise self.error(f"unreadable after feature {offset}: {str(exc).strip()}", feature=offset + 1) from None


def _to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    # Keep text as Python str objects and integers nullable: no float coercion of codes.
    return batch.to_pandas(types_mapper={pa.int32(): pd.Int64Dtype(), pa.int64(): pd.Int64Dtype()}.get)


class GeoJsonReader(OgrReader):
    """GeoJSON, RFC 7946 or the older form with a `crs` member (e.g. CRS84 from QGIS exports)."""

    format = "geojson"
    expected = "GeoJSON"

    def check(self) -> None:
        super().check()
        with self.path.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"{"):
            raise self.error("not GeoJSON: the file does not start with a JSON object ('{')", line=1)
        if self.path.stat().st_size <= 10 * 1024**2:
            # GDAL's message for broken JSON is vague; Python's names line and column.
            try:
                with self.path.open("rb") as f:
                    json.load(f)
            except json.JSONDecodeError as exc:
                raise self.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
            except UnicodeDecodeError as exc:
                raise self.error(f"not UTF-8 text as GeoJSON requires: {exc.reason} at byte {exc.start}") from None
