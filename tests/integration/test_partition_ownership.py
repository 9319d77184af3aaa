"""One entry per partition, several regions in it, and a mart that never silently loses a region.

The documented way to serve another region is to add the region: the national entry of a QPV list then loads
that region's rows beside the others' at its next run. A recomputed mart that would lose a region's QPV or
indicators against the live one is refused, naming them, unless forced."""

from __future__ import annotations

import io
import json
import zipfile

import psycopg
import pytest

from qpvhub.indicators.runner import MartWouldShrink, run_indicators
from qpvhub.ingest.pipeline import ingest
from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.postgis

MEMBER = "GEOJSON/QP2024_France_Hexagonale_Outre_Mer_WGS84.geojson"
COMMUNES = {"Saint-Malo": "35288", "Rennes": "35238"}


def _national(drop_paca: int = 0) -> bytes:
    """ANCT's archive layout holding two regions: PACA's 135 real QPV (the bundled sample) and Ille-et-Vilaine's
    2024 codes (tests/data FIXTURE, in ANCT's properties); `drop_paca` of PACA's left out (a smaller file)."""
    with zipfile.ZipFile(SAMPLES / "qpv2024_paca_anct_layout.zip") as z:
        doc = json.loads(z.read(MEMBER))
    fixture = json.loads((ROOT / "tests" / "data" / "qpv2024_fixture_dept35.geojson").read_text(encoding="utf-8"))
    for n, f in enumerate(fixture["features"], start=1000):
        p = f["properties"]
        f["properties"] = {"fid": n, "code_qp": p["code_qp"], "lib_qp": p["lib_qp"], "insee_reg": "53",
                           "lib_reg": "Bretagne", "insee_dep": "35", "lib_dep": "Ille-et-Vilaine",
                           "insee_com": COMMUNES[p["lib_com"]], "lib_com": p["lib_com"], "siren_epci": None}
    doc["features"] = doc["features"][drop_paca:] + fixture["features"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MEMBER, json.dumps(doc))
    return buf.getvalue()


def _per_region(uri: str) -> dict[str, int]:
    with psycopg.connect(uri) as conn:
        return dict(conn.execute("SELECT CASE WHEN dep = '35' THEN '53' ELSE '93' END, count(*) FROM ref.qpv "
                                 "WHERE generation = 2024 GROUP BY 1").fetchall())


def test_regions_share_a_list_through_its_one_entry_and_a_shrinking_mart_is_refused(env93, catalog,
                                                                                    http_source) -> None:
    env, cog_url = env93
    assert ingest(env, catalog["cog_communes"], url=cog_url).status == "success"
    national = http_source.put("qpv2024.zip", _national())
    assert ingest(env, catalog["qpv_2024"], url=national).status == "success"
    assert _per_region(env.uri) == {"53": 6, "93": 135}  # the regions' rows side by side in one partition
    run_indicators(env)

    smaller = http_source.put("qpv2024_smaller.zip", _national(drop_paca=20))  # within the load's row floor
    assert ingest(env, catalog["qpv_2024"], url=smaller).status == "success"
    assert _per_region(env.uri) == {"53": 6, "93": 115}
    with psycopg.connect(env.uri) as conn:
        before = conn.execute("SELECT count(*) FROM mart.qpv_indicator").fetchone()[0]
    with pytest.raises(MartWouldShrink, match=r"(?s)nothing swapped.*--force.*"
                                              r"region 93: 20 QPV would have no value left: QN00401M "):
        run_indicators(env)
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT count(*) FROM mart.qpv_indicator").fetchone()[0] == before  # nothing swapped
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'").fetchone()[0] == 0
    assert run_indicators(env, force=True)["superficie_ha"] == 121
