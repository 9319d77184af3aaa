"""Access control over the S3 protocol: anonymous reads only where the shipped policy allows them, and
presigned URLs from `qpvhub share` (moto enforces bucket policies for anonymous requests; MinIO, not
moto, checks presigned signatures and expiry, so neither is claimed here)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from qpvhub.platform.env import Env
from qpvhub.platform.store import StoreError
from tests.conftest import ROOT

pytestmark = [pytest.mark.s3, pytest.mark.postgis]


def _anon_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.fixture
def store(qpvhub_home, db_uri, s3_store_conn):
    env = Env.from_settings()
    bucket = s3_store_conn["extra"]["bucket"]
    env.store.put_bytes("published/53/qpv_profil/latest/qpv_profil_53.csv", b"code_qp\nQP035002\n", "text/csv")
    env.store.put_bytes("restricted/53/qpv_detail/latest/qpv_detail_53.csv", b"code_qp\nQP035002\n", "text/csv")
    env.store.put_bytes("raw/qpv_2015/x/QPV.geojson", b"{}", "application/geo+json")
    policy = (ROOT / "include" / "minio" / "public-published.json").read_text(encoding="utf-8")
    endpoint = s3_store_conn["extra"]["endpoint_url"]
    # what `mc anonymous set-json` does, through the deployment's own S3 client
    env.store.client.set_bucket_policy(bucket, policy.replace("arn:aws:s3:::qpvhub", f"arn:aws:s3:::{bucket}"))
    return env, f"{endpoint}/{bucket}"


def test_anonymous_read_on_open_products_only(store) -> None:
    _, base = store
    assert _anon_get(f"{base}/published/53/qpv_profil/latest/qpv_profil_53.csv") == (200, b"code_qp\nQP035002\n")
    assert _anon_get(f"{base}/restricted/53/qpv_detail/latest/qpv_detail_53.csv")[0] == 403
    assert _anon_get(f"{base}/raw/qpv_2015/x/QPV.geojson")[0] == 403
    status, body = _anon_get(f"{base}?list-type=2&prefix=published/")
    assert status == 200 and b"qpv_profil_53.csv" in body
    # moto does not evaluate policy Conditions, MinIO does: listing outside published/ is refused by the
    # s3:prefix condition, checked here on the shipped policy itself
    policy = json.loads((ROOT / "include" / "minio" / "public-published.json").read_text(encoding="utf-8"))
    listing = [st for st in policy["Statement"] if "s3:ListBucket" in st["Action"]]
    assert [st["Condition"] for st in listing] == [{"StringLike": {"s3:prefix": ["published/*"]}}]
    assert all(r.endswith("/published/*") for st in policy["Statement"] if "s3:GetObject" in st["Action"]
               for r in st["Resource"])


def test_share_gives_a_presigned_url_with_the_requested_expiry(store) -> None:
    env, _ = store
    key = "restricted/53/qpv_detail/latest/qpv_detail_53.csv"
    url = env.store.presigned_get(key, 3)
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(3 * 86400)]
    assert _anon_get(url) == (200, b"code_qp\nQP035002\n")
    with pytest.raises(StoreError, match=r"at most 7 days \(S3 limit\); asked 8"):
        env.store.presigned_get(key, 8)
    with pytest.raises(StoreError, match=r"no object .*nothing.csv to share"):
        env.store.presigned_get("restricted/53/nothing.csv", 1)


def test_share_command(store) -> None:
    import os

    env = {**os.environ}
    ok = subprocess.run([sys.executable, "-m", "qpvhub.cli", "share", "qpv_profil", "--region", "53", "--days", "2"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "X-Amz-Expires=172800" in ok.stdout and "qpv_profil_53.csv" in ok.stdout
    too_long = subprocess.run([sys.executable, "-m", "qpvhub.cli", "share", "qpv_profil", "--region", "53",
                               "--days", "30"], capture_output=True, text=True, env=env, timeout=60)
    assert too_long.returncode == 1 and "at most 7 days" in too_long.stderr
    env_fs = {**env, "AIRFLOW_CONN_QPVHUB_STORE": json.dumps({"conn_type": "fs", "extra": {"path": "/tmp/x"}})}
    local = subprocess.run([sys.executable, "-m", "qpvhub.cli", "share", "qpv_profil", "--region", "53"],
                           capture_output=True, text=True, env=env_fs, timeout=60)
    assert local.returncode == 1 and "needs an S3 object store" in local.stderr
