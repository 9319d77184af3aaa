"""A private PostgreSQL + PostGIS cluster started on demand from the local binaries.

Used when `AIRFLOW_CONN_QPVHUB_POSTGIS` is unset (demo) and by the test fixtures. It listens on
127.0.0.1 on a free port (5432 may be a system server), with fsync off: a throwaway workspace, never
production. It is not open to the machine's other accounts: password authentication (scram-sha-256)
only, with generated secrets in mode-0600 files under `<root>/secrets/` — one for the administrator
(`postgres`: the pipeline, which creates the extension and roles, then acts as `qpvhub_loader`) and
one for the read-only `qpvhub_analyst`.

As root it runs as user `postgres`, as PostgreSQL requires. When that user cannot reach `<root>` (a
clone under /root, whose mode is 700), the cluster lives in `/var/lib/qpvhub/<id>/`, owned by
`postgres` and mode 700, and `<root>/location` records where; `destroy()` (`make clean`) removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qpvhub.platform.errors import ConfigError
from qpvhub.platform.files import private_dir, write_private
from qpvhub.platform.settings import Paths, Settings

ROLES = ("postgres", "qpvhub_analyst", "qpvhub_api")


def find_bindir(configured: Path | None = None) -> Path:
    """Locate PostgreSQL server binaries whose share dir has the PostGIS extension (`configured` first)."""
    candidates: list[Path] = []
    if configured:
        candidates.append(configured)
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
    """A cluster handle: `root` (in the project) holds the port, the secrets and, where the server user
    can reach it, the cluster itself (data/, log, socket); else `root/location` names where it lives."""

    root: Path
    settings: Settings | None = None  # QPVHUB_SYSTEM_DIR, QPVHUB_PG_BINDIR; their defaults without

    @property
    def paths(self) -> Paths:
        return self.settings.paths if self.settings else Paths.model_construct()

    # ------------------------------------------------------------------ where things are
    @property
    def location(self) -> Path:
        """Where data/, the log and the socket are: `root` itself, or the recorded system directory."""
        recorded = self.root / "location"
        if recorded.exists():
            return Path(recorded.read_text().strip())
        return self.root

    @property
    def datadir(self) -> Path:
        return self.location / "data"

    @property
    def portfile(self) -> Path:
        return self.root / "port"

    @property
    def logfile(self) -> Path:
        return self.location / "postgres.log"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def password(self, user: str) -> str:
        """The role's generated secret (created on first use, mode 0600)."""
        if user not in ROLES:
            raise ConfigError(f"the embedded cluster has no password for {user!r} (roles: {', '.join(ROLES)})")
        path = self.password_file(user)
        if not path.exists():
            private_dir(self.secrets_dir)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    # ------------------------------------------------------------------ as the server's user
    def _as_owner(self, args: list[str]) -> subprocess.CompletedProcess:
        """Run a server binary, as `postgres` when we are root (PostgreSQL refuses to run as root)."""
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False)

    def _chown_for_postgres(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(p, pw.pw_uid, pw.pw_gid, follow_symlinks=False)

    def _server_reaches(self, path: Path) -> bool:
        return os.geteuid() != 0 or self._as_owner(["test", "-x", str(path)]).returncode == 0

    def _place(self) -> Path:
        """Decide (once) where the cluster lives; a root-only project directory sends it to QPVHUB_SYSTEM_DIR."""
        self.root.mkdir(parents=True, exist_ok=True)
        recorded = self.root / "location"
        if recorded.exists() or (self.root / "data" / "PG_VERSION").exists() or self._server_reaches(self.root):
            return self.location
        ident = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        base = self.paths.system_dir
        where = base / ident
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        where.mkdir(exist_ok=True)
        os.chmod(where, 0o700)
        self._chown_for_postgres(where)
        if not self._server_reaches(where):
            raise ConfigError(f"the embedded PostgreSQL runs as user postgres, who cannot reach {where}")
        recorded.write_text(f"{where}\n")
        return where

    def is_running(self) -> bool:
        if not (self.datadir / "postmaster.pid").exists():
            return False
        res = self._as_owner([str(find_bindir(self.paths.pg_bindir) / "pg_ctl"), "status", "-D", str(self.datadir)])
        return res.returncode == 0

    def port(self) -> int:
        return int(self.portfile.read_text().strip())

    def uri(self, dbname: str = "qpvhub", user: str = "postgres") -> str:
        """Connection URI with the role's password (the secret file is the only other place it is)."""
        return f"postgresql://{user}:{self.password(user)}@127.0.0.1:{self.port()}/{dbname}"

    # ------------------------------------------------------------------ life cycle
    def start(self) -> str:
        """Initialise if needed, start if stopped, create database `qpvhub` with PostGIS; return its URI."""
        bindir = find_bindir(self.paths.pg_bindir)
        location = self._place()
        admin = self.password("postgres")
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            self._chown_for_postgres(location)
            os.chmod(self.datadir, 0o700)
            pwfile = location / ".initdb-pw"
            write_private(pwfile, admin + "\n")
            self._chown_for_postgres(pwfile)
            try:
                res = self._as_owner([str(bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                                      "--locale=C.UTF-8"])
            finally:
                pwfile.unlink(missing_ok=True)
            if res.returncode != 0:
                raise ConfigError(f"initdb failed in {self.datadir}:\n{res.stderr.strip()}")
        if not self.is_running():
            port = free_port()
            self.portfile.write_text(f"{port}\n")
            self._chown_for_postgres(location)
            opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {location} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
                    "-c password_encryption=scram-sha-256")
            res = self._as_owner([str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.datadir),
                                  "-l", str(self.logfile), "-o", opts])
            if res.returncode != 0:
                log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
                raise ConfigError(f"could not start the embedded PostgreSQL in {self.datadir}:\n"
                                  f"{res.stderr.strip()}\n{log}")
        self._secure(admin)
        self.ensure_database("qpvhub")
        return self.uri("qpvhub")

    def _secure(self, admin: str) -> None:
        """Passwords for the administrator and the analyst; a cluster made with `trust` (older qpvhub)
        gets them and a scram-only pg_hba.conf, reloaded."""
        import psycopg
        from psycopg import sql

        hba = self.datadir / "pg_hba.conf"
        text = self._as_owner(["cat", str(hba)]).stdout if os.geteuid() == 0 else hba.read_text()
        legacy = bool(re.search(r"^\s*(local|host)\S*\s.*\btrust\s*$", text, re.MULTILINE))
        uri = (f"postgresql://postgres@127.0.0.1:{self.port()}/postgres" if legacy
               else f"postgresql://postgres:{admin}@127.0.0.1:{self.port()}/postgres")
        with psycopg.connect(uri, autocommit=True) as conn:
            if legacy:
                conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(admin)))
            for role in ROLES[1:]:  # the analyst, the API server
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    # as the migrations create them; created here first so that they can be given a password
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                                         ).format(sql.Identifier(role)))
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                         sql.Literal(self.password(role))))
        if legacy:
            secured = re.sub(r"\btrust\s*$", "scram-sha-256", text, flags=re.MULTILINE)
            tmp = self.location / ".pg_hba.conf.new"
            tmp.write_text(secured)
            self._chown_for_postgres(tmp)
            self._as_owner(["cp", str(tmp), str(hba)])
            tmp.unlink(missing_ok=True)
            self._as_owner([str(find_bindir(self.paths.pg_bindir) / "pg_ctl"), "reload", "-D", str(self.datadir)])

    def ensure_database(self, name: str, template: str = "template1") -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))

    def stop(self) -> None:
        if self.datadir.exists() and self.is_running():
            self._as_owner([str(find_bindir(self.paths.pg_bindir) / "pg_ctl"), "stop", "-m", "fast", "-w", "-D",
                            str(self.datadir)])

    def destroy(self) -> None:
        """Stop the server and remove the cluster, wherever it lives, and its secrets."""
        self.stop()
        location = self.location
        if location != self.root:
            shutil.rmtree(location, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m qpvhub.platform.embedded stop|destroy|analyst-uri <root>` (make clean, the README)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("stop", "destroy", "analyst-uri", "api-uri"):
        print("usage: python -m qpvhub.platform.embedded stop|destroy|analyst-uri|api-uri <cluster root>",
              file=sys.stderr)
        return 2
    cluster = EmbeddedCluster(Path(args[1]), Settings.load())
    if args[0] == "analyst-uri":
        print(cluster.uri("qpvhub", "qpvhub_analyst"))
        return 0
    if args[0] == "api-uri":
        print(cluster.uri("qpvhub", "qpvhub_api"))
    elif args[0] == "destroy":
        cluster.destroy()
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
