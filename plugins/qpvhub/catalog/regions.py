"""Regions served by a deployment (`include/regions/<code>.yml`): the model, checked against the COG, and
scaffolded with `qpvhub region add`."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import field_validator

from qpvhub.catalog.loader import load_model
from qpvhub.catalog.model import Strict
from qpvhub.platform.db import connect
from qpvhub.platform.errors import ConfigError
from qpvhub.platform.settings import Settings


class Region(Strict):
    """A region served by the deployment: its départements and, when known, its bounding box (EPSG:4326)."""

    code: str
    name: str
    departements: list[str]
    # where a source carries coordinates but no code (a GTFS feed of a national catalogue), rows outside every
    # region's box are dropped; a region without one (scaffolded before any outline was loaded) turns that cut off
    bbox: tuple[float, float, float, float] | None = None
    contact: str | None = None

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not re.match(r"^\d{2}$", v):
            raise ValueError(f"region code {v!r} must be two digits (INSEE COG), e.g. '53'")
        return v

    @field_validator("departements")
    @classmethod
    def _deps(cls, v: list[str]) -> list[str]:
        for d in v:
            if not re.match(r"^(\d{2}|2[AB]|97\d)$", d):
                raise ValueError(f"département code {d!r} is not a COG code (e.g. '35', '2A', '971')")
        return v


def load_region(path: Path, reference: Path) -> Region:
    """Load and validate one region file (`<code>.yml`); its départements must exist in the COG (`reference`:
    include/reference) and belong to the region."""
    region = load_model(path, Region, "code")
    check_region(region, path, reference)
    return region


def load_regions(regions_dir: Path, reference: Path) -> dict[str, Region]:
    return {r.code: r for r in (load_region(p, reference) for p in sorted(regions_dir.glob("*.yml")))}


def deployment_regions(settings: Settings) -> dict[str, Region]:
    """The regions this deployment serves (QPVHUB_REGIONS_DIR, else include/regions)."""
    return load_regions(settings.regions_dir, settings.reference_dir)


def region_departements(settings: Settings) -> frozenset[str]:
    """Départements of every region this deployment serves."""
    return frozenset(d for r in deployment_regions(settings).values() for d in r.departements)


def region_bboxes(settings: Settings) -> list[tuple[float, float, float, float]]:
    """Bounding boxes (EPSG:4326) of the regions this deployment serves; none when one region has no box (what
    lies in it is unknown: nothing is cut by coordinates)."""
    boxes = [r.bbox for r in deployment_regions(settings).values()]
    return [] if any(b is None for b in boxes) else boxes  # type: ignore[misc]


@cache
def cog_departements(reference: Path) -> dict[str, dict]:
    """COG départements by code (with their region)."""
    return {d["code"]: d for d in json.loads((reference / "cog2026_departements.json").read_text(encoding="utf-8"))}


@cache
def cog_regions(reference: Path) -> dict[str, dict]:
    return {r["code"]: r for r in json.loads((reference / "cog2026_regions.json").read_text(encoding="utf-8"))}


def check_region(region: Region, path: Path, reference: Path) -> None:
    """Every département of a region file exists in the COG and belongs to that region."""
    deps = cog_departements(reference)
    for d in region.departements:
        if d not in deps:
            raise ConfigError(f"{path}: département {d!r} does not exist in the COG 2026")
        if deps[d]["region"] != region.code:
            raise ConfigError(f"{path}: département {d} ({deps[d]['nom']}) belongs to region {deps[d]['region']}, "
                              f"not {region.code}")


def _bbox_from_db(uri: str, deps: list[str]) -> tuple[float, float, float, float] | None:
    """The EPSG:4326 box of the region's loaded commune outlines, with a 0.1° margin."""
    with connect(uri) as conn:
        row = conn.execute(
            "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (SELECT ST_Extent(ST_Transform(geom, 4326)) "
            "AS b FROM ref.commune_contour WHERE dep = ANY(%s)) e", (deps,)).fetchone()
    if not row or row[0] is None:
        return None
    return (round(row[0] - 0.1, 2), round(row[1] - 0.1, 2), round(row[2] + 0.1, 2), round(row[3] + 0.1, 2))


def scaffold_region(code: str, regions_dir: Path, reference: Path, *,
                    bbox: tuple[float, float, float, float] | None = None, contact: str | None = None,
                    uri: str | None = None, require_bbox: bool = True) -> Path:
    """Write include/regions/<code>.yml from the COG (name, départements); the box from `bbox`, else from
    the commune outlines loaded in PostGIS, else (`require_bbox=False`) none. Refuses to overwrite."""
    path = regions_dir / f"{code}.yml"
    if path.exists():
        raise ConfigError(f"{path} already exists: edit it instead")
    regions = cog_regions(reference)
    if code not in regions:
        raise ConfigError(f"region {code!r} is not in the COG 2026 (known: {', '.join(sorted(regions))})")
    deps = sorted(d for d, info in cog_departements(reference).items() if info["region"] == code)
    if bbox is None and uri is not None:
        bbox = _bbox_from_db(uri, deps)
    if bbox is None and require_bbox:
        raise ConfigError(f"region {code}: no commune outlines loaded for départements {deps}; give --bbox "
                          "lon_min,lat_min,lon_max,lat_max (EPSG:4326)")
    doc: dict = {"code": code, "name": regions[code]["nom"], "departements": deps}
    if bbox is not None:
        doc["bbox"] = list(bbox)
    if contact:
        doc["contact"] = contact
    box_note = ("bbox in EPSG:4326 (lon min, lat min, lon max,\n# lat max) with a margin" if bbox is not None else
                "no bbox: no commune outline of the region was\n# loaded (`qpvhub ingest commune_contours`, then add "
                "one); sources are cut by their codes")
    text = ("# yaml-language-server: $schema=schema.json\n"
            f"# Scaffolded by `qpvhub region add` from the COG 2026; {box_note}. Review it, then add the region's\n"
            "# sources and restart the dag-processor.\n"
            + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=None))
    regions_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        load_regions(regions_dir, reference)  # validates the new file like any other (model, COG membership)
    except ConfigError:
        path.unlink()
        raise
    return path


def scaffold_all(regions_dir: Path, reference: Path, *, uri: str | None = None,
                 contact: str | None = None) -> list[Path]:
    """Every region of the COG not yet served — the 13 of metropolitan France and the 5 overseas (DROM); not the
    overseas collectivités, which the COG lists beside them but which are no regions: a national deployment in one
    step. Boxes from the commune outlines loaded, where any."""
    have = {p.stem for p in regions_dir.glob("*.yml")} if regions_dir.exists() else set()
    return [scaffold_region(code, regions_dir, reference, uri=uri, contact=contact, require_bbox=False)
            for code, info in sorted(cog_regions(reference).items())
            if info.get("zone") in ("metro", "drom") and code not in have]
