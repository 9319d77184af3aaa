"""Monitoring: source freshness against each catalogue schedule, and failure notifications.

A source is *fresh* while its last confirmed load (a successful load, or a check that found it
unchanged) is younger than its tolerance: `QPVHUB_STALE_FACTOR` (default 2) times its schedule's
interval, plus a day. Failures are posted to `QPVHUB_WEBHOOK_URL` (Mattermost, Slack and Tchap accept
the same `{"text": …}` JSON) and logged as one structured line.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import re
from dataclasses import dataclass

from qpvhub.catalog.model import Source
from qpvhub.platform.db import connect
from qpvhub.platform.settings import Monitoring

log = logging.getLogger(__name__)

PRESETS = {"@hourly": dt.timedelta(hours=1), "@daily": dt.timedelta(days=1), "@weekly": dt.timedelta(weeks=1),
           "@monthly": dt.timedelta(days=31), "@quarterly": dt.timedelta(days=92), "@yearly": dt.timedelta(days=366),
           "@annually": dt.timedelta(days=366)}


def schedule_interval(schedule: str | None) -> dt.timedelta | None:
    """The longest gap between two runs of a schedule (preset or cron); None when unscheduled."""
    if not schedule or schedule in ("@once", "None"):
        return None
    if schedule in PRESETS:
        return PRESETS[schedule]
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise ValueError(f"schedule {schedule!r} is neither an Airflow preset nor a cron expression")
    it = croniter(schedule, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    ticks = [it.get_next(dt.datetime) for _ in range(60)]
    return max(b - a for a, b in itertools.pairwise(ticks))


def tolerance(source: Source, stale_factor: float = 2.0) -> dt.timedelta | None:
    """How long a source may go without a confirmed load: `stale_factor` (QPVHUB_STALE_FACTOR) schedule
    intervals plus a day; None when unscheduled."""
    interval = schedule_interval(source.schedule)
    if interval is None:
        return None
    return interval * stale_factor + dt.timedelta(days=1)


@dataclass
class Freshness:
    source_id: str
    schedule: str | None
    last_status: str | None
    last_confirmed: dt.datetime | None  # last success or unchanged check
    age: dt.timedelta | None
    tolerance: dt.timedelta | None
    rows: int | None
    last_error: str | None
    data_note: str | None = None  # how old the data itself is, when that is a problem (expired feed…)
    data_state: str | None = None  # "expired" | "outdated" | "unchanged"

    @property
    def state(self) -> str:
        if self.last_confirmed is None:
            return "never"
        if self.tolerance is not None and self.age is not None and self.age > self.tolerance:
            return "stale"
        if self.last_status == "failed":
            return "failing"
        if self.data_state:
            return self.data_state
        if self.last_status == "skipped" and not self.rows:  # every run found nothing in the regions: not "ok"
            return "empty"
        return "ok"


# the states `status` lists under "need attention" and `health` exits 1 on: one list, so that they agree
ATTENTION = ("stale", "never", "failing", "expired", "outdated", "unchanged")


def needs_attention(rows: list[Freshness], *, ignore_never: bool = False) -> list[Freshness]:
    """The sources to look at; "empty" (nothing of the file in the deployment's regions) is shown, not alarmed."""
    return [f for f in rows if f.state in ATTENTION and not (ignore_never and f.state == "never")]


def data_age(src: Source, data_until: dt.date | None, millesime: str | None, last_change: dt.datetime | None,
             now: dt.datetime) -> tuple[str | None, str | None]:
    """(state, note) for the data's own age: a GTFS feed past its end date, a millésime older than the
    entry's `max_age_years`, a file unchanged for longer than its `max_unchanged_days`."""
    if data_until is not None and data_until < now.date():
        return "expired", f"expired since {data_until.isoformat()} ({(now.date() - data_until).days} d)"
    year = next((int(y) for y in re.findall(r"(?:19|20)\d\d", millesime or "")), None)
    if src.max_age_years is not None and year is not None and now.year - year > src.max_age_years:
        return "outdated", f"millésime {year}, older than {src.max_age_years} years"
    if src.max_unchanged_days is not None and last_change is not None and \
            (now - last_change).days > src.max_unchanged_days:
        return "unchanged", (f"file unchanged for {(now - last_change).days} d (expected at most "
                             f"{src.max_unchanged_days} d): is the publisher still updating it?")
    return None, None


def freshness(uri: str, sources: dict[str, Source], now: dt.datetime | None = None, *,
              stale_factor: float = 2.0) -> list[Freshness]:
    """Freshness of every catalogue source, from meta.source_runs."""
    from psycopg import sql

    now = now or dt.datetime.now(dt.UTC)
    # a collection's feeds are told apart (`gtfs/star`): each has its own runs, validity and expiry
    feeds = [sid for sid, src in sources.items() if src.collection]
    key = "CASE WHEN source_id = ANY(%(feeds)s) AND part IS NOT NULL THEN source_id || '/' || part " \
                    "ELSE source_id END"
    with connect(uri) as conn:
        last = {r[0]: r[1:] for r in conn.execute(
            f"SELECT DISTINCT ON (k) k, status, error FROM (SELECT {key} AS k, * FROM meta.source_runs) r "
            "ORDER BY k, started_at DESC", {"feeds": feeds}).fetchall()}
        confirmed = {r[0]: r[1:] for r in conn.execute(
            f"SELECT DISTINCT ON (k) k, coalesce(finished_at, started_at), rows_loaded "
            f"FROM (SELECT {key} AS k, * FROM meta.source_runs) r WHERE status IN ('success', 'skipped') "
            "ORDER BY k, coalesce(finished_at, started_at) DESC", {"feeds": feeds}).fetchall()}
        loaded = dict(conn.execute("SELECT source_id, rows_loaded FROM meta.current_source").fetchall())
        success = {r[0]: r[1:] for r in conn.execute(
            f"SELECT DISTINCT ON (k) k, data_until, millesime, finished_at FROM (SELECT {key} AS k, * "
            "FROM meta.source_runs) r WHERE status = 'success' ORDER BY k, finished_at DESC",
            {"feeds": feeds}).fetchall()}
        # the releases of each series loaded, to say when the one a schedule loads (`current`) is not
        releases: dict[str, list[int]] = {}
        for sid, part in conn.execute(
                "SELECT DISTINCT source_id, part FROM meta.source_runs WHERE status = 'success' AND part ~ '^[0-9]+$' "
                "AND source_id = ANY(%s) ORDER BY 1, 2", ([sid for sid, src in sources.items() if src.series],)):
            releases.setdefault(sid, []).append(int(part))
        # each feed's validity window and reference week (GTFS), shown on its line
        validity = {r[0]: r[1:] for r in conn.execute(
            f"SELECT DISTINCT ON (k) k, data_from, data_until FROM (SELECT {key} AS k, * FROM meta.source_runs) r "
            "WHERE status = 'success' AND data_from IS NOT NULL ORDER BY k, finished_at DESC",
            {"feeds": feeds}).fetchall()}
        weeks = {}
        for sid in feeds:
            t = sources[sid].target
            if conn.execute("SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = %s AND "
                            "table_name = %s AND column_name IN ('reference_week', %s)",
                            (t.schema_, t.table, sources[sid].collection.column)).fetchone()[0]:
                weeks.update({f"{sid}/{p}": w for p, w in conn.execute(sql.SQL(
                    "SELECT {}, min(reference_week) FROM {} GROUP BY 1").format(
                    sql.Identifier(sources[sid].collection.column), sql.Identifier(t.schema_, t.table))).fetchall()})
    keys: dict[str, Source] = {}
    for sid, src in sources.items():
        parts = sorted(k for k in {*last, *confirmed} if k.startswith(sid + "/")) if src.collection else []
        for k in parts or [sid]:
            keys[k] = src
        if src.collection:
            loaded.update({k: confirmed[k][1] for k in parts if k in confirmed})
    out = []
    for sid, src in keys.items():
        when = confirmed.get(sid, (None, None))[0]
        status, error = last.get(sid, (None, None))
        # an entry without a production location is not scheduled: no tolerance, and the table says why
        f = Freshness(sid, src.schedule if src.production else None, status, when, now - when if when else None,
                      tolerance(src, stale_factor) if src.production else None, loaded.get(sid),
                      # a failure's error, or why a run had nothing to load (no row in the regions…)
                      (error or "").splitlines()[0][:200] if status in ("failed", "skipped") and error else None)
        if sid in success:
            f.data_state, f.data_note = data_age(src, *success[sid], now)
        if sid in validity:
            start, until = validity[sid]
            span = f"valid {start.isoformat()} → {until.isoformat()}" + (
                f", reference week of {weeks[sid].isoformat()}" if weeks.get(sid) else "")
            f.data_note = "; ".join(x for x in (f.data_note, span) if x)
        if src.series and releases.get(sid):
            current = src.series.current
            note = f"releases {', '.join(map(str, releases[sid]))} loaded" + (
                f"; the current release, {current}, is not" if current and current not in releases[sid] else "")
            f.data_note = "; ".join(x for x in (f.data_note, note) if x)
        elif src.series and src.series.current and src.production:  # what a schedule will load, and why not yet
            note = f"no release loaded; the schedule loads the current one, {src.series.current}" + (
                " (no offline sample)" if src.no_sample else "")
            f.data_note = "; ".join(x for x in (f.data_note, note) if x)
        if not src.production:
            f.data_note = "; ".join(x for x in (f.data_note, "no production location (not scheduled)") if x)
        out.append(f)
    return out


def _age(td: dt.timedelta | None) -> str:
    if td is None:
        return "-"
    hours = td.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def status_table(rows: list[Freshness]) -> str:
    """The `qpvhub status` table."""
    lines = [f"{'source':<18} {'state':<9} {'last run':<9} {'last confirmed':<17} {'age':>8} {'tolerance':>9} "
             f"{'rows':>8}  data / last error"]
    for f in rows:
        lines.append(f"{f.source_id:<18} {f.state.upper() if f.state != 'ok' else 'ok':<9} "
                     f"{f.last_status or 'never':<9} "
                     f"{f.last_confirmed.strftime('%Y-%m-%d %H:%M') if f.last_confirmed else '-':<17} "
                     f"{_age(f.age):>8} {_age(f.tolerance):>9} {f.rows if f.rows is not None else '-'!s:>8}  "
                     + "  ".join(x for x in (f.data_note, f.last_error) if x))
    return "\n".join(lines)


def notify_failure(monitoring: Monitoring, what: str, error: object, **details: object) -> bool:
    """Log one structured line; POST it to QPVHUB_WEBHOOK_URL, mail it to QPVHUB_ALERT_EMAIL when set
    (`monitoring`: those settings). Never raises: returns delivered."""
    record = {"event": "qpvhub_failure", "what": what, "error": str(error)[:2000], **details}
    log.error("%s", json.dumps(record, ensure_ascii=False, default=str))
    lines = [f"**qpvhub: {what} failed**", f"```\n{str(error)[:1500]}\n```"]
    lines += [f"- {k}: {v}" for k, v in details.items() if v is not None]
    delivered = False
    if monitoring.alert_email:
        delivered = _email(monitoring.alert_email, f"[qpvhub] {what} failed",
                           "\n".join(lines).replace("**", "").replace("```", ""))
    url = monitoring.webhook_url
    if not url:
        return delivered
    import requests

    try:
        resp = requests.post(url, json={"text": "\n".join(lines), "username": "qpvhub", **{"qpvhub": record}},
                             timeout=10)
        resp.raise_for_status()
        return True
    except requests.RequestException as exc:  # a dead webhook must not hide the original failure
        log.warning("failure notification to %s failed: %s", url.split("?")[0], exc)
        return False


def _email(to: str, subject: str, body: str) -> bool:
    """Mail QPVHUB_ALERT_EMAIL (comma-separated) through Airflow's [smtp] settings; never raises."""
    import smtplib
    from email.message import EmailMessage

    from airflow.configuration import conf

    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = conf.get("smtp", "smtp_mail_from", fallback="airflow@example.com")
    msg["To"] = to
    msg.set_content(body)
    host, port = conf.get("smtp", "smtp_host", fallback="localhost"), conf.getint("smtp", "smtp_port", fallback=25)
    try:
        use_ssl = conf.getboolean("smtp", "smtp_ssl", fallback=False)
        with (smtplib.SMTP_SSL if use_ssl else smtplib.SMTP)(host, port, timeout=10) as smtp:
            if conf.getboolean("smtp", "smtp_starttls", fallback=False) and not use_ssl:
                smtp.starttls()
            user = conf.get("smtp", "smtp_user", fallback=None)
            if user:
                smtp.login(user, conf.get("smtp", "smtp_password", fallback=""))
            smtp.send_message(msg)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("failure e-mail to %s via %s:%s failed: %s", msg["To"], host, port, exc)
        return False
