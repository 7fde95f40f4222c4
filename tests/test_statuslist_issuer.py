"""The shield as Token Status List issuer and provider (draft-ietf-oauth-status-list).

Every test reads the list the way another service would: the endpoint's real bytes,
gunzipped, the Status List Token verified with joserfc against the published JWK Set, the
list decoded with the codec, each token's bit read at the ``idx`` its ``status`` claim names.
"""

from __future__ import annotations

import gzip
import random
import typing as t
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jwk import KeySet

from flask_jwt_shield import ConfigurationError
from flask_jwt_shield import JWTShield
from flask_jwt_shield.jose import b64decode
from flask_jwt_shield.statuslist.codec import StatusList
from flask_jwt_shield.stores import MemoryStore
from flask_jwt_shield.stores import Store

from .conftest import AppFactory
from .conftest import Clock
from .test_store_contract import make_store

ISSUER = "https://issuer.example"
URI = ISSUER + "/statuslists/1"


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEY_A, KEY_B = _pem(), _pem()
#: What a third party verifies issued tokens with (the published keys, by kid).
KEYS = KeySet([ECKey.import_key(KEY_A, {"kid": "a"}), ECKey.import_key(KEY_B, {"kid": "b"})])


def config(**extra: t.Any) -> dict[str, t.Any]:
    return {
        "JWT_SHIELD_KEYS": [{"kid": "a", "alg": "ES256", "key": KEY_A}],
        "JWT_SHIELD_ISSUER": ISSUER,
        "JWT_SHIELD_STATUS_LIST": True,
        "JWT_SHIELD_STATUS_LIST_SIZE": 4096,
        "JWT_SHIELD_STATUS_LIST_TTL": 30,
        "JWT_SHIELD_RATE_LIMIT": None,
        **extra,
    }


def mount(app: Flask, shield: JWTShield) -> Flask:
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(shield.status_list_blueprint())
    app.register_blueprint(shield.metadata_blueprint())
    return app


@pytest.fixture
def status_app(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    app, shield = make_app(config())
    mount(app, shield)
    return app, shield


def fetch(client: FlaskClient, *, jwks: dict[str, t.Any] | None = None) -> tuple[dict[str, t.Any], StatusList]:
    """The list as a relying party reads it: gzip on the wire, signature checked."""
    response = client.get("/statuslists/1", headers={"Accept-Encoding": "gzip", "Accept": "application/statuslist+jwt"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/statuslist+jwt"
    assert response.headers["Content-Encoding"] == "gzip"
    token = gzip.decompress(response.get_data()).decode()
    keys = KeySet.import_key_set(t.cast(t.Any, jwks or client.get("/.well-known/jwks.json").get_json()))
    verified = jwt.decode(token, keys, algorithms=["ES256"])
    assert verified.header["typ"] == "statuslist+jwt"
    claims = verified.claims
    assert claims["sub"] == URI
    assert claims["ttl"] == 30 and claims["exp"] == claims["iat"] + 60
    assert response.cache_control.max_age == claims["ttl"]
    return claims, StatusList.from_json(claims["status_list"], max_bytes=1 << 20)


def reference(shield: JWTShield, token: str) -> int:
    claims = jwt.decode(token, KEYS, algorithms=["ES256"]).claims
    assert claims["status"]["status_list"]["uri"] == URI
    idx = claims["status"]["status_list"]["idx"]
    assert isinstance(idx, int) and 0 <= idx < 4096
    return idx


def invalid(client: FlaskClient, shield: JWTShield, tokens: dict[str, str]) -> set[str]:
    _, lst = fetch(client)
    return {name for name, token in tokens.items() if lst[reference(shield, token)]}


# -- issuing ------------------------------------------------------------------------------


def test_every_access_token_names_its_own_index(status_app: tuple[Flask, JWTShield]) -> None:
    app, shield = status_app
    with app.app_context():
        pairs = [shield.issue_tokens(f"user{i}") for i in range(20)]
        refreshed = shield.refresh(pairs[0].refresh_token)
        lower = shield.create_access_token("svc")
    indices = {reference(shield, p.access_token) for p in pairs}
    indices |= {reference(shield, refreshed.access_token), reference(shield, lower)}
    assert len(indices) == 22  # a refresh gets a fresh index (the draft's linkability advice)
    assert "status" not in jwt.decode(pairs[0].refresh_token, KEYS).claims
    with app.test_client() as client:
        _, lst = fetch(client)
        assert all(lst[i] == 0 for i in indices)
        assert len(lst) == 4096


def test_a_grace_reissue_names_the_same_index(make_app: AppFactory) -> None:
    app, shield = make_app(config(JWT_SHIELD_REFRESH_REUSE_GRACE=30))
    with app.app_context():
        first = shield.issue_tokens("alice")
        a = shield.refresh(first.refresh_token)
        b = shield.refresh(first.refresh_token)  # within the grace: the same generation
    assert a.access_token == b.access_token or reference(shield, a.access_token) == reference(shield, b.access_token)


def test_the_status_claim_is_the_shields_to_write(status_app: tuple[Flask, JWTShield], make_app: AppFactory) -> None:
    app, shield = status_app
    with app.app_context(), pytest.raises(ValueError, match="status"):
        shield.issue_tokens("alice", claims={"status": "active"})
    with app.app_context(), pytest.raises(ValueError, match="status"):
        shield.create_access_token("alice", claims={"status": "active"})
    plain, plain_shield = make_app()  # off: an application claim named "status" is the app's
    with plain.app_context():
        token = plain_shield.issue_tokens("alice", claims={"status": "active"}).access_token
    with plain.test_client() as client:
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).get_json()["status"] == "active"


# -- each kind of revocation sets exactly the affected tokens' bits ------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Store]:
    store = make_store(request.param, request, tmp_path)
    yield store
    store.close()


def test_each_revocation_sets_exactly_its_tokens(make_app: AppFactory, backend_store: Store) -> None:
    app, shield = make_app(config(), store=backend_store)
    mount(app, shield)
    with app.app_context():
        a1 = shield.issue_tokens("alice")
        a1b = shield.refresh(a1.refresh_token)
        a2 = shield.issue_tokens("alice")
        a3 = shield.issue_tokens("alice")
        b1 = shield.issue_tokens("bob")
        b2 = shield.issue_tokens("bob")
        lone = shield.create_access_token("carol")
    tokens = {
        "a1": a1.access_token,
        "a1b": a1b.access_token,
        "a2": a2.access_token,
        "a3": a3.access_token,
        "b1": b1.access_token,
        "b2": b2.access_token,
        "lone": lone,
    }
    with app.test_client() as client:
        assert invalid(client, shield, tokens) == set()
        with app.app_context():
            shield.revoke_token(b2.access_token)
        assert invalid(client, shield, tokens) == {"b2"}
        with app.app_context():
            shield.revoke_token(_jti(shield, lone))  # by jti alone
        assert invalid(client, shield, tokens) == {"b2", "lone"}
        with app.app_context():
            shield.revoke_family(a1.sid)  # every generation of that session
        assert invalid(client, shield, tokens) == {"b2", "lone", "a1", "a1b"}
        with app.app_context():
            shield.revoke_subject("alice")
            after = shield.issue_tokens("alice")  # logging straight back in works
        tokens["after"] = after.access_token
        assert invalid(client, shield, tokens) == {"b2", "lone", "a1", "a1b", "a2", "a3"}


def _jti(shield: JWTShield, token: str) -> str:
    return str(jwt.decode(token, KEYS).claims["jti"])


def test_revoking_a_key_sets_the_bits_of_its_tokens(make_app: AppFactory) -> None:
    store = MemoryStore()
    old_app, old_shield = make_app(config(), store=store)
    with old_app.app_context():
        old = old_shield.issue_tokens("alice").access_token
    ring = [{"kid": "b", "alg": "ES256", "key": KEY_B}, {"kid": "a", "alg": "ES256", "key": KEY_A}]
    app, shield = make_app(config(JWT_SHIELD_KEYS=ring), store=store)  # the next deploy: b signs
    mount(app, shield)
    with app.app_context():
        new = shield.issue_tokens("alice").access_token
        shield.revoke_key("a")
    with app.test_client() as client:
        assert invalid(client, shield, {"old": old, "new": new}) == {"old"}


def test_refresh_reuse_sets_the_bits_of_the_whole_session(status_app: tuple[Flask, JWTShield]) -> None:
    app, shield = status_app
    with app.app_context():
        first = shield.issue_tokens("alice")
        second = shield.refresh(first.refresh_token)
        other = shield.issue_tokens("alice")
        with pytest.raises(Exception, match="already used"):
            shield.refresh(first.refresh_token)  # a thief replays it
    tokens = {"first": first.access_token, "second": second.access_token, "other": other.access_token}
    with app.test_client() as client:
        assert invalid(client, shield, tokens) == {"first", "second"}


def test_max_sessions_ends_the_oldest_sessions_tokens(make_app: AppFactory) -> None:
    app, shield = make_app(config(JWT_SHIELD_MAX_SESSIONS=1))
    mount(app, shield)
    with app.app_context():
        old = shield.issue_tokens("alice").access_token
        new = shield.issue_tokens("alice").access_token
    with app.test_client() as client:
        assert invalid(client, shield, {"old": old, "new": new}) == {"old"}


def test_a_session_past_its_absolute_lifetime_sets_its_tokens_bits(make_app: AppFactory, clock: Clock) -> None:
    # The session ends 1000 s after login; a token refreshed at 950 s would live to 1850 s.
    app, shield = make_app(
        config(JWT_SHIELD_REFRESH_TOKEN_TTL=1000, JWT_SHIELD_REFRESH_IDLE_TTL=1000, JWT_SHIELD_ACCESS_TOKEN_TTL=900)
    )
    mount(app, shield)
    with app.app_context():
        pair = shield.issue_tokens("alice")
        clock.advance(950)
        late = shield.refresh(pair.refresh_token).access_token
        fresh = shield.issue_tokens("alice").access_token
    with app.test_client() as client:
        assert invalid(client, shield, {"late": late, "fresh": fresh}) == set()
        clock.advance(49)
        assert invalid(client, shield, {"late": late, "fresh": fresh}) == set()
        clock.advance(1)
        assert invalid(client, shield, {"late": late, "fresh": fresh}) == {"late"}


def test_a_detectors_revocation_sets_the_bits(make_app: AppFactory) -> None:
    # The spike detector's revoke_family rung goes through the action ladder.
    app, shield = make_app(
        config(
            JWT_SHIELD_RATE_LIMIT="1000/minute",
            JWT_SHIELD_SPIKE_THRESHOLD="3/minute",
            JWT_SHIELD_SPIKE_ACTION="revoke_family",
        )
    )
    mount(app, shield)
    with app.app_context():
        pair = shield.issue_tokens("alice")
        other = shield.issue_tokens("alice")
    with app.test_client() as client:
        for _ in range(5):
            client.get("/api/me", headers={"Authorization": f"Bearer {pair.access_token}"})
        assert invalid(client, shield, {"hammered": pair.access_token, "other": other.access_token}) == {"hammered"}


def test_every_process_reads_the_same_list(make_app: AppFactory, tmp_path: Path) -> None:
    # Two apps on one SQLite file are two workers: a revocation at one shows at the other.
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    one, one_shield = make_app(config(JWT_SHIELD_STORE_URI=uri))
    two, two_shield = make_app(config(JWT_SHIELD_STORE_URI=uri))
    mount(two, two_shield)
    with two.test_client() as client:
        fetch(client)  # rendered once before the change
        with one.app_context():
            token = one_shield.issue_tokens("alice").access_token
            one_shield.revoke_token(token)
        assert invalid(client, two_shield, {"t": token}) == {"t"}


# -- the endpoint ------------------------------------------------------------------------


def test_rendered_once_per_change(status_app: tuple[Flask, JWTShield], monkeypatch: pytest.MonkeyPatch) -> None:
    app, shield = status_app
    from flask_jwt_shield.statuslist import issuer as issuer_module

    renders: list[int] = []
    original = issuer_module.StatusIssuer._render

    def counted(self: issuer_module.StatusIssuer, *args: t.Any) -> issuer_module.Rendered:
        renders.append(1)
        return original(self, *args)

    monkeypatch.setattr(issuer_module.StatusIssuer, "_render", counted)
    with app.test_client() as client:
        first = client.get("/statuslists/1").get_data()
        assert client.get("/statuslists/1").get_data() == first
        assert len(renders) == 1
        with app.app_context():
            shield.create_access_token("alice")  # a new VALID index changes no bit
        assert client.get("/statuslists/1").get_data() == first
        with app.app_context():
            shield.revoke_token(shield.create_access_token("alice"))
        assert client.get("/statuslists/1").get_data() != first
        assert len(renders) == 2


def test_conditional_get_plain_body_head_and_cors(status_app: tuple[Flask, JWTShield]) -> None:
    app, _ = status_app
    with app.test_client() as client:
        plain = client.get("/statuslists/1")
        assert "Content-Encoding" not in plain.headers
        assert plain.get_data(as_text=True).count(".") == 2
        assert "Accept-Encoding" in plain.headers["Vary"]
        assert plain.headers["Access-Control-Allow-Origin"] == "*"
        etag = plain.headers["ETag"]
        again = client.get("/statuslists/1", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.get_data() == b""
        zipped = client.get("/statuslists/1", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["ETag"] != etag  # one validator per representation
        assert gzip.decompress(zipped.get_data()) == plain.get_data()
        head = client.head("/statuslists/1")
        assert head.status_code == 200 and head.get_data() == b""
        assert client.get("/statuslists/1", headers={"Accept": "*/*"}).status_code == 200
        assert client.get("/statuslists/1?time=1700000000").status_code == 200  # no history: the current list


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/statuslists/1", {}, 405),
        ("PUT", "/statuslists/1", {}, 405),
        ("DELETE", "/statuslists/1", {}, 405),
        ("GET", "/statuslists/2", {}, 404),
        ("GET", "/statuslists/1", {"Accept": "application/statuslist+cwt"}, 200),  # the CWT form
        ("GET", "/statuslists/1", {"Accept": "text/html"}, 406),
        ("GET", "/statuslists/1", {"Accept-Encoding": "gzip;q=0"}, 200),
        ("GET", "/statuslists/1", {"Accept-Encoding": "\x00garbage;;;q=zz"}, 200),
        ("GET", "/statuslists/1", {"If-None-Match": '"nonsense", W/'}, 200),
        ("GET", "/statuslists/1", {"Authorization": "Bearer garbage"}, 200),  # exempt: public
        ("POST", "/statuslists", {}, 405),
    ],
)
def test_garbage_requests_get_clean_answers(
    status_app: tuple[Flask, JWTShield], method: str, path: str, headers: dict[str, str], status: int
) -> None:
    app, _ = status_app
    with app.test_client() as client:
        response = client.open(path, method=method, headers=headers)
    assert response.status_code == status
    if status == 200:
        assert "Content-Encoding" not in response.headers or response.headers["Content-Encoding"] == "gzip"


def test_store_down_answers_503(make_app: AppFactory, tmp_path: Path) -> None:
    from flask_jwt_shield.errors import StoreError

    class Down(MemoryStore):
        def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
            raise StoreError("down")

    app, shield = make_app(config(), store=Down())
    mount(app, shield)
    with app.test_client() as client:
        response = client.get("/statuslists/1")
    assert response.status_code == 503 and "Retry-After" in response.headers


def test_aggregation_and_metadata(status_app: tuple[Flask, JWTShield]) -> None:
    app, _ = status_app
    with app.test_client() as client:
        assert client.get("/statuslists").get_json() == {"status_lists": [URI]}
        document = client.get("/.well-known/oauth-authorization-server").get_json()
    assert document["status_list_aggregation_endpoint"] == "http://localhost/statuslists"


def test_list_uri_of_its_own(make_app: AppFactory) -> None:
    app, shield = make_app(config(JWT_SHIELD_STATUS_LIST_URI="https://status.example/lists/7"))
    app.register_blueprint(shield.status_list_blueprint(aggregation_url=None))
    with app.app_context():
        claims = jwt.decode(shield.create_access_token("a"), KEYS).claims
    assert claims["status"]["status_list"]["uri"] == "https://status.example/lists/7"
    with app.test_client() as client:
        assert client.get("/lists/7").status_code == 200
        assert client.get("/statuslists").status_code == 404


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"JWT_SHIELD_ISSUER": None}, "JWT_SHIELD_ISSUER"),
        ({"JWT_SHIELD_STATUS_LIST_SIZE": 1001}, "multiple of 8"),
        ({"JWT_SHIELD_STATUS_LIST_SIZE": 0}, "at least 8"),
        ({"JWT_SHIELD_STATUS_LIST_SIZE": 1 << 30}, "at most"),
        ({"JWT_SHIELD_STATUS_LIST_TTL": 0}, "at least 1"),
        ({"JWT_SHIELD_STATUS_LIST_TTL": 1.5}, "integer"),
        ({"JWT_SHIELD_STATUS_LIST": "yes"}, "True or False"),
        ({"JWT_SHIELD_STATUS_LIST_URI": "ftp://x/y"}, "https://"),
        ({"JWT_SHIELD_STATUS_LIST_URI": "https://x.example"}, "path"),
        ({"JWT_SHIELD_STATUS_LIST_URI": "https://x.example/l?a=1"}, "query"),
    ],
)
def test_bad_settings_are_refused_at_init(make_app: AppFactory, extra: dict[str, t.Any], message: str) -> None:
    settings = {k: v for k, v in config(**extra).items() if v is not None}
    with pytest.raises(ConfigurationError, match=message):
        make_app(settings)


def test_blueprint_needs_the_setting_and_no_prefix(make_app: AppFactory) -> None:
    app, shield = make_app({"JWT_SHIELD_ISSUER": ISSUER})
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_STATUS_LIST is off"):
        app.register_blueprint(shield.status_list_blueprint())
    app, shield = make_app(config())
    with pytest.raises(ConfigurationError, match="url_prefix"):
        app.register_blueprint(shield.status_list_blueprint(), url_prefix="/x")


def test_off_by_default_tokens_carry_no_status(make_app: AppFactory) -> None:
    app, shield = make_app()
    with app.app_context():
        token = shield.issue_tokens("alice").access_token
    assert "status" not in jwt.decode(token, _hs()).claims


def _hs() -> t.Any:
    from joserfc.jwk import OctKey

    from .conftest import SECRET

    return OctKey.import_key(SECRET)


# -- size on the wire --------------------------------------------------------------------


class PresetBits(MemoryStore):
    """A store whose list is a given byte array: the endpoint's bytes are the real ones."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.preset = data

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        return 1, (None if version == 1 else self.preset)


def wire_bytes(make_app: AppFactory, revoked: float, size: int = 1_000_000) -> tuple[int, int]:
    """The gzip body's bytes, and the compressed list's own (``lst`` decoded)."""
    lst = StatusList.new(size)
    for idx in random.Random(uuid.uuid4().int).sample(range(size), int(size * revoked)):
        lst[idx] = 1
    app, shield = make_app(config(JWT_SHIELD_STATUS_LIST_SIZE=size), store=PresetBits(bytes(lst.data)))
    mount(app, shield)
    with app.test_client() as client:
        response = client.get("/statuslists/1", headers={"Accept-Encoding": "gzip"})
        claims, served = fetch(client)
    assert served.data == lst.data
    return len(response.get_data()), len(b64decode(claims["status_list"]["lst"]))


@pytest.mark.parametrize(
    ("revoked", "wire", "compressed"),
    [(0.001, 3.5 * 1024, 2.4 * 1024), (0.01, 18 * 1024, 14.0 * 1024), (0.10, 90 * 1024, 70.0 * 1024)],
)
def test_a_million_tokens_on_the_wire(make_app: AppFactory, revoked: float, wire: float, compressed: float) -> None:
    # The compressed list is the draft's size table (2.2 KB, 13.7 KB, 67.6 KB); on the wire
    # the JWS adds a second base64 layer, which gzip only partly undoes (see the docs).
    on_wire, lst = wire_bytes(make_app, revoked)
    assert lst <= compressed
    assert on_wire <= wire


# -- the example app ---------------------------------------------------------------------


def test_the_example_app_publishes_its_logouts(tmp_path: Path, clock: Clock) -> None:
    from example_app.app import create_app

    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    here = {"X-Forwarded-For": "192.0.2.10"}
    with app.test_client() as client:
        pair = client.post("/auth/login", json={"username": "alice", "password": "wonderland"}, headers=here).json
        assert pair is not None
        jwks = KeySet.import_key_set(t.cast(t.Any, client.get("/.well-known/jwks.json").get_json()))
        claims = jwt.decode(pair["access_token"], jwks).claims
        ref = claims["status"]["status_list"]
        assert ref["uri"] == "http://127.0.0.1:5000/statuslists/1"
        listed = client.get("/statuslists/1", headers={"Accept-Encoding": "gzip"})
        assert listed.cache_control.max_age == 5
        token = jwt.decode(gzip.decompress(listed.get_data()).decode(), jwks)
        assert token.claims["ttl"] == 5 and token.claims["sub"] == ref["uri"]
        assert StatusList.from_json(token.claims["status_list"], max_bytes=1 << 20)[ref["idx"]] == 0
        bearer = {"Authorization": f"Bearer {pair['access_token']}", **here}
        assert client.post("/auth/logout", headers=bearer).status_code == 200
        token = jwt.decode(client.get("/statuslists/1").get_data(as_text=True), jwks)
        assert StatusList.from_json(token.claims["status_list"], max_bytes=1 << 20)[ref["idx"]] == 1


def test_an_index_is_reused_only_after_its_token_and_the_ttl_expired(
    make_app: AppFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_jwt_shield.errors import StoreUnavailable

    app, shield = make_app(config(JWT_SHIELD_STATUS_LIST_SIZE=8, JWT_SHIELD_ACCESS_TOKEN_TTL=300))
    with app.app_context():
        held = {reference(shield, shield.create_access_token(f"u{i}")) for i in range(8)}
        assert held == set(range(8))
        with pytest.raises(StoreUnavailable):  # full: a store failure, fail mode closed
            shield.create_access_token("one-too-many")
        assert "JWT_SHIELD_STATUS_LIST_SIZE" in caplog.text
        clock.advance(300 + 30)  # the tokens have expired, but a cached list may still speak for them
        with pytest.raises(StoreUnavailable):
            shield.create_access_token("one-too-many")
        clock.advance(1.5)
        assert reference(shield, shield.create_access_token("next")) in held


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_store_that_cannot_claim_follows_the_fail_mode(make_app: AppFactory, mode: str) -> None:
    from flask_jwt_shield.errors import StoreError
    from flask_jwt_shield.errors import StoreUnavailable
    from flask_jwt_shield.stores.base import StatusHolder

    class NoClaims(MemoryStore):
        def status_claim(self, holder: StatusHolder, candidates: t.Sequence[int], *, now: float) -> int | None:
            raise StoreError("down")

    store = NoClaims()
    app, shield = make_app(config(JWT_SHIELD_FAIL_MODE=mode), store=store)
    with app.app_context():
        if mode == "closed":
            with pytest.raises(StoreUnavailable):
                shield.issue_tokens("alice")
            with pytest.raises(StoreUnavailable):
                shield.create_access_token("alice")
            return
        pair = shield.issue_tokens("alice")
        assert "status" not in jwt.decode(pair.access_token, KEYS).claims
        assert store.get_family(pair.sid) is not None  # the session is the stored one
        with pytest.raises(StoreUnavailable):  # a refresh never rotates without its index
            shield.refresh(pair.refresh_token)
        assert store.get_family(pair.sid).current_jti == _jti(shield, pair.refresh_token)  # type: ignore[union-attr]


def test_a_refresh_without_a_free_index_leaves_its_token_unspent(
    make_app: AppFactory, backend_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim is made with the rotation (one transaction on SQLite, one round trip on
    # Redis) and first: when it finds no free index, nothing is spent, so the client's
    # retry is no reuse; when only its first candidates were taken, more are tried alone.
    from flask_jwt_shield.errors import StoreUnavailable
    from flask_jwt_shield.statuslist import issuer as issuer_module

    app, shield = make_app(config(), store=backend_store)
    with app.app_context():
        pair = shield.issue_tokens("alice")
        taken = reference(shield, pair.access_token)
        from flask_jwt_shield.stores.base import status_candidates as real

        monkeypatch.setattr(issuer_module, "status_candidates", lambda size, count: [taken] * count)
        with pytest.raises(StoreUnavailable):
            shield.refresh(pair.refresh_token)
        family = backend_store.get_family(pair.sid)
        assert family is not None and family.current_jti == _jti(shield, pair.refresh_token)
        offered: list[int] = []

        def first_taken(size: int, count: int) -> list[int]:
            offered.append(count)
            return [taken] * count if len(offered) == 1 else real(size, count)

        monkeypatch.setattr(issuer_module, "status_candidates", first_taken)
        again = shield.refresh(pair.refresh_token)  # the same token: unspent, not reused
        assert len(offered) >= 2
        assert reference(shield, again.access_token) != taken
        assert shield.refresh(again.refresh_token).access_token


def test_dbsc_registration_ends_the_unbound_sessions_token(clock: Clock) -> None:
    # Binding a cookie session to the browser's key (DBSC) moves it to a new session and
    # revokes the unbound one: its access token's bit is set, the new one's is not.
    import json

    from .test_cookies import BASE
    from .test_cookies import make_cookie_app
    from .test_dbsc import DBSCBrowser
    from .test_dbsc import sf_params

    app, shield = make_cookie_app(
        {"JWT_SHIELD_DBSC": "optional", "JWT_SHIELD_STATUS_LIST": True, "JWT_SHIELD_ISSUER": ISSUER}
    )
    app.register_blueprint(shield.dbsc_blueprint())
    app.register_blueprint(shield.status_list_blueprint())
    client = app.test_client()

    def idx() -> int:
        cookie = client.get_cookie("__Host-jws_access", domain="app.example")
        assert cookie is not None
        return int(json.loads(b64decode(cookie.value.split(".")[1]))["status"]["status_list"]["idx"])

    params = sf_params(client.post(f"{BASE}/login").headers["Secure-Session-Registration"])
    unbound = idx()
    DBSCBrowser(client).register(params["path"], params["challenge"])
    bound = idx()
    body = client.get(f"{BASE}/statuslists/1").get_data(as_text=True)
    lst = StatusList.from_json(json.loads(b64decode(body.split(".")[1]))["status_list"], max_bytes=1 << 20)
    assert (lst[unbound], lst[bound]) == (1, 0)
