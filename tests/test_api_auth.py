"""Auth on the API: API keys, OAuth2 JWTs checked against a JWKS (respx and a real server), scopes.

Test JWTs are signed with an RSA key generated here; the JWKS is served from a respx mock and,
once, from a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.api.deps import require_fhir_read
from cm_fhir.settings import load_settings
from cm_fhir.store.engine import make_engine, upgrade_database

JWKS_URL = "https://auth.example.org/.well-known/jwks.json"
ISSUER = "https://auth.example.org/"
AUDIENCE = "cm-fhir"
KID = "test-key-1"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key: rsa.RSAPrivateKey, kid: str = KID) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid=kid, use="sig", alg="RS256")
    return {"keys": [public]}


def token(key: rsa.RSAPrivateKey, scope: str, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc-discharge-board",
        "iat": now,
        "exp": now + 300,
        "scope": scope,
    }
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": claims.pop("kid", KID)})


async def _app(tmp_path: Path, jwks_url: str) -> tuple[FastAPI, Any]:
    settings = load_settings(
        overrides={
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'auth.sqlite3'}",
            "api_keys": API_KEY,
            "auth": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE, "leeway": 0},
        }
    )
    engine = make_engine(settings.effective_database_url)
    await upgrade_database(engine)
    app = create_app(settings, engine=engine)

    @app.get("/fhir/Probe", dependencies=[Depends(require_fhir_read("Task"))])
    async def probe() -> dict[str, str]:
        return {"resourceType": "Parameters"}

    app.router.routes.insert(0, app.router.routes.pop())  # ahead of the facade's own routes
    return app, engine


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app, engine = await _app(tmp_path, JWKS_URL)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
    await engine.dispose()


@pytest.fixture
def jwks(signing_key: rsa.RSAPrivateKey) -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).respond(json=jwks_of(signing_key))
        yield router


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_health_and_ready_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("not-the-key-0123456789")],
    ids=["none", "basic", "wrong-key"],
)
async def test_missing_or_wrong_credentials_are_refused(
    client: httpx.AsyncClient, jwks: respx.MockRouter, headers: dict[str, str]
) -> None:
    for path in ("/api/messages", "/metrics", "/api/outbox"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"


async def test_api_key_has_every_scope(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/messages", headers=bearer(API_KEY))).status_code == 200
    assert (await client.get("/fhir/Probe", headers=bearer(API_KEY))).status_code == 200


async def test_jwt_with_read_scope_reads(
    client: httpx.AsyncClient, jwks: respx.MockRouter, signing_key: rsa.RSAPrivateKey
) -> None:
    response = await client.get("/api/messages", headers=bearer(token(signing_key, "read")))
    assert response.status_code == 200
    assert jwks.calls.call_count == 1


async def test_wrong_scope_is_forbidden(
    client: httpx.AsyncClient, jwks: respx.MockRouter, signing_key: rsa.RSAPrivateKey
) -> None:
    reader = bearer(token(signing_key, "read system/*.read"))
    response = await client.post("/api/messages/replay", json={"ids": [1]}, headers=reader)
    assert response.status_code == 403
    assert 'scope="write"' in response.headers["www-authenticate"]
    writer_only = bearer(token(signing_key, "write"))
    assert (await client.get("/api/messages", headers=writer_only)).status_code == 403


async def test_expired_jwt_is_refused(
    client: httpx.AsyncClient, jwks: respx.MockRouter, signing_key: rsa.RSAPrivateKey
) -> None:
    old = int(time.time()) - 3600
    expired = token(signing_key, "read", iat=old, exp=old + 60)
    response = await client.get("/api/messages", headers=bearer(expired))
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "claims",
    [{"aud": "someone-else"}, {"iss": "https://evil.example.org/"}, {"kid": "unknown-key"}],
    ids=["audience", "issuer", "kid"],
)
async def test_jwt_for_another_audience_issuer_or_key_is_refused(
    client: httpx.AsyncClient,
    jwks: respx.MockRouter,
    signing_key: rsa.RSAPrivateKey,
    claims: dict[str, Any],
) -> None:
    response = await client.get(
        "/api/messages", headers=bearer(token(signing_key, "read", **claims))
    )
    assert response.status_code == 401


async def test_jwt_signed_by_another_key_is_refused(
    client: httpx.AsyncClient, jwks: respx.MockRouter
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = await client.get("/api/messages", headers=bearer(token(other, "read")))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/*.read", 200),
        ("system/Task.read", 200),
        ("system/Task.rs", 200),
        ("system/Patient.read", 403),
        ("user/Task.read", 403),
        ("read write", 403),
    ],
)
async def test_fhir_facade_needs_smart_system_scopes(
    client: httpx.AsyncClient,
    jwks: respx.MockRouter,
    signing_key: rsa.RSAPrivateKey,
    scope: str,
    status: int,
) -> None:
    response = await client.get("/fhir/Probe", headers=bearer(token(signing_key, scope)))
    assert response.status_code == status
    if status == 403:
        assert response.headers["content-type"] == "application/fhir+json"
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["code"] == "forbidden"


async def test_fhir_facade_without_token_answers_operation_outcome(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/fhir/Probe")
    assert response.status_code == 401
    assert response.json()["issue"][0]["code"] == "login"


async def test_jwks_unreachable_is_a_401_not_a_500(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    with respx.mock() as router:
        router.get(JWKS_URL).respond(503)
        response = await client.get("/api/messages", headers=bearer(token(signing_key, "read")))
    assert response.status_code == 401
    assert "JWKS" in response.json()["error"]["message"]


async def test_jwks_from_a_real_http_server(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    body = json.dumps(jwks_of(signing_key)).encode()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        app, engine = await _app(tmp_path, url)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                good = await c.get("/api/messages", headers=bearer(token(signing_key, "read")))
                old = int(time.time()) - 3600
                expired = token(signing_key, "read", iat=old, exp=old + 60)
                bad = await c.get("/api/messages", headers=bearer(expired))
        await engine.dispose()
    finally:
        server.shutdown()
        server.server_close()
    assert good.status_code == 200
    assert bad.status_code == 401
    assert hits == ["/jwks.json"]  # fetched once, then cached


EC_KID = "test-ec-1"


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def mixed_jwks(
    signing_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Iterator[respx.MockRouter]:
    """A JWKS with the RSA key (RS256) and an EC key (ES256)."""
    keys = jwks_of(signing_key)["keys"]
    public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    public.update(kid=EC_KID, use="sig", alg="ES256")
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).respond(json={"keys": [*keys, public]})
        yield router


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300}


def _crafted(header: Any, signature: bytes = b"sig") -> str:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return f"{_b64(head)}.{_b64(json.dumps(_claims()).encode())}.{_b64(signature)}"


def _odd_tokens(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    claims = _claims() | {"scope": "read"}
    rsa_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        # the attack: an ES256 token whose kid names the RSA key
        "es256-names-rsa-key": jwt.encode(claims, ec_key, "ES256", headers={"kid": KID}),
        "rs256-names-ec-key": jwt.encode(claims, rsa_key, "RS256", headers={"kid": EC_KID}),
        "hs256-with-public-key": _crafted({"alg": "HS256", "kid": KID, "typ": "JWT"}, rsa_pem),
        "alg-none": _crafted({"alg": "none", "kid": KID}, b""),
        "rs512-not-allowed": jwt.encode(claims, rsa_key, "RS512", headers={"kid": KID}),
        "unknown-alg": _crafted({"alg": "XY999", "kid": KID}),
        "missing-kid": jwt.encode(claims, rsa_key, "RS256"),
        "kid-not-a-string": _crafted({"alg": "RS256", "kid": 17}),
        "alg-missing": _crafted({"kid": KID}),
        "header-not-json": _crafted(b"\xff\xfe{not json"),
        "header-a-list": _crafted([1, 2, 3]),
        "crit-extension": _crafted({"alg": "RS256", "kid": KID, "crit": ["exp"]}),
        "bad-base64": "%%%." + _b64(b"{}") + ".sig",
    }


ODD_TOKEN_NAMES = [
    "es256-names-rsa-key",
    "rs256-names-ec-key",
    "hs256-with-public-key",
    "alg-none",
    "rs512-not-allowed",
    "unknown-alg",
    "missing-kid",
    "kid-not-a-string",
    "alg-missing",
    "header-not-json",
    "header-a-list",
    "crit-extension",
    "bad-base64",
]


@pytest.mark.parametrize("name", ODD_TOKEN_NAMES)
async def test_unexpected_jwt_headers_are_401_never_500(
    client: httpx.AsyncClient,
    mixed_jwks: respx.MockRouter,
    signing_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    name: str,
) -> None:
    odd = _odd_tokens(signing_key, ec_key)[name]
    for path in ("/api/messages", "/fhir/Probe"):
        response = await client.get(path, headers=bearer(odd))
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_es256_token_signed_by_the_ec_key_of_the_jwks_is_accepted(
    client: httpx.AsyncClient, mixed_jwks: respx.MockRouter, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    good = jwt.encode(_claims() | {"scope": "read"}, ec_key, "ES256", headers={"kid": EC_KID})
    assert (await client.get("/api/messages", headers=bearer(good))).status_code == 200
