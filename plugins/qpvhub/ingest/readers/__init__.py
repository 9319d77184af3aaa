"""One registry mapping a catalogue `format` to its reader (cf. pygeoapi's plugin registry).

A reader streams a file as pandas DataFrame batches of source columns (strings where the file has
text), plus `__feature` (1-based feature or data-line number) and, for spatial formats, `__wkb`
(geometry as WKB). It reports the source CRS. Memory is bounded by the batch size.
"""

from __future__ import annotations

from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data
from qpvhub.ingest.readers.csv import CsvReader
from qpvhub.ingest.readers.gtfs import GtfsReader
from qpvhub.ingest.readers.insee import InseeReader
from qpvhub.ingest.readers.ogr import GeoJsonReader, GpkgReader, ShapefileReader, VectorReader
from qpvhub.ingest.readers.parquet import ParquetReader
from qpvhub.ingest.readers.xlsx import XlsxReader

REGISTRY: dict[str, type[Reader]] = {
    "geojson": GeoJsonReader,
    "csv": CsvReader,
    "shapefile": ShapefileReader,
    "gpkg": GpkgReader,
    "parquet": ParquetReader,
    "gtfs": GtfsReader,
    "vector": VectorReader,
    "xlsx": XlsxReader,
    "insee": InseeReader,
}


def get_reader(fmt: str) -> type[Reader]:
    """The reader class for a catalogue format name."""
    try:
        return REGISTRY[fmt]
    except KeyError:
        raise KeyError(f"no reader for format {fmt!r}; known: {', '.join(sorted(REGISTRY))}") from None


__all__ = ["REGISTRY", "Reader", "ReaderOutput", "get_reader", "sniff_not_data"]
