"""Safe zip extraction: traversal, absolute paths, symlinks, bombs and truncated archives are refused."""

import stat
import zipfile
from pathlib import Path

import pytest

from qpvhub.ingest.archive import Budget, member_matches, safe_extract
from qpvhub.platform.errors import InputError
from tests.conftest import SAMPLES


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def test_real_shapefile_fixture_extracts(tmp_path: Path) -> None:
    files = safe_extract(SAMPLES / "tri_2020_sig_di_35_FIXTURE.zip", tmp_path / "out", source="flood_zones")
    assert sorted({p.suffix for p in files}) == [".cpg", ".dbf", ".prj", ".shp", ".shx"] and len(files) == 20
    assert all(p.parent.name == "FRG_TRI_RENNES" for p in files)  # the folder of the TRI, kept


@pytest.mark.parametrize("name, message", [
    ("../evil.txt", "points outside the archive"),
    ("a/../../evil.txt", "points outside the archive"),
    ("/etc/cron.d/evil", "absolute path"),
    ("C:/windows/evil", "absolute path"),
])
def test_traversal_and_absolute_paths_are_refused(tmp_path: Path, name: str, message: str) -> None:
    z = _zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"evil"})
    with pytest.raises(InputError, match=f"source s, file bad.zip: archive member .*{message}"):
        safe_extract(z, tmp_path / "out", source="s")
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "link.zip", {"ok.txt": b"x"}, symlink="stops.txt")
    with pytest.raises(InputError, match="'stops.txt' is a symbolic link"):
        safe_extract(z, tmp_path / "out", source="s")


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "bomb.zip", {"stop_times.txt": b"\0" * (50 * 1024**2)})  # 50 MB of zeros, ~50 kB zipped
    assert z.stat().st_size < 200_000
    with pytest.raises(InputError, match="zip bomb refused"):
        safe_extract(z, tmp_path / "out", source="gtfs")


def test_total_size_limit_is_enforced_while_extracting(tmp_path: Path) -> None:
    z = _zip(tmp_path / "big.zip", {"a.csv": b"x;y\n" * 100_000, "b.csv": b"x;y\n" * 100_000})
    with pytest.raises(InputError, match="exceeds 500000 bytes uncompressed"):
        safe_extract(z, tmp_path / "out", source="s", budget=Budget(max_total=500_000, max_ratio=10**6))


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    data = (SAMPLES / "gtfs_star_rennes_20160419.zip").read_bytes()
    cut = tmp_path / "GTFS.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="file GTFS.zip: not a valid zip archive .*truncated download"):
        safe_extract(cut, tmp_path / "out", source="gtfs_star")


@pytest.mark.parametrize(("name", "member", "expected"), [
    ("GEOJSON/QP2024_France.geojson", "GEOJSON/QP2024_France.geojson", True),  # path
    ("deep/BPE24.csv", "BPE24.csv", True),  # file name
    ("deep/BPE24.csv", "BPE24", True),  # stem
    ("BPE23.csv", "BPE24.csv", False),
    # a name known only by its form (INSEE's per-QPV file beside its meta_ file and the all-QPV aggregate)
    ("revenu-disponible-qp24-2021_QP.csv", "revenu-disponible-*_QP.csv", True),
    ("x/revenu-disponible-qp24-2021_QP.csv", "revenu-disponible-*_QP.csv", True),
    ("meta_indic-revenu-disponible-qp24-2021_QP.csv", "revenu-disponible-*_QP.csv", False),
    ("revenu-disponible-qp24-2021_ENSQP.csv", "revenu-disponible-*_QP.csv", False),
    ("REVENU-DISPONIBLE-QP24-2021_QP.csv", "revenu-disponible-*_QP.csv", False),  # case matters, as for names
])
def test_a_member_is_named_by_path_name_stem_or_pattern(name: str, member: str, expected: bool) -> None:
    assert member_matches(name, member) is expected
