"""The application shapes compared by ``bench.py``.

Every app has the same shape: one route, ``GET /api/me``, that returns ``{"sub": ...}`` — the
subject of the token (bare Flask returns a constant). They share one HS256 secret and, for the
asymmetric rows, one key pair per algorithm.

Each factory is importable by gunicorn with its factory syntax, for example::

    gunicorn 'benchmarks.apps:make_shield(algorithm="RS256")'

Every app also carries a token minter in ``app.extensions["bench_mint"]``: a callable
``mint(n) -> list[str]`` returning ``n`` distinct ``Authorization`` header values valid for that
app (bare Flask gets PyJWT tokens it ignores). Minting needs no request context; it
opens an app context itself.

The asymmetric keys are generated once per benchmark run. ``bench.py`` sets
``JWT_SHIELD_BENCH_KEY_DIR`` so the gunicorn workers it starts read the same PEM files as the
process that mints the tokens; without that variable, keys are generated in memory.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from flask import Flask
from flask import abort
from flask import g
from flask import jsonify
from flask import request

#: The HS256 secret of every app (the shield refuses fewer than 32 bytes).
SECRET = "flask-jwt-shield-benchmark-secret-0123456789abcdef"
#: The token subject.
SUBJECT = "bench-user"
#: Revoked token ids that every blocklist / revocation callback checks against.
REVOKED_JTIS: frozenset[str] = frozenset(uuid.UUID(int=i).hex for i in range(1, 1001))
#: Environment variable naming the directory that holds the shared PEM keys.
KEY_DIR_ENV = "JWT_SHIELD_BENCH_KEY_DIR"
#: Environment variable holding the URL of the run's throw-away redis-server (Redis rows).
REDIS_URL_ENV = "JWT_SHIELD_BENCH_REDIS_URL"


#: Environment variable holding the URL of the run's throw-away three-master Redis Cluster.
CLUSTER_URL_ENV = "JWT_SHIELD_BENCH_CLUSTER_URL"


def redis_url() -> str:
    """The run's redis-server, started by ``bench.py`` for the rows that need one."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise RuntimeError(f"{REDIS_URL_ENV} is not set: bench.py starts a redis-server for the Redis rows")
    return url


def cluster_url() -> str:
    """The run's Redis Cluster, started by ``bench.py`` for the rows that need one."""
    url = os.environ.get(CLUSTER_URL_ENV)
    if not url:
        raise RuntimeError(f"{CLUSTER_URL_ENV} is not set: bench.py starts a Redis Cluster for the cluster rows")
    return url


#: A limit no benchmark reaches: the limiter does all its work and refuses nothing.
UNREACHABLE_LIMIT = "1000000/minute"
#: The example app's demo City database (documentation address ranges only).
DEMO_GEOIP = Path(__file__).resolve().parent.parent / "example_app" / "demo-geoip.mmdb"
#: A client address the demo database places in Berlin.
GEO_CLIENT = "192.0.2.10"

Mint = Callable[[int], list[str]]

_keys: dict[str, tuple[str, str]] = {}


def _generate_keys(algorithm: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric import rsa

    private: Any
    if algorithm.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"no key generator for {algorithm!r}")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def asymmetric_keys(algorithm: str) -> tuple[str, str]:
    """Return ``(private_pem, public_pem)`` for ``algorithm``, the same for the whole run."""
    family = "RSA" if algorithm.startswith(("RS", "PS")) else algorithm
    if family in _keys:
        return _keys[family]
    key_dir = os.environ.get(KEY_DIR_ENV)
    if key_dir:
        private_path = Path(key_dir, f"{family}.private.pem")
        public_path = Path(key_dir, f"{family}.public.pem")
        if private_path.exists() and public_path.exists():
            pair = private_path.read_text(), public_path.read_text()
        else:
            pair = _generate_keys(algorithm)
            private_path.write_text(pair[0])
            public_path.write_text(pair[1])
    else:
        pair = _generate_keys(algorithm)
    _keys[family] = pair
    return pair


def _bearer(tokens: list[str]) -> list[str]:
    return [f"Bearer {token}" for token in tokens]


def _mint_pyjwt(n: int) -> list[str]:
    now = int(time.time())
    return _bearer(
        [
            jwt.encode(
                {"sub": SUBJECT, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex},
                SECRET,
                algorithm="HS256",
            )
            for _ in range(n)
        ]
    )


# --- (a) bare Flask ---------------------------------------------------------------------------


def make_bare() -> Flask:
    """Bare Flask: no token handling at all.

    Its requests still carry a token, so every row parses the same request.
    """
    app = Flask("bench_bare")

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"sub": SUBJECT}

    app.extensions["bench_mint"] = _mint_pyjwt
    return app


def make_bare_es256_verify() -> Flask:
    """Bare Flask plus one ES256 signature check per request, of a proof never seen before:
    the floor under the DPoP row (its requests carry the same headers, and nothing else is
    done with them)."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from flask_jwt_shield.dpop import DPoPKey

    app = Flask("bench_bare_es256")
    key = DPoPKey.generate("ES256")
    public = key._private.public_key()
    ecdsa = ec.ECDSA(hashes.SHA256())

    @app.before_request
    def check_signature() -> None:
        signing_input, _, signature = request.environ["HTTP_DPOP"].rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "==")
        public.verify(
            encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
            signing_input.encode("ascii"),
            ecdsa,
        )

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"sub": SUBJECT}

    def mint(n: int) -> list[tuple[str, str]]:
        token = _mint_pyjwt(1)[0].split(" ", 1)[1]
        return [(f"DPoP {token}", key.proof("GET", DPOP_URL, token)) for _ in range(n)]

    app.extensions["bench_mint"] = _mint_pyjwt
    app.extensions["bench_mint_dpop"] = mint
    return app


# --- (b) PyJWT only ---------------------------------------------------------------------------


def make_pyjwt(*, algorithm: str = "HS256") -> Flask:
    """A ``before_request`` that runs ``jwt.decode`` and puts the claims on ``g``.

    ``algorithm="RS256"``: the tokens are the identity provider's of the resource-server rows,
    verified with its public key (loaded once), ``iss`` and ``aud`` checked.
    """
    app = Flask(f"bench_pyjwt_{algorithm.lower()}")
    if algorithm == "RS256":
        public_key = jwt.PyJWK(idp_public_jwk()).key
        options: jwt.types.Options = {"require": ["iss", "aud", "sub", "exp", "iat"]}

        def decode(token: str) -> dict[str, Any]:
            return jwt.decode(
                token, public_key, algorithms=["RS256"], issuer=IDP_ISSUER, audience=IDP_AUDIENCE, options=options
            )

        mint: Mint = _mint_idp
    else:

        def decode(token: str) -> dict[str, Any]:
            return jwt.decode(token, SECRET, algorithms=["HS256"])

        mint = _mint_pyjwt

    @app.before_request
    def authenticate() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            abort(401)
        try:
            g.claims = decode(token)
        except jwt.InvalidTokenError:
            abort(401)

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"sub": g.claims["sub"]}

    app.extensions["bench_mint"] = mint
    return app


# --- (c) and (d) Flask-JWT-Extended (+ Flask-Limiter) ----------------------------------------


def make_jwt_extended(*, limiter: bool = False, storage: str = "memory") -> Flask:
    """Flask-JWT-Extended with a blocklist; with ``limiter=True`` also Flask-Limiter.

    The limit is per token (the key is the token's ``jti``), in memory storage (or the
    run's Redis with ``storage="redis"``), and high enough that nothing is refused.
    ``@jwt_required()`` sits above ``@limiter.limit`` so the token is verified before the
    limiter's key function reads ``get_jwt()``.
    """
    from flask_jwt_extended import JWTManager
    from flask_jwt_extended import create_access_token
    from flask_jwt_extended import get_jwt
    from flask_jwt_extended import get_jwt_identity
    from flask_jwt_extended import jwt_required

    app = Flask("bench_jwt_extended_limiter" if limiter else "bench_jwt_extended")
    app.config["JWT_SECRET_KEY"] = SECRET
    app.config["JWT_ALGORITHM"] = "HS256"
    manager = JWTManager(app)

    @manager.token_in_blocklist_loader
    def in_blocklist(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        return jwt_payload["jti"] in REVOKED_JTIS

    def me() -> dict[str, str]:
        return {"sub": get_jwt_identity()}

    if limiter:
        from flask_limiter import Limiter

        def token_key() -> str:
            return str(get_jwt()["jti"])

        rate_limiter = Limiter(token_key, app=app, storage_uri=redis_url() if storage == "redis" else "memory://")
        me = rate_limiter.limit(UNREACHABLE_LIMIT)(me)
    app.get("/api/me", endpoint="me")(jwt_required()(me))

    def mint(n: int) -> list[str]:
        with app.app_context():
            return _bearer([create_access_token(identity=SUBJECT) for _ in range(n)])

    app.extensions["bench_mint"] = mint
    return app


def make_jwt_extended_limiter(storage: str = "memory") -> Flask:
    """Flask-JWT-Extended with a blocklist + Flask-Limiter keyed by the token's ``jti``."""
    return make_jwt_extended(limiter=True, storage=storage)


# --- (e), (f) and later rows: Flask-JWT-Shield ------------------------------------------------


def make_shield(
    *,
    algorithm: str = "HS256",
    rate_limit: str | None = None,
    geoip: bool = False,
    store: str = "memory",
    config: dict[str, Any] | None = None,
    dashboard: bool = False,
    dpop: bool = False,
    dbsc: bool = False,
) -> Flask:
    """Flask-JWT-Shield, one ``revocation_checker`` that checks a set.

    ``dbsc`` puts the tokens in cookies with DBSC on: ``app.extensions["bench_mint"]`` then
    returns ``Cookie`` header values of one session that a scripted browser bound to its
    ES256 key (access, fingerprint and bound cookie; the bound cookie lives an hour).

    ``dpop`` turns DPoP on (``"optional"``) and adds ``app.extensions["bench_mint_dpop"]``:
    ``mint(n)`` returns ``n`` distinct ``(Authorization, DPoP)`` header pairs, one token
    bound to an ES256 key (issued through ``issue_tokens`` with a login proof) and a new
    proof for each request. The proofs' maximum age is an hour, so that a pool minted
    before the rounds is still fresh at the last one; the work per request does not depend
    on it.

    ``rate_limit`` is ``JWT_SHIELD_RATE_LIMIT`` (``None``: off; with it, the default spike
    threshold of 10x the limit is on too). ``geoip`` turns on the GeoIP step with the
    example app's demo City database. ``store`` is ``"memory"``, ``"sqlite"`` (a file in
    the run's key directory, shared with the gunicorn workers), ``"redis"`` (the run's
    redis-server, which then holds the rate limit counters too) or ``"cluster"`` (the same
    on the run's three-master Redis Cluster). ``config`` adds or overrides
    ``JWT_SHIELD_*`` keys. ``dashboard`` registers the admin dashboard at ``/shield`` (to
    show it costs a protected request nothing). Raises ``ImportError`` while the package is
    missing.
    """
    from flask_jwt_shield import JWTShield
    from flask_jwt_shield import current_claims

    app = Flask(f"bench_shield_{algorithm.lower()}")
    app.config["JWT_SHIELD_ALGORITHM"] = algorithm
    if store == "sqlite":
        directory = os.environ.get(KEY_DIR_ENV) or tempfile.mkdtemp(prefix="jwt-shield-bench-")
        app.config["JWT_SHIELD_STORE_URI"] = "sqlite:///" + str(Path(directory) / "shield.db")
    elif store == "redis":
        app.config["JWT_SHIELD_STORE_URI"] = redis_url()
    elif store == "cluster":
        app.config["JWT_SHIELD_STORE_URI"] = cluster_url()
    else:
        app.config["JWT_SHIELD_STORE_URI"] = "memory://"
    app.config["JWT_SHIELD_RATE_LIMIT"] = rate_limit
    if geoip:
        app.config["JWT_SHIELD_GEOIP_DATABASE"] = str(DEMO_GEOIP)
    if algorithm.startswith("HS"):
        app.config["JWT_SHIELD_SECRET_KEY"] = SECRET
    else:
        private_pem, public_pem = asymmetric_keys(algorithm)
        app.config["JWT_SHIELD_PRIVATE_KEY"] = private_pem
        app.config["JWT_SHIELD_PUBLIC_KEY"] = public_pem
    if dpop:
        app.config["JWT_SHIELD_DPOP"] = "optional"
        app.config["JWT_SHIELD_DPOP_MAX_AGE"] = 3600
    if dbsc:
        app.config.update(
            {
                "JWT_SHIELD_TOKEN_LOCATIONS": ["headers", "cookies"],
                "JWT_SHIELD_DBSC": "optional",
                "JWT_SHIELD_ACCESS_TOKEN_TTL": 3600,
                "JWT_SHIELD_DBSC_COOKIE_TTL": 3600,
            }
        )
    app.config.update(config or {})
    shield = JWTShield()
    shield.init_app(app)
    app.extensions["bench_shield"] = shield  # the benchmarks reach it here

    @shield.revocation_checker
    def is_revoked(claims: Any) -> bool:
        return claims["jti"] in REVOKED_JTIS

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"sub": current_claims["sub"]}

    if dashboard:  # no SECRET_KEY: the CSRF key comes from the signing key, and no Flask session runs
        app.register_blueprint(shield.dashboard_blueprint(authorize=lambda: False), url_prefix="/shield")

    def mint(n: int) -> list[str]:
        with app.app_context():
            return _bearer([shield.create_access_token(SUBJECT) for _ in range(n)])

    app.extensions["bench_mint"] = _dbsc_minter(app, shield) if dbsc else mint
    if dpop:
        app.extensions["bench_mint_dpop"] = _dpop_minter(app, shield)
    return app


#: The URL every in-process request goes to (``bench.py``'s environ template): the proofs' ``htu``.
DPOP_URL = "http://127.0.0.1:8000/api/me"


def _dpop_minter(app: Flask, shield: Any) -> Callable[[int], list[tuple[str, str]]]:
    from flask_jwt_shield.dpop import DPoPKey

    key = DPoPKey.generate("ES256")
    login = "http://127.0.0.1:8000/login"
    with app.test_request_context(
        "/login", method="POST", base_url="http://127.0.0.1:8000/", headers={"DPoP": key.proof("POST", login)}
    ):
        pair = shield.issue_tokens(SUBJECT)
    assert pair.token_type == "DPoP"

    def mint(n: int) -> list[tuple[str, str]]:
        return [(f"DPoP {pair.access_token}", key.proof("GET", DPOP_URL, pair.access_token)) for _ in range(n)]

    return mint


def _dbsc_minter(app: Flask, shield: Any) -> Callable[[int], list[str]]:
    """A browser logs in, registers an ES256 key (DBSC), and its cookies are the header."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    def login() -> Any:
        return shield.set_cookies(jsonify(ok=True), shield.issue_tokens(SUBJECT, cookies=True))

    app.add_url_rule("/bench-login", "bench_login", shield.exempt(login), methods=["POST"])
    app.register_blueprint(shield.dbsc_blueprint())
    key = ec.generate_private_key(ec.SECP256R1())
    cookies: list[str] = []

    def mint(n: int) -> list[str]:
        if not cookies:
            client = app.test_client()
            header = client.post("https://127.0.0.1:8000/bench-login").headers["Secure-Session-Registration"]
            params = dict(part.split("=", 1) for part in header.split(";")[1:])
            proof = jwt.encode(
                {"jti": params["challenge"].strip('"')},
                key,
                algorithm="ES256",
                headers={"typ": "dbsc+jwt", "jwk": ECAlgorithm.to_jwk(key.public_key(), as_dict=True)},
            )
            r = client.post(
                f"https://127.0.0.1:8000{params['path'].strip(chr(34))}",
                headers={"Secure-Session-Response": f'"{proof}"'},
            )
            assert r.status_code == 200, r.get_data(as_text=True)
            names = ("__Host-jws_access", "__Host-jws_fgp", "__Host-jws_dbsc")
            jar = {name: client.get_cookie(name, domain="127.0.0.1") for name in names}
            cookies.append("; ".join(f"{name}={c.value}" for name, c in jar.items() if c is not None))
        return cookies * n

    return mint


# --- resource-server mode: tokens from an identity provider ---------------------------------

#: The identity provider of the resource-server rows: its issuer, the API's audience, its kid.
IDP_ISSUER = "https://idp.bench.example/"
IDP_AUDIENCE = "https://api.bench.example"
IDP_KID = "bench-idp-rsa"
#: Environment variable holding the JWK Set URL, so that gunicorn workers use the server
#: that the benchmark process started.
JWKS_URL_ENV = "JWT_SHIELD_BENCH_JWKS_URL"
_jwks_server: list[Any] = []
_idp_key: list[Any] = []


def idp_public_jwk() -> dict[str, Any]:
    """The provider's public RSA key as a JWK (the benchmark run's RSA key pair)."""
    from jwt.algorithms import RSAAlgorithm

    public = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(asymmetric_keys("RS256")[1])
    jwk = dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    jwk.update(kid=IDP_KID, alg="RS256", use="sig")
    return jwk


def idp_jwks_url() -> str:
    """The URL of the provider's JWK Set: a server in a thread of this process on 127.0.0.1,
    started on first use, or the one named by ``JWT_SHIELD_BENCH_JWKS_URL``."""
    url = os.environ.get(JWKS_URL_ENV)
    if url:
        return url
    import http.server
    import json
    import threading

    body = json.dumps({"keys": [idp_public_jwk()]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == STATUS_LIST_PATH:  # the provider's Token Status List, signed now
                uri = f"http://127.0.0.1:{server.server_address[1]}{STATUS_LIST_PATH}"
                answer, kind = _status_list_token(uri), STATUS_LIST_TYPE
            else:
                answer, kind = body, "application/json"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Cache-Control", "public, max-age=3600")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _jwks_server.append(server)
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    os.environ[JWKS_URL_ENV] = url
    return url


#: Where the provider serves its Token Status List (draft-ietf-oauth-status-list), on the
#: JWK Set's server; the tokens of the status-list row name an index in it.
STATUS_LIST_PATH = "/statuslists/1"
STATUS_LIST_TYPE = "application/statuslist+jwt"
#: Entries in the list (1 bit each); 1 % of them revoked, none of the benchmark's tokens.
STATUS_LIST_SIZE = 100_000


def _status_list_token(uri: str) -> bytes:
    """The provider's Status List Token for ``uri``: signed with its RS256 key, ttl an hour."""
    from flask_jwt_shield.statuslist.codec import INVALID
    from flask_jwt_shield.statuslist.codec import StatusList

    statuses = StatusList.new(STATUS_LIST_SIZE)
    for idx in range(STATUS_LIST_SIZE // 2, STATUS_LIST_SIZE, 50):  # 1 %, above every minted index
        statuses[idx] = INVALID
    now = int(time.time())
    claims = {"sub": uri, "iat": now, "exp": now + 7200, "ttl": 3600, "status_list": statuses.to_json()}
    token = jwt.encode(claims, _idp_private_key(), algorithm="RS256", headers={"kid": IDP_KID, "typ": "statuslist+jwt"})
    return token.encode()


def _idp_private_key() -> Any:
    # Loaded once: parsing (and checking) an RSA PEM costs far more than signing with it.
    if not _idp_key:
        from cryptography.hazmat.primitives import serialization

        _idp_key.append(serialization.load_pem_private_key(asymmetric_keys("RS256")[0].encode(), None))
    return _idp_key[0]


def _mint_idp(n: int, status_list: str | None = None) -> list[str]:
    """``n`` access tokens as the provider signs them (RFC 9068 profile, RS256); with
    ``status_list`` (its URI) each names its own index in that list."""
    private_key = _idp_private_key()
    now = int(time.time())
    tokens = []
    for i in range(n):
        claims: dict[str, Any] = {
            "iss": IDP_ISSUER,
            "sub": SUBJECT,
            "aud": IDP_AUDIENCE,
            "iat": now,
            "exp": now + 900,
            "jti": uuid.uuid4().hex,
            "scope": "read",
        }
        if status_list is not None:
            claims["status"] = {"status_list": {"idx": i % (STATUS_LIST_SIZE // 2), "uri": status_list}}
        tokens.append(jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": IDP_KID, "typ": "at+jwt"}))
    return _bearer(tokens)


def make_shield_rs(status_list: bool = False) -> Flask:
    """Flask-JWT-Shield in resource-server mode: RS256 tokens from the provider, verified
    with its JWK Set served on 127.0.0.1 (fetched once, then cached); otherwise the same
    app as ``make_shield`` (memory store, one ``revocation_checker``, no limit).

    ``status_list``: every token names an index in the provider's Token Status List (served
    beside the JWK Set, ttl an hour), which each request checks."""
    from flask_jwt_shield import JWTShield
    from flask_jwt_shield import current_claims

    app = Flask("bench_shield_rs")
    jwks_url = idp_jwks_url()
    app.config.update(
        JWT_SHIELD_JWKS_URL=jwks_url,
        JWT_SHIELD_ISSUER=IDP_ISSUER,
        JWT_SHIELD_AUDIENCE=IDP_AUDIENCE,
        JWT_SHIELD_STORE_URI="memory://",
        JWT_SHIELD_RATE_LIMIT=None,
    )
    uri = jwks_url.replace("/jwks.json", STATUS_LIST_PATH) if status_list else None
    if uri is not None:
        # The benchmark's provider serves its lists from 127.0.0.1, not from its issuer's origin.
        app.config["JWT_SHIELD_STATUS_LIST_ALLOWED_URIS"] = [uri.rsplit("/", 1)[0] + "/"]
    shield = JWTShield(app)
    app.extensions["bench_shield"] = shield  # the benchmarks reach it here

    @shield.revocation_checker
    def is_revoked(claims: Any) -> bool:
        return claims["jti"] in REVOKED_JTIS

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"sub": current_claims["sub"]}

    app.extensions["bench_mint"] = lambda n: _mint_idp(n, uri)
    return app
