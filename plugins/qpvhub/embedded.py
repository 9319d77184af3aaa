"""A private PostgreSQL + PostGIS cluster started on demand from the local binaries.

Used when `AIRFLOW_CONN_QPVHUB_POSTGIS` is unset (demo) and by the test fixtures. It listens on
127.0.0.1 on a free port (5432 may be a system server), with trust auth and fsync off: it is a
throwaway workspace, never production. As root, it runs as user `postgres`, as PostgreSQL requires.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qpvhub.errors import ConfigError


def find_bindir() -> Path:
    """Locate PostgreSQL server binaries whose share dir has the PostGIS extension."""
    candidates: list[Path] = []
    if os.environ.get("QPVHUB_PG_BINDIR"):
        candidates.append(Path(os.environ["QPVHUB_PG_BINDIR"]))
    lib = Path("/usr/lib/postgresql")
    if lib.is_dir():
        versions = sorted((p for p in lib.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates += [v / "bin" for v in versions]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    for bindir in candidates:
        if not (bindir / "initdb").exists():
            continue
        version = bindir.parent.name
        share = Path("/usr/share/postgresql") / version / "extension" / "postgis.control"
        if share.exists() or not version.isdigit():
            return bindir
    raise ConfigError(
        "no PostgreSQL server with PostGIS found for the embedded database: install "
        "postgresql-15-postgis-3 (apt-get install -y postgresql-15-postgis-3) or set AIRFLOW_CONN_QPVHUB_POSTGIS"
    )


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedCluster:
    """A cluster directory `root` holding data/, the port file and the log."""

    root: Path

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def portfile(self) -> Path:
        return self.root / "port"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def _as_owner(self, args: list[str]) -> subprocess.CompletedProcess:
        """Run a server binary, as `postgres` when we are root (PostgreSQL refuses to run as root)."""
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False)

    def _chown_for_postgres(self) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam("postgres")
        for path in [self.root, *self.root.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)

    def is_running(self) -> bool:
        if not (self.datadir / "postmaster.pid").exists():
            return False
        res = self._as_owner([str(find_bindir() / "pg_ctl"), "status", "-D", str(self.datadir)])
        return res.returncode == 0

    def port(self) -> int:
        return int(self.portfile.read_text().strip())

    def uri(self, dbname: str = "qpvhub", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port()}/{dbname}"

    def start(self) -> str:
        """Initialise if needed, start if stopped, create database `qpvhub` with PostGIS; return its URI."""
        bindir = find_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and self._as_owner(["test", "-x", str(self.root)]).returncode != 0:
            raise ConfigError(f"the embedded PostgreSQL runs as user postgres, who cannot reach {self.root}: "
                              "set QPVHUB_HOME to a directory whose parents are world-searchable (chmod o+x)")
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            self._chown_for_postgres()
            os.chmod(self.datadir, 0o700)
            res = self._as_owner([str(bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
            if res.returncode != 0:
                raise ConfigError(f"initdb failed in {self.datadir}:\n{res.stderr.strip()}")
        if not self.is_running():
            port = free_port()
            self.portfile.write_text(f"{port}\n")
            self._chown_for_postgres()
            opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            res = self._as_owner([str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.datadir),
                                  "-l", str(self.logfile), "-o", opts])
            if res.returncode != 0:
                log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
                raise ConfigError(f"could not start the embedded PostgreSQL in {self.datadir}:\n"
                                  f"{res.stderr.strip()}\n{log}")
        self.ensure_database("qpvhub")
        return self.uri("qpvhub")

    def ensure_database(self, name: str, template: str = "template1") -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))

    def stop(self) -> None:
        if self.is_running():
            self._as_owner([str(find_bindir() / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.datadir)])
