"""Object storage behind one small interface: S3 protocol (MinIO) through `minio`, or a local directory.

Keys are `/`-separated, relative (`raw/qpv_2015/2026-11-28/<run>/file.geojson`). Writes of one
object are atomic on both backends (S3 PUT; temp file + rename locally).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from qpvhub.platform.errors import ConfigError, QpvhubError
from qpvhub.platform.settings import StoreSettings

MAX_PRESIGN_DAYS = 7


class StoreError(QpvhubError):
    """The object store refused or failed an operation."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    return key


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Store(Protocol):
    """What the pipeline needs from object storage."""

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream", *,
                 consume: bool = False) -> None: ...
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def describe(self, key: str) -> str: ...
    def modified(self, key: str) -> float: ...
    def expire(self, prefix: str, days: int) -> None: ...


class LocalStore:
    """A directory on disk standing in for a bucket (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def describe(self, key: str) -> str:
        return str(self.root / key.rstrip("/")) + ("/" if key.endswith("/") or not key else "")

    PRIVATE = ("partners/",)  # partners' files (addresses): their owner only; everything else is served

    def _parent(self, key: str) -> Path:
        """The object's folder, created readable by a web server (0755), or private (0700) under PRIVATE."""
        dest = self._path(key)
        mode = 0o700 if key.startswith(self.PRIVATE) else 0o755
        dest.parent.mkdir(parents=True, exist_ok=True)
        d = dest.parent
        while d != self.root and d.is_relative_to(self.root):  # whatever the umask
            if d.stat().st_mode & 0o777 != mode:
                os.chmod(d, mode)
            d = d.parent
        return dest

    def _mode(self, key: str) -> int:
        """Published pages, extracts and archives: 0644 (a web server running as another account serves them);
        a partner's file: 0600. Secrets never go through the store."""
        return 0o600 if key.startswith(self.PRIVATE) else 0o644

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream", *,
                 consume: bool = False) -> None:
        """Copy `path` in, atomically (a temporary name, then a rename). With `consume` the caller gives the file
        up (it never reads or writes it again, e.g. a run's downloaded raw file): on the same filesystem it is
        renamed in, not copied — a national archive of hundreds of MB is written once, not twice."""
        dest = self._parent(key)
        if consume:
            try:
                os.chmod(path, self._mode(key))
                os.replace(path, dest)
                return
            except OSError:  # another filesystem: copied below
                pass
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.chmod(tmp, self._mode(key))  # mkstemp makes 0600 whatever the umask
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        dest = self._parent(key)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, self._mode(key))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"no object {key!r} in {self.root}") from exc

    def download(self, key: str, path: Path) -> None:
        """The object at `path`: a hard link when both are on one filesystem — objects are only ever written
        by rename, never in place, and readers do not write to their input —, else a streamed copy (a
        national archive is hundreds of MB: never whole in memory)."""
        src = self._path(key)
        if not src.is_file():
            raise StoreError(f"no object {key!r} in {self.root}")
        try:
            os.link(src, path)
        except OSError:  # another filesystem, or links not allowed there
            shutil.copyfile(src, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """The keys starting with `prefix`, sorted. Only the prefix's folder is walked: the whole store holds every
        run's Data Docs (13,000 files after a national GTFS collection), and a publication lists a dozen times."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / folder if folder and all(p not in ("", ".", "..") for p in folder.split("/")) else self.root
        out = []
        for dirpath, _, files in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if not name.startswith(".tmp-") and key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def modified(self, key: str) -> float:
        """When the object was written (POSIX seconds)."""
        return self._path(key).stat().st_mtime

    def expire(self, prefix: str, days: int) -> None:
        """A directory has no lifecycle rule: the caller sweeps (qpvhub.locate.partners.sweep)."""


class S3Store:
    """A bucket on MinIO or any S3 endpoint, through the `minio` client."""

    def __init__(self, settings: StoreSettings, *, create_bucket: bool = True, retries: int = 3) -> None:
        import urllib3
        from minio import Minio

        self.bucket = settings.bucket or ""
        self.prefix = settings.prefix
        self.endpoint = settings.endpoint
        self.client = Minio(
            settings.endpoint or "",
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,
            # bounded timeouts and retries: a dead endpoint fails in seconds, not minutes
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=10, read=300),
                retries=urllib3.Retry(total=retries, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504)),
            ),
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        import urllib3
        from minio.error import S3Error

        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            raise StoreError(f"bucket {self.bucket!r} at {self.endpoint}: {exc.code} {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # unreachable: name the endpoint, keep the cause
            raise StoreError(f"object store {self.endpoint} unreachable: {exc}") from exc

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return f"s3://{self.bucket}/{full}"

    def _wrap(self, what: str, key: str, fn):
        """Run a client call; S3 refusals and an unreachable endpoint become a StoreError naming the key."""
        import urllib3
        from minio.error import InvalidResponseError, S3Error

        try:
            return fn()
        except S3Error as exc:
            raise StoreError(f"{what} {self.describe(key)}: {exc.code} {exc.message}") from exc
        except InvalidResponseError as exc:  # a refusal without an S3 XML body (proxy, policy engine)
            status = re.search(r"Response code: (\d+)", str(exc))
            raise StoreError(f"{what} {self.describe(key)}: refused by the object store "
                             f"(HTTP {status.group(1) if status else '?'})") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreError(f"{what} {self.describe(key)}: object store {self.endpoint} unreachable: "
                             f"{type(exc).__name__}") from exc

    def presigned_get(self, key: str, days: float) -> str:
        """A time-limited download URL for one object (S3 caps the validity at 7 days)."""
        import datetime as dt

        if not 0 < days <= MAX_PRESIGN_DAYS:
            raise StoreError(f"presigned URLs last at most {MAX_PRESIGN_DAYS} days (S3 limit); asked {days}")
        if not self.exists(key):
            raise StoreError(f"no object {self.describe(key)} to share")
        return self._wrap("presign", key, lambda: self.client.presigned_get_object(
            self.bucket, self._key(key), expires=dt.timedelta(days=days)))

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream", *,
                 consume: bool = False) -> None:
        """Upload `path` (`consume` changes nothing here: an upload is a copy)."""
        self._wrap("upload to", key, lambda: self.client.fput_object(
            self.bucket, self._key(key), str(path), content_type=content_type))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._wrap("upload to", key, lambda: self.client.put_object(
            self.bucket, self._key(key), io.BytesIO(data), len(data), content_type=content_type))

    def get_bytes(self, key: str) -> bytes:
        def _get() -> bytes:
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._wrap("read of", key, _get)

    def download(self, key: str, path: Path) -> None:
        self._wrap("download of", key, lambda: self.client.fget_object(self.bucket, self._key(key), str(path)))

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise StoreError(f"stat of {self.describe(key)}: {exc.code} {exc.message}") from exc

    def iter_keys(self, prefix: str) -> Iterator[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        for obj in self.client.list_objects(self.bucket, prefix=full or None, recursive=True):
            yield obj.object_name[strip:]

    def list(self, prefix: str) -> list[str]:
        return sorted(self._wrap("listing of", prefix or "x", lambda: list(self.iter_keys(prefix))))

    def delete(self, key: str) -> None:
        self._wrap("delete of", key, lambda: self.client.remove_object(self.bucket, self._key(key)))

    def modified(self, key: str) -> float:
        """When the object was written (POSIX seconds)."""
        return self._wrap("stat of", key, lambda: self.client.stat_object(
            self.bucket, self._key(key))).last_modified.timestamp()

    def expire(self, prefix: str, days: int) -> None:
        """A lifecycle rule on the bucket: objects under `prefix` are deleted by the store `days` after their
        writing (MinIO applies it; the sweep is the belt to its braces)."""
        from minio.commonconfig import ENABLED, Filter
        from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        rule = Rule(ENABLED, rule_filter=Filter(prefix=full), rule_id="qpvhub-" + re.sub(r"[^a-z0-9]+", "-",
                                                                                         full.lower()).strip("-"),
                    expiration=Expiration(days=days))
        self._wrap("lifecycle rule of", prefix or "x",
                   lambda: self.client.set_bucket_lifecycle(self.bucket, LifecycleConfig([rule])))


CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css", ".js": "application/javascript",
                 ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon"}


def upload_tree(store: Store, prefix: str, root: Path) -> list[str]:
    """Upload every file under `root` to `prefix/<relative path>` (a static site, e.g. GX Data Docs)."""
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}"
        store.put_file(key, path, CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
        keys.append(key)
    return keys


def open_store(settings: StoreSettings) -> Store:
    """The store the settings name."""
    if settings.kind == "fs":
        assert settings.path is not None
        return LocalStore(settings.path)
    if settings.kind == "s3":
        return S3Store(settings)
    raise ConfigError(f"unknown store kind {settings.kind!r}")
