"""Vector formats read through GDAL/OGR (pyogrio's Arrow stream): GeoJSON, zipped Shapefile, GeoPackage."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

from qpvhub.ingest.archive import SEVENZIP_MAGIC, extract_members
from qpvhub.ingest.readers.base import Reader, ReaderOutput, sniff_not_data
from qpvhub.platform.errors import InputError

OGR_ERRORS = (DataSourceError, DataLayerError, FieldError, GeometryError)


class OgrReader(Reader):
    """Shared OGR streaming: WKB geometries, 1-based feature numbers, CRS from the file."""

    format = "ogr"
    expected = "a vector dataset"

    @property
    def dataset(self) -> Path:
        return getattr(self, "_dataset", self.path)

    @property
    def layer(self) -> str | None:
        return self.options.get("layer")

    def check(self) -> None:
        sniff_not_data(self.path, self.source, self.expected)

    def _archive_member(self, kinds: tuple[tuple[str, ...], ...], what: str) -> Path:
        """Extract the archive (ZIP or 7z) safely and return the one member of `kinds` (`reader.member` picks
        it by path or name; else, among several, the only one of the first kind that has exactly one)."""
        member = self.options.get("member")
        found, files, dest = extract_members(self.path, source=self.source,
                                             suffixes=tuple(s for kind in kinds for s in kind), member=member)
        for kind in kinds:
            of_kind = [p for p in found if p.suffix.lower() in kind]
            if len(of_kind) == 1 and len(found) > 1:
                found = of_kind
                break
        if len(found) != 1:
            listed = sorted(p.relative_to(dest).as_posix() for p in files)
            what = f"member {member!r}" if member else what
            raise self.error(f"archive: expected {what}, found {len(found)} among {listed[:20]}"
                             + (" …" if len(listed) > 20 else ""))
        return found[0]

    def open(self) -> ReaderOutput:
        self.check()
        try:
            info = pyogrio.read_info(self.dataset, layer=self.layer)
        except (*OGR_ERRORS, RuntimeError) as exc:
            raise self.error(f"cannot be read as {self.expected}: {str(exc).strip()}") from None
        crs = self.options.get("crs") or info.get("crs")
        return ReaderOutput(columns=list(info["fields"]), crs=crs, geometry_type=info.get("geometry_type"),
                            extra={"features": int(info.get("features") or 0)})

    def batches(self) -> Iterator[pd.DataFrame]:
        offset = 0
        try:
            with pyogrio.open_arrow(self.dataset, layer=self.layer, batch_size=self.batch_size,
                                    use_pyarrow=True) as (meta, reader):
                geom_col = meta.get("geometry_name") or "wkb_geometry"
                for batch in reader:
                    df = _to_pandas(batch)
                    wkb = df.pop(geom_col) if geom_col in df.columns else pd.Series([None] * len(df))
                    df = df.drop(columns=[c for c in ("OGC_FID",) if c in df.columns])
                    df["__wkb"] = wkb.to_numpy()
                    df["__feature"] = range(offset + 1, offset + len(df) + 1)
                    offset += len(df)
                    yield df
        except OGR_ERRORS as exc:
            raise self.error(f"unreadable after feature {offset}: {str(exc).strip()}", feature=offset + 1) from None


def _to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    # Keep text as Python str objects and integers nullable: no float coercion of codes.
    return batch.to_pandas(types_mapper={pa.int32(): pd.Int64Dtype(), pa.int64(): pd.Int64Dtype()}.get)


class GeoJsonReader(OgrReader):
    """GeoJSON, RFC 7946 or the older form with a `crs` member (e.g. CRS84 from QGIS exports), bare or
    in a ZIP archive: the first bytes decide (a publisher may turn one into the other, as ANCT did with
    the 2024 QPV resource); in an archive, `reader.member` (path or file name) picks the GeoJSON."""

    format = "geojson"
    expected = "GeoJSON"

    def check(self) -> None:
        super().check()
        with self.path.open("rb") as f:
            magic = f.read(4)
        target = self.path
        if magic == b"PK\x03\x04":
            target = self._member()
        self._dataset = target
        with target.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"{"):
            raise self.error("not GeoJSON: the file does not start with a JSON object ('{')", line=1)
        if target.stat().st_size <= 10 * 1024**2:
            # GDAL's message for broken JSON is vague; Python's names line and column.
            try:
                with target.open("rb") as f:
                    json.load(f)
            except json.JSONDecodeError as exc:
                raise self.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
            except UnicodeDecodeError as exc:
                raise self.error(f"not UTF-8 text as GeoJSON requires: {exc.reason} at byte {exc.start}") from None


    def _member(self) -> Path:
        """Extract the archive safely and return its GeoJSON member (`reader.member`, else the only one)."""
        return self._archive_member(((".geojson", ".json"),), "one .geojson member")


class ShapefileReader(OgrReader):
    """A zipped Shapefile set (.shp, .shx, .dbf, .prj, optional .cpg for the attribute encoding).

    With several layers in the archive, `reader.member` names the .shp to read; or `reader.members`, a
    file-name pattern (`*_inondable_*_s_*.shp`), reads every matching layer one after the other (same CRS;
    each must have the columns the load reads), `reader.member_column` then naming a column that holds
    each row's layer (the file name without .shp): Géorisques delivers one layer per TRI, flood type and
    scenario. A missing .prj is an error unless the catalogue declares the CRS (`geometry.source_crs`).
    """

    format = "shapefile"
    expected = "a zipped Shapefile"

    def check(self) -> None:
        super().check()
        if self.options.get("members"):
            self._layers = self._matching(str(self.options["members"]))
            for shp in self._layers:
                self._check_set(shp)
            self._dataset = self._layers[0]
            return
        if self.path.suffix.lower() != ".zip":
            shp = self.path  # a set already extracted (from a 7z by VectorReader)
        else:
            member = self.options.get("member")
            shps, files, _ = extract_members(self.path, source=self.source, suffixes=(".shp",), member=member)
            if len(shps) != 1:
                names = [p.name for p in sorted(files) if p.suffix.lower() == ".shp"]
                raise self.error(f"expected one .shp in the archive{' named ' + member if member else ''}, "
                                 f"found {names}")
            shp = shps[0]
        self._check_set(shp)
        self._dataset = shp

    def _matching(self, pattern: str) -> list[Path]:
        """Every .shp of the archive whose file name matches `pattern` (case-insensitive), in path order."""
        shps, _, dest = extract_members(self.path, source=self.source, suffixes=(".shp",))
        found = [p for p in shps if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
        if not found:
            names = sorted(p.relative_to(dest).as_posix() for p in shps)
            raise self.error(f"no Shapefile matching {pattern!r} in the archive; its Shapefiles: {names[:20]}"
                             + (" …" if len(names) > 20 else ""))
        self._root = dest
        return found

    def _check_set(self, shp: Path) -> None:
        siblings = {p.suffix.lower() for p in shp.parent.glob(shp.stem + ".*")}
        for needed in (".shx", ".dbf"):
            if needed not in siblings:
                raise self.error(f"{shp.name}: the {needed} file of the shapefile set is missing")
        if ".prj" not in siblings and not self.options.get("crs"):
            raise self.error(f"{shp.name}: no .prj file, so the CRS is unknown; declare geometry.source_crs "
                             "in the catalogue if the publisher documents it")

    def _layer_name(self, shp: Path) -> str:
        return shp.relative_to(self._root).as_posix()

    def open(self) -> ReaderOutput:
        if not self.options.get("members"):
            return super().open()
        self.check()
        fields: dict[str, None] = {}
        self._fields: dict[Path, list[str]] = {}
        crs, first, features, gtype = None, None, 0, None
        for shp in self._layers:
            self._dataset = shp
            try:
                info = pyogrio.read_info(shp)
            except (*OGR_ERRORS, RuntimeError) as exc:
                raise self.error(f"cannot be read as a Shapefile: {str(exc).strip()}") from None
            here = self.options.get("crs") or info.get("crs")
            if first is None:
                crs, first = here, shp
            elif here != crs:
                raise self.error(f"CRS {here!r} differs from {crs!r} of {self._layer_name(first)}: "
                                 "the layers cannot be read as one")
            self._fields[shp] = list(info["fields"])
            fields.update(dict.fromkeys(info["fields"]))
            features += int(info.get("features") or 0)
            gtype = gtype or info.get("geometry_type")
        column = self.options.get("member_column")
        columns = [*fields, *([column] if column else [])]
        return ReaderOutput(columns=columns, crs=crs, geometry_type=gtype,
                            extra={"features": features, "layers": [self._layer_name(p) for p in self._layers]})

    def keep_only(self, columns: list[str]) -> None:
        """Every layer must have every column the load reads: the first one without is named."""
        super().keep_only(columns)
        column = self.options.get("member_column")
        for shp, names in getattr(self, "_fields", {}).items():
            missing = [c for c in columns if c not in names and c != column]
            if missing:
                self._dataset = shp
                raise self.error(f"missing column(s) {missing}; this layer has {names}", column=missing[0])

    def batches(self) -> Iterator[pd.DataFrame]:
        if not self.options.get("members"):
            yield from super().batches()
            return
        column, done = self.options.get("member_column"), 0
        for shp in self._layers:
            self._dataset, n = shp, 0
            for df in super().batches():
                n += len(df)
                df["__feature"] = df["__feature"] + done  # numbered across the layers: one number, one row
                if column:
                    df[column] = shp.stem
                yield df
            done += n

    def error(self, message: str, **where: Any) -> InputError:
        """Name the layer being read, inside its archive."""
        layers = getattr(self, "_layers", None)
        if layers and getattr(self, "_dataset", None) in layers:
            return InputError(message, source=self.source,
                              file=f"{self.path.name}/{self._layer_name(self._dataset)}", **where)
        return super().error(message, **where)


class GpkgReader(OgrReader):
    """GeoPackage; `reader.layer` picks the layer when there are several."""

    format = "gpkg"
    expected = "a GeoPackage"

    def check(self) -> None:
        super().check()
        with self.path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise self.error("not a GeoPackage (no SQLite header)")
        if not self.layer:
            layers = pyogrio.list_layers(self.path)
            if len(layers) > 1:
                raise self.error(f"several layers {[str(x[0]) for x in layers]}: name one with reader.layer")


class VectorReader(OgrReader):
    """Any vector file OGR reads here, told by its first bytes, not by the catalogue: GeoJSON, a GeoPackage,
    or a ZIP or 7z (IGN's deliveries) holding a Shapefile set, a GeoJSON or a GeoPackage (`reader.member`
    names it when there are several). One catalogue entry then reads the publisher's national archive and a
    bundled sample cut to another container, and keeps working when a publisher changes container."""

    format = "vector"
    expected = "a vector dataset (GeoJSON, GeoPackage, or a ZIP or 7z of Shapefile, GeoJSON or GeoPackage)"

    def check(self) -> None:
        sniff_not_data(self.path, self.source, self.expected)
        with self.path.open("rb") as f:
            magic = f.read(16)
        path = self.path
        if magic.startswith((b"PK\x03\x04", SEVENZIP_MAGIC)):  # a ZIP, or a 7z as IGN ships ADMIN EXPRESS
            path = self._member()
            inner = {".shp": ShapefileReader, ".gpkg": GpkgReader}.get(path.suffix.lower(), GeoJsonReader)
        elif magic.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            inner = GeoJsonReader
        elif magic == b"SQLite format 3\x00":
            inner = GpkgReader
        else:
            raise self.error(f"not {self.expected}: unknown first bytes {magic[:8]!r}")
        delegate = inner(path, self.source, self.options, self.batch_size)
        delegate.check()
        self._dataset = delegate.dataset

    def _member(self) -> Path:
        """Extract the archive safely; return its one Shapefile, GeoJSON or GeoPackage (`reader.member` names
        it among several; a Shapefile set beside a metadata JSON is the Shapefile)."""
        return self._archive_member(((".shp",), (".gpkg",), (".geojson", ".json")),
                                    "one Shapefile, GeoJSON or GeoPackage")
