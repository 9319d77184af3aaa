"""Parquet and GeoParquet, streamed by row groups/batches with pyarrow.

GeoParquet's `geo` metadata gives the geometry column (WKB) and its CRS (PROJJSON; absent means
OGC:CRS84 per the specification). Plain Parquet works for attribute tables and x/y points.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data


class ParquetReader(Reader):
    format = "parquet"
    expected = "Parquet"

    def open(self) -> ReaderOutput:
        sniff_not_data(self.path, self.source, self.expected)
        with self.path.open("rb") as f:
            if f.read(4) != b"PAR1":
                raise self.error("not a Parquet file (no PAR1 magic)")
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.error(f"unreadable Parquet: {exc}") from None
        meta = self.file.schema_arrow.metadata or {}
        self.geom_col = None
        crs = self.options.get("crs")
        if b"geo" in meta:
            geo = json.loads(meta[b"geo"])
            self.geom_col = geo.get("primary_column")
            col = geo.get("columns", {}).get(self.geom_col, {})
            if col.get("encoding", "WKB").upper() != "WKB":
                raise self.error(f"GeoParquet encoding {col.get('encoding')!r} is not supported (WKB only)")
            if not crs:
                c = col.get("crs", "OGC:CRS84")
                crs = "OGC:CRS84" if c is None else (json.dumps(c) if isinstance(c, dict) else str(c))
        columns = [n for n in self.file.schema_arrow.names if n != self.geom_col]
        return ReaderOutput(columns=columns, crs=crs, extra={"rows": self.file.metadata.num_rows})

    def batches(self) -> Iterator[pd.DataFrame]:
        if not hasattr(self, "file"):
            self.open()
        offset = 0
        for batch in self.file.iter_batches(batch_size=self.batch_size):
            df = batch.to_pandas(types_mapper={pa.int32(): pd.Int64Dtype(), pa.int64(): pd.Int64Dtype()}.get)
            if self.geom_col:
                df["__wkb"] = df.pop(self.geom_col).to_numpy()
            df["__feature"] = range(offset + 1, offset + len(df) + 1)
            offset += len(df)
            yield df
