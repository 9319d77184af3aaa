"""`qpvhub` command line: the same functions the DAGs run, without a scheduler.

Errors are printed as one clear message (source, file, line/feature, column) and exit non-zero;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qpvhub.platform.errors import QpvhubError
from qpvhub.platform.settings import Settings, quiet_libraries

log = logging.getLogger("qpvhub")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("great_expectations", "pyogrio", "urllib3", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_libraries()


def _env(args: argparse.Namespace):
    """The command's environment: its settings (read once by `main`), PostGIS (schema current) and the store."""
    from qpvhub.platform.env import Env

    return Env.from_settings(args.settings)


def _url_argument(url: str | None) -> str | None:
    """`--url` as the run will record it: a path (relative to the working directory) or file:// URL becomes the
    file:// URL of an existing file; a typo stops the command here, before any run is recorded for the source."""
    from urllib.parse import unquote, urlsplit

    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        return url  # http(s), s3: fetched (and a wrong scheme named) by the run
    path = Path(unquote(parts.path) if parts.scheme == "file" else url).expanduser().resolve()
    if not path.is_file():
        raise QpvhubError(f"--url {url}: no such file ({path}); nothing fetched, no run recorded")
    return path.as_uri()


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations (an explicit step: no command or task migrates on its own)."""
    from qpvhub.platform.db import migrate, resolve_uri

    applied = migrate(resolve_uri(args.settings), args.settings.sql_dir)
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date, nothing to apply")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from qpvhub.catalog.loader import load_catalog, load_order, resolve_source
    from qpvhub.ingest.parts import run_parts

    url = _url_argument(args.url)
    env = _env(args)
    if args.all:
        sources = load_order(load_catalog(env.settings.sources_dir))
    else:
        if not args.source:
            raise QpvhubError("name a source id or spec file, or use --all")
        sources = [resolve_source(args.source, env.settings.sources_dir)]
    failed = []
    for source in sources:  # in dependency order
        if args.sample and source.no_sample:
            print(f"→ {source.id}: no offline sample, not loaded: {source.no_sample}")
            continue
        if args.sample and getattr(args, "real_only", False) and source.sample_is_fixture:
            print(f"→ {source.id}: its bundled file is a FIXTURE (invented figures or positions), not loaded "
                  "for the demo's products")
            continue
        print(f"→ {source.id}: ingesting into {source.target.qualified} …", flush=True)
        run = run_parts(env, source, url=url, sample=args.sample, force=args.force,
                        release=getattr(args, "release", None), feed=getattr(args, "feed", None))
        for line in run.lines():
            print("  " + line.replace("\n", "\n  "))
        if run.failed and not source.collection:
            run.raise_if_failed()  # what depends on it would fail too: stop here, with its own error
        failed += run.failed
    if failed:
        raise QpvhubError(f"{len(failed)} part(s) failed (see above); the others were loaded")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a source's file against its suite without loading it; exit 1 when it fails."""

    from qpvhub.catalog.loader import resolve_source
    from qpvhub.ingest.pipeline import validate_only

    env = _env(args)
    source = resolve_source(args.source, env.settings.sources_dir)
    path = Path(args.file).resolve() if args.file else None
    if path is not None and not path.is_file():
        raise QpvhubError(f"no such file: {path}")
    staged, report = validate_only(env, source, path=path, url=_url_argument(args.url), sample=args.sample,
                                   release=getattr(args, "release", None))
    print(f"{source.id}: {staged.rows_read} rows read, {staged.rows_loaded} would load, "
          f"{staged.rows_rejected} rejected, {staged.rows_repaired} geometries repaired")
    if staged.translation:
        from qpvhub.ingest.cog import summary

        print(f"{source.id}: {summary(staged.translation)}")
    print(report.text())
    for r in report.results:
        if r.success:
            print(f"  ✓ {r.describe()}")
    print("VALID" if report.success else f"INVALID (policy {report.policy}: "
          f"{'would block the load' if report.policy == 'block' else 'would load with a warning'})")
    return 0 if report.success else 1


def cmd_indicators(args: argparse.Namespace) -> int:
    from qpvhub.indicators.runner import run_indicators

    written = run_indicators(_env(args), only=args.family or None, force=getattr(args, "force", False))
    for ind, n in written.items():
        print(f"  {ind}: {n} values" + ("" if n else f" (absent: {written.absent.get(ind, 'no value')})"))
    for check in written.checks:
        print(f"  check {check.line()}")
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    """Locate every row of a CSV (coordinates or addresses) against the QPV perimeters; counts only are printed."""
    from qpvhub.locate.geocode import Geocoder
    from qpvhub.locate.job import Spec, locate_file
    from qpvhub.platform.db import connect

    env = _env(args)
    cfg = env.settings.locate
    src = Path(args.input).resolve()
    if not src.is_file():
        raise QpvhubError(f"no such file: {src}")
    lists = [2024, *([2015] if args.liste_2015 else [])]
    spec = Spec(lon=args.lon, lat=args.lat, x=args.x, y=args.y, crs=args.crs, address=args.address or [],
                postcode=args.postcode, citycode=args.citycode, lists=lists,
                score_min=cfg.score_min if args.score_min is None else args.score_min,
                margin_m=cfg.margin_m if args.marge is None else args.marge)
    geocoder = Geocoder(cfg.geocoder_url, chunk_lines=cfg.chunk_lines, chunk_bytes=cfg.chunk_bytes,
                        rate=cfg.rate_per_s, timeout=env.settings.http.timeout) if spec.address else None
    dest = Path(args.output).resolve()
    with connect(env.uri) as conn:
        summary = locate_file(conn, src, dest, spec, geocoder=geocoder)
    print(f"{dest} : {summary.line()}")
    return 0


def cmd_partner_policy(args: argparse.Namespace) -> int:
    """Print a partner's MinIO policy: write its inbox, read its outbox, nothing else (`mc admin policy create`)."""
    from qpvhub.locate.partners import policy

    store = args.settings.store
    if store.kind != "s3":
        raise QpvhubError("a partner policy is for an S3 store (MinIO): AIRFLOW_CONN_QPVHUB_STORE of type aws")
    print(policy(store.bucket or "", args.partner, store.prefix))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from qpvhub.catalog.qpv_lists import load_qpv_lists
    from qpvhub.catalog.regions import deployment_regions
    from qpvhub.publish import publish_region

    env = _env(args)
    regions = deployment_regions(env.settings)
    if getattr(args, "generation", None) is not None:
        load_qpv_lists(env.settings.qpv_lists_path).get(args.generation)  # a list the registry knows
    wanted = args.region or sorted(regions)
    for code in wanted:
        if code not in regions:
            raise QpvhubError(f"unknown region {code!r}; known: {', '.join(sorted(regions))}")
    if not args.region:  # every region: those with no QPV loaded (a national deployment's partial data) are said
        from qpvhub.platform.db import connect
        from qpvhub.publish.profile import generations

        with connect(env.uri) as conn:
            empty = [c for c in wanted if not generations(conn, regions[c])]
        if empty:
            print(f"  no QPV loaded for region(s) {', '.join(empty)}: nothing to publish there")
        wanted = [c for c in wanted if c not in empty]
    for code in wanted:
        res = publish_region(env, regions[code], keep=args.keep, threshold=args.secrecy_threshold,
                             generation=getattr(args, "generation", None))
        for r in [res, *res.parts]:
            where = env.store.describe(f"published/{code}/{r.product}/latest/")
            label = f"region {code}" if r is res else f"  {r.product}"
            print(f"  {label}: {r.status} version {r.version}, QPV list {r.generation} → {where}")
            for v in r.withdrawn:
                print(f"    withdrawn version {v}: published under a weaker secrecy rule than threshold "
                      f"{args.secrecy_threshold or 'default'} now applies")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    """Print time-limited download URLs (S3 presigned, at most 7 days) for a product's latest files or a key."""
    env = _env(args)
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
    """Scaffold include/regions/<code>.yml from the COG (name, départements) and a bounding box; with --all, every
    region of the COG not served yet (a national deployment)."""
    from qpvhub.catalog.regions import scaffold_all, scaffold_region

    settings = args.settings
    if args.all:
        if args.code or args.bbox:
            raise QpvhubError("--all scaffolds every region from the COG: give no code and no --bbox")
        paths = scaffold_all(settings.regions_dir, settings.reference_dir, uri=_env(args).uri, contact=args.contact)
        boxed = sum("bbox:" in p.read_text(encoding="utf-8") for p in paths)
        print(f"wrote {len(paths)} region file(s) in {settings.regions_dir}: {', '.join(p.stem for p in paths)}"
              + (f" ({len(paths) - boxed} without a box: no commune outline loaded there)" if boxed < len(paths)
                 else ""))
        return 0
    if not args.code:
        raise QpvhubError("name a region code (e.g. 28), or use --all")
    bbox = None
    if args.bbox:
        try:
            bbox = tuple(float(x) for x in args.bbox.split(","))
        except ValueError:
            raise QpvhubError(f"--bbox {args.bbox!r}: expected lon_min,lat_min,lon_max,lat_max") from None
        if len(bbox) != 4:
            raise QpvhubError(f"--bbox {args.bbox!r}: expected four numbers")
    uri = None if bbox else _env(args).uri
    path = scaffold_region(args.code, settings.regions_dir, settings.reference_dir, bbox=bbox, contact=args.contact,
                           uri=uri)
    print(f"wrote {path}:\n{path.read_text(encoding='utf-8')}")
    print("Next: add or reuse sources for its départements (include/sources/), then `qpvhub ingest --all`; "
          "the Airflow dag-processor picks up the new publish DAG.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Freshness of every source against its schedule: state, last run, last confirmed load, age, rows."""
    from qpvhub.catalog.loader import load_catalog
    from qpvhub.ops.monitor import freshness, needs_attention, status_table

    env = _env(args)
    rows = freshness(env.uri, load_catalog(env.settings.sources_dir), stale_factor=env.settings.monitoring.stale_factor)
    print(status_table(rows))
    bad = needs_attention(rows)
    if bad:
        print(f"\n{len(bad)} source(s) need attention: " + ", ".join(f"{f.source_id} ({f.state})" for f in bad))
    return 0


def cmd_sources_check(args: argparse.Namespace) -> int:
    """Probe every production location and compare its layout with the catalogue; exit 1 on any problem."""
    from qpvhub.catalog.loader import load_catalog
    from qpvhub.catalog.regions import region_departements
    from qpvhub.ops.sources_check import check_sources

    settings = args.settings
    sources = load_catalog(settings.sources_dir)
    if args.source:
        unknown = sorted(set(args.source) - set(sources))
        if unknown:
            raise QpvhubError(f"unknown source(s) {unknown}; known: {', '.join(sorted(sources))}")
        sources = {k: v for k, v in sources.items() if k in args.source}
    previous = {}
    try:  # the last loads, to say what changed since; the check itself needs no database
        from qpvhub.ingest.runs import last_success
        from qpvhub.platform.env import Env

        env = Env.from_settings(settings)
        previous = {sid: p for sid in sources if (p := last_success(env, sid))}
    except Exception as exc:
        log.info("no database for the comparison with the last loads: %s", exc)
    probes = check_sources(sources, settings.publishers, timeout=args.timeout, previous=previous,
                           departements=sorted(region_departements(settings)))
    for p in probes:
        print(p.line() if p.reachable else f"{p.source_id:<20}  UNREACHABLE  {p.status}"
              + (f"  ({p.location})" if p.location else ""))
    bad = [p for p in probes if not p.ok]
    print(f"\n{len(probes) - len(bad)}/{len(probes)} sources reachable with the declared layout")
    return 1 if bad else 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 1 when a source is stale (or never loaded, unless --ignore-never): for cron and monitoring."""
    from qpvhub.catalog.loader import load_catalog
    from qpvhub.ops.monitor import freshness, needs_attention

    env = _env(args)
    bad = needs_attention(freshness(env.uri, load_catalog(env.settings.sources_dir),
                                    stale_factor=env.settings.monitoring.stale_factor), ignore_never=args.ignore_never)
    for f in bad:
        print(f"{f.source_id}: {f.state}" + (
            f" (last confirmed {f.age} ago, tolerance {f.tolerance})" if f.state == "stale" else
            f" ({f.last_error})" if f.state == "failing" and f.last_error else
            f" ({f.data_note})" if f.data_note else ""))
    print("healthy" if not bad else f"{len(bad)} source(s) not fresh")
    return 1 if bad else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the bundled real data with the configured (or embedded) PostGIS and store."""
    from qpvhub.catalog.qpv_lists import load_qpv_lists
    from qpvhub.catalog.regions import deployment_regions
    t0 = time.monotonic()
    env = _env(args)
    print(f"PostGIS: {_safe(env.uri)}\nStore:   {env.store.describe('')}\n")
    base = {"settings": args.settings}
    cmd_ingest(argparse.Namespace(**base, all=True, source=None, url=None, sample=True, force=False, release=None,
                                  real_only=True))
    print("→ indicators")
    cmd_indicators(argparse.Namespace(**base, family=None, force=False))
    print("→ publish")
    cmd_publish(argparse.Namespace(**base, region=["53"], keep=10, secrecy_threshold=None))
    from qpvhub.platform.db import connect

    with connect(env.uri) as conn:
        n_qpv = conn.execute("SELECT count(*) FROM ref.qpv").fetchone()[0]
        n_com = conn.execute("SELECT count(*) FROM ref.commune").fetchone()[0]
        n_ind = conn.execute("SELECT count(*) FROM mart.qpv_indicator").fetchone()[0]
        region = deployment_regions(env.settings)["53"]
        gen = conn.execute("SELECT max(generation) FROM ref.qpv WHERE dep = ANY(%s)",
                           (region.departements,)).fetchone()[0]
    took = f"{time.monotonic() - t0:.1f}".replace(".", ",")
    print(f"\nTerminé en {took} s : {n_qpv} QPV, {n_com} communes, {n_ind} valeurs d'indicateurs.")
    if gen is not None:
        note = load_qpv_lists(env.settings.qpv_lists_path).get(gen).note_fr
        print(f"Les produits de la région {region.name} décrivent la {note} : ce sont les seuls périmètres de la "
              "région disponibles hors ligne (la liste 2024 de Provence-Alpes-Côte d'Azur ne sert qu'aux tests).")
    print("\n".join(["", "À ouvrir maintenant :", *next_steps(env, "53")]))
    return 0


def _where(env, key: str) -> str:
    """An object of the store as a person opens it: a file:// address for the local store, else its URL."""
    shown = env.store.describe(key)
    return Path(shown).as_uri() if shown.startswith("/") else shown


def next_steps(env, region: str) -> list[str]:
    """What a newcomer opens after the demo, in French: the region page, a fiche, the extracts, the analysts'
    connection (never its password: where its secret file is), the API and Airflow."""
    latest = f"published/{region}/qpv_profil/latest/"
    fiches = sorted(k for k in env.store.list(latest + "qpv/") if k.endswith(".html"))
    lines = [f"  page de la région         {_where(env, f'published/{region}/index.html')}"]
    if fiches:
        lines.append(f"  une fiche quartier        {_where(env, fiches[0])} (et sa version PDF)")
    lines.append(f"  les extraits              {env.store.describe(latest)} (CSV, GeoJSON, GeoPackage, GeoParquet ; "
                 "vérifier : sha256sum -c SHA256SUMS)")
    lines += [f"  la base, en lecture       {line}" for line in _analyst_access(env)]
    lines += ["  l'API OGC, pour QGIS      make api (puis « Ajouter une couche WFS / OGC API – Features »)",
              "  Airflow                   make airflow (l'adresse et l'identifiant s'affichent)"]
    return lines


def _analyst_access(env) -> list[str]:
    """How to connect as the read-only analyst, without printing the password: the embedded cluster's is in a
    secret file (mode 0600) the command reads; a configured server's is the administrator's to give."""
    import re
    from urllib.parse import urlsplit

    if not env.settings.postgis_uri:
        from qpvhub.platform.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(env.settings.home / "pg", env.settings)
        secret = cluster.password_file("qpvhub_analyst")
        cluster.password("qpvhub_analyst")  # created if missing, never printed
        return [f'PGPASSWORD="$(cat {secret})" psql "host=127.0.0.1 port={cluster.port()} dbname=qpvhub '
                'user=qpvhub_analyst"',
                f"(mot de passe dans {secret}, lisible par vous seul)"]
    parts = urlsplit(env.uri)
    host = re.sub(r"^.*@", "", parts.netloc)
    return [f'psql "postgresql://qpvhub_analyst@{host}{parts.path}" (mot de passe : celui que l\'administrateur '
            "a donné au rôle qpvhub_analyst)"]


def cmd_api(args: argparse.Namespace) -> int:
    """The OGC API (Features and vector Tiles) over the published-grade schema `pub`, in the foreground.

    Served by tipg from its own virtualenv (`.venv-api`, made by `make api`: its FastAPI is newer than
    Airflow's, which must not be changed for it), connecting as `qpvhub_api`, which reads `pub` only."""
    import socket

    from qpvhub.serve.api import serve

    env = _env(args)  # the database is up and migrated
    python = str(env.settings.api.python or env.settings.project / ".venv-api" / "bin" / "python")
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
    return serve(env, Path(python), host, port)


def _safe(uri: str) -> str:
    import re

    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", uri)


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

    s = sub.add_parser("locate", help="is this address in a QPV? every row of a CSV, with its QPV and statut",
                       description="Every row of IN.csv written to OUT.csv with, for the 2024 list (and the 2015 one "
                                   "with --liste-2015), the QPV holding it, its name, the signed distance to the "
                                   "nearest boundary (m, positive inside) and a statut: dans_qpv, hors_qpv, "
                                   "a_verifier, non_localise. Addresses go to IGN's Géoplateforme geocoder; "
                                   "nothing of the file is kept anywhere else.")
    s.add_argument("input", metavar="IN.csv")
    s.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    s.add_argument("--lon", help="longitude column (WGS84)")
    s.add_argument("--lat", help="latitude column (WGS84)")
    s.add_argument("--x", help="x column, in --crs")
    s.add_argument("--y", help="y column, in --crs")
    s.add_argument("--crs", type=int, default=2154, help="EPSG code of --x/--y (default 2154, Lambert-93)")
    s.add_argument("--address", nargs="+", metavar="COL", help="address column(s), joined by the geocoder")
    s.add_argument("--postcode", metavar="COL", help="postcode column (a filter of the geocoder)")
    s.add_argument("--citycode", metavar="COL", help="INSEE commune code column (a filter of the geocoder)")
    s.add_argument("--liste-2015", action="store_true", help="answer for the 2015 list too")
    s.add_argument("--score-min", type=float, help="geocoding score under which a row is a_verifier (default 0.7)")
    s.add_argument("--marge", type=float, help="distance to a boundary under which a row is a_verifier (m, default 20)")
    s.set_defaults(func=cmd_locate)

    s = sub.add_parser("partner", help="partners' inbox and outbox in the store")
    psub = s.add_subparsers(dest="partner_command", required=True)
    ps = psub.add_parser("policy", help="print the partner's MinIO policy (its inbox and outbox only)")
    ps.add_argument("partner", help="partner id: lower-case letters, digits, - and _ (its prefix partners/<id>/)")
    ps.set_defaults(func=cmd_partner_policy)

    s = sub.add_parser("indicators", help="compute the indicators mart")
    s.add_argument("--family", action="append", help="only this family (repeatable)")
    s.add_argument("--force", action="store_true", help="swap the mart in even if it loses QPV or indicators a "
                                                        "region had (a source withdrawn on purpose)")
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
    s.add_argument("--generation", type=int, default=None,
                   help="QPV list to describe, by its year (include/qpv_lists.yml; default: the newest loaded for "
                        "the region)")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("share", help="time-limited download URLs (S3 presigned) for restricted products")
    s.add_argument("target", help="a product name (with --region) or an object key")
    s.add_argument("--region", help="region code, with a product name")
    s.add_argument("--days", type=float, default=7, help="validity in days, at most 7 (default 7)")
    s.set_defaults(func=cmd_share)

    s = sub.add_parser("region", help="manage the regions served (include/regions/)")
    rsub = s.add_subparsers(dest="region_command", required=True)
    r = rsub.add_parser("add", help="scaffold include/regions/<code>.yml from the COG")
    r.add_argument("code", nargs="?", help="INSEE region code, e.g. 28")
    r.add_argument("--all", action="store_true", help="every region of the COG not served yet (national deployment)")
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

    s = sub.add_parser("migrate", help="apply the database migrations (the deployment's init step)")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("config", help="the configuration: its reference, the JSON Schemas of the YAML files")
    csub = s.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("docs", help="print docs/configuration.md (every variable, from the settings classes)")
    c.set_defaults(func=cmd_config_docs)
    c = csub.add_parser("schemas", help="write the JSON Schemas of the catalogue and QPV lists files")
    c.add_argument("--check", action="store_true", help="exit 1 when a written schema is not current")
    c.set_defaults(func=cmd_config_schemas)
    return p


def cmd_config_docs(args: argparse.Namespace) -> int:
    from qpvhub.platform.settings import reference_markdown

    print(reference_markdown(), end="")
    return 0


def cmd_config_schemas(args: argparse.Namespace) -> int:
    """include/sources/schema.json and include/qpv_lists.schema.json, generated from the pydantic models."""
    from qpvhub.catalog.schema import write_schemas

    stale = write_schemas(args.settings.include_dir, check=args.check)
    for path in stale:
        print(f"{path}: {'not current' if args.check else 'written'}")
    return 1 if args.check and stale else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        args.settings = Settings.load()  # read once, here; passed down
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
