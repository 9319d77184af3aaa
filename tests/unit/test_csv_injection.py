"""Published CSV files cannot run a formula in a spreadsheet (OWASP's CSV injection rule), numbers untouched."""

import csv
import io

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from qpvhub.publish.writers import FORMULA_RULE, formula_safe, write_csv, write_csv_fr

NASTY = ["=HYPERLINK(\"http://evil.example\",\"clic\")", "+33 1 00", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("text", NASTY)
def test_a_text_cell_that_starts_a_formula_is_neutralised(text: str) -> None:
    out = formula_safe(pd.DataFrame({"lib_qp": [text, "Maurepas"], "population": [-3.5, 12.0]}))
    assert out["lib_qp"].tolist() == ["'" + text, "Maurepas"]
    assert out["population"].tolist() == [-3.5, 12.0]  # numbers are numbers, negative ones included


def test_both_csv_writers_apply_the_rule(tmp_path) -> None:
    gdf = gpd.GeoDataFrame({"code_qp": ["QP035001", "QP035002"], "lib_qp": ['=HYPERLINK("x")', "Villejean"],
                            "taux": [-1.5, 40.2]},
                           geometry=[shapely.box(351000, 6789000, 351500, 6789500)] * 2, crs=2154)
    write_csv(gdf, tmp_path / "a.csv", layer="l", description="d", stamp="2026-01-01T00:00:00Z")
    write_csv_fr(gdf, tmp_path / "a.fr.csv", layer="l", description="d", stamp="2026-01-01T00:00:00Z")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a.csv").read_text(encoding="utf-8"))))
    assert rows[0]["lib_qp"] == "'=HYPERLINK(\"x\")" and rows[0]["taux"] == "-1.5"
    fr = (tmp_path / "a.fr.csv").read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in fr and ";-1,5;" in fr
    assert "apostrophe" in FORMULA_RULE
