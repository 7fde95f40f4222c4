"""``flask jwt-shield``: revoke, inspect events and sessions, look up addresses, manage keys,
check the configuration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
import secrets
import time
import typing as t

import click
from flask import current_app
from flask.cli import with_appcontext

from . import events as _events
from . import geocheck
from . import revocation
from .alerts import AlertSink
from .config import ConfigKey
from .config import ShieldConfig
from .config import flask_jwt_extended_warnings
from .errors import ConfigurationError
from .errors import StoreError
from .errors import StoreUnavailable
from .geo import GeoIPDatabase
from .geo import GeoIPError
from .geo import is_routable
from .masking import mask_url
from .sessions import Session
from .state import ShieldState
from .state import current_state
from .stores.memory import MemoryStore
from .stores.redis import RedisStore

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _state() -> ShieldState:
    try:
        return current_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


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


def _writable(state: ShieldState, what: str) -> None:
    """Refuse a write the running server would never see: a ``memory://`` store lives
    inside the server's own process, and this command runs in a process of its own."""
    if isinstance(state.store, MemoryStore):
        raise click.ClickException(
            f"Nothing {what}: {ConfigKey.STORE_URI} is memory://, and a memory store lives inside the running"
            " server process, so this command (a process of its own) cannot reach it. Use a shared store,"
            " 'sqlite:///shield.db' on one host or 'redis://...' across hosts."
        )


def _known_key(state: ShieldState, kid: str) -> None:
    """Refuse a key the shield does not know: revoking it would change nothing."""
    if kid in state.keys.by_kid:
        return
    remote = state.codec.remote
    if remote is not None:
        remote.refresh_if_due()
        if remote.key_set is not None and kid in remote.key_set.kids:
            return
        known = sorted(remote.key_set.kids) if remote.key_set is not None else []
        where = (
            "in the identity provider's JWK Set"
            if remote.key_set is not None
            else (f"(the JWK Set could not be fetched: {remote.last_error})")
        )
    else:
        known = [k.kid for k in state.keys.keys]
        where = "in the key ring"
    raise click.ClickException(
        f"Nothing revoked: there is no key {kid!r} {where}." + (f" Known keys: {', '.join(known)}." if known else "")
    )


@cli.command()
@click.option("--jti", help="Revoke one token by its jti.")
@click.option(
    "--session",
    "--family",
    "sid",
    help="Revoke one session (its refresh token and every access token from it) by its sid."
    " --family is the older name of this option.",
)
@click.option("--subject", help="Revoke every token of this subject issued before now (log out everywhere).")
@click.option("--kid", help="Revoke every token signed with this key (one of the key ring).")
@with_appcontext
def revoke(jti: str | None, sid: str | None, subject: str | None, kid: str | None) -> None:
    """Revoke a token, a session, a subject or a key.

    Needs a shared store (SQLite or Redis): a memory:// store lives inside the running
    server, out of this command's reach.
    """
    given = [v for v in (jti, sid, subject, kid) if v]
    if len(given) != 1:
        raise click.UsageError("Give exactly one of --jti, --session, --subject, --kid.")
    state = _state()
    _writable(state, "revoked")
    try:
        if jti:
            revocation.revoke_token(state, jti)
        elif sid:
            revocation.revoke_family(state, sid)
        elif subject:
            revocation.revoke_subject(state, subject)
        elif kid:
            _known_key(state, kid)
            revocation.revoke_key(state, kid)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except (StoreError, StoreUnavailable):
        raise click.ClickException("Nothing revoked: the store cannot be reached; try again.") from None
    click.echo("revoked")


def _line(e: _events.SecurityEvent, fields: tuple[str, ...]) -> str:
    """One event as a line of text: only the fields it has (no ``country=None``)."""
    when = dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat(timespec="seconds")
    parts = [f"{when}  {e.kind:<18}"]
    parts += [f"{name}={value}" for name in fields if (value := getattr(e, name)) not in (None, "")]
    if e.detail:
        parts.append(json.dumps(e.detail, sort_keys=True))
    return " ".join(parts)


#: Why an empty answer from a memory store may mean nothing.
_MEMORY_NOTE = (
    " (the store is memory://: this command sees only its own process, never the state of a running"
    " server; use a SQLite or Redis store)"
)


def _nothing_found(state: ShieldState, what: str) -> str:
    """Say that nothing matched -- and, with a memory store, why that may be."""
    return f"no events {what}" + (_MEMORY_NOTE if isinstance(state.store, MemoryStore) else "")


def _filters(**given: str | None) -> str:
    shown = [f"{name} {value!r}" for name, value in given.items() if value]
    return "for " + ", ".join(shown) if shown else "stored"


@cli.command()
@click.option("--subject", help="Events of this subject (user id).")
@click.option("--jti", help="Events naming this token.")
@click.option("--session", "--family", "sid", help="Events of this session (sid). --family is the older name.")
@click.option("--kind", type=click.Choice(_events.KINDS), help="Events of this kind.")
@click.option("--since", help="A duration (90m, 24h, 7d) or an ISO 8601 instant.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@with_appcontext
def events(
    subject: str | None,
    jti: str | None,
    sid: str | None,
    kind: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored security events, newest first."""
    state = _state()
    found = _events.query(
        state.store,
        subject=subject,
        jti=jti,
        sid=sid,
        kind=kind,
        since=parse_since(since) if since else None,
        limit=limit,
    )
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2, sort_keys=True))
        return
    if not found:
        click.echo(_nothing_found(state, _filters(subject=subject, jti=jti, session=sid, kind=kind, since=since)))
        return
    for e in found:
        click.echo(_line(e, ("subject", "jti", "sid", "ip", "country", "action")))


@cli.command()
@click.argument("who")
@click.option("--limit", type=int, default=500, show_default=True)
@with_appcontext
def trace(who: str, limit: int) -> None:
    """Timeline of a subject, a token (jti) or a session (sid), oldest first."""
    state = _state()
    store = state.store
    seen: dict[str, t.Any] = {}
    for found in (
        _events.query(store, subject=who, limit=limit),
        _events.query(store, jti=who, limit=limit),
        _events.query(store, sid=who, limit=limit),
    ):
        for e in found:
            seen[e.id] = e
    if not seen:
        click.echo(_nothing_found(state, f"for {who!r} (no subject, token or session by that name)"))
        return
    for e in sorted(seen.values(), key=lambda e: e.at):
        click.echo(_line(e, ("jti", "sid", "ip", "country", "action")))


@cli.group()
def keys() -> None:
    """Generate and list signing keys."""


@keys.command("generate")
@click.option(
    "--alg",
    default="ES256",
    show_default=True,
    type=click.Choice(
        ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
    ),
)
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
    from .keys import prepare

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
    derived = prepare(KeySpec(kid=None, alg=alg, key=entry["key"], public_key=None), 0, True).kid
    return {"kid": kid or derived, **entry}


@keys.command("list")
@with_appcontext
def list_keys() -> None:
    """List the key ring: kid, algorithm, and whether the key signs or only verifies.

    In resource-server mode: the identity provider's keys, fetched now from its JWK Set.
    """
    state = _state()
    remote = state.codec.remote
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
    ring = state.keys
    for i, key in enumerate(ring.keys):
        role = "signs" if i == 0 and key.signing is not None else "verifies"
        click.echo(f"{key.kid}  {key.alg}  {role}")


@cli.command()
@click.argument("subject")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@with_appcontext
def sessions(subject: str, as_json: bool) -> None:
    """List the live sessions of SUBJECT (by sid), oldest first."""
    state = _state()
    try:
        families = state.store.families(subject, now=time.time(), idle_ttl=state.config.sessions.refresh_idle_ttl)
    except StoreError as exc:
        raise click.ClickException(f"The store cannot be reached: {exc}") from None
    found = [Session.of(f) for f in families]
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in found], indent=2, sort_keys=True))
        return
    if not found:
        click.echo(f"no live sessions for {subject!r}")
        return
    rows = [("sid", "created", "last used", "last IP", "last country")]
    rows += [
        (s.sid, _when(s.created_at), _when(s.last_used_at), s.last_ip or "-", s.last_country or "-") for s in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


@cli.command()
@click.argument("ip")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def geo(ip: str, as_json: bool) -> None:
    """Where the configured GeoIP database places the address IP."""
    try:
        address = str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise click.BadParameter(f"{ip!r} is not an IPv4 or IPv6 address.", param_hint="'IP'") from None
    path = _settings().geo.geoip_database
    if path is None:
        raise click.ClickException(
            f"No GeoIP database: set {ConfigKey.GEOIP_DATABASE} to a MaxMind-format .mmdb file"
            " (GeoLite2-City for coordinates and impossible travel, or GeoLite2-Country)."
        )
    try:
        database = GeoIPDatabase(path, check_interval=3600, cache_size=0)
    except GeoIPError as exc:
        raise click.ClickException(f"{ConfigKey.GEOIP_DATABASE}: {exc}") from None
    try:
        location = database.lookup(address)
        built = database.built_at
        info: dict[str, t.Any] = {
            "ip": address,
            **(
                location.as_dict()
                if location is not None
                else dict.fromkeys(("country", "city", "latitude", "longitude", "accuracy_km"))
            ),
            "database": {
                "path": path,
                "type": database.database_type,
                "built_at": _when(built) if built is not None else None,
            },
        }
    finally:
        database.close()
    if location is None:
        info["unknown"] = (
            "not a globally routable address (private, loopback, CGNAT ...): never placed, flagged or denied"
            if not is_routable(address)
            else "the database has no record for it: never flagged or denied"
        )
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    click.echo(f"ip           {address}")
    if location is None:
        click.echo(f"location     unknown: {info['unknown']}")
    else:
        click.echo(f"country      {location.country or '-'}")
        click.echo(f"city         {location.city or '-'}")
        coordinates = f"{location.latitude}, {location.longitude}" if location.has_coordinates else "-"
        click.echo(f"coordinates  {coordinates}")
        accuracy = f"{location.accuracy_km:g} km" if location.accuracy_km is not None else "-"
        click.echo(f"accuracy     {accuracy}")
    db = info["database"]
    click.echo(f"database     {db['type'] or '?'}, built {db['built_at']} ({path})")


def _settings() -> ShieldConfig:
    state = current_app.extensions.get("jwt_shield")
    if state is not None:
        return t.cast(ShieldState, state).config
    try:
        return ShieldConfig.from_mapping(current_app.config)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


#: A GeoIP database older than this is reported by ``check-config``.
GEOIP_MAX_AGE_DAYS = 30


@cli.command("check-config")
@click.option("--strict", is_flag=True, help="Exit with status 1 when there is any warning.")
@click.option("--offline", is_flag=True, help="Do not send the alert webhook a ping.")
@with_appcontext
def check_config(strict: bool, offline: bool) -> None:
    """Validate the JWT_SHIELD_* settings, print them (secrets masked) and warn about risky ones."""
    from .keys import KeyRing

    app = current_app
    try:
        config = ShieldConfig.from_mapping(app.config, warn=False)  # listed below, not logged
        ring = KeyRing.from_config(config)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Effective settings:")
    for key, value, default in effective_settings(config, ring, app.config):
        click.echo(f"  {key} = {value}{'  (default)' if default else ''}")
    found = config_warnings(app, config, ring, ping=not offline)
    if found:
        click.echo("")
    for warning in found:
        click.echo(f"warning: {warning}")
    if found and strict:
        raise click.ClickException(f"{len(found)} warning(s), and --strict was given.")
    click.echo("configuration OK" + (f" ({len(found)} warning{'s' if len(found) > 1 else ''})" if found else ""))


def effective_settings(config: ShieldConfig, ring: t.Any, given: t.Mapping[str, t.Any]) -> list[tuple[str, str, bool]]:
    """Every ``JWT_SHIELD_*`` key: its effective value as text (secrets masked), and whether
    it is the default."""
    from .ratelimit import default_spike_threshold

    K = ConfigKey
    alerts = config.alerts
    keys = ", ".join(
        f"{k.kid} ({k.alg}, {'signs' if i == 0 and k.signing is not None else 'verifies'})"
        for i, k in enumerate(ring.keys)
    )
    special: dict[str, str] = {
        K.KEYS: f"[{keys}]" if keys else "[] (the identity provider's JWK Set)",
        K.SECRET_KEY: "<set, masked>"
        if given.get(K.SECRET_KEY) is not None
        else (
            "<the app's SECRET_KEY, masked>"
            if config.keys.algorithm.startswith("HS") and not config.resource_server and given.get(K.KEYS) is None
            else "None"
        ),
        K.PRIVATE_KEY: "<set, masked>" if given.get(K.PRIVATE_KEY) is not None else "None",
        K.PUBLIC_KEY: "<set>" if given.get(K.PUBLIC_KEY) is not None else "None",
        K.STORE_URI: repr(mask_url(config.store.store_uri)),
        K.RATE_LIMIT_STORAGE_URI: repr(mask_url(config.rate.rate_limit_storage_uri))
        if config.rate.rate_limit_storage_uri
        else "None (the store's Redis, else memory://)",
        K.SPIKE_THRESHOLD: repr(config.rate.spike_threshold)
        if config.rate.spike_threshold
        else f"None ({default_spike_threshold(config.rate.rate_limit)!r}: ten times the rate limit)",
        K.ALERT_WEBHOOK: repr(mask_url(alerts.webhook, keep_path=False)) if alerts else "None",
        K.JWKS_URL: repr(mask_url(config.remote.jwks_url)) if config.remote.jwks_url else "None",
        K.ALERT_SECRET: "<set, masked>" if alerts and alerts.secret else "None",
        K.SSF_RECEIVE_TOKEN: "<set, masked>" if config.ssf.ssf_receive_token else "None",
        K.SSF_RECEIVE_FROM: repr(mask_url(config.ssf.ssf_receive_from)) if config.ssf.ssf_receive_from else "None",
    }
    if alerts is not None:
        special.update(
            {
                K.ALERT_EVENTS: repr(sorted(alerts.events)),
                K.ALERT_TIMEOUT: repr(alerts.timeout),
                K.ALERT_RETRIES: repr(alerts.retries),
                K.ALERT_RETRY_DELAY: repr(alerts.retry_delay),
                K.ALERT_QUEUE_SIZE: repr(alerts.queue_size),
            }
        )
    rows = []
    for key in K.all():
        if key in special:
            text = special[key]
        else:
            value = config.setting(key.removeprefix("JWT_SHIELD_").lower())
            if isinstance(value, frozenset):
                value = sorted(value)
            text = repr(list(value)) if isinstance(value, tuple) else repr(value)
        rows.append((key, text, key not in given))
    return rows


def config_warnings(app: t.Any, config: ShieldConfig, ring: t.Any, *, ping: bool = True) -> list[str]:
    """What ``check-config`` warns about, each as one sentence saying how to fix it."""
    K = ConfigKey
    state: ShieldState | None = app.extensions.get("jwt_shield")
    found: list[str] = []
    store_is_memory = (
        isinstance(state.store, MemoryStore) if state is not None else (config.store.store_uri.startswith("memory"))
    )
    if store_is_memory and not app.testing:
        found.append(
            f"{K.STORE_URI} is memory://: revocations, sessions and events live in one process and are lost on"
            " restart, and with several workers a token revoked in one is still accepted by the others. Use"
            " 'sqlite:///shield.db' on one host or 'redis://...' across hosts."
        )
    found.extend(_hmac_warnings(app, config, ring))
    if state is not None and isinstance(state.store, RedisStore):
        try:
            risks = state.store.eviction_risks()
        except StoreError as exc:
            risks = []
            found.append(f"the Redis store cannot be reached to check its memory policy: {exc}")
        for risk in risks:
            found.append(
                f"the Redis store runs with {risk}: under memory pressure Redis may evict revocations, DPoP"
                " replay entries and sessions silently (a revoked token accepted again). Set maxmemory-policy"
                " noeviction (writes then fail, and the fail mode answers) or give Redis room."
            )
    found.extend(flask_jwt_extended_warnings(app.config))
    if state is not None:
        for entry in state.unmatched_exemptions(app):
            found.append(
                f"{K.EXEMPT_ENDPOINTS} lists {entry!r}, which names no endpoint of this app: a typo leaves"
                " the endpoint it meant protected. Fix the name (or the pattern)."
            )
    if config.request.monitor_only:
        found.append(
            f"{K.MONITOR_ONLY} is on: every detector only flags (no deny, no revoke) while the events say what"
            " would have happened. Set it to False once the events look right."
        )
    found.extend(_geoip_warnings(config))
    if config.rate.rate_limit is not None:
        default_storage = "" if config.store.store_uri.startswith(("redis", "unix")) else "memory"
        local = (
            state.limiter.local
            if state is not None and state.limiter is not None
            else ((config.rate.rate_limit_storage_uri or default_storage).startswith("memory"))
        )
        if local:
            found.append(
                f"{K.RATE_LIMIT} ({config.rate.rate_limit!r}) counts in each process on its own (memory:// limiter"
                " storage): with N workers a token gets N times the limit and spikes are seen per process. Set"
                f" {K.RATE_LIMIT_STORAGE_URI} to 'redis://...', or use a Redis store, whose server the limits"
                " then share."
            )
    if config.alerts is not None and ping:
        error = AlertSink(config.alerts).ping(app.name)
        if error is not None:
            found.append(
                f"the alert webhook {mask_url(config.alerts.webhook, keep_path=False)} does not answer a ping"
                f" ({error}): alerts would be retried and then dropped. Check {K.ALERT_WEBHOOK} and the receiver"
                ' (it should answer {"type": "ping"} with any 2xx).'
            )
    return found


def _hmac_warnings(app: t.Any, config: ShieldConfig, ring: t.Any) -> list[str]:
    """HS keys where other services verify the tokens: each of them could mint tokens too.

    Checked: tokens addressed to an audience other than their issuer (JWT_SHIELD_AUDIENCE
    set and different from JWT_SHIELD_ISSUER), and a JWK Set route served by the app (a
    ``/.well-known/jwks.json`` rule: someone is expected to verify with published keys).
    """
    K = ConfigKey
    if config.resource_server or not any(k.alg.startswith("HS") for k in ring.keys):
        return []
    found = []
    fix = (
        " Use asymmetric keys (flask jwt-shield keys generate --alg ES256) and publish the public ones with"
        " shield.jwks_blueprint()."
    )
    if config.keys.audience is not None and config.keys.audience != config.keys.issuer:
        found.append(
            f"HS keys sign tokens addressed to {config.keys.audience!r} ({K.AUDIENCE}), not to their issuer"
            f" ({config.keys.issuer!r}): every service that verifies them holds the secret and can mint tokens for"
            f" any user.{fix}"
        )
    if any(rule.rule.endswith("/.well-known/jwks.json") for rule in app.url_map.iter_rules()):
        found.append(
            "the app serves a JWK Set (/.well-known/jwks.json) for other services, but its HS keys are secret"
            f" and never published, so those services would need the secret itself.{fix}"
        )
    return found


def _geoip_warnings(config: ShieldConfig) -> list[str]:
    K = ConfigKey
    path = config.geo.geoip_database
    if path is None:
        return [
            f"no GeoIP database ({K.GEOIP_DATABASE}): new-country, country-change and impossible-travel"
            " detection and the country lists are off. Point it at a GeoLite2-City .mmdb kept fresh by"
            " geoipupdate."
        ]
    try:
        database = GeoIPDatabase(path, check_interval=3600, cache_size=0)
    except GeoIPError as exc:
        return [f"{K.GEOIP_DATABASE}: {exc}"]
    try:
        built = database.built_at
    finally:
        database.close()
    if built is not None:
        age = (time.time() - built) / 86400
        if age > GEOIP_MAX_AGE_DAYS:
            return [
                f"the GeoIP database {path!r} was built {_when(built)}, {age:.0f} days ago: addresses that moved"
                " since are placed where they used to be. Update it (geoipupdate, twice a week)."
            ]
    return []


@cli.command("forget-places")
@click.argument("subject")
@with_appcontext
def forget_places(subject: str) -> None:
    """Clear what the GeoIP detectors remember of SUBJECT (recent countries, last place),
    after a false alarm: the next login is judged like a first one."""
    state = _state()
    _writable(state, "forgotten")
    try:
        geocheck.forget_places(state, subject, by="cli")
    except (StoreError, StoreUnavailable):
        raise click.ClickException("Nothing forgotten: the store cannot be reached; try again.") from None
    click.echo(f"forgot the places of {subject}")


@cli.command()
@with_appcontext
def purge() -> None:
    """Drop expired revocations, sessions and spent refresh tokens from the store."""
    state = _state()
    _writable(state, "purged")
    dropped = state.store.purge(time.time())
    click.echo(f"purged {dropped} expired entries")
