"""The partners' workflow in the store: a partner drops a CSV under `partners/<id>/inbox/`; the `qpvhub_locate` DAG
locates it (coordinates or addresses, columns recognised by name), writes the result under
`partners/<id>/outbox/<name>_localise.csv`, then deletes the input. Results expire after `retention_days` (a
lifecycle rule on MinIO, `sweep` on a local store). Each partner's MinIO policy (`policy`) lets it write its inbox
and read its outbox, nothing else. `meta.locate_runs` keeps counts only: no address, no coordinate, no file name.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from psycopg.types.json import Jsonb

from qpvhub.locate.geocode import Geocoder
from qpvhub.locate.job import Summary, locate_file
from qpvhub.platform.db import connect
from qpvhub.platform.env import Env
from qpvhub.platform.errors import QpvhubError
from qpvhub.platform.files import private_dir

log = logging.getLogger(__name__)

ROOT = "partners/"
PARTNER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def inbox(partner: str) -> str:
    return f"{ROOT}{_check(partner)}/inbox/"


def outbox(partner: str) -> str:
    return f"{ROOT}{_check(partner)}/outbox/"


def _check(partner: str) -> str:
    if not PARTNER.match(partner):
        raise QpvhubError(f"partner id {partner!r}: lower-case letters, digits, - and _ only")
    return partner


@dataclass
class Done:
    """One file of an inbox, processed: where its result is (or why it failed), counts only."""

    partner: str
    result_key: str | None
    summary: Summary | None
    error: str | None = None
    link: str | None = None


def pending(env: Env) -> list[tuple[str, str]]:
    """(partner, key) of every CSV waiting in an inbox."""
    out = []
    for key in env.store.list(ROOT):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "inbox" and parts[3].lower().endswith(".csv") and PARTNER.match(parts[1]):
            out.append((parts[1], key))
    return out


def process_inboxes(env: Env, *, geocoder: Geocoder | None = None, link_days: float = 7) -> list[Done]:
    """Locate every waiting file, write its result to the partner's outbox, delete the input; a file that fails is
    left in place with the reason recorded (counts and the error only)."""
    cfg = env.settings.locate
    geocoder = geocoder or Geocoder(cfg.geocoder_url, chunk_lines=cfg.chunk_lines, chunk_bytes=cfg.chunk_bytes,
                                    rate=cfg.rate_per_s, timeout=env.settings.http.timeout)
    env.store.expire(ROOT, cfg.retention_days)
    done = []
    waiting = pending(env)
    if not waiting:
        return done
    with connect(env.uri) as conn:  # the newest list loaded: 2024 wherever its perimeters are
        newest = conn.execute("SELECT max(generation) FROM ref.qpv").fetchone()[0]
    if newest is None:
        raise QpvhubError("no QPV perimeter is loaded: `qpvhub ingest qpv_2024` first; the files wait in their inbox")
    for partner, key in waiting:
        run_id = f"locate-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        started = time.time()
        name = Path(key).stem
        result_key = f"{outbox(partner)}{name}_localise.csv"
        work = env.settings.home / "tmp"
        private_dir(work)  # the partner's file, while it is processed: its owner only
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            src, dest = Path(tmp) / "entree.csv", Path(tmp) / "resultat.csv"
            try:
                env.store.download(key, src)
                with connect(env.uri) as conn:
                    summary = locate_file(conn, src, dest, None, geocoder=geocoder,
                                          options={"score_min": cfg.score_min, "margin_m": cfg.margin_m,
                                                   "lists": [newest]})
                env.store.put_file(result_key, dest, "text/csv; charset=utf-8")
                env.store.delete(key)
            except QpvhubError as exc:
                _record(env, run_id, partner, started, None, str(exc))
                log.warning("locate: partner %s, a file failed (left in its inbox): %s", partner, exc)
                done.append(Done(partner, None, None, str(exc)))
                continue
        link = None
        presign = getattr(env.store, "presigned_get", None)
        if presign is not None:
            link = presign(result_key, link_days)
        _record(env, run_id, partner, started, summary, None)
        log.info("locate: partner %s: %s → %s%s", partner, summary.line(), env.store.describe(result_key),
                 f" (lien valable {link_days:g} jours : {link})" if link else "")
        done.append(Done(partner, result_key, summary, None, link))
    return done


def _record(env: Env, run_id: str, partner: str, started: float, summary: Summary | None, error: str | None) -> None:
    with connect(env.uri) as conn:
        conn.execute(
            "INSERT INTO meta.locate_runs (run_id, partner, started_at, finished_at, status, rows, statuts, "
            "geocoder_requests, error) VALUES (%s, %s, to_timestamp(%s), now(), %s, %s, %s, %s, %s)",
            (run_id, partner, started, "failed" if error else "success", summary.rows if summary else None,
             Jsonb(dict(summary.statuts)) if summary else None, summary.geocoder_requests if summary else None,
             error))
        conn.commit()


def sweep(env: Env, days: int | None = None, *, now: float | None = None) -> list[str]:
    """Delete results older than `days` (default the retention) from every outbox; return their keys."""
    days = env.settings.locate.retention_days if days is None else days
    limit = (now or time.time()) - days * 86400
    gone = []
    for key in env.store.list(ROOT):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "outbox" and env.store.modified(key) < limit:
            env.store.delete(key)
            gone.append(key)
    return gone


def policy(bucket: str, partner: str, prefix: str = "") -> str:
    """The partner's MinIO (S3 IAM) policy: put into its inbox, get from its outbox, list its own folders."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    me = f"{base}{ROOT}{_check(partner)}/"
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"arn:aws:s3:::{bucket}/{me}inbox/*"]},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{me}outbox/*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
         "Condition": {"StringLike": {"s3:prefix": [f"{me}*"]}}},
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{bucket}"]},
    ]}
    return json.dumps(doc, indent=2)
