"""Freshness against each source's schedule, `qpvhub status`/`health`, and failure notifications posted
to a loopback webhook receiver."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from qpvhub.ingest.pipeline import ingest
from qpvhub.ops.monitor import freshness, notify_failure, schedule_interval, status_table
from qpvhub.platform.errors import InputError
from qpvhub.platform.settings import Settings

pytestmark = pytest.mark.postgis


def test_schedule_intervals() -> None:
    assert schedule_interval("@weekly") == dt.timedelta(weeks=1)
    assert schedule_interval("0 3 * * 1-5") == dt.timedelta(days=3)  # Friday → Monday
    assert schedule_interval(None) is None
    with pytest.raises(ValueError, match="neither an Airflow preset nor a cron"):
        schedule_interval("every tuesday")


def test_freshness_states_follow_the_schedule(env, catalog) -> None:
    subset = {k: catalog[k] for k in ("cog_communes", "qpv_2015", "bpe")}
    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    assert ingest(env, catalog["qpv_2015"], sample=True).status == "success"
    now = dt.datetime.now(dt.UTC)
    states = {f.source_id: f.state for f in freshness(env.uri, subset, now)}
    assert states == {"cog_communes": "ok", "qpv_2015": "ok", "bpe": "never"}
    # qpv_2015 is @weekly: tolerance 2 weeks + 1 day
    later = {f.source_id: f for f in freshness(env.uri, subset, now + dt.timedelta(days=16))}
    assert later["qpv_2015"].state == "stale" and later["cog_communes"].state == "ok"  # @monthly
    table = status_table(list(later.values()))
    assert "STALE" in table and "NEVER" in table and "qpv_2015" in table
    # an unchanged check confirms the source: fresh again, with the rows it holds
    assert ingest(env, catalog["qpv_2015"], sample=True).status == "skipped"
    f = {x.source_id: x for x in freshness(env.uri, subset)}["qpv_2015"]
    assert f.state == "ok" and f.rows == 6 and f.last_status == "skipped"


def test_health_command_exit_status(env, catalog, monkeypatch) -> None:
    from qpvhub.cli import main

    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    assert main(["health"]) == 1  # other sources never loaded
    monkeypatch.setenv("QPVHUB_STALE_FACTOR", "2")
    with psycopg.connect(env.uri) as conn:
        conn.execute("UPDATE meta.source_runs SET finished_at = now() - interval '200 days'")
    assert main(["health", "--ignore-never"]) == 1  # cog_communes is @monthly: 200 days is stale
    with psycopg.connect(env.uri) as conn:
        conn.execute("UPDATE meta.source_runs SET finished_at = now()")
    assert main(["health", "--ignore-never"]) == 0


def test_status_and_health_agree_on_a_failing_source_and_an_empty_one(env, catalog, capsys, tmp_path) -> None:
    """A failed last run is "failing" for both commands; a source whose file has nothing in the regions is
    "empty", shown, not "ok" and not an alarm."""
    from qpvhub.cli import main

    assert ingest(env, catalog["cog_communes"], sample=True).status == "success"
    broken = tmp_path / "v_commune.csv"
    broken.write_text("COM|LIBELLE\n35238|Rennes\n", encoding="utf-8")
    with pytest.raises(InputError, match="wrong separator"):  # recorded as the source's failed run
        ingest(env, catalog["cog_communes"], url=broken.as_uri(), force=True)
    assert ingest(env, catalog["qpv_2024"], sample=True).status == "skipped"  # PACA's QPV, regions 52 and 53
    capsys.readouterr()
    main(["status"])
    status = capsys.readouterr().out
    line = next(x for x in status.splitlines() if x.startswith("qpv_2024 "))
    assert line.split()[1:3] == ["EMPTY", "skipped"]
    attention = status.split("need attention: ")[1]
    assert "cog_communes (failing)" in attention and "qpv_2024" not in attention
    assert main(["health", "--ignore-never"]) == 1
    health = capsys.readouterr().out
    assert health.splitlines()[0].startswith("cog_communes: failing (") and "qpv_2024" not in health


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    got: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/abc", got
    server.shutdown()
    server.server_close()


def test_failure_callback_posts_to_the_webhook(env, catalog, receiver, monkeypatch, http_source) -> None:
    """The ingest DAG's failure callback marks the run failed and posts a Mattermost/Slack-style message."""
    from qpvhub.airflow.factory import _fail_ingest_run
    from qpvhub.ingest.runs import start_run
    from qpvhub.platform.errors import InputError

    url, got = receiver
    monkeypatch.setenv("QPVHUB_WEBHOOK_URL", url)
    source = catalog["qpv_2015"]
    run_id = start_run(env, source)

    class TI:
        dag_id, task_id, try_number = "qpvhub_ingest_qpv_2015", "stage", 3

        def xcom_pull(self, task_ids: str) -> str:
            return run_id

    error = InputError("missing column(s) ['NOM_QP']", source="qpv_2015", file="QPV.geojson", column="NOM_QP")
    _fail_ingest_run(source, {"ti": TI(), "exception": error, "run_id": "scheduled__2026-11-28"})
    assert len(got) == 1 and got[0]["path"] == "/hooks/abc" and got[0]["type"] == "application/json"
    msg = got[0]["json"]
    assert msg["text"].startswith("**qpvhub: ingest qpv_2015 failed**")
    assert "column 'NOM_QP'" in msg["text"] and "task_id: stage" in msg["text"]
    assert msg["qpvhub"]["qpvhub_run"] == run_id and msg["qpvhub"]["airflow_run_id"] == "scheduled__2026-11-28"
    with psycopg.connect(env.uri) as conn:
        assert conn.execute("SELECT status FROM meta.source_runs WHERE run_id = %s", (run_id,)).fetchone()[0] \
            == "failed"


def test_a_dead_webhook_does_not_hide_the_failure(monkeypatch, caplog) -> None:
    monkeypatch.setenv("QPVHUB_WEBHOOK_URL", "http://127.0.0.1:9/none")
    assert notify_failure(Settings.load().monitoring, "publish region 53", "boom", dag_id="qpvhub_publish_53") is False
    assert any('"event": "qpvhub_failure"' in r.message for r in caplog.records)


def test_failure_email_through_airflow_smtp_settings(monkeypatch) -> None:
    """A loopback SMTP server receives the alert sent with Airflow's [smtp] configuration."""
    import asyncore
    import socket
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd

    received: list[tuple] = []

    class Sink(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append((mailfrom, rcpttos, data))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Sink(("127.0.0.1", port), None)
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1, "count": 100}, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_PORT", str(port))
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_MAIL_FROM", "qpvhub@pole.example")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_STARTTLS", "False")  # a plain loopback relay
    monkeypatch.setenv("QPVHUB_ALERT_EMAIL", "astreinte@pole.example")
    monkeypatch.delenv("QPVHUB_WEBHOOK_URL", raising=False)
    try:
        assert notify_failure(Settings.load().monitoring, "publish region 53", "store unreachable",
                              dag_id="qpvhub_publish_53") is True
    finally:
        server.close()
        thread.join(timeout=15)
    (mailfrom, rcpt, data), = received
    text = data.decode() if isinstance(data, bytes) else data
    assert mailfrom == "qpvhub@pole.example" and rcpt == ["astreinte@pole.example"]
    assert "Subject: [qpvhub] publish region 53 failed" in text and "store unreachable" in text
    assert "dag_id: qpvhub_publish_53" in text


def test_status_says_the_bundled_star_feed_is_expired(env, catalog, capsys) -> None:
    """Data age, not only load age: the 2016 STAR feed loads today, and its calendar ended in 2016."""
    from qpvhub.cli import main

    res = ingest(env, catalog["gtfs"], sample=True, feed="star")
    assert res.status == "success"
    with psycopg.connect(env.uri) as conn:
        start, until = conn.execute("SELECT data_from, data_until FROM meta.source_runs WHERE run_id = %s",
                                    (res.run_id,)).fetchone()
    assert start.year == 2016 and until.year == 2016 and start < until
    f = {x.source_id: x for x in freshness(env.uri, {"gtfs": catalog["gtfs"]})}["gtfs/star"]  # per feed
    assert f.state == "expired" and f.data_note.startswith(f"expired since {until.isoformat()}")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "gtfs/star" in out and "EXPIRED" in out and f"expired since {until.isoformat()}" in out
    assert main(["health", "--ignore-never"]) == 1


def test_millesime_and_unchanged_file_age(env, catalog) -> None:
    from qpvhub.ops.monitor import data_age

    src = catalog["sigville_demo"].model_copy(update={"max_age_years": 3, "max_unchanged_days": 400})
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert data_age(src, None, "2022", now - dt.timedelta(days=10), now)[0] == "outdated"  # 4 years > 3
    assert data_age(src, None, "2024", now - dt.timedelta(days=10), now) == (None, None)
    state, note = data_age(src, None, "2024", now - dt.timedelta(days=500), now)
    assert state == "unchanged" and "500 d" in note
    assert data_age(src, dt.date(2026, 11, 27), None, None, now)[0] == "expired"
    assert data_age(src, dt.date(2026, 11, 28), None, None, now) == (None, None)  # valid through today
