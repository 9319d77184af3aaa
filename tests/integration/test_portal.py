"""The region's portal page and the products' maps, opened in headless Chromium from the store."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from qpvhub.publish import publish_region
from tests.integration.test_data_docs import _render

pytestmark = [pytest.mark.postgis, pytest.mark.slow]


def test_portal_lists_products_with_working_links_and_maps(env, catalog, regions, tmp_path: Path) -> None:
    for sid in ("cog_communes", "qpv_2015", "sigville_demo", "sigville_revn"):
        assert ingest(env, catalog[sid], sample=True).status == "success"
    run_indicators(env)
    publish_region(env, regions["53"], threshold=1500)
    root = env.settings.store.path / "published" / "53"
    page = (root / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:href|src)="([^"#]+)"', page)
    assert {"qpv_profil/latest/qpv_profil_53.gpkg", "qpv_profil_dep35/latest/qpv_profil_dep35.fr.csv",
            "qpv_profil/latest/qpv_profil_53_carte.svg", "catalog.json"} <= set(links)
    for link in links:  # every link of the page resolves in the store, relative to the page
        assert (root / link).resolve().exists(), link
    svg = ET.parse(root / "qpv_profil" / "latest" / "qpv_profil_53_carte.svg").getroot()
    paths = svg.findall("{http://www.w3.org/2000/svg}path")
    assert sorted(p.get("data-code") for p in paths) == [f"QP03500{i}" for i in range(1, 7)]
    fills = {p.get("data-code"): p.get("fill") for p in paths}
    assert fills["QP035006"] == "#8073ac"  # poverty rate hidden (secret colour): population under the 1,500 threshold
    assert len({f for c, f in fills.items() if c != "QP035006"}) >= 3  # quantile classes
    shot = tmp_path / "portal.png"
    dom = _render((root / "index.html").as_uri(), tmp_path, screenshot=shot)
    assert "Quartiers prioritaires — Bretagne (53)" in dom and "Dictionnaire des données" in dom
    assert shot.stat().st_size > 10_000
    assert '<img src="qpv_profil/latest/qpv_profil_53_carte.svg"' in page  # the choropleth, not a QPV map
