"""Safe extraction of zip and 7z archives (shapefile sets, GTFS feeds, zipped CSV, IGN's 7z deliveries).

Refuses path traversal (`../`), absolute paths, symbolic links, and archive bombs, by one budget every reader
shares (`Budget`): the total uncompressed size, the number of members, the compression ratio of each member
and of the whole archive (2,000 members of 1 MiB each pass a per-member check one by one; their sum does
not). Sizes are checked while extracting, not
only from the (forgeable) directory. A workbook is itself a ZIP: `check_zip` applies the budget to it before
anything parses it. A CSV record is bounded by its reader's block (`reader.block_size`).
"""

from __future__ import annotations

import fnmatch
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qpvhub.platform.errors import InputError

MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBERS = 10_000
MAX_RATIO = 200  # uncompressed / compressed, per member above 1 MiB, and for the whole archive above RATIO_FLOOR
RATIO_FLOOR = 64 * 1024**2  # below it, a whole archive's ratio is not a threat (small, repetitive files)
SEVENZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"


@dataclass(frozen=True)
class Budget:
    """What reading one file may cost, for every reader alike (an archive, a workbook, a text file)."""

    max_total: int = MAX_TOTAL_BYTES
    max_members: int = MAX_MEMBERS
    max_ratio: float = MAX_RATIO

    def check_total(self, total: int, packed: int, source: str, archive: str, what: str = "archive") -> None:
        """The whole archive: its uncompressed bytes, and their ratio to its size once past RATIO_FLOOR."""
        if total > self.max_total:
            raise InputError(f"{what} exceeds {self.max_total} bytes uncompressed: archive bomb refused",
                             source=source, file=archive)
        if total > RATIO_FLOOR and total / max(packed, 1) > self.max_ratio:
            raise InputError(f"{what} expands {total / max(packed, 1):.0f}× in total (limit {self.max_ratio:g}× "
                             f"beyond {RATIO_FLOOR // 1024**2} MiB): archive bomb refused", source=source,
                             file=archive)


BUDGET = Budget()


def check_zip(path: Path, *, source: str, budget: Budget = BUDGET, what: str = "archive") -> None:
    """A ZIP's directory against the budget, before anything reads it (a workbook, which is a ZIP itself): member
    count, each member's ratio, the total and its ratio. Extraction checks the real sizes again while writing."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a valid zip archive ({exc}); truncated download?", source=source,
                         file=path.name) from None
    if len(infos) > budget.max_members:
        raise InputError(f"{what} has {len(infos)} members, more than the limit of {budget.max_members}",
                         source=source, file=path.name)
    for info in infos:
        if info.file_size > 1024**2 and info.compress_size and info.file_size / info.compress_size > budget.max_ratio:
            raise InputError(f"{what} member {info.filename!r} expands {info.file_size / info.compress_size:.0f}× "
                             f"(limit {budget.max_ratio:g}×): zip bomb refused", source=source, file=path.name)
    budget.check_total(sum(i.file_size for i in infos), path.stat().st_size, source, path.name, what)


def is_7z(path: Path) -> bool:
    """True when the file is a 7z archive (by its signature, not its name)."""
    with path.open("rb") as f:
        return f.read(6) == SEVENZIP_MAGIC


def _check_name(name: str, source: str, archive: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"archive member {name!r} has an absolute path: refused", source=source, file=archive)
    if any(part == ".." for part in p.parts):
        raise InputError(f"archive member {name!r} points outside the archive (../): refused",
                         source=source, file=archive)
    return p


def safe_extract(path: Path, dest: Path, *, source: str, budget: Budget = BUDGET) -> list[Path]:
    """Extract `path` (zip or 7z) into `dest` within `budget`; return the extracted files. Raise InputError naming
    the member."""
    max_total, max_members, max_ratio = budget.max_total, budget.max_members, budget.max_ratio
    if is_7z(path):
        return _safe_extract_7z(path, dest, source=source, max_total=max_total, max_members=max_members,
                                max_ratio=max_ratio)
    check_zip(path, source=source, budget=budget)
    archive = path.name
    packed = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a valid zip archive ({exc}); truncated download?", source=source, file=archive) from None
    out: list[Path] = []
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise InputError(f"archive has {len(infos)} members, more than the limit of {max_members}",
                             source=source, file=archive)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in infos:
            rel = _check_name(info.filename, source, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InputError(f"archive member {info.filename!r} is a symbolic link: refused",
                                 source=source, file=archive)
            if info.is_dir():
                continue
            target = (root / rel).resolve()
            if root not in target.parents:
                raise InputError(f"archive member {info.filename!r} points outside the archive: refused",
                                 source=source, file=archive)
            if info.file_size > 1024**2 and info.compress_size and info.file_size / info.compress_size > max_ratio:
                raise InputError(f"archive member {info.filename!r} expands {info.file_size / info.compress_size:.0f}×"
                                 f" (limit {max_ratio}×): zip bomb refused", source=source, file=archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        total += len(chunk)
                        if written > info.file_size or total > max_total:
                            raise InputError(
                                f"archive member {info.filename!r} is larger than declared or the archive exceeds "
                                f"{max_total} bytes uncompressed: zip bomb refused", source=source, file=archive)
                        budget.check_total(total, packed, source, archive)
                        dst.write(chunk)
            except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
                raise InputError(f"archive member {info.filename!r} is corrupt ({exc}); truncated download?",
                                 source=source, file=archive) from None
            out.append(target)
    return out


class _Capped:
    """A 7z member written to disk, refused once it outgrows its declared size or the archive its limit."""

    def __init__(self, target: Path, declared: int, budget: list[int], name: str, source: str, archive: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.f, self.declared, self.budget, self.written = target.open("wb"), declared, budget, 0
        self.name, self.source, self.archive = name, source, archive

    def write(self, b: bytes | bytearray) -> int:
        self.written += len(b)
        self.budget[0] -= len(b)
        if self.written > self.declared or self.budget[0] < 0:
            raise InputError(f"archive member {self.name!r} is larger than declared or the archive exceeds its "
                             "uncompressed limit: archive bomb refused", source=self.source, file=self.archive)
        return self.f.write(b)

    def read(self, size: int | None = None) -> bytes:
        raise OSError("write-only")

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def flush(self) -> None:
        self.f.flush()

    def size(self) -> int:
        return self.written

    def close(self) -> None:
        self.f.close()


def _safe_extract_7z(path: Path, dest: Path, *, source: str, max_total: int, max_members: int,
                     max_ratio: float) -> list[Path]:
    """The 7z counterpart of the zip extraction (py7zr): names checked first, sizes while writing."""
    import py7zr
    from py7zr.io import WriterFactory

    archive = path.name
    root = dest.resolve()
    try:
        zf = py7zr.SevenZipFile(path, "r")
    except (py7zr.Bad7zFile, EOFError, OSError, ValueError) as exc:
        raise InputError(f"not a valid 7z archive ({exc}); truncated download?", source=source, file=archive) from None
    with zf:
        if zf.needs_password():
            raise InputError("7z archive is encrypted: refused", source=source, file=archive)
        infos = zf.list()
        if len(infos) > max_members:
            raise InputError(f"archive has {len(infos)} members, more than the limit of {max_members}",
                             source=source, file=archive)
        targets: dict[str, tuple[Path, int]] = {}
        for info in infos:
            rel = _check_name(info.filename, source, archive)
            if info.is_symlink:
                raise InputError(f"archive member {info.filename!r} is a symbolic link: refused",
                                 source=source, file=archive)
            if info.is_directory:
                continue
            target = (root / rel).resolve()
            if root not in target.parents:
                raise InputError(f"archive member {info.filename!r} points outside the archive: refused",
                                 source=source, file=archive)
            targets[info.filename] = (target, int(info.uncompressed or 0))
        declared = sum(size for _, size in targets.values())
        if declared > max_total:
            raise InputError(f"archive expands to {declared} bytes, more than the limit of {max_total}",
                             source=source, file=archive)
        if declared > 1024**2 and declared / max(path.stat().st_size, 1) > max_ratio:
            raise InputError(f"archive expands {declared / path.stat().st_size:.0f}× (limit {max_ratio}×): "
                             "archive bomb refused", source=source, file=archive)
        budget = [min(declared, max_total)]

        class Factory(WriterFactory):
            def create(self, filename: str) -> _Capped:
                if filename not in targets:
                    raise InputError(f"archive member {filename!r} is not in its directory: refused",
                                     source=source, file=archive)
                target, size = targets[filename]
                return _Capped(target, size, budget, filename, source, archive)

        dest.mkdir(parents=True, exist_ok=True)
        try:
            zf.extractall(factory=Factory())
        except InputError:
            raise
        except Exception as exc:  # py7zr: CRC, LZMA and header errors of a corrupt or truncated file
            raise InputError(f"7z archive is corrupt ({type(exc).__name__}: {exc}); truncated download?",
                             source=source, file=archive) from None
    return [t for t, _ in targets.values() if t.exists()]


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def member_matches(name: str, member: str) -> bool:
    """True when the archive member `name` (its path inside the archive) is the one `reader.member` names: by
    path, file name or stem, or, when `member` holds `*`, `?` or `[`, by that file-name pattern (a publisher
    whose member name is known only by its form, e.g. INSEE's `revenu-disponible-*_QP.csv`)."""
    path = name.replace("\\", "/")
    base, wanted = path.rsplit("/", 1)[-1], member.rsplit("/", 1)[-1]
    if any(ch in wanted for ch in "*?["):
        return fnmatch.fnmatchcase(base, wanted)
    return path == member or base == wanted or base.rsplit(".", 1)[0] == wanted


def extract_members(path: Path, *, source: str, suffixes: tuple[str, ...], member: str | None = None
                    ) -> tuple[list[Path], list[Path], Path]:
    """Extract `path` safely next to it; return (the members with one of `suffixes` — only `member` when given,
    see `member_matches` —, every extracted file, the extraction folder).
    The readers of zipped CSV, GeoJSON and Shapefiles share it and phrase their own errors."""
    dest = path.parent / (path.stem + "__unzipped")  # (a 7z too)
    files = safe_extract(path, dest, source=source)
    found = [p for p in sorted(files) if p.suffix.lower() in suffixes]
    if member:
        found = [p for p in found if member_matches(p.relative_to(dest).as_posix(), member)]
    return found, files, dest
