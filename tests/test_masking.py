"""One masking rule for every place a configured URL is shown (issue 24, finding 10):
``flask jwt-shield check-config`` (tests/test_cli.py), the dashboard (tests/test_dashboard.py),
the alert sink's log lines and the JWK Set client's log lines (here)."""

from __future__ import annotations

import logging

import pytest

from flask_jwt_shield.jwks import JWKSClient
from flask_jwt_shield.masking import mask_url

from .conftest import AppFactory
from .idp_util import down_url
from .webhook_util import closed_port_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://ops:pw@127.0.0.1:6379/1", "redis://ops:***@127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379/0?password=pw", "redis://127.0.0.1:6379/0?password=***"),
        (
            "redis://127.0.0.1:6379?db=2&socket_timeout=0.5&password=pw",
            "redis://127.0.0.1:6379?db=2&socket_timeout=0.5&password=***",
        ),
        ("rediss://u:p%40ss@h:1/0", "rediss://u:***@h:1/0"),
        ("redis+cluster://:pw@n1:7000,n2:7001", "redis+cluster://:***@n1:7000,n2:7001"),
        ("https://token@idp.example/jwks", "https://***@idp.example/jwks"),
        (
            "https://idp.example/.well-known/jwks.json?token=abc&kid=1",
            "https://idp.example/.well-known/jwks.json?token=***&kid=***",
        ),
        ("https://idp.example/jwks#access_token=abc", "https://idp.example/jwks#***"),
        ("https://idp.example/jwks?abc", "https://idp.example/jwks?abc=***"),
        ("sqlite:////var/lib/shield.db", "sqlite:////var/lib/shield.db"),
        ("sqlite:///shield.db?timeout=5", "sqlite:///shield.db?timeout=5"),
        ("memory://", "memory://"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("http://u:pw@[::1/x", "***"),
        ("no scheme but user:pw@host", "***"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/services/T0/B1/secret", "https://hooks.example/..."),
        ("https://user:pw@hooks.example:8443/?token=x", "https://hooks.example:8443/..."),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
    ],
)
def test_mask_url_without_the_path(url: str, shown: str) -> None:
    """Webhook URLs often hold their secret in the path itself."""
    assert mask_url(url, keep_path=False) == shown


def test_the_alert_sinks_log_lines_show_no_credential(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    webhook = closed_port_url().replace("http://", "http://hook:s3cret-pw@") + "/s3cret-path?token=s3cret-q"
    app, shield = make_app(
        {
            "JWT_SHIELD_ALERT_WEBHOOK": webhook,
            "JWT_SHIELD_ALERT_RETRY_DELAY": 0.01,
            "JWT_SHIELD_ALERT_RETRIES": 0,
            "JWT_SHIELD_ALERT_EVENTS": ["subject-revoked"],
        }
    )
    with app.app_context():
        sink = shield.alerts()
        assert sink is not None
        with caplog.at_level(logging.WARNING, "flask_jwt_shield"):
            shield.revoke_subject("alice")
            assert sink.flush(20)
    assert sink.stats().failed == 1
    assert "not delivered to http://127.0.0.1:" in caplog.text
    assert "s3cret" not in caplog.text


def test_the_jwks_clients_log_lines_show_no_credential(caplog: pytest.LogCaptureFixture) -> None:
    """The JWK Set fetch warning named the URL with its userinfo and ``?token=``."""
    url = down_url().replace("http://", "http://reader:s3cret-pw@") + "?token=s3cret-token"
    jwks = JWKSClient(url, allowed=frozenset({"RS256"}), timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="flask_jwt_shield"):
        jwks.refresh_if_due()
    assert "JWK Set fetch from http://reader:***@127.0.0.1:" in caplog.text
    assert "?token=***" in caplog.text and "s3cret" not in caplog.text


def test_nothing_else_masks_urls_its_own_way() -> None:
    """One helper: the CLI, the dashboard, outbound delivery (alerts, SET pushes), the JWK Set
    client, the Shared Signals receiver's connection and the status list client (with its
    fail mode's event in the state) import it."""
    from pathlib import Path

    import flask_jwt_shield

    package = Path(flask_jwt_shield.__file__).parent
    users = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "mask_url" in p.read_text() and p.name != "masking.py"
    )
    assert users == [
        "cli.py",
        "dashboard/__init__.py",
        "delivery.py",
        "jwks.py",
        "ssf/connection.py",
        "state.py",
        "statuslist/client.py",
    ]
    assert not any("def _mask" in p.read_text() for p in package.rglob("*.py"))
