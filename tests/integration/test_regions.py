"""Regions: checked against the COG, scaffolded by `qpvhub region add`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from qpvhub.catalog.regions import load_region, load_regions, scaffold_region
from qpvhub.ingest.pipeline import ingest
from qpvhub.platform.errors import ConfigError
from tests.conftest import ROOT


def _write(tmp: Path, code: str, doc: dict) -> Path:
    p = tmp / f"{code}.yml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


def test_departement_must_exist_and_belong_to_the_region(tmp_path: Path) -> None:
    p = _write(tmp_path, "53", {"code": "53", "name": "Bretagne", "departements": ["35", "99"],
                                "bbox": [-5, 47, -1, 49]})
    with pytest.raises(ConfigError, match=r"53.yml: département '99' does not exist in the COG 2026"):
        load_region(p, ROOT / "include" / "reference")
    p = _write(tmp_path, "53", {"code": "53", "name": "Bretagne", "departements": ["35", "44"],
                                "bbox": [-5, 47, -1, 49]})
    with pytest.raises(ConfigError, match=r"département 44 \(Loire-Atlantique\) belongs to region 52, not 53"):
        load_region(p, ROOT / "include" / "reference")


def test_region_add_with_a_bbox(tmp_path: Path) -> None:
    path = scaffold_region("28", tmp_path, ROOT / "include" / "reference", bbox=(-1.96, 48.17, 1.81, 50.08),
                           contact="pole@example.org")
    region = load_regions(tmp_path, ROOT / "include" / "reference")["28"]
    assert (region.name, region.departements) == ("Normandie", ["14", "27", "50", "61", "76"])
    assert region.bbox == (-1.96, 48.17, 1.81, 50.08) and region.contact == "pole@example.org"
    with pytest.raises(ConfigError, match=r"28.yml already exists"):
        scaffold_region("28", tmp_path, ROOT / "include" / "reference", bbox=(0, 0, 1, 1))
    with pytest.raises(ConfigError, match=r"region '99' is not in the COG 2026"):
        scaffold_region("99", tmp_path, ROOT / "include" / "reference", bbox=(0, 0, 1, 1))
    assert path.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=schema.json\n"
                                                       "# Scaffolded by `qpvhub region add`")


@pytest.mark.postgis
def test_region_add_takes_its_box_from_the_loaded_commune_outlines(env, catalog, tmp_path: Path) -> None:
    regions = tmp_path / "regions"
    regions.mkdir()
    shutil.copy(ROOT / "include" / "regions" / "52.yml", regions)
    with pytest.raises(ConfigError, match=r"no commune outlines loaded .* give --bbox"):
        scaffold_region("53", regions, ROOT / "include" / "reference", uri=env.uri)
    for sid in ("cog_communes", "cog_mouvements", "epci_names", "commune_contours"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    scaffold_region("53", regions, ROOT / "include" / "reference", uri=env.uri)
    region = load_regions(regions, ROOT / "include" / "reference")["53"]
    lon_min, lat_min, lon_max, lat_max = region.bbox
    assert lon_min < -1.68 < lon_max and lat_min < 48.11 < lat_max  # Rennes
    assert -2.5 < lon_min < -2.0 and 48.8 < lat_max < 48.9  # Ille-et-Vilaine (the outlines loaded) + 0.1°
