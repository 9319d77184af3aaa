"""The fiches quartier of a region's products: every QPV's page rendered once (`fiche.render`), and its PDF —
kept from the published version when the page is unchanged (`pdf.Printed`), else printed by Chromium."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import pandas as pd

from qpvhub.catalog.regions import Region
from qpvhub.publish import fiche, pdf
from qpvhub.publish.product import INDICATIVE_NOTE, data_stamp

log = logging.getLogger(__name__)


def _earlier_of(code: str, earlier: tuple[dict[str, list[dict]], pd.DataFrame] | None) -> list[dict]:
    """The predecessors of one QPV, each with its published history rows."""
    if not earlier or code not in earlier[0]:
        return []
    before, past15 = earlier
    return [{**p, "past": past15[past15["code_qp"] == p["code_qp"]]} for p in before[code]]


def render_all(gdf: gpd.GeoDataFrame, docs: dict[str, fiche.Doc], region: Region, generation: int, threshold: int,
            runs: list[dict], sources: dict, qpv_maps: dict[str, str], out: Path,
            past: pd.DataFrame | None = None, networks: dict[str, list[str]] | None = None,
            printed: pdf.Printed | None = None, chromium: str | None = None,
            earlier: tuple[dict[str, list[dict]], pd.DataFrame] | None = None,
            earlier_docs: dict[str, fiche.Doc] | None = None) -> list[dict]:
    """Render every QPV's fiche (HTML, and its PDF when Chromium is there) once for the region; each product
    ships those of its QPV. An unchanged fiche keeps its published PDF (`printed`), others are printed.
    `earlier`: the 2015-list quartiers each 2024 QPV replaces and their published history (series.earlier_list).
    Returns one entry per file: code_qp, name (`qpv/<code>.<ext>`), path, title."""
    columns = set(gdf.columns)
    stamp = data_stamp(runs)
    rows = gdf.drop(columns="geometry").to_dict("records")
    pages: dict[str, Path] = {}
    entries = []
    for row in rows:
        code = row["code_qp"]
        same = [(r["code_qp"], r["lib_qp"]) for r in rows
                if r["insee_com"] == row["insee_com"] and r["code_qp"] != code]
        page = fiche.render(row, docs, columns, region=region, generation=generation, threshold=threshold, runs=runs,
                            sources=sources, stamp=stamp, map_svg=qpv_maps.get(code), same_commune=same,
                            note=INDICATIVE_NOTE,
                            past=past[past["code_qp"] == code] if past is not None and not past.empty else None,
                            networks=(networks or {}).get(code, []),
                            earlier=_earlier_of(code, earlier), earlier_docs=earlier_docs)
        path = out / f"{code}.html"
        path.write_text(page, encoding="utf-8")
        pages[code] = path
        title = f"{row['lib_qp']} ({code}), {row['lib_com']} — fiche quartier"
        entries.append({"code_qp": code, "name": f"qpv/{code}.html", "path": path, "title": title,
                        "format": "html", "mediatype": "text/html; charset=utf-8"})
    pdfs: dict[str, Path] = {}
    for code, page in pages.items():
        before = printed.get(page.read_bytes()) if printed else None
        if before is not None:
            pdfs[code] = out / f"{code}.pdf"
            pdfs[code].write_bytes(before)
    to_print = {code: page for code, page in pages.items() if code not in pdfs}
    exe = pdf.browser(chromium)
    if to_print and exe is None:
        log.warning("region %s: no Chromium on this machine, fiches published without their PDF "
                    "(install Debian's chromium or set QPVHUB_CHROMIUM)", region.code)
        return entries
    if to_print:
        pdfs.update(pdf.print_pdfs(to_print, out, stamp, exe=exe))
    log.info("region %s: %d fiche(s) printed to PDF, %d unchanged kept their published PDF",
             region.code, len(to_print), len(pages) - len(to_print))
    for code, path in sorted(pdfs.items()):
        title = next(e["title"] for e in entries if e["code_qp"] == code)
        entries.append({"code_qp": code, "name": f"qpv/{code}.pdf", "path": path, "title": title + " (PDF)",
                        "format": "pdf", "mediatype": "application/pdf"})
    return entries
