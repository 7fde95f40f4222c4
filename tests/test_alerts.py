"""Webhook alerts against real HTTP receivers on 127.0.0.1: delivery, signatures, retries,
slow / hung / refusing receivers, queue overflow, and gunicorn worker processes.

No test asserts timing; each waits (bounded) for what the receiver or the sink reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.alerts import MAX_STRING_LENGTH
from flask_jwt_shield.alerts import AlertSink
from flask_jwt_shield.alerts import redact
from flask_jwt_shield.alerts import sign
from flask_jwt_shield.alerts import verify_signature
from flask_jwt_shield.config import DEFAULT_ALERT_EVENTS

from .conftest import AppFactory
from .conftest import bearer
from .test_multiprocess import ROOT
from .test_multiprocess import call
from .test_multiprocess import gunicorn
from .webhook_util import Receiver
from .webhook_util import closed_port_url
from .webhook_util import receiver
from .webhook_util import tls_pair

SECRET = "alert-signing-secret-" + "s" * 24
# Every kind the scenario below produces, so that each of its steps sends alerts.
SCENARIO_KINDS = ["session-started", "token-refreshed", "refresh-reused", "family-revoked", "token-rejected"]
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.")


def alert_config(url: str, **extra: t.Any) -> dict[str, t.Any]:
    return {"JWT_SHIELD_ALERT_WEBHOOK": url, "JWT_SHIELD_ALERT_RETRY_DELAY": 0.01, **extra}


def sink_of(app: Flask, shield: JWTShield) -> AlertSink:
    with app.app_context():
        sink = shield.alerts()
    assert sink is not None
    return sink


@pytest.fixture
def sinks() -> t.Iterator[list[AlertSink]]:
    """Sinks to close when the test ends (their worker threads stop)."""
    made: list[AlertSink] = []
    yield made
    for sink in made:
        sink.close(timeout=5)


def scenario(app: Flask) -> tuple[list[tuple[int, t.Any]], list[str]]:
    """Log in, refresh, reuse the spent refresh token, use the revoked session's token.

    Returns each answer (status, body with the random token values replaced by their
    keys) and every token the scenario saw.
    """
    client = app.test_client()
    answers: list[tuple[int, t.Any]] = []
    tokens: list[str] = []

    def keep(response: TestResponse) -> t.Any:
        body = response.get_json()
        if isinstance(body, dict):
            tokens.extend(v for k, v in body.items() if k.endswith("_token"))
            shape = {k: ("<token>" if k.endswith("_token") else v) for k, v in body.items()}
        else:
            shape = body
        answers.append((response.status_code, shape))
        return body

    pair = keep(client.post("/login?sub=alice"))
    second = keep(client.post("/refresh", json={"refresh_token": pair["refresh_token"]}))
    keep(client.post("/refresh", json={"refresh_token": pair["refresh_token"]}))  # reuse: the family dies
    keep(client.get("/api/me", headers=bearer(second["access_token"])))
    keep(client.get("/api/me", headers=bearer("not-a-token")))
    return answers, tokens


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SHIELD_ALERT_WEBHOOK": "http://alerts.example.com/hook"}, "must use https://"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "ftp://127.0.0.1/hook"}, "must use https://"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://"}, "has no host"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": 42}, "non-empty string"),
        ({"JWT_SHIELD_ALERT_EVENTS": ["refresh-reused"]}, "JWT_SHIELD_ALERT_WEBHOOK is not"),
        ({"JWT_SHIELD_ALERT_SECRET": SECRET}, "JWT_SHIELD_ALERT_WEBHOOK is not"),
        (
            {"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_EVENTS": ["refresh-reuse"]},
            "Did you mean ['refresh-reused']",
        ),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_EVENTS": []}, "no kind"),
        (
            {"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_EVENTS": "refresh-reused"},
            "list of strings",
        ),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_SECRET": "short"}, "at least 32"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_SECRET": 7}, "str or bytes"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_TIMEOUT": 0}, "above 0"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_TIMEOUT": 600}, "at most 60"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_RETRIES": -1}, "at least 0"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_RETRY_DELAY": 3600}, "0 to 300"),
        ({"JWT_SHIELD_ALERT_WEBHOOK": "https://a.example/h", "JWT_SHIELD_ALERT_QUEUE_SIZE": 0}, "at least 1"),
    ],
)
def test_bad_alert_config_refused_at_init_app(config: dict[str, t.Any], message: str, make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        make_app(config)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/h",
        "http://localhost/h",
        "http://[::1]:8080/h",
        "https://alerts.example.com/services/T0/B0/secret",
    ],
)
def test_webhook_urls_accepted(url: str, make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_ALERT_WEBHOOK": url})
    sink = sink_of(app, shield)
    assert sink.kinds == frozenset(DEFAULT_ALERT_EVENTS)


def test_no_webhook_no_sink(app: Flask, shield: JWTShield) -> None:
    with app.app_context():
        assert shield.alerts() is None


# -- delivery and signatures -----------------------------------------------------------------


def test_alerts_delivered_signed_and_verifiable(make_app: AppFactory, sinks: list[AlertSink]) -> None:
    with receiver() as rec:
        app, shield = make_app(
            alert_config(rec.url, JWT_SHIELD_ALERT_SECRET=SECRET, JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS)
        )
        sinks.append(sink := sink_of(app, shield))
        _, tokens = scenario(app)
        assert sink.flush(10)
        got = rec.received
        kinds = [r.json["event"]["kind"] for r in got]
        # In the order the events were recorded: one worker thread keeps them in order.
        assert kinds == [
            "session-started",
            "token-refreshed",
            "refresh-reused",
            "family-revoked",
            "token-rejected",
            "token-rejected",
        ]
        with app.app_context():
            stored = {e.id: e for e in shield.events(limit=50)}
        for r in got:
            payload = r.json
            assert r.path == "/hooks/shield"
            assert payload["type"] == "alert" and payload["app"] == app.name
            assert payload["source"]["pid"] > 0 and payload["source"]["host"]
            event = payload["event"]
            assert stored[event["id"]].to_dict() == event  # the event itself, as stored
            assert r.headers["X-JWT-Shield-Event"] == event["kind"]
            assert r.headers["X-JWT-Shield-Delivery"] == event["id"]
            assert r.headers["Content-Type"] == "application/json"
            # The receiver's check, from scratch as on the docs page ...
            timestamp = r.headers["X-JWT-Shield-Timestamp"]
            expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + r.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(r.headers["X-JWT-Shield-Signature"], "sha256=" + expected)
            # ... and with the helper; a changed body, an old timestamp or another key fail.
            assert verify_signature(SECRET.encode(), timestamp, r.body, r.headers["X-JWT-Shield-Signature"])
            assert not verify_signature(SECRET.encode(), timestamp, r.body + b" ", r.headers["X-JWT-Shield-Signature"])
            assert not verify_signature(b"k" * 32, timestamp, r.body, r.headers["X-JWT-Shield-Signature"])
            assert not verify_signature(
                SECRET.encode(), timestamp, r.body, r.headers["X-JWT-Shield-Signature"], now=int(timestamp) + 301
            )
            # Never a token: neither one the scenario handled nor anything shaped like one.
            text = r.body.decode()
            assert not any(tok in text for tok in tokens) and not JWT_SHAPE.search(text)
        stats = sink.stats()
        assert (stats.delivered, stats.failed, stats.dropped, stats.queued) == (6, 0, 0, 0)


def test_unsigned_without_secret_and_default_kinds_only(make_app: AppFactory, sinks: list[AlertSink]) -> None:
    with receiver() as rec:
        app, shield = make_app(alert_config(rec.url))
        sinks.append(sink := sink_of(app, shield))
        scenario(app)  # session-started, token-refreshed ... are not alerted on by default
        assert sink.flush(10)
        assert [r.json["event"]["kind"] for r in rec.received] == ["refresh-reused"]
        assert "X-JWT-Shield-Signature" not in rec.received[0].headers


def test_a_token_in_an_event_detail_is_redacted(make_app: AppFactory, sinks: list[AlertSink]) -> None:
    with receiver() as rec:
        app, shield = make_app(alert_config(rec.url))
        sinks.append(sink := sink_of(app, shield))
        with app.app_context():
            token = shield.create_access_token("alice")
            # An app's own code recording an event with a careless detail:
            app.extensions["jwt_shield"].record(
                "traffic-spike", None, detail={"header": f"Bearer {token}", "seen": [token]}
            )
        assert sink.flush(10)
        (got,) = rec.received
        assert token not in got.body.decode()
        assert got.json["event"]["detail"] == {"header": "Bearer [redacted token]", "seen": ["[redacted token]"]}
    assert redact({"a": ("x", 1, None)}) == {"a": ["x", 1, None]}


# The token shape as one regex: right, but it backtracks from every "eyJ" to the end of its
# run (quadratic). The reference for what redact() must find, on short strings only.
TOKEN_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]*")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="eyJa.b-_ /X\u00e9", max_size=40))
def test_redaction_finds_exactly_the_token_shape(text: str) -> None:
    assert redact(text) == TOKEN_SHAPE.sub("[redacted token]", text)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("eyJ" * 400_000, id="eyJ-repeated"),
        pytest.param("eyJa" * 300_000, id="eyJa-repeated"),
        pytest.param("eyJ" * 300_000 + ".a", id="one-dot-at-the-end"),
        pytest.param("eyJa.b" + "eyJa" * 300_000, id="no-second-dot"),
        pytest.param("eyJ " * 300_000, id="many-short-runs"),
    ],
)
def test_alert_redaction_of_a_hostile_string_is_linear_and_bounded(hostile: str) -> None:
    # The adversarial review: 60 KB of attacker-supplied text (a User-Agent, an event detail)
    # cost about 1.9 s of CPU in redaction, growing with the square of the length. These
    # strings are over a megabyte: quadratic redaction would take many minutes, past the
    # timeout; linear redaction takes milliseconds. The alert carries at most the maximum.
    detail = redact({"user_agent": hostile, "seen": [hostile]})
    cut = f"[{len(hostile) - MAX_STRING_LENGTH} characters cut]"
    assert detail == {"user_agent": hostile[:MAX_STRING_LENGTH] + cut, "seen": [hostile[:MAX_STRING_LENGTH] + cut]}


def test_a_long_string_is_cut_after_redaction(make_app: AppFactory) -> None:
    app, shield = make_app()
    with app.app_context():
        token = shield.create_access_token("alice")
    # The token straddles the cut: redacted whole first, never half of it left in the alert.
    text = "x" * (MAX_STRING_LENGTH - 10) + token + "y" * 100
    got = redact(text)
    assert got.startswith("x" * (MAX_STRING_LENGTH - 10) + "[redacted")
    assert len(got) <= MAX_STRING_LENGTH + len("[99999 characters cut]")
    assert token.split(".")[0] not in got
    assert redact("z" * MAX_STRING_LENGTH) == "z" * MAX_STRING_LENGTH


def test_basic_auth_from_the_url(make_app: AppFactory, sinks: list[AlertSink]) -> None:
    with receiver() as rec:
        url = rec.url.replace("http://", "http://ops:p%40ss@")
        app, shield = make_app(alert_config(url))
        sinks.append(sink := sink_of(app, shield))
        scenario(app)
        assert sink.flush(10)
        assert rec.received[0].headers["Authorization"] == "Basic b3BzOnBAc3M="  # ops:p@ss


def test_https_receiver_verified_against_the_trusted_cas(
    make_app: AppFactory, sinks: list[AlertSink], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, ca_file = tls_pair(tmp_path)
    with receiver(tls=context) as rec:
        assert rec.url.startswith("https://localhost:")
        untrusted, untrusted_shield = make_app(alert_config(rec.url, JWT_SHIELD_ALERT_RETRIES=0))
        sinks.append(refused := sink_of(untrusted, untrusted_shield))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the system's trust store, as OpenSSL reads it
        app, shield = make_app(alert_config(rec.url, JWT_SHIELD_ALERT_SECRET=SECRET))
        sinks.append(sink := sink_of(app, shield))
        scenario(untrusted)
        scenario(app)
        assert refused.flush(10) and sink.flush(10)
        assert (refused.stats().failed, refused.stats().delivered) == (1, 0)  # unknown CA: not sent
        assert sink.stats().delivered == 1
        (got,) = rec.received
        assert got.json["event"]["kind"] == "refresh-reused"
        assert verify_signature(
            SECRET.encode(), got.headers["X-JWT-Shield-Timestamp"], got.body, got.headers["X-JWT-Shield-Signature"]
        )


# -- receivers that misbehave: the requests never notice ----------------------------------


@pytest.fixture
def without_webhook(make_app: AppFactory) -> list[tuple[int, t.Any]]:
    app, _ = make_app()
    return scenario(app)[0]


def test_slow_receiver(make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any) -> None:
    with receiver("slow", delay=0.3) as rec:
        app, shield = make_app(alert_config(rec.url, JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS))
        sinks.append(sink := sink_of(app, shield))
        answers, _ = scenario(app)
        assert answers == without_webhook
        assert sink.flush(20)
        assert sink.stats().delivered == 6 and len(rec.received) == 6


def test_hung_receiver(
    make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    with receiver("hung") as rec:
        app, shield = make_app(
            alert_config(
                rec.url,
                JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS,
                JWT_SHIELD_ALERT_TIMEOUT=0.2,
                JWT_SHIELD_ALERT_RETRIES=1,
            )
        )
        sinks.append(sink := sink_of(app, shield))
        answers, _ = scenario(app)
        assert answers == without_webhook
        with caplog.at_level(logging.WARNING, "flask_jwt_shield"):
            assert sink.flush(30)
        stats = sink.stats()
        assert (stats.delivered, stats.failed, stats.retries) == (0, 6, 6)
        assert len(rec.received) == 12  # each alert: two attempts, each read and never answered
        assert "not delivered to http://127.0.0.1:" in caplog.text and "timed out" in caplog.text
        assert "/hooks/shield" not in caplog.text  # the URL's path may hold a secret: not logged


def test_refusing_receiver(
    make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, shield = make_app(
        alert_config(closed_port_url(), JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS, JWT_SHIELD_ALERT_RETRIES=2)
    )
    sinks.append(sink := sink_of(app, shield))
    answers, _ = scenario(app)
    assert answers == without_webhook
    with caplog.at_level(logging.WARNING, "flask_jwt_shield"):
        assert sink.flush(30)
    stats = sink.stats()
    assert (stats.delivered, stats.failed, stats.retries) == (0, 6, 12)
    assert "ConnectionRefusedError" in caplog.text


def test_server_errors_then_success_is_retried(
    make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any
) -> None:
    with receiver("fail", failures=2, status=503) as rec:
        app, shield = make_app(alert_config(rec.url, JWT_SHIELD_ALERT_SECRET=SECRET))
        sinks.append(sink := sink_of(app, shield))
        answers, _ = scenario(app)
        assert answers == without_webhook
        assert sink.flush(20)
        stats = sink.stats()
        assert (stats.delivered, stats.failed, stats.retries) == (1, 0, 2)
        ids = {r.headers["X-JWT-Shield-Delivery"] for r in rec.received}
        assert len(rec.received) == 3 and len(ids) == 1  # the same alert three times: receivers dedupe by it
        for r in rec.received:  # each attempt signed afresh
            assert verify_signature(
                SECRET.encode(), r.headers["X-JWT-Shield-Timestamp"], r.body, r.headers["X-JWT-Shield-Signature"]
            )


def test_client_error_is_not_retried(make_app: AppFactory, sinks: list[AlertSink]) -> None:
    with receiver("fail", failures=10, status=401) as rec:  # e.g. the receiver rejects the signature
        app, shield = make_app(alert_config(rec.url))
        sinks.append(sink := sink_of(app, shield))
        scenario(app)
        assert sink.flush(10)
        assert (sink.stats().failed, sink.stats().retries, len(rec.received)) == (1, 0, 1)


def test_gone_receiver(make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any) -> None:
    with receiver() as rec:
        url = rec.url
        app, shield = make_app(alert_config(url, JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS, JWT_SHIELD_ALERT_RETRIES=0))
        sinks.append(sink := sink_of(app, shield))
        with app.app_context():
            shield.revoke_family("before")
        assert sink.flush(10) and sink.stats().delivered == 1
    # The receiver is gone now (its port closed) while the app keeps running.
    answers, _ = scenario(app)
    assert answers == without_webhook
    assert sink.flush(20)
    assert sink.stats().failed == 6


def test_queue_overflow_counts_and_logs_drops(
    make_app: AppFactory, sinks: list[AlertSink], caplog: pytest.LogCaptureFixture
) -> None:
    with receiver("hung") as rec:
        app, shield = make_app(
            alert_config(
                rec.url,
                JWT_SHIELD_ALERT_EVENTS=["family-revoked"],
                JWT_SHIELD_ALERT_QUEUE_SIZE=3,
                JWT_SHIELD_ALERT_TIMEOUT=30,
            )
        )
        sinks.append(sink := sink_of(app, shield))
        with caplog.at_level(logging.WARNING, "flask_jwt_shield"), app.app_context():
            for i in range(20):
                shield.revoke_family(f"sid-{i}")  # each one still answers at once
        stats = sink.stats()
        # The worker holds at most one (stuck on the hung receiver), the queue three more.
        assert stats.queued + stats.dropped == 20 and stats.queued in (3, 4)
        assert sink.dropped == stats.dropped >= 16
        assert "alert queue full" in caplog.text and "dropped" in caplog.text
        assert caplog.text.count("alert queue full") == 1  # not one line per drop
        with app.app_context():  # the events themselves were all recorded
            assert len(shield.events(kind="family-revoked", limit=50)) == 20


def test_full_queue_leaves_answers_unchanged(
    make_app: AppFactory, sinks: list[AlertSink], without_webhook: t.Any
) -> None:
    with receiver("hung") as rec:
        app, shield = make_app(
            alert_config(
                rec.url,
                JWT_SHIELD_ALERT_EVENTS=SCENARIO_KINDS,
                JWT_SHIELD_ALERT_QUEUE_SIZE=1,
                JWT_SHIELD_ALERT_TIMEOUT=30,
            )
        )
        sinks.append(sink := sink_of(app, shield))
        answers, _ = scenario(app)
        assert answers == without_webhook
        stats = sink.stats()
        assert stats.queued + stats.dropped == 6 and stats.dropped >= 4


def test_closed_sink_takes_nothing(make_app: AppFactory) -> None:
    with receiver() as rec:
        app, shield = make_app(alert_config(rec.url, JWT_SHIELD_ALERT_EVENTS=["family-revoked"]))
        sink = sink_of(app, shield)
        sink.close()
        with app.app_context():
            shield.revoke_family("x")
        assert sink.stats().queued == 0 and rec.received == []


def test_signature_helpers() -> None:
    body = b'{"type": "alert"}'
    assert (
        sign(b"k" * 32, "1800000000", body)
        == "sha256=" + hmac.new(b"k" * 32, b"1800000000." + body, hashlib.sha256).hexdigest()
    )
    assert not verify_signature(b"k" * 32, "not-a-number", body, "sha256=00")
    assert verify_signature(b"k" * 32, "1800000000", body, sign(b"k" * 32, "1800000000", body), now=1800000100)


# -- worker processes ------------------------------------------------------------------------


def test_alerts_from_every_gunicorn_worker(tmp_path: Path) -> None:
    """Each worker process sends its own alerts: the app is built before the fork (--preload),
    so the sink's worker thread must be re-created in each child."""
    with (
        receiver() as rec,
        gunicorn(tmp_path / "shield.db", workers=2, preload=True, env={"SHIELD_TEST_WEBHOOK": rec.url}) as port,
    ):
        workers: set[int] = set()  # the processes that detected a reuse
        for _ in range(30):  # bounded: until both workers have detected one
            status, pair = call(port, "POST", "/login")
            assert status == 200
            assert call(port, "POST", "/refresh", body={"refresh_token": pair["refresh_token"]})[0] == 200
            status, body = call(port, "POST", "/refresh", body={"refresh_token": pair["refresh_token"]})
            assert status == 400 and body["error"] == "invalid_grant"
            workers.add(body["worker"])
            if len(workers) == 2:
                break
        deadline = time.monotonic() + 10
        while {r.json["source"]["pid"] for r in rec.received} != workers and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded wait for the alerts still in flight
        got = rec.received
        assert {r.json["source"]["pid"] for r in got} == workers and len(workers) == 2
        assert {r.json["event"]["kind"] for r in got} == {"refresh-reused"}
        assert all(json.loads(r.body)["app"] == "tests.multiworker_app" for r in got)


def test_alert_queued_just_before_a_normal_exit_is_sent(tmp_path: Path) -> None:
    script = tmp_path / "exits.py"
    script.write_text(
        "import sys\n"
        "from flask import Flask\n"
        "from flask_jwt_shield import JWTShield\n"
        "app = Flask('exits')\n"
        "app.config.update(JWT_SHIELD_SECRET_KEY='k' * 40, JWT_SHIELD_ALERT_WEBHOOK=sys.argv[1])\n"
        "shield = JWTShield(app)\n"
        "with app.app_context():\n"
        "    app.extensions['jwt_shield'].record('refresh-reused', None, subject='alice')\n"
        # no flush, no close: the process simply ends
    )
    with receiver() as rec:
        done = subprocess.run(
            [sys.executable, str(script), rec.url], cwd=ROOT, capture_output=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        (got,) = rec.wait_for(1)
        assert got.json["event"]["kind"] == "refresh-reused" and got.json["app"] == "exits"


def test_receiver_behaviour_helper() -> None:
    rec = Receiver()
    with pytest.raises(AssertionError):
        rec.wait_for(1, timeout=0)
