"""One product of a region (the region's or a département's QPV profile): its files in every format, the
per-theme tables, history, maps and fiches, its Data Package; an immutable, content-addressed version read
back before `latest/` points at it; versions published under a weaker secrecy rule withdrawn, old ones pruned.
`catalog.json` lists every product and version of the region."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
from psycopg.types.json import Jsonb

from qpvhub import __version__
from qpvhub.catalog.qpv_lists import QpvLists
from qpvhub.catalog.regions import Region
from qpvhub.indicators.families import theme_view_name
from qpvhub.platform.db import connect
from qpvhub.platform.errors import QpvhubError
from qpvhub.platform.store import sha256_file
from qpvhub.publish import latest
from qpvhub.publish import series as history
from qpvhub.publish.portal import choropleth_svg, key_maps, map_indicator
from qpvhub.publish.secrecy import METHOD, PUBLIC_FLAG
from qpvhub.publish.writers import FORMULA_RULE, WRITERS

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
    parts: list[PublishResult] = field(default_factory=list)  # per-département products
    withdrawn: list[str] = field(default_factory=list)  # kept versions removed: published under a weaker rule
    generation: int | None = None  # the QPV list the product describes


TABLE_FORMATS = ("csv", "csv_fr", "geojson", "gpkg", "parquet")  # resources described by a Table Schema


def data_stamp(runs: list[dict]) -> str:
    """The data's date (the newest source run's day): the only date written into published files."""
    day = max((r["finished_at"] or "") for r in runs)[:10] if runs else ""
    return f"{day or '2000-01-01'}T00:00:00Z"


def publish_product(env, region: Region, product: str, gdf: gpd.GeoDataFrame, title: str, *, fields, runs,
                     sources, airflow_run_id, keep: int, threshold: int, quality_key: str,
                     lists: QpvLists, generation: int, qpv_maps: dict[str, str] | None = None,
                     fiches: list[dict] | None = None, communes: gpd.GeoDataFrame | None = None,
                     departements: gpd.GeoDataFrame | None = None, past: pd.DataFrame | None = None) -> PublishResult:
    """Write one product's files, verify them, flip `latest/`; skip when the content is unchanged."""
    stamp = data_stamp(runs)
    layer = f"{product}_{region.code}" if "_dep" not in product else product
    description = f"{title}. {INDICATIVE_NOTE}"
    work = Path(tempfile.mkdtemp(prefix="qpvhub-publish-"))
    try:
        files = []
        for fmt, (ext, media, writer) in WRITERS.items():
            path = work / f"{layer}.{ext}"
            writer(gdf, path, layer=layer, description=description, stamp=stamp)
            files.append({"name": path.name, "format": fmt, "mediatype": media, "bytes": path.stat().st_size,
                          "sha256": sha256_file(path), "path": path})
        # per-theme tables: the same rows, the theme's columns only (CSV and French CSV)
        base_cols = ["code_qp", "generation", "lib_qp", "insee_com", "lib_com", "dep"]
        for theme in sorted({fd["theme"] for fd in fields if fd.get("theme")}):
            cols = [fd["name"] for fd in fields if fd.get("theme") == theme and fd["name"] in gdf.columns]
            sub = gdf[[*base_cols, *cols, "geometry"]]
            slug = theme_view_name(theme).removeprefix("theme_")
            for fmt in ("csv", "csv_fr"):
                ext, media, writer = WRITERS[fmt]
                path = work / f"{layer}_theme_{slug}.{ext}"
                writer(sub, path, layer=layer, description=description, stamp=stamp)
                files.append({"name": path.name, "format": fmt, "mediatype": media, "bytes": path.stat().st_size,
                              "sha256": sha256_file(path), "path": path, "theme": theme, "columns": cols})
        for code, svg in qpv_maps.items() if qpv_maps else []:
            if code not in set(gdf["code_qp"]):
                continue
            path = work / f"{layer}_carte_{code}.svg"
            path.write_text(svg, encoding="utf-8")
            files.append({"name": path.name, "format": "svg", "mediatype": "image/svg+xml",
                          "bytes": path.stat().st_size, "sha256": sha256_file(path), "path": path})
        codes = set(gdf["code_qp"])
        mine = past[past["code_qp"].isin(codes)] if past is not None else None
        if mine is not None and not mine.empty:  # the history: every release, evolutions, secrecy per year
            for fmt, ext in (("csv", "csv"), ("csv_fr", "fr.csv")):
                path = work / f"{layer}_series.{ext}"
                history.write(mine, path, french=fmt == "csv_fr")
                files.append({"name": path.name, "format": fmt, "mediatype": "text/csv", "path": path,
                              "bytes": path.stat().st_size, "sha256": sha256_file(path), "schema": history.FIELDS,
                              "title": "Historique des indicateurs par édition, avec évolutions"})
        for f in fiches or []:  # rendered once for the region: the product's QPV only
            if f["code_qp"] in codes:
                files.append({"name": f["name"], "format": f["format"], "mediatype": f["mediatype"],
                              "bytes": f["path"].stat().st_size, "sha256": sha256_file(f["path"]),
                              "path": f["path"], "title": f["title"]})
        column = map_indicator(gdf)
        mine = None if communes is None else communes[communes["insee_com"].isin(set(gdf["insee_com"]))]
        # the frame: the region's départements (a département's product: its own)
        deps = None if departements is None or departements.empty else (
            departements[departements["dep"].isin(set(gdf["dep"]))] if "_dep" in product else departements)
        # the product's map (a choropleth of one indicator), then one per key indicator for the region page
        for ind, name in ([(column, f"{layer}_carte.svg")] if column else []) + [
                (k, f"{layer}_carte_indicateur_{k}.svg") for k in key_maps(gdf)]:
            label = next((f"{fd['description'].split('. ')[0]}" for fd in fields if fd["name"] == ind), ind)
            unit = next((fd.get("unit", "") for fd in fields if fd["name"] == ind), "")
            path = work / name
            path.write_text(choropleth_svg(gdf, ind, f"{label} — {title}", unit, communes=mine,
                                           departements=deps), encoding="utf-8")
            files.append({"name": path.name, "format": "svg", "mediatype": "image/svg+xml",
                          "bytes": path.stat().st_size, "sha256": sha256_file(path), "path": path})
        sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in files)
        package = _datapackage(region, product, title, "", files, fields, runs, sources, airflow_run_id, layer,
                               threshold)
        qpv_list = lists.get(generation)
        package["qpvhub"]["qpv_generation"] = {"list": generation, "codes": qpv_list.codes, "note": qpv_list.note_fr,
                                               "legal_text": qpv_list.legal_text}
        package["qpvhub"]["data_docs"] = {"key": quality_key, "relative_path": f"../../../../{quality_key}"}
        # The package is part of the version: new lineage or rules make a new version even with the same files.
        digest = package_digest(package)
        package["qpvhub"]["package_digest"] = digest
        content_hash = hashlib.sha256((sums + digest).encode()).hexdigest()[:12]
        base = f"published/{region.code}/{product}"
        if env.store.exists(f"{base}/latest/SHA256SUMS"):
            current = env.store.get_bytes(f"{base}/latest/SHA256SUMS").decode()
            data_lines = "".join(line + "\n" for line in current.splitlines() if not line.endswith("datapackage.json"))
            current_pkg = json.loads(env.store.get_bytes(f"{base}/latest/datapackage.json"))
            if data_lines == sums and current_pkg.get("qpvhub", {}).get("package_digest") == digest:
                version = current_pkg["version"]
                log.info("%s/%s: extracts unchanged, still version %s", region.code, product, version)
                latest.repair(env.store, base, version, current, {f["name"]: Path(f["path"]) for f in files},
                              {f["name"]: f["mediatype"] for f in files} | {"datapackage.json": "application/json",
                                                                            "SHA256SUMS": "text/plain"})
                _record(env, region, product, version, "unchanged", [], None, airflow_run_id)
                withdrawn = _withdraw(env, region, product, base, threshold, airflow_run_id)
                return PublishResult(region.code, product, version, "unchanged", f"{base}/{version}/",
                                     withdrawn=withdrawn)
        version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + content_hash
        package["version"] = version
        (work / "datapackage.json").write_text(json.dumps(package, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
        pkg_sha = sha256_file(work / "datapackage.json")
        all_sums = sums + f"{pkg_sha}  datapackage.json\n"
        (work / "SHA256SUMS").write_text(all_sums, encoding="utf-8")
        # (name in the version, local file): names may have a folder (qpv/<code>.html)
        upload = [*((f["name"], Path(f["path"])) for f in files), ("datapackage.json", work / "datapackage.json"),
                  ("SHA256SUMS", work / "SHA256SUMS")]
        media = {f["name"]: f["mediatype"] for f in files} | {"datapackage.json": "application/json",
                                                              "SHA256SUMS": "text/plain"}
        vprefix = f"{base}/{version}"
        for name, p in upload:
            env.store.put_file(f"{vprefix}/{name}", p, media[name])
        # Read every object back before anyone is pointed at it.
        expected = latest.read_sums(all_sums)
        for name, digest in expected.items():
            got = hashlib.sha256(env.store.get_bytes(f"{vprefix}/{name}")).hexdigest()
            if got != digest:
                raise QpvhubError(f"published object {vprefix}/{name} reads back with sha256 {got}, expected {digest}")
        # latest/: data files first, then the manifest; files the version does not have are removed;
        # SHA256SUMS last (the marker a reader checks), so latest/ equals the version.
        for name, p in upload[:-1]:
            env.store.put_file(f"{base}/latest/{name}", p, media[name])
        names = {name for name, _ in upload}
        for key in env.store.list(f"{base}/latest/"):
            if key[len(f"{base}/latest/"):] not in names:
                env.store.delete(key)
                log.info("%s/%s: %s is not in version %s, removed from latest/", region.code, product, key, version)
        env.store.put_file(f"{base}/latest/SHA256SUMS", upload[-1][1], media["SHA256SUMS"])
        public_files = [{k: v for k, v in f.items() if k not in ("path", "columns", "title", "schema")} for f in files]
        _record(env, region, product, version, "published", public_files, f"{vprefix}/datapackage.json",
                airflow_run_id)
        withdrawn = _withdraw(env, region, product, base, threshold, airflow_run_id)
        _prune(env, base, keep)
        log.info("%s/%s: published version %s (%d files) under %s", region.code, product, version, len(upload),
                 vprefix)
        return PublishResult(region.code, product, version, "published", vprefix + "/", public_files,
                             withdrawn=withdrawn)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_catalog(env, region: Region) -> dict:
    """`published/<region>/catalog.json`: every product, its versions, files and latest version."""
    root = f"published/{region.code}/"
    products: dict[str, dict] = {}
    for key in env.store.list(root):
        parts = key[len(root):].split("/")
        if len(parts) == 3 and parts[1] != "latest" and parts[2] == "datapackage.json":
            pkg = json.loads(env.store.get_bytes(key))
            entry = products.setdefault(parts[0], {"product": parts[0], "title": pkg.get("title"), "versions": []})
            entry["versions"].append({
                "version": pkg["version"], "created": pkg.get("created"), "path": f"{parts[0]}/{parts[1]}/",
                "files": [{"path": r["path"], "format": r.get("qpvhub:format", r["format"]), "bytes": r["bytes"],
                           "hash": r["hash"]} for r in pkg["resources"]]})
    for entry in products.values():
        entry["versions"].sort(key=lambda v: v["version"])
        entry["latest"] = entry["versions"][-1]["version"] if entry["versions"] else None
    doc = {"region": region.code, "name": region.name,
           "licence": "Licence Ouverte / Open Licence 2.0 (etalab-2.0) ; voir la licence de chaque source",
           "note": INDICATIVE_NOTE, "products": sorted(products.values(), key=lambda e: e["product"])}
    key = root + "catalog.json"
    env.store.put_bytes(key, (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode(), "application/json")
    return doc


def _datapackage(region, product, title, version, files, fields, runs, sources, airflow_run_id, layer,
                 threshold) -> dict:
    """Frictionless Data Package: resources with Table Schema, licences, sources, lineage, quality."""
    used = sorted({r["source_id"] for r in runs})
    csv_point = [
        {"name": "lon", "type": "number", "description": "Longitude (EPSG:4326) d'un point intérieur au QPV"},
        {"name": "lat", "type": "number", "description": "Latitude (EPSG:4326) d'un point intérieur au QPV"},
    ]
    resources = []
    for f in files:
        if f["format"] in ("csv", "csv_fr"):
            extra = csv_point
        else:
            crs = "EPSG:2154 (Lambert-93)" if f["format"] == "gpkg" else "EPSG:4326"
            extra = [{"name": "geometry", "type": "geojson" if f["format"] == "geojson" else "any",
                      "description": f"Périmètre du QPV, {crs}"}]
        if f.get("schema"):  # a table of its own (the history)
            schema = list(f["schema"])
        else:
            schema = [fd for fd in fields if "columns" not in f or fd["name"] in f["columns"] or not fd.get("theme")]
            schema += extra
        if f["format"] == "csv_fr":  # Table Schema says the decimal comma per number field
            schema = [{**fd, "decimalChar": ","} if fd["type"] == "number" else fd for fd in schema]
        resources.append({
            # unique, lower-case names as the Data Package spec requires (the file name says which table)
            "name": re.sub(r"[^a-z0-9._-]", "-", f["name"].lower()),
            "path": f["name"],
            # the French CSV is CSV with another dialect; `qpvhub:format` keeps the finer kind
            "format": "csv" if f["format"] == "csv_fr" else f["format"],
            "qpvhub:format": f["format"],
            # frictionless reads Parquet as a table but cannot count its bytes: declared as a file, its
            # bytes and hash are still checked (the schema documents its columns all the same)
            **({"type": "table"} if f["format"] in ("csv", "csv_fr") else
               {"type": "file"} if f["format"] != "geojson" else {}),
            **({"title": f["title"]} if f.get("title") else {}),
            "mediatype": f["mediatype"],
            "bytes": f["bytes"],
            "hash": f"sha256:{f['sha256']}",
            **({"schema": {"fields": schema}} if f["format"] in TABLE_FORMATS else {}),
            **({"dialect": {"delimiter": ";", "header": True}, "encoding": "utf-8-sig"}
               if f["format"] == "csv_fr" else {}),
        })
    return {
        "profile": "data-package",
        "name": f"qpvhub-{region.code}-{product}".replace("_", "-"),
        "title": title,
        "description": INDICATIVE_NOTE,
        "version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "licenses": [{"name": "etalab-2.0", "title": "Licence Ouverte / Open Licence 2.0 (le travail de qpvhub) ; "
                      "voir la licence de chaque source"}],
        "sources": [{"title": sources[s].title if s in sources else s,
                     "publisher": sources[s].publisher if s in sources else None,
                     "licence": sources[s].licence if s in sources else None,
                     "path": sources[s].landing_page if s in sources else None,
                     "millesime": sources[s].millesime if s in sources else None} for s in used],
        "resources": resources,
        "qpvhub": {
            "region": region.code,
            "product": product,
            "statistical_secrecy": {
                "threshold": threshold,
                "method": METHOD,
                "flag": PUBLIC_FLAG,
                "rule": "les effectifs inférieurs au seuil, et toute valeur calculée sur un effectif caché, sont vides "
                        f"avec « {PUBLIC_FLAG} » dans la colonne <colonne>__secret ; d'autres cellules sont cachées "
                        "jusqu'à ce qu'aucun effectif caché ne puisse être encadré, à partir des cellules publiées, "
                        "dans un intervalle plus étroit que le seuil (commune = commune hors QPV + somme de ses QPV ; "
                        "valeur = numérateur / dénominateur × base)"},
            "csv_formulas": FORMULA_RULE,
            "csv_fr": "le fichier .fr.csv est la même table pour les tableurs français : séparateur « ; », UTF-8 "
                      "avec BOM, virgule décimale",
            "code_version": __version__,
            "airflow_run_id": airflow_run_id,
            "lineage": [{k: r.get(k) for k in ("run_id", "source_id", "urls", "sha256", "finished_at", "rows_loaded",
                                               "millesime", "data_from", "data_until")}
                        for r in runs],
            "quality": [{"source_id": r["source_id"], "run_id": r["run_id"], **(r["validation"] or {})} for r in runs],
            "csv_geometry": "pas de colonne de géométrie ; lon/lat d'un point intérieur à chaque QPV (EPSG:4326)",
            "crs": {"geojson": "EPSG:4326", "parquet": "EPSG:4326", "gpkg": "EPSG:2154"},
        },
    }


def _record(env, region, product, version, status, files, manifest_key, airflow_run_id) -> None:
    with connect(env.uri) as conn:
        conn.execute(
            "INSERT INTO meta.publications (region, product, version, status, files, manifest_key, airflow_run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (region.code, product, version, status, Jsonb(files), manifest_key, airflow_run_id))
        conn.commit()


def package_digest(package: dict) -> str:
    """SHA-256 of the package without what changes at every publication (version, date, Airflow run)."""
    stable = {k: v for k, v in package.items() if k not in ("version", "created")}
    stable["qpvhub"] = {k: v for k, v in package["qpvhub"].items() if k not in ("airflow_run_id", "package_digest")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _withdraw(env, region: Region, product: str, base: str, threshold: int, airflow_run_id: str | None) -> list[str]:
    """Delete kept versions published under a weaker rule (a lower threshold, an older method): their
    files would disclose cells the current rule hides. Recorded as `withdrawn` in meta.publications."""
    versions = sorted({k[len(base) + 1:].split("/", 1)[0] for k in env.store.list(base + "/")} - {"latest"})
    withdrawn = []
    for v in versions:
        key = f"{base}/{v}/datapackage.json"
        rule = (json.loads(env.store.get_bytes(key)).get("qpvhub", {}).get("statistical_secrecy", {})
                if env.store.exists(key) else {})
        if rule.get("method") == METHOD and int(rule.get("threshold", 0)) >= threshold:
            continue
        for k in env.store.list(f"{base}/{v}/"):
            env.store.delete(k)
        _record(env, region, product, v, "withdrawn", [], None, airflow_run_id)
        withdrawn.append(v)
        log.warning("%s/%s: version %s withdrawn: published with threshold %s and method %s, weaker than the "
                    "current rule (threshold %s, %s)", region.code, product, v, rule.get("threshold"),
                    rule.get("method"), threshold, METHOD)
    return withdrawn


def _prune(env, base: str, keep: int) -> None:
    """Delete versions beyond the newest `keep` (never `latest/`)."""
    versions = sorted({k[len(base) + 1:].split("/", 1)[0] for k in env.store.list(base + "/")} - {"latest"})
    for old in versions[:-keep] if keep > 0 else []:
        for key in env.store.list(f"{base}/{old}/"):
            env.store.delete(key)
