"""A national deployment: every region of the COG configured by `qpvhub region add --all`, one national file loaded
once over HTTP, and each region's products holding its own QPV and no other's."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import psycopg
import pytest

from qpvhub.catalog.regions import cog_regions, load_regions
from qpvhub.indicators.runner import run_indicators
from qpvhub.ingest.pipeline import ingest
from tests.conftest import COG_SAMPLE, FIXTURE_COG_PACA, ROOT
from tests.data.national_qpv2024_fixture import archive

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

REFERENCE = ROOT / "include" / "reference"


def test_every_region_one_national_load_each_region_its_own_qpv(db_uri, qpvhub_home, catalog, http_source,
                                                                 monkeypatch, tmp_path, capsys) -> None:
    from qpvhub.cli import main as cli
    from qpvhub.platform.env import Env

    regions_dir = tmp_path / "regions"
    monkeypatch.setenv("QPVHUB_REGIONS_DIR", str(regions_dir))
    assert cli(["region", "add", "--all"]) == 0  # before any outline is loaded: every region, none with a box
    every = sorted(c for c, r in cog_regions(REFERENCE).items() if r["zone"] in ("metro", "drom"))
    assert sorted(p.stem for p in regions_dir.glob("*.yml")) == every and len(every) == 18
    regions = load_regions(regions_dir, REFERENCE)
    assert {"01", "02", "03", "04", "06", "94"} <= set(regions) and all(r.bbox is None for r in regions.values())
    assert regions["94"].departements == ["2A", "2B"] and regions["01"].departements == ["971"]
    assert "wrote 18 region file(s)" in capsys.readouterr().out
    assert cli(["region", "add", "--all"]) == 0 and "wrote 0 region file(s)" in capsys.readouterr().out

    env = Env.from_settings()
    cog = COG_SAMPLE.read_bytes() + b"".join(FIXTURE_COG_PACA.read_bytes().splitlines(keepends=True)[1:])
    assert ingest(env, catalog["cog_communes"], url=http_source.put("v_commune.csv", cog)).status == "success"
    national = http_source.put("qpv2024.zip", archive(), "application/zip")
    res = ingest(env, catalog["qpv_2024"], url=national)
    assert res.status == "success" and res.rows_loaded == 189  # the whole file: every region is served
    assert [r[1] for r in http_source.requests].count("qpv2024.zip") == 1  # fetched once
    run_indicators(env)

    capsys.readouterr()
    assert cli(["publish"]) == 0  # every region: those with QPV published, the others said
    out = capsys.readouterr().out
    empty = sorted(set(every) - {"52", "53", "93"})
    assert f"no QPV loaded for region(s) {', '.join(empty)}" in out
    published = env.settings.store.path / "published"
    assert sorted(p.name for p in published.iterdir() if p.is_dir()) == ["52", "53", "93"]
    with psycopg.connect(env.uri) as conn:
        loaded = dict(conn.execute("SELECT dep, count(*) FROM ref.qpv WHERE generation = 2024 GROUP BY 1").fetchall())
    for code, n in {"52": 48, "53": 6, "93": 135}.items():
        latest = published / code / "qpv_profil" / "latest"
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=latest, check=True)
        csv = pd.read_csv(latest / f"qpv_profil_{code}.csv", dtype={"dep": str, "insee_com": str})
        deps = regions[code].departements
        assert len(csv) == n == sum(v for d, v in loaded.items() if d in deps)
        assert set(csv["dep"]) <= set(deps) and csv["code_qp"].str[2:5].map(
            lambda d: d[1:] if d[0] == "0" else d).isin(deps).all()  # only its QPV, by département and by code
        assert set(csv["generation"]) == {2024}
        pkg = json.loads((latest / "datapackage.json").read_text(encoding="utf-8"))
        assert pkg["qpvhub"]["qpv_generation"]["list"] == 2024
        for dep in sorted(set(csv["dep"])):  # each département's product: its QPV only
            part = pd.read_csv(published / code / f"qpv_profil_dep{dep}" / "latest" / f"qpv_profil_dep{dep}.csv",
                               dtype={"dep": str})
            assert set(part["dep"]) == {dep} and len(part) == loaded[dep]
        assert (published / code / "index.html").exists()
