"""Safe extraction of zip archives (shapefile sets, GTFS feeds, zipped CSV).

Refuses path traversal (`../`), absolute paths, symbolic links, and zip bombs: a limit on the total
uncompressed size, on the number of members, and on the compression ratio of each member. Sizes
are checked while extracting, not only from the (forgeable) central directory.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from qpvhub.errors import InputError

MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBERS = 10_000
MAX_RATIO = 200  # uncompressed / compressed, per member above 1 MiB


def _check_name(name: str, source: str, archive: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"archive member {name!r} has an absolute path: refused", source=source, file=archive)
    if any(part == ".." for part in p.parts):
        raise InputError(f"archive member {name!r} points outside the archive (../): refused",
                         source=source, file=archive)
    return p


def safe_extract(path: Path, dest: Path, *, source: str, max_total: int = MAX_TOTAL_BYTES,
                 max_members: int = MAX_MEMBERS, max_ratio: float = MAX_RATIO) -> list[Path]:
    """Extract `path` into `dest`; return the extracted files. Raise InputError naming the member."""
    archive = path.name
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
                        dst.write(chunk)
            except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
                raise InputError(f"archive member {info.filename!r} is corrupt ({exc}); truncated download?",
                                 source=source, file=archive) from None
            out.append(target)
    return out


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def extract_members(path: Path, *, source: str, suffixes: tuple[str, ...], member: str | None = None
                    ) -> tuple[list[Path], list[Path], Path]:
    """Extract `path` safely next to it; return (the members with one of `suffixes` — only `member`, matched
    by relative path, file name or stem, when given —, every extracted file, the extraction folder).
    The readers of zipped CSV, GeoJSON and Shapefiles share it and phrase their own errors."""
    dest = path.parent / (path.stem + "__unzipped")
    files = safe_extract(path, dest, source=source)
    found = [p for p in sorted(files) if p.suffix.lower() in suffixes]
    if member:
        base = member.rsplit("/", 1)[-1]
        found = [p for p in found if p.relative_to(dest).as_posix() == member or p.name == base or p.stem == base]
    return found, files, dest
