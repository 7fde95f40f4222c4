"""``flask jwt-shield``: revoke, inspect events, manage keys, check the configuration."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
import typing as t

import click
from flask import current_app
from flask.cli import with_appcontext

from . import events as _events
from .config import ShieldConfig
from .errors import ConfigurationError
from .pipeline import Pipeline

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _pipeline() -> Pipeline:
    try:
        return t.cast(Pipeline, current_app.extensions["jwt_shield"])
    except KeyError:
        raise click.ClickException("JWTShield is not initialised on this app (call shield.init_app(app)).") from None


def parse_since(value: str) -> float:
    """``90m``, ``24h``, ``7d`` (ago) or an ISO 8601 instant → epoch seconds."""
    match = _DURATION.fullmatch(value.strip())
    if match:
        return time.time() - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a duration (90m, 24h, 7d) nor ISO 8601.") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.timestamp()


@click.group("jwt-shield")
def cli() -> None:
    """Flask-JWT-Shield: revocation, security events and keys."""


@cli.command()
@click.option("--jti", help="Revoke one token by its jti.")
@click.option("--family", "sid", help="Revoke one session (refresh family) by its sid.")
@click.option("--subject", help="Revoke every token of this subject issued before now.")
@click.option("--kid", help="Revoke every token signed with this key.")
@with_appcontext
def revoke(jti: str | None, sid: str | None, subject: str | None, kid: str | None) -> None:
    """Revoke a token, a session, a subject or a key."""
    given = [v for v in (jti, sid, subject, kid) if v]
    if len(given) != 1:
        raise click.UsageError("Give exactly one of --jti, --family, --subject, --kid.")
    pipeline = _pipeline()
    try:
        if jti:
            pipeline.revoke_token(jti)
        elif sid:
            pipeline.revoke_family(sid)
        elif subject:
            pipeline.revoke_subject(subject)
        elif kid:
            pipeline.revoke_key(kid)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("revoked")


@cli.command()
@click.option("--subject")
@click.option("--jti")
@click.option("--family", "sid")
@click.option("--kind")
@click.option("--since", help="A duration (90m, 24h, 7d) or an ISO 8601 instant.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@with_appcontext
def events(subject: str | None, jti: str | None, sid: str | None, kind: str | None,
           since: str | None, limit: int, as_json: bool) -> None:  # fmt: skip
    """List stored security events, newest first."""
    found = _events.query(
        _pipeline().store, subject=subject, jti=jti, sid=sid, kind=kind,
        since=parse_since(since) if since else None, limit=limit,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2, sort_keys=True))
        return
    for e in found:
        when = dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat(timespec="seconds")
        click.echo(f"{when}  {e.kind:<18} subject={e.subject} jti={e.jti} sid={e.sid}"
                   f" ip={e.ip} action={e.action} {json.dumps(e.detail, sort_keys=True)}")  # fmt: skip


@cli.command()
@click.argument("who")
@click.option("--limit", type=int, default=500, show_default=True)
@with_appcontext
def trace(who: str, limit: int) -> None:
    """Timeline of a subject, a token (jti) or a session (sid), oldest first."""
    store = _pipeline().store
    seen: dict[str, t.Any] = {}
    for found in (_events.query(store, subject=who, limit=limit), _events.query(store, jti=who, limit=limit),
                  _events.query(store, sid=who, limit=limit)):  # fmt: skip
        for e in found:
            seen[e.id] = e
    for e in sorted(seen.values(), key=lambda e: e.at):
        when = dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat(timespec="seconds")
        click.echo(f"{when}  {e.kind:<18} jti={e.jti} sid={e.sid} ip={e.ip} country={e.country}"
                   f" action={e.action} {json.dumps(e.detail, sort_keys=True)}")  # fmt: skip


@cli.group()
def keys() -> None:
    """Generate and list signing keys."""


@keys.command("generate")
@click.option("--alg", default="ES256", show_default=True,
              type=click.Choice(["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
                                 "PS384", "PS512", "ES256", "ES384", "EdDSA"]))  # fmt: skip
@click.option("--kid", help="Key id; default: derived from the key.")
def generate(alg: str, kid: str | None) -> None:
    """Print a new key as one JSON entry for JWT_SHIELD_KEYS (put it first to sign with it)."""
    click.echo(json.dumps(generate_key(alg, kid)))


def generate_key(alg: str, kid: str | None = None) -> dict[str, str]:
    """A new ``JWT_SHIELD_KEYS`` entry for ``alg``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .config import KeySpec
    from .keys import _prepare

    private: t.Any
    if alg.startswith("HS"):
        secret = secrets.token_urlsafe({"HS256": 48, "HS384": 64, "HS512": 86}[alg])
        entry = {"alg": alg, "key": secret}
    else:
        if alg.startswith(("RS", "PS")):
            private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        entry = {"alg": alg, "key": pem}
    derived = _prepare(KeySpec(kid=None, alg=alg, key=entry["key"], public_key=None), 0, True).kid
    return {"kid": kid or derived, **entry}


@keys.command("list")
@with_appcontext
def list_keys() -> None:
    """List the key ring: kid, algorithm, and whether the key signs or only verifies.

    In resource-server mode: the identity provider's keys, fetched now from its JWK Set.
    """
    pipeline = _pipeline()
    remote = pipeline.codec.remote
    if remote is not None:
        remote.refresh_if_due()
        key_set = remote.key_set
        if key_set is None:
            raise click.ClickException(f"the JWK Set could not be fetched: {remote.last_error}")
        for kid, alg in sorted(key_set.keys):
            click.echo(f"{kid}  {alg}  provider")
        for skipped in key_set.skipped:
            click.echo(f"{skipped.kid}  -  skipped: {skipped.reason}")
        return
    ring = pipeline.keys
    for i, key in enumerate(ring.keys):
        role = "signs" if i == 0 and key.signing is not None else "verifies"
        click.echo(f"{key.kid}  {key.alg}  {role}")


@cli.command("check-config")
@with_appcontext
def check_config() -> None:
    """Validate the JWT_SHIELD_* settings without starting the app."""
    from .keys import KeyRing

    try:
        KeyRing.from_config(ShieldConfig.from_mapping(current_app.config))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("configuration OK")


@cli.command()
@with_appcontext
def purge() -> None:
    """Drop expired revocations, sessions and spent refresh tokens from the store."""
    dropped = _pipeline().store.purge(time.time())
    click.echo(f"purged {dropped} expired entries")
