"""Publish QPV-level extracts of a region to the object store, immutable versions then `latest/`.

Layout (DESIGN.md §5): `published/<region>/<product>/<version>/…` written once, each file read back
and its SHA-256 checked, then copied to `latest/`, whose `SHA256SUMS` and `datapackage.json` are
written last. The version is content-addressed: unchanged data publishes nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from psycopg.types.json import Jsonb

from qpvhub import __version__
from qpvhub.catalog import Region, load_catalog
from qpvhub.db import connect
from qpvhub.errors import QpvhubError
from qpvhub.publish.writers import WRITERS
from qpvhub.store import sha256_file

log = logging.getLogger(__name__)

PRODUCT = "qpv_profil"
INDICATIVE_NOTE = (
    "Périmètres et indicateurs à titre indicatif : seule l'attestation du service SIG Ville "
    "(sig.ville.gouv.fr) fait foi pour savoir si une adresse est en QPV."
)


@dataclass
class PublishResult:
    region: str
    product: str
    version: str
    status: str  # published | unchanged
    prefix: str
    files: list[dict] = field(default_factory=list)


def read_profile(conn, region: Region) -> tuple[gpd.GeoDataFrame, list[dict], list[dict]]:
    """QPV outlines of the region with their profile; the field documentation; the source runs used."""
    cols = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mart' "
        "AND table_name = 'qpv_profile' ORDER BY ordinal_position").fetchall()]
    if not cols:
        raise QpvhubError("mart.qpv_profile does not exist: run the indicators first (qpvhub indicators)")
    rows = conn.execute(
        "SELECT p.*, ST_AsBinary(q.geom) AS __wkb FROM mart.qpv_profile p "
        "JOIN ref.qpv q USING (code_qp, generation) WHERE q.dep = ANY(%s) ORDER BY p.generation, p.code_qp",
        (region.departements,)).fetchall()
    if not rows:
        raise QpvhubError(f"region {region.code}: no QPV in ref.qpv for départements {region.departements}")
    df = pd.DataFrame(rows, columns=[*cols, "__wkb"])
    geom = shapely.from_wkb([bytes(w) for w in df.pop("__wkb")])
    gdf = gpd.GeoDataFrame(df, geometry=geom, crs=2154)
    catalog = {r[0]: r for r in conn.execute(
        "SELECT indicator_id, label_fr, unit, method, millesime, sources FROM mart.indicator_catalog").fetchall()}
    base_doc = {
        "code_qp": ("string", "Code du QPV (QP… liste 2015, QN… liste 2024)"),
        "generation": ("integer", "Liste des QPV : 2015 ou 2024"),
        "lib_qp": ("string", "Nom du QPV"),
        "insee_com": ("string", "Code INSEE de la commune principale"),
        "lib_com": ("string", "Nom de la commune principale"),
        "dep": ("string", "Code du département"),
    }
    fields = []
    for c in cols:
        if c in base_doc:
            fields.append({"name": c, "type": base_doc[c][0], "description": base_doc[c][1]})
        elif c in catalog:
            _, label, unit, method, mill, _ = catalog[c]
            fields.append({"name": c, "type": "number", "description": f"{label}. {method}", "unit": unit,
                           "millesime": mill})
    run_ids = sorted({rid for rid in conn.execute(
        "SELECT DISTINCT unnest(source_run_ids) FROM mart.qpv_indicator i JOIN ref.qpv q "
        "USING (code_qp, generation) WHERE q.dep = ANY(%s)", (region.departements,)).fetchall() for rid in rid if rid})
    runs = [dict(zip(("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded", "validation"), r,
                     strict=True))
            for r in conn.execute(
                "SELECT run_id, source_id, urls, sha256, finished_at, rows_loaded, validation FROM meta.source_runs "
                "WHERE run_id = ANY(%s) ORDER BY source_id", (run_ids,)).fetchall()]
    for r in runs:
        r["finished_at"] = r["finished_at"].isoformat() if r["finished_at"] else None
    return gdf, fields, runs


def publish_region(env, region: Region, *, airflow_run_id: str | None = None, keep: int = 10) -> PublishResult:
    """Write the region's extracts, verify them, flip `latest/`; skip when the content is unchanged."""
    with connect(env.uri) as conn:
        gdf, fields, runs = read_profile(conn, region)
    sources = load_catalog(env.settings.sources_dir)
    stamp_day = max((r["finished_at"] or "") for r in runs)[:10] if runs else "2000-01-01"
    stamp = f"{stamp_day}T00:00:00Z"
    layer = f"{PRODUCT}_{region.code}"
    description = f"Profil des QPV de la région {region.name} ({region.code}). {INDICATIVE_NOTE}"
    work = Path(tempfile.mkdtemp(prefix="qpvhub-publish-"))
    try:
        files = []
        for fmt, (ext, media, writer) in WRITERS.items():
            path = work / f"{layer}.{ext}"
            writer(gdf, path, layer=layer, description=description, stamp=stamp)
            files.append({"name": path.name, "format": fmt, "mediatype": media, "bytes": path.stat().st_size,
                          "sha256": sha256_file(path), "path": path})
        sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in files)
        content_hash = hashlib.sha256(sums.encode()).hexdigest()[:12]
        base = f"published/{region.code}/{PRODUCT}"
        if env.store.exists(f"{base}/latest/SHA256SUMS"):
            current = env.store.get_bytes(f"{base}/latest/SHA256SUMS").decode()
            data_lines = "".join(line + "\n" for line in current.splitlines() if not line.endswith("datapackage.json"))
            if data_lines == sums:
                version = json.loads(env.store.get_bytes(f"{base}/latest/datapackage.json"))["version"]
                log.info("region %s: extracts unchanged, still version %s", region.code, version)
                _record(env, region, version, "unchanged", [], None, airflow_run_id)
                return PublishResult(region.code, PRODUCT, version, "unchanged", f"{base}/{version}/")
        quality_key = _quality_page(env, region, runs, sources)
        version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + content_hash
        package = _datapackage(region, version, files, fields, runs, sources, airflow_run_id, layer)
        package["qpvhub"]["data_docs"] = {"key": quality_key,
                                          "relative_path": f"../../../../{quality_key}"}
        (work / "datapackage.json").write_text(json.dumps(package, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
        pkg_sha = sha256_file(work / "datapackage.json")
        all_sums = sums + f"{pkg_sha}  datapackage.json\n"
        (work / "SHA256SUMS").write_text(all_sums, encoding="utf-8")
        upload = [*(Path(f["path"]) for f in files), work / "datapackage.json", work / "SHA256SUMS"]
        media = {f["name"]: f["mediatype"] for f in files} | {"datapackage.json": "application/json",
                                                              "SHA256SUMS": "text/plain"}
        vprefix = f"{base}/{version}"
        for p in upload:
            env.store.put_file(f"{vprefix}/{p.name}", p, media[p.name])
        # Read every object back before anyone is pointed at it.
        expected = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in all_sums.splitlines()}
        for name, digest in expected.items():
            got = hashlib.sha256(env.store.get_bytes(f"{vprefix}/{name}")).hexdigest()
            if got != digest:
                raise QpvhubError(f"published object {vprefix}/{name} reads back with sha256 {got}, expected {digest}")
        # latest/: data files first, then the manifest, then SHA256SUMS (the marker a reader checks).
        for p in upload:
            env.store.put_file(f"{base}/latest/{p.name}", p, media[p.name])
        _record(env, region, version, "published",
                [{k: v for k, v in f.items() if k != "path"} for f in files], f"{vprefix}/datapackage.json",
                airflow_run_id)
        _prune(env, base, keep)
        log.info("region %s: published version %s (%d files) under %s", region.code, version, len(upload), vprefix)
        return PublishResult(region.code, PRODUCT, version, "published", vprefix + "/",
                             [{k: v for k, v in f.items() if k != "path"} for f in files])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _datapackage(region, version, files, fields, runs, sources, airflow_run_id, layer) -> dict:
    """Frictionless Data Package: resources with Table Schema, licences, sources, lineage, quality."""
    used = sorted({r["source_id"] for r in runs})
    csv_point = [
        {"name": "lon", "type": "number", "description": "Longitude (EPSG:4326) d'un point intérieur au QPV"},
        {"name": "lat", "type": "number", "description": "Latitude (EPSG:4326) d'un point intérieur au QPV"},
    ]
    resources = []
    for f in files:
        if f["format"] == "csv":
            extra = csv_point
        else:
            crs = "EPSG:2154 (Lambert-93)" if f["format"] == "gpkg" else "EPSG:4326"
            extra = [{"name": "geometry", "type": "geojson" if f["format"] == "geojson" else "any",
                      "description": f"Périmètre du QPV, {crs}"}]
        resources.append({
            "name": f"{layer}_{f['format']}",
            "path": f["name"],
            "format": f["format"],
            "mediatype": f["mediatype"],
            "bytes": f["bytes"],
            "hash": f"sha256:{f['sha256']}",
            "schema": {"fields": fields + extra},
        })
    return {
        "profile": "data-package",
        "name": f"qpvhub-{region.code}-{PRODUCT}".replace("_", "-"),
        "title": f"Profil des quartiers prioritaires — {region.name}",
        "description": INDICATIVE_NOTE,
        "version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "licenses": [{"name": "etalab-2.0", "title": "Licence Ouverte / Open Licence 2.0 (qpvhub's own work); "
                      "see each source for its licence"}],
        "sources": [{"title": sources[s].title if s in sources else s,
                     "publisher": sources[s].publisher if s in sources else None,
                     "licence": sources[s].licence if s in sources else None,
                     "path": sources[s].landing_page if s in sources else None,
                     "millesime": sources[s].millesime if s in sources else None} for s in used],
        "resources": resources,
        "qpvhub": {
            "region": region.code,
            "product": PRODUCT,
            "code_version": __version__,
            "airflow_run_id": airflow_run_id,
            "lineage": [{k: r[k] for k in ("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded")}
                        for r in runs],
            "quality": [{"source_id": r["source_id"], "run_id": r["run_id"], **(r["validation"] or {})} for r in runs],
            "csv_geometry": "no geometry column; lon/lat of a point inside each QPV (EPSG:4326)",
            "crs": {"geojson": "EPSG:4326", "parquet": "EPSG:4326", "gpkg": "EPSG:2154"},
        },
    }


def _quality_page(env, region: Region, runs: list[dict], sources: dict) -> str:
    """Write quality/<region>/index.html, linking each run's GX Data Docs; return its key."""
    from qpvhub.pipeline import docs_prefix
    from qpvhub.publish.quality_page import render

    links = {}
    for r in runs:
        index = f"{docs_prefix(r['source_id'], r['run_id'])}/index.html"
        if env.store.exists(index):
            links[r["run_id"]] = "../" + index[len("quality/"):]
    key = f"quality/{region.code}/index.html"
    env.store.put_bytes(key, render(region, runs, sources, links).encode(), "text/html; charset=utf-8")
    return key


def _record(env, region, version, status, files, manifest_key, airflow_run_id) -> None:
    with connect(env.uri) as conn:
        conn.execute(
            "INSERT INTO meta.publications (region, product, version, status, files, manifest_key, airflow_run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (region.code, PRODUCT, version, status, Jsonb(files), manifest_key, airflow_run_id))
        conn.commit()


def _prune(env, base: str, keep: int) -> None:
    """Delete versions beyond the newest `keep` (never `latest/`)."""
    versions = sorted({k[len(base) + 1:].split("/", 1)[0] for k in env.store.list(base + "/")} - {"latest"})
    for old in versions[:-keep] if keep > 0 else []:
        for key in env.store.list(f"{base}/{old}/"):
            env.store.delete(key)
