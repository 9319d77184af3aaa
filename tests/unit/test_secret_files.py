"""Secret files are created with their final mode: never world-readable, not even between creation and chmod."""

import os
import stat

from qpvhub.platform.files import private_dir, write_private


def test_a_secret_is_0600_from_its_creation_whatever_the_umask(tmp_path) -> None:
    old = os.umask(0)  # the worst case: a file created with the default mode would be 0666
    try:
        write_private(tmp_path / "new.secret", "s3cret\n")
        (tmp_path / "old.secret").write_text("public")
        os.chmod(tmp_path / "old.secret", 0o644)
        write_private(tmp_path / "old.secret", "s3cret\n")  # an existing file is closed before it is written
        private_dir(tmp_path / "secrets")
    finally:
        os.umask(old)
    for name in ("new.secret", "old.secret"):
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "s3cret\n"
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
