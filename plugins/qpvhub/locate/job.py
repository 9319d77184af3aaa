"""A partner's CSV located, streamed: every input row written back with, for each QPV list asked, the QPV holding
it, its name, the signed distance to the nearest boundary and a `statut` — `dans_qpv`, `hors_qpv`, `a_verifier`
(near a boundary, a low geocoding score, an address found only at the street or the commune) or `non_localise`
(with why). Headers of the added columns are French: partners read them.

Rows are read and written in blocks (`block` rows): memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import psycopg
import shapely
from pyproj import Transformer

from qpvhub.indicators.derived import has_rows
from qpvhub.locate.geocode import Geocoded, Geocoder
from qpvhub.locate.points import Perimeters, commune_of
from qpvhub.platform.errors import InputError, QpvhubError

log = logging.getLogger(__name__)

STATUTS = ("dans_qpv", "hors_qpv", "a_verifier", "non_localise")
PRECISE = {"housenumber"}  # a geocoder answer at the number; street, locality, municipality are « a_verifier »
# Column names recognised when a file comes without a mapping (a partner's inbox), compared lower-case
GUESS = {"lon": ("longitude", "lon", "lng", "x_wgs84"), "lat": ("latitude", "lat", "y_wgs84"),
         "address": ("adresse", "address", "adresse_complete", "libelle_adresse", "adresse_postale"),
         "postcode": ("code_postal", "codepostal", "cp", "postcode"),
         "citycode": ("code_insee", "code_commune", "citycode", "insee_com", "depcom"),
         "city": ("commune", "ville", "city", "nom_commune")}


@dataclass
class Spec:
    """What the input holds: WGS84 `lon`/`lat`, or projected `x`/`y` in `crs`, or `address` columns (with an
    optional `postcode` and `citycode` the geocoder uses as filters); the lists to answer for (the first is the
    `statut` column's)."""

    lon: str | None = None
    lat: str | None = None
    x: str | None = None
    y: str | None = None
    crs: int = 2154
    address: list[str] = field(default_factory=list)
    postcode: str | None = None
    citycode: str | None = None
    lists: list[int] = field(default_factory=lambda: [2024])
    score_min: float = 0.7
    margin_m: float = 20.0

    def check(self, header: list[str], where: str) -> None:
        modes = [bool(self.lon or self.lat), bool(self.x or self.y), bool(self.address)]
        if sum(modes) != 1:
            raise QpvhubError("give either --lon/--lat, or --x/--y (with --crs), or --address (one or more columns)")
        named = [c for c in (self.lon, self.lat, self.x, self.y, *self.address, self.postcode, self.citycode) if c]
        if (self.lon is None) != (self.lat is None) or (self.x is None) != (self.y is None):
            raise QpvhubError("give both coordinate columns")
        missing = [c for c in named if c not in header]
        if missing:
            raise InputError(f"column(s) {missing} not in the header {header}", file=where, line=1, column=missing[0])
        taken = [c for c in header if c in self.output_columns()]
        if taken:
            raise InputError(f"the file already has column(s) {taken} the result adds: rename them", file=where,
                             line=1, column=taken[0])

    def output_columns(self) -> list[str]:
        out = ["statut", "motif"]
        for g in self.lists:
            suffix = "" if g == self.lists[0] else f"_{g}"
            out += [f"qpv_{g}_code", f"qpv_{g}_nom", f"qpv_{g}_distance_limite_m", *([f"statut{suffix}"] if suffix
                                                                                     else [])]
        out += ["commune_insee", "commune_nom", "longitude_retenue", "latitude_retenue"]
        if self.address:
            out += ["geocodage_score", "geocodage_type", "geocodage_libelle"]
        return out


def guess_spec(header: list[str], **options) -> Spec:
    """A spec from the header's names (a file dropped in a partner's inbox): coordinates if present, else the
    address columns, the city's name and postcode joined into the address the geocoder reads."""
    low = {h.lower().strip(): h for h in header}

    def find(kind: str) -> str | None:
        return next((low[n] for n in GUESS[kind] if n in low), None)

    lon, lat = find("lon"), find("lat")
    if lon and lat:
        return Spec(lon=lon, lat=lat, **options)
    address = [c for c in (find("address"), find("city")) if c]
    if not address:
        raise InputError(f"no coordinate nor address column recognised in the header {header} (expected one of "
                         f"{', '.join(GUESS['address'] + GUESS['lon'])})", line=1)
    return Spec(address=address, postcode=find("postcode"), citycode=find("citycode"), **options)


@dataclass
class Summary:
    rows: int = 0
    statuts: Counter = field(default_factory=Counter)
    geocoder_requests: int = 0

    def line(self) -> str:
        """The French summary partners and operators read (counts only: no address, no coordinate)."""
        parts = ", ".join(f"{self.statuts.get(s, 0)} {s}" for s in STATUTS)
        return f"{self.rows} ligne{'s' if self.rows > 1 else ''} : {parts}"


def _read(path: Path) -> tuple[TextIO, str]:
    raw = path.open("rb")
    head = raw.read(65536)
    raw.seek(0)
    try:
        head.decode("utf-8")
        enc = "utf-8-sig"
    except UnicodeDecodeError:
        enc = "cp1252"
    text = io.TextIOWrapper(raw, encoding=enc, newline="")
    first = head.decode(enc, errors="replace").splitlines()[0] if head.strip() else ""
    sep = max((";", ",", "\t", "|"), key=first.count)
    return text, sep


def _blocks(reader: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    block: list[list[str]] = []
    for row in reader:
        block.append(row)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def _floats(values: list[str]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        with contextlib.suppress(ValueError, AttributeError):
            out[i] = float(v.strip().replace(",", "."))
    return out


class Locator:
    """The perimeters of the lists asked for, the communes, and the geocoder: loaded once, used for every block."""

    def __init__(self, conn: psycopg.Connection, lists: list[int], geocoder: Geocoder | None = None) -> None:
        self.perimeters = {g: Perimeters.from_db(conn, g) for g in lists}
        empty = [g for g, p in self.perimeters.items() if not len(p)]
        if empty:
            raise QpvhubError(f"no perimeter of the QPV list(s) {empty} is loaded: `qpvhub ingest qpv_{empty[0]}`")
        rows = conn.execute("SELECT insee_com, nom, ST_AsBinary(geom) FROM ref.commune_contour").fetchall() if has_rows(
            conn, "ref.commune_contour") else []
        self.names = dict(conn.execute("SELECT insee_com, nom FROM ref.commune").fetchall()) if has_rows(
            conn, "ref.commune") else {}
        self.communes = (Perimeters(0, [r[0] for r in rows], [r[1] for r in rows], [r[0] for r in rows],
                                    shapely.from_wkb([bytes(r[2]) for r in rows])) if rows else None)
        self.geocoder = geocoder
        self.to_l93 = Transformer.from_crs(4326, 2154, always_xy=True)
        self.to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)

    def block(self, header: list[str], rows: list[list[str]], spec: Spec) -> tuple[list[list[str]], Counter]:
        """The block's rows with the added columns, and its statuts."""
        n = len(rows)
        col = {h: i for i, h in enumerate(header)}

        def values(name: str) -> list[str]:
            return [r[col[name]] if col[name] < len(r) else "" for r in rows]

        motif = [""] * n
        geo: list[Geocoded | None] = [None] * n
        if spec.address:
            if self.geocoder is None:
                raise QpvhubError("addresses need the geocoder (QPVHUB_LOCATE_GEOCODER_URL)")
            cols = [*spec.address, *([spec.postcode] if spec.postcode else []),
                    *([spec.citycode] if spec.citycode else [])]
            asked = [[r[col[c]] if col[c] < len(r) else "" for c in cols] for r in rows]
            blank = [not any(v.strip() for v in a[: len(spec.address)]) for a in asked]
            todo = [i for i in range(n) if not blank[i]]
            answers = self.geocoder.geocode([asked[i] for i in todo], cols, postcode=spec.postcode,
                                            citycode=spec.citycode) if todo else []
            for i, g in zip(todo, answers, strict=True):
                geo[i] = g
            lon = np.array([g.lon if g and g.lon is not None and g.status == "ok" else np.nan for g in geo])
            lat = np.array([g.lat if g and g.lat is not None and g.status == "ok" else np.nan for g in geo])
            for i in range(n):
                if blank[i]:
                    motif[i] = "adresse vide"
                elif geo[i] is None or geo[i].status == "error":
                    motif[i] = "réponse du géocodeur incomplète : ligne à soumettre à nouveau"
                elif geo[i].status != "ok" or geo[i].lon is None:
                    motif[i] = "adresse non trouvée par le géocodeur"
            x, y = self.to_l93.transform(lon, lat)
        elif spec.lon:
            lon, lat = _floats(values(spec.lon)), _floats(values(spec.lat))
            bad = ~((np.abs(lon) <= 180) & (np.abs(lat) <= 90))
            lon[bad], lat[bad] = np.nan, np.nan
            x, y = self.to_l93.transform(lon, lat)
        else:
            x, y = _floats(values(spec.x)), _floats(values(spec.y))
            if spec.crs != 2154:
                x, y = Transformer.from_crs(spec.crs, 2154, always_xy=True).transform(x, y)
            lon, lat = self.to_wgs.transform(x, y)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if not spec.address:
            raw = values(spec.lon or spec.x)
            for i in range(n):
                if not np.isfinite(x[i]):
                    motif[i] = "coordonnées absentes" if not raw[i].strip() else "coordonnées invalides"
        found = {g: p.locate(x, y) for g, p in self.perimeters.items()}
        town = self.communes.locate(x, y).code if self.communes is not None else np.full(n, None, dtype=object)
        out, counts = [], Counter()
        first = spec.lists[0]
        for i, row in enumerate(rows):
            g = geo[i]
            extra, statut_first, why_first = [], "", ""
            for gen in spec.lists:
                loc = found[gen]
                statut, why = _statut(x[i], y[i], loc.distance[i], g, spec, motif[i])
                if gen == first:
                    statut_first, why_first = statut, why
                d = loc.distance[i]
                extra += [loc.code[i] or "", loc.name[i] or "", "" if not np.isfinite(d) else f"{d:.1f}"]
                if gen != first:
                    extra.append(statut)
            commune = (commune_of(g.citycode) if g is not None and g.citycode else None) or town[i] or (
                found[first].commune[i])
            name = self.names.get(commune) or (g.city if g is not None and commune_of(g.citycode) == g.citycode
                                                else None) or ""
            has = np.isfinite(x[i])
            tail = [commune or "", name, f"{lon[i]:.6f}" if has else "", f"{lat[i]:.6f}" if has else ""]
            if spec.address:
                tail += ["" if g is None or g.score is None else f"{g.score:.2f}", (g.type or "") if g else "",
                         (g.label or "") if g else ""]
            out.append([*row, statut_first, why_first, *extra, *tail])
            counts[statut_first] += 1
        return out, counts


def _statut(x: float, y: float, distance: float, g: Geocoded | None, spec: Spec, motif: str) -> tuple[str, str]:
    """The row's statut for one list, and why when it is not plainly in or out."""
    if not np.isfinite(x) or not np.isfinite(distance):
        return "non_localise", motif or "point hors de portée des périmètres"
    inside = distance >= 0
    reasons = []
    if abs(round(distance, 1)) <= spec.margin_m:  # the distance as the result shows it (0.1 m)
        reasons.append(f"à {abs(distance):.0f} m d'une limite de QPV (marge {spec.margin_m:g} m)".replace(".", ","))
    if g is not None:
        if g.score is not None and g.score < spec.score_min:
            reasons.append(f"score de géocodage {g.score:.2f} sous le seuil {spec.score_min:g}".replace(".", ","))
        if g.type and g.type not in PRECISE:
            reasons.append({"street": "adresse localisée à la rue seulement",
                            "municipality": "adresse localisée à la commune seulement",
                            "locality": "adresse localisée au lieu-dit seulement"}.get(g.type, f"précision {g.type}"))
    if reasons:
        return "a_verifier", " ; ".join(reasons)
    return ("dans_qpv" if inside else "hors_qpv"), ""


def locate_file(conn: psycopg.Connection, src: Path, dest: Path, spec: Spec | None = None, *,
                geocoder: Geocoder | None = None, block: int = 20_000, options: dict | None = None) -> Summary:
    """Locate every row of `src` into `dest` (same separator, UTF-8 with BOM for spreadsheets); `spec` None: guess
    it from the header (`options`: its lists, score_min, margin_m). Returns counts only."""
    text, sep = _read(src)
    summary = Summary()
    with text:
        reader = csv.reader(text, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise InputError("empty file, expected a CSV with a header line", file=src.name, line=1)
        spec = spec or guess_spec(header, **(options or {}))
        spec.check(header, src.name)
        locator = Locator(conn, spec.lists, geocoder)
        tmp = dest.with_name(dest.name + ".partial")
        try:
            with tmp.open("w", encoding="utf-8-sig", newline="") as f:
                w = csv.writer(f, delimiter=sep, lineterminator="\r\n")
                w.writerow([*header, *spec.output_columns()])
                for rows in _blocks(reader, block):
                    out, counts = locator.block(header, rows, spec)
                    w.writerows(out)
                    summary.rows += len(rows)
                    summary.statuts.update(counts)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)  # a failed run leaves no half-written result
    summary.geocoder_requests = geocoder.requests if geocoder is not None else 0
    log.info("locate: %s", summary.line())
    return summary
