"""`make airflow`: Airflow 3 on this machine, without Docker — api-server, scheduler and dag-processor
with a PostgreSQL metadata database (the `airflow` database of qpvhub's PostgreSQL), LocalExecutor.

    python -m qpvhub.airflow.native start [--port 8080]   # waits until /api/v2/monitor/health is healthy
    python -m qpvhub.airflow.native stop                  # stops what `start` started (pid file)

State lives in `$QPVHUB_HOME/airflow/`: airflow.cfg-free environment (`env.sh`, sourceable), logs,
`pids.json`, and the generated admin password.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from qpvhub.platform.db import migrate, resolve_uri
from qpvhub.platform.errors import QpvhubError
from qpvhub.platform.files import write_private
from qpvhub.platform.settings import Settings, inherited_environment

PROCESSES = ("api-server", "scheduler", "dag-processor")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metadata_uri(qpvhub_uri: str, dbname: str) -> str:
    """The metadata database next to qpvhub's (created when missing), as a SQLAlchemy URI."""
    with psycopg.connect(qpvhub_uri, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    uri = urlunsplit(urlsplit(qpvhub_uri)._replace(path="/" + dbname))
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


def environment(settings: Settings, home: Path, port: int, qpvhub_uri: str, metadata_db: str = "airflow", *,
                executor: str = "LocalExecutor", broker: str | None = None) -> dict[str, str]:
    """Every setting of the native deployment, as environment variables (also written to env.sh)."""
    secret_file = home / "secrets.json"
    if not secret_file.exists():
        write_private(secret_file, json.dumps({"jwt": secrets.token_urlsafe(32), "admin": secrets.token_urlsafe(12)}))
    sec = json.loads(secret_file.read_text())
    write_private(home / "passwords.json", json.dumps({"admin": sec["admin"]}))
    meta = _metadata_uri(qpvhub_uri, metadata_db)
    celery = {
        "AIRFLOW__CELERY__BROKER_URL": broker or "redis://127.0.0.1:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta.replace("+psycopg2", "", 1),
    } if executor == "CeleryExecutor" else {}
    return {
        **celery,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "2",  # 2 cores
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",  # a new DAG file is seen within 30 s
        # an unchanged file re-parsed every 5 min, not 30 s, and its statistics every 30 min: an idle deployment's
        # dag-processor log grows by a few lines an hour, not by a parse report every 30 s
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "1800",
        # each parse wrote three INFO lines per DAG (bulk-write, next run info): warnings and errors stay
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS":
            "airflow.models.dag=WARNING,airflow.serialization.definitions.dag=WARNING",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "QPVHUB_DB_POOL": "qpvhub_db",
        "AIRFLOW_CONN_QPVHUB_POSTGIS": qpvhub_uri,
        "QPVHUB_HOME": str(settings.home),
        **({"AIRFLOW_CONN_QPVHUB_STORE": settings.connections.store} if settings.connections.store else {}),
    }


def _health(base: str) -> dict:
    import requests

    return requests.get(f"{base}/api/v2/monitor/health", timeout=5).json()


def _healthy(h: dict) -> bool:
    return all(h.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "dag_processor"))


def start(port: int | None = None, timeout: float = 180, *, executor: str = "LocalExecutor",
          broker: str | None = None, workers: int = 1, concurrency: int = 2) -> dict:
    """Start the processes (refuses if they already run) and wait until healthy. With CeleryExecutor, `workers`
    Celery workers are started too, each running `concurrency` tasks at once (broker: Redis on 127.0.0.1:6379
    unless `broker`); several workers on one host each get their own name and log-server port."""
    settings = Settings.load()
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    pids_file = home / "pids.json"
    if pids_file.exists() and any(_alive(p) for p in json.loads(pids_file.read_text())["pids"].values()):
        raise QpvhubError(f"Airflow already runs (pids in {pids_file}); `make airflow-stop` first")
    port = port or _free_port()
    uri = resolve_uri(settings)
    migrate(uri, settings.sql_dir)  # the deployment's init step: tasks never migrate
    env = inherited_environment(**environment(settings, home, port, uri, settings.scheduling.airflow_db,
                                              executor=executor, broker=broker))
    write_private(home / "env.sh", "".join(f"export {k}='{v}'\n" for k, v in env.items()
                                           if k.startswith(("AIRFLOW", "QPVHUB"))))
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([*airflow, "pools", "set", "qpvhub_db", "2", "heavy qpvhub database tasks"], env=env,
                   check=True, capture_output=True, timeout=120)
    pids = {}
    commands: dict[str, tuple[list[str], dict[str, str]]] = {name: ([name], {}) for name in PROCESSES}
    commands["api-server"][0].extend(["--port", str(port)])
    if executor == "CeleryExecutor":
        for i in range(1, workers + 1):
            name = "celery-worker" if workers == 1 else f"celery-worker-{i}"
            commands[name] = (["celery", "worker", "--concurrency", str(concurrency),
                               "--celery-hostname", f"qpvhub{i}@%h"],
                              {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port())} if i > 1 else {})
    for name, (cmd, extra) in commands.items():
        log = (home / f"{name}.log").open("ab")
        args = [*airflow, *cmd]
        pids[name] = subprocess.Popen(args, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True).pid
    base = f"http://127.0.0.1:{port}"
    pids_file.write_text(json.dumps({"pids": pids, "url": base}))
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = _health(base)
            if _healthy(last):
                break
        except Exception as exc:  # not listening yet
            last = exc
        dead = [n for n, p in pids.items() if not _alive(p)]
        if dead:
            stop()
            raise QpvhubError(f"Airflow {', '.join(dead)} exited; see {home}/<process>.log")
        time.sleep(1)
    else:
        stop()
        raise QpvhubError(f"Airflow not healthy after {timeout:.0f}s: {last}; logs in {home}")
    return {"url": base, "user": "admin", "password": json.loads((home / "passwords.json").read_text())["admin"],
            "home": str(home), "pids": pids}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def stop(timeout: float = 30) -> list[str]:
    """Stop the processes `start` recorded (their whole process groups); return the names stopped."""
    pids_file = Settings.load().home / "airflow" / "pids.json"
    if not pids_file.exists():
        return []
    pids = json.loads(pids_file.read_text())["pids"]
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.5)
    for pid in pids.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pids_file.unlink()
    return list(pids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qpvhub-airflow", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--executor", default="LocalExecutor", choices=["LocalExecutor", "CeleryExecutor"])
    s.add_argument("--broker", default=None, help="Celery broker URL (default redis://127.0.0.1:6379/0)")
    s.add_argument("--workers", type=int, default=1, help="Celery workers on this host (CeleryExecutor)")
    s.add_argument("--concurrency", type=int, default=2, help="tasks each Celery worker runs at once")
    sub.add_parser("stop")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            info = start(args.port, executor=args.executor, broker=args.broker, workers=args.workers,
                         concurrency=args.concurrency)
            print(f"Airflow is up: {info['url']}  (user {info['user']}, password {info['password']})\n"
                  f"CLI: source {info['home']}/env.sh && airflow dags list\nStop: make airflow-stop")
        else:
            print("stopped: " + (", ".join(stop()) or "nothing was running"))
    except QpvhubError as exc:
        print(f"qpvhub airflow: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
