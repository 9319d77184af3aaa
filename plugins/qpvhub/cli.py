"""`qpvhub` command line: the same functions the DAGs run, without a scheduler.

Errors are printed as one clear message (source, file, line/feature, column) and exit non-zero;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qpvhub.errors import QpvhubError

log = logging.getLogger("qpvhub")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("great_expectations", "pyogrio", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _env():
    from qpvhub.pipeline import Env

    return Env.from_settings()


def cmd_ingest(args: argparse.Namespace) -> int:
    from qpvhub.catalog import load_catalog, load_order, resolve_source
    from qpvhub.pipeline import ingest

    env = _env()
    if args.all:
        sources = load_order(load_catalog(env.settings.sources_dir))
    else:
        if not args.source:
            raise QpvhubError("name a source id or spec file, or use --all")
        sources = [resolve_source(args.source, env.settings.sources_dir)]
    release = getattr(args, "release", None)
    failed = 0
    runs = []
    for source in sources:  # in dependency order
        if args.sample and source.no_sample:
            print(f"→ {source.id}: no offline sample, not loaded: {source.no_sample}")
            continue
        if source.series and args.sample and release is None:
            runs += [(source, r) for r in sorted(source.series.samples)]  # every bundled release, oldest first
        else:
            runs.append((source, release))
    for source, rel in runs:
        if source.collection:  # every feed, each its own run; one failing does not stop the others
            failed += _ingest_feeds(env, source, args)
            continue
        t0 = time.monotonic()
        what = f"{source.id} release {rel}" if rel is not None else source.id
        print(f"→ {what}: ingesting into {source.target.qualified} …", flush=True)
        res = ingest(env, source, url=args.url, sample=args.sample, force=args.force, release=rel)
        took = time.monotonic() - t0
        if res.status == "skipped" and res.reason:
            print(f"  {what}: skipped (run {res.run_id}, {took:.1f}s): {res.reason}")
        elif res.status == "skipped":
            print(f"  {what}: unchanged since the last successful load, skipped (run {res.run_id}, {took:.1f}s)")
        else:
            print(f"  {what}: {res.rows_loaded} rows loaded, {res.rows_rejected} rejected, "
                  f"{res.rows_repaired} geometries repaired, "
                  f"{res.validation['evaluated'] - res.validation['failed']}/{res.validation['evaluated']} "
                  f"expectations passed (run {res.run_id}, {took:.1f}s)")
            if res.translation:
                from qpvhub.cog import summary

                print(f"  {what}: {summary(res.translation)}")
    if failed:
        raise QpvhubError(f"{failed} feed(s) failed (see above); the others were loaded")
    return 0


def _ingest_feeds(env, source, args: argparse.Namespace) -> int:
    """Load a collection's feeds; print one line per feed; return how many failed."""
    from qpvhub.pipeline import ingest_collection

    t0 = time.monotonic()
    print(f"→ {source.id}: ingesting every part (feed, département) into {source.target.qualified} …", flush=True)
    results = ingest_collection(env, source, sample=args.sample, force=args.force, only=getattr(args, "feed", None))
    for feed, res in results:
        if isinstance(res, BaseException):
            print(f"  {source.id}/{feed.id}: FAILED: {str(res).splitlines()[0]}")
        elif res.status == "skipped":
            print(f"  {source.id}/{feed.id}: skipped (run {res.run_id}): {res.reason or 'unchanged'}")
        else:
            print(f"  {source.id}/{feed.id}: {res.rows_loaded} rows loaded (run {res.run_id})")
    print(f"  {source.id}: {len(results)} part(s) in {time.monotonic() - t0:.1f}s")
    return sum(isinstance(r, BaseException) for _, r in results)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a source's file against its suite without loading it; exit 1 when it fails."""

    from qpvhub.catalog import resolve_source
    from qpvhub.pipeline import validate_only

    env = _env()
    source = resolve_source(args.source, env.settings.sources_dir)
    path = Path(args.file).resolve() if args.file else None
    if path is not None and not path.is_file():
        raise QpvhubError(f"no such file: {path}")
    staged, report = validate_only(env, source, path=path, url=args.url, sample=args.sample,
                                   release=getattr(args, "release", None))
    print(f"{source.id}: {staged.rows_read} rows read, {staged.rows_loaded} would load, "
          f"{staged.rows_rejected} rejected, {staged.rows_repaired} geometries repaired")
    if staged.translation:
        from qpvhub.cog import summary

        print(f"{source.id}: {summary(staged.translation)}")
    print(report.text())
    for r in report.results:
        if r.success:
            print(f"  ✓ {r.describe()}")
    print("VALID" if report.success else f"INVALID (policy {report.policy}: "
          f"{'would block the load' if report.policy == 'block' else 'would load with a warning'})")
    return 0 if report.success else 1


def cmd_indicators(args: argparse.Namespace) -> int:
    from qpvhub.indicators import run_indicators

    env = _env()
    written = run_indicators(env.uri, env.settings.sql_dir, only=args.family or None, store=env.store)
    for ind, n in written.items():
        print(f"  {ind}: {n} values" + ("" if n else " (sources missing: indicator absent)"))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from qpvhub.catalog import load_regions
    from qpvhub.publish import publish_region

    env = _env()
    regions = load_regions(env.settings.regions_dir)
    wanted = args.region or sorted(regions)
    for code in wanted:
        if code not in regions:
            raise QpvhubError(f"unknown region {code!r}; known: {', '.join(sorted(regions))}")
        res = publish_region(env, regions[code], keep=args.keep, threshold=args.secrecy_threshold,
                             generation=getattr(args, "generation", None))
        for r in [res, *res.parts]:
            where = env.store.describe(f"published/{code}/{r.product}/latest/")
            label = f"region {code}" if r is res else f"  {r.product}"
            print(f"  {label}: {r.status} version {r.version} → {where}")
            for v in r.withdrawn:
                print(f"    withdrawn version {v}: published under a weaker secrecy rule than threshold "
                      f"{args.secrecy_threshold or 'default'} now applies")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    """Print time-limited download URLs (S3 presigned, at most 7 days) for a product's latest files or a key."""
    env = _env()
    presign = getattr(env.store, "presigned_get", None)
    if presign is None:
        raise QpvhubError("qpvhub share needs an S3 object store (AIRFLOW_CONN_QPVHUB_STORE of type aws): "
                          "a local directory cannot sign URLs")
    if "/" in args.target:
        keys = [args.target]
    else:
        if not args.region:
            raise QpvhubError("give --region with a product name (or give an object key)")
        prefix = f"published/{args.region}/{args.target}/latest/"
        keys = [k for k in env.store.list(prefix) if not k.endswith("/")]
        if not keys:
            raise QpvhubError(f"no published files under {env.store.describe(prefix)}")
    for key in sorted(keys):
        print(f"{key}\n  {presign(key, args.days)}")
    print(f"valid {args.days:g} day(s); anyone holding a URL can download that object until then")
    return 0


def cmd_region_add(args: argparse.Namespace) -> int:
    """Scaffold include/regions/<code>.yml from the COG (name, départements) and a bounding box."""
    from qpvhub.config import load_settings
    from qpvhub.regions import scaffold_region

    settings = load_settings()
    bbox = None
    if args.bbox:
        try:
            bbox = tuple(float(x) for x in args.bbox.split(","))
        except ValueError:
            raise QpvhubError(f"--bbox {args.bbox!r}: expected lon_min,lat_min,lon_max,lat_max") from None
        if len(bbox) != 4:
            raise QpvhubError(f"--bbox {args.bbox!r}: expected four numbers")
    uri = None if bbox else _env().uri
    path = scaffold_region(args.code, settings.regions_dir, bbox=bbox, contact=args.contact, uri=uri)
    print(f"wrote {path}:\n{path.read_text(encoding='utf-8')}")
    print("Next: add or reuse sources for its départements (include/sources/), then `qpvhub ingest --all`; "
          "the Airflow dag-processor picks up the new publish DAG.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Freshness of every source against its schedule: state, last run, last confirmed load, age, rows."""
    from qpvhub.catalog import load_catalog
    from qpvhub.monitor import freshness, status_table

    env = _env()
    rows = freshness(env.uri, load_catalog(env.settings.sources_dir))
    print(status_table(rows))
    bad = [f for f in rows if f.state in ("stale", "never", "failing", "expired", "outdated", "unchanged")]
    if bad:
        print(f"\n{len(bad)} source(s) need attention: " + ", ".join(f"{f.source_id} ({f.state})" for f in bad))
    return 0


def cmd_sources_check(args: argparse.Namespace) -> int:
    """Probe every production location and compare its layout with the catalogue; exit 1 on any problem."""
    from qpvhub.catalog import load_catalog
    from qpvhub.config import load_settings
    from qpvhub.probe import check_sources

    settings = load_settings()
    sources = load_catalog(settings.sources_dir)
    if args.source:
        unknown = sorted(set(args.source) - set(sources))
        if unknown:
            raise QpvhubError(f"unknown source(s) {unknown}; known: {', '.join(sorted(sources))}")
        sources = {k: v for k, v in sources.items() if k in args.source}
    previous = {}
    try:  # the last loads, to say what changed since; the check itself needs no database
        from qpvhub.pipeline import Env, last_success

        env = Env.from_settings(settings, migrate_db=False)
        previous = {sid: p for sid in sources if (p := last_success(env, sid))}
    except Exception as exc:
        log.info("no database for the comparison with the last loads: %s", exc)
    from qpvhub.catalog import load_regions

    departements = sorted({d for r in load_regions(settings.regions_dir).values() for d in r.departements})
    probes = check_sources(sources, timeout=args.timeout, previous=previous, departements=departements)
    for p in probes:
        print(p.line() if p.reachable else f"{p.source_id:<20}  UNREACHABLE  {p.status}"
              + (f"  ({p.location})" if p.location else ""))
    bad = [p for p in probes if not p.ok]
    print(f"\n{len(probes) - len(bad)}/{len(probes)} sources reachable with the declared layout")
    return 1 if bad else 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 1 when a source is stale (or never loaded, unless --ignore-never): for cron and monitoring."""
    from qpvhub.catalog import load_catalog
    from qpvhub.monitor import freshness

    env = _env()
    bad = [f for f in freshness(env.uri, load_catalog(env.settings.sources_dir))
           if f.state in ("stale", "expired", "outdated", "unchanged")
           or (f.state == "never" and not args.ignore_never)]
    for f in bad:
        print(f"{f.source_id}: {f.state}" + (f" (last confirmed {f.age} ago, tolerance {f.tolerance})"
                                              if f.state == "stale" else f" ({f.data_note})" if f.data_note else ""))
    print("healthy" if not bad else f"{len(bad)} source(s) not fresh")
    return 1 if bad else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the bundled real data with the configured (or embedded) PostGIS and store."""
    t0 = time.monotonic()
    env = _env()
    print(f"PostGIS: {_safe(env.uri)}\nStore:   {env.store.describe('')}\n")
    cmd_ingest(argparse.Namespace(all=True, source=None, url=None, sample=True, force=False, release=None))
    print("→ indicators")
    cmd_indicators(argparse.Namespace(family=None))
    print("→ publish")
    cmd_publish(argparse.Namespace(region=["53"], keep=10, secrecy_threshold=None))
    from qpvhub.db import connect

    with connect(env.uri) as conn:
        n_qpv = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
        n_com = conn.execute("SELECT count(*) FROM ref.commune").fetchone()[0]
        n_ind = conn.execute("SELECT count(*) FROM mart.qpv_indicator").fetchone()[0]
    print(f"\nLoaded: ref.qpv {n_qpv} rows, ref.commune {n_com} rows, mart.qpv_indicator {n_ind} values.")
    print(f"Extracts: {env.store.describe('published/53/qpv_profil/latest/')}")
    print(f"Query:    psql '{_analyst(env)}' -c 'SELECT * FROM mart.qpv_profile'")
    print(f"Done in {time.monotonic() - t0:.1f}s.")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """The OGC API (Features and vector Tiles) over the published-grade schema `pub`, in the foreground.

    Served by tipg from its own virtualenv (`.venv-api`, made by `make api`: its FastAPI is newer than
    Airflow's, which must not be changed for it), connecting as `qpvhub_api`, which reads `pub` only."""
    import os
    import signal
    import socket
    import subprocess
    import tempfile

    from qpvhub.api import api_environment

    env = _env()  # the database is up and migrated
    python = os.environ.get("QPVHUB_API_PYTHON") or str(env.settings.project / ".venv-api" / "bin" / "python")
    if not Path(python).exists():
        raise QpvhubError(f"no API server environment at {python}: run `make api` (it creates .venv-api with tipg)")
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    host = args.host
    print(f"OGC API on http://{host}:{port}/ (collections: /collections, health: /healthz); Ctrl-C stops it",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="qpvhub-api-") as cwd:  # tipg reads a .env in its directory
        app_dir = env.settings.project / "include" / "api"
        with subprocess.Popen([python, "-m", "uvicorn", "qpvhub_api_app:app", "--app-dir", str(app_dir), "--host",
                               host, "--port", str(port), "--log-level", "warning"], env=api_environment(env),
                              cwd=cwd) as proc:
            # A supervisor (systemd, a test, docker stop) stops `qpvhub api` with SIGTERM: passed on to the
            # server, which would otherwise outlive this process and keep its port and connections.
            previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
            try:
                while True:
                    try:
                        return proc.wait()
                    except KeyboardInterrupt:  # Ctrl-C reached the server too: let it finish
                        continue
            finally:
                signal.signal(signal.SIGTERM, previous)


def _safe(uri: str) -> str:
    import re

    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", uri)


def _analyst(env) -> str:
    """The analyst's connection string: with its password from the secret file for the embedded cluster;
    for a configured server, the same host without a password (psql asks for it)."""
    import re

    if not env.settings.postgis_uri:
        from qpvhub.embedded import EmbeddedCluster

        return EmbeddedCluster(env.settings.home / "pg").uri("qpvhub", "qpvhub_analyst")
    return re.sub(r"//[^@/]*@", "//qpvhub_analyst@", env.uri)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qpvhub", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="fetch, validate and load a source")
    s.add_argument("source", nargs="?", help="source id (include/sources/<id>.yml) or path to a spec file")
    s.add_argument("--all", action="store_true", help="every source of the catalogue")
    s.add_argument("--url", help="fetch from this URL instead of the catalogue's")
    s.add_argument("--sample", action="store_true", help="use the bundled offline sample")
    s.add_argument("--force", action="store_true", help="load even if the source is unchanged")
    s.add_argument("--release", help="for a series (SIG Ville files): the release (year) to load; with --sample and "
                                     "no release, every bundled release")
    s.add_argument("--feed", help="for a collection (GTFS): load only this feed")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("validate", help="check a source's file against its suite, without loading it")
    s.add_argument("source", help="source id or path to a spec file")
    s.add_argument("--file", help="a local file to check instead of fetching the source")
    s.add_argument("--url", help="fetch from this URL instead of the catalogue's")
    s.add_argument("--sample", action="store_true", help="check the bundled offline sample")
    s.add_argument("--release", help="for a series: the release (year) the file is")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("indicators", help="compute the indicators mart")
    s.add_argument("--family", action="append", help="only this family (repeatable)")
    s.set_defaults(func=cmd_indicators)

    s = sub.add_parser("sources", help="the catalogue's production locations")
    ssub = s.add_subparsers(dest="sources_command", required=True)
    c = ssub.add_parser("check", help="probe every production location and compare its layout with the catalogue")
    c.add_argument("--source", action="append", help="only this source (repeatable)")
    c.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default 20)")
    c.set_defaults(func=cmd_sources_check)

    s = sub.add_parser("publish", help="publish the extracts of a region")
    s.add_argument("--region", action="append", help="region code (repeatable; default: all)")
    s.add_argument("--keep", type=int, default=10, help="versions to keep (default 10)")
    s.add_argument("--secrecy-threshold", type=int, default=None,
                   help="statistical secrecy threshold for counts (default QPVHUB_SECRECY_THRESHOLD or 11)")
    s.add_argument("--generation", type=int, choices=[2015, 2024], default=None,
                   help="QPV list to describe (default: the newest loaded for the region)")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("share", help="time-limited download URLs (S3 presigned) for restricted products")
    s.add_argument("target", help="a product name (with --region) or an object key")
    s.add_argument("--region", help="region code, with a product name")
    s.add_argument("--days", type=float, default=7, help="validity in days, at most 7 (default 7)")
    s.set_defaults(func=cmd_share)

    s = sub.add_parser("region", help="manage the regions served (include/regions/)")
    rsub = s.add_subparsers(dest="region_command", required=True)
    r = rsub.add_parser("add", help="scaffold include/regions/<code>.yml from the COG")
    r.add_argument("code", help="INSEE region code, e.g. 28")
    r.add_argument("--bbox", help="lon_min,lat_min,lon_max,lat_max (EPSG:4326); default: from the commune "
                                  "outlines loaded in PostGIS")
    r.add_argument("--contact", help="contact e-mail of the regional data pole")
    r.set_defaults(func=cmd_region_add)

    s = sub.add_parser("health", help="exit 1 when a source is stale or never loaded")
    s.add_argument("--ignore-never", action="store_true", help="sources never loaded are not an error")
    s.set_defaults(func=cmd_health)

    s = sub.add_parser("status", help="freshness of each source: state, last run, age, rows, last error")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("api", help="serve the OGC API (Features, vector Tiles) over the published layers")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.set_defaults(func=cmd_api)

    s = sub.add_parser("demo", help="the whole chain on the bundled real data")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except QpvhubError as exc:
        if args.debug:
            raise
        print(f"qpvhub {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
