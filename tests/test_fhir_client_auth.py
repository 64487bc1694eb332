"""Auth: SMART Backend Services, client secret, bearer; token caching and the one refresh on a
401 (respx), the assertion's claims, and `cm-fhir keys generate`. The real token endpoint that
checks the signature is in tests/test_fhir_client_server.py."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.errors import RemoteAuthError, RemoteUnavailable
from cm_fhir.fhir_client import (
    BearerAuth,
    ClientSecretAuth,
    FhirClient,
    RetryPolicy,
    SmartBackendAuth,
)
from cm_fhir.fhir_client.keys import (
    generate_private_key,
    jwks,
    key_id,
    load_private_key,
    public_jwk,
)

BASE = "http://ehr.test/fhir"
TOKEN_URL = "http://auth.ehr.test/token"
ONCE = RetryPolicy(max_attempts=1)
TASK = {"resourceType": "Task", "id": "t1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def token_answers(*tokens: str, lifetime: int = 300) -> list[httpx.Response]:
    return [
        httpx.Response(
            200, json={"access_token": t, "token_type": "bearer", "expires_in": lifetime}
        )
        for t in tokens
    ]


def discovery() -> respx.Route:
    return respx.get(f"{BASE}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"token_endpoint": TOKEN_URL})
    )


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
@respx.mock
async def test_smart_discovers_signs_and_caches_the_token(algorithm: str) -> None:
    key = generate_private_key(algorithm)  # type: ignore[arg-type]
    clock = Clock()
    found = discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("tok-1", "tok-2"))
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    auth = SmartBackendAuth(BASE, "cm-fhir", key, scopes="system/Task.cu", clock=clock)
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        for _ in range(3):
            await client.read("Task", "t1")
    assert found.call_count == 1
    assert token.call_count == 1
    assert {c.request.headers["Authorization"] for c in read.calls} == {"Bearer tok-1"}

    form = form_of(token.calls[0].request)
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/Task.cu"
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == algorithm
    assert header["kid"] == key_id(key) == public_jwk(key)["kid"]
    public = jwt.PyJWK(public_jwk(key)).key
    claims = jwt.decode(
        assertion,
        public,
        algorithms=[algorithm],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == "cm-fhir"
    assert 0 < claims["exp"] - clock.now <= 300
    assert claims["jti"]


@respx.mock
async def test_every_assertion_has_its_own_jti_and_the_token_is_renewed_before_expiry() -> None:
    clock = Clock()
    discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("a", "b", lifetime=120))
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    key = generate_private_key("ES384")
    auth = SmartBackendAuth(BASE, "c", key, scopes="system/Task.rs", clock=clock)
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        await client.read("Task", "t1")
        clock.now += 80  # 40 s left: still fresh (the margin is 30 s)
        await client.read("Task", "t1")
        clock.now += 15  # 25 s left: renewed before it runs out
        await client.read("Task", "t1")
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in read.calls] == [
        "Bearer a",
        "Bearer a",
        "Bearer b",
    ]
    ids = {
        jwt.decode(form_of(c.request)["client_assertion"], options={"verify_signature": False})[
            "jti"
        ]
        for c in token.calls
    }
    assert len(ids) == 2


@respx.mock
async def test_a_401_fetches_a_new_token_once() -> None:
    discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("old", "new"))
    read = respx.get(f"{BASE}/Task/t1").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json=TASK)]
    )
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        response = await client.read("Task", "t1")
    assert response.status == 200
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in read.calls] == ["Bearer old", "Bearer new"]


@respx.mock
async def test_a_second_401_stands() -> None:
    discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("one", "two", "three"))
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(401))
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    async with FhirClient(BASE, auth=auth, retry=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(RemoteAuthError):
            await client.read("Task", "t1")
    assert read.call_count == 2  # 401 is not retryable: one refresh, no more
    assert token.call_count == 2


@respx.mock
async def test_a_refused_client_is_an_auth_error_naming_the_oauth_code() -> None:
    discovery()
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(401, json={"error": "invalid_client", "error_description": "x"})
    )
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    async with FhirClient(BASE, auth=auth, retry=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(RemoteAuthError, match="invalid_client"):
            await client.read("Task", "t1")
    assert read.call_count == 0


@respx.mock
async def test_a_token_endpoint_outage_is_retryable() -> None:
    discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=[httpx.Response(503), *token_answers("t")])
    respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.001)
    async with FhirClient(BASE, auth=auth, retry=retry) as client:
        await client.read("Task", "t1")
    assert token.call_count == 2
    auth2 = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    token.mock(return_value=httpx.Response(503))
    async with FhirClient(BASE, auth=auth2, retry=ONCE) as client:
        with pytest.raises(RemoteUnavailable):
            await client.read("Task", "t1")


@respx.mock
async def test_discovery_without_a_token_endpoint_is_an_auth_error() -> None:
    respx.get(f"{BASE}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"capabilities": []})
    )
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError, match="token_endpoint"):
            await client.read("Task", "t1")


@respx.mock
async def test_concurrent_requests_share_one_token_fetch() -> None:
    discovery()
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("only", "extra"))
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    auth = SmartBackendAuth(BASE, "c", generate_private_key("ES384"), scopes="system/Task.rs")
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        await asyncio.gather(*(client.read("Task", "t1") for _ in range(20)))
    assert token.call_count == 1
    assert read.call_count == 20


@respx.mock
async def test_an_https_endpoint_never_sends_credentials_over_http() -> None:
    secure = "https://ehr.test/fhir"
    respx.get(f"{secure}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"token_endpoint": "http://ehr.test/token"})
    )
    token = respx.post("http://ehr.test/token")
    auth = ClientSecretAuth(secure, "c", "secret", scopes="system/Task.rs")
    async with FhirClient(secure, auth=auth, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError, match="not https"):
            await client.read("Task", "t1")
    assert not token.called


@respx.mock
async def test_client_secret_is_sent_as_basic_to_the_given_token_url() -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=token_answers("s"))
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    auth = ClientSecretAuth(BASE, "cm fhir", "p:ss", scopes="system/Task.cu", token_url=TOKEN_URL)
    async with FhirClient(BASE, auth=auth, retry=ONCE) as client:
        await client.read("Task", "t1")
    basic = token.calls[0].request.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(basic).decode() == "cm%20fhir:p%3Ass"
    assert "client_assertion" not in form_of(token.calls[0].request)
    assert read.calls[0].request.headers["Authorization"] == "Bearer s"


@respx.mock
async def test_static_bearer() -> None:
    read = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(200, json=TASK))
    async with FhirClient(BASE, auth=BearerAuth("static"), retry=ONCE) as client:
        await client.read("Task", "t1")
    assert read.calls[0].request.headers["Authorization"] == "Bearer static"


def test_an_assertion_cannot_live_longer_than_five_minutes() -> None:
    with pytest.raises(ValueError, match="300"):
        SmartBackendAuth(
            BASE, "c", generate_private_key("ES384"), scopes="s", assertion_lifetime=301
        )


runner = CliRunner()


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
def test_keys_generate_writes_a_private_key_0600_and_prints_its_jwks(
    tmp_path: Path, algorithm: str
) -> None:
    out = tmp_path / "client.pem"
    result = runner.invoke(app, ["keys", "generate", "--out", str(out), "--alg", algorithm])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = json.loads(result.stdout)
    key = load_private_key(out.read_bytes())
    assert printed == jwks(key)
    (jwk,) = printed["keys"]
    assert jwk["alg"] == algorithm
    assert "d" not in jwk  # public only
    token = jwt.encode({"x": 1}, key, algorithm=algorithm)
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[algorithm]) == {"x": 1}


def test_keys_generate_never_overwrites_without_force(tmp_path: Path) -> None:
    out = tmp_path / "client.pem"
    out.write_text("keep me")
    result = runner.invoke(app, ["keys", "generate", "--out", str(out)])
    assert result.exit_code == 2
    assert "exists" in result.stderr
    assert out.read_text() == "keep me"
    again = runner.invoke(app, ["keys", "generate", "--out", str(out), "--force"])
    assert again.exit_code == 0
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_keys_generate_refuses_an_unknown_algorithm(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "generate", "--out", str(tmp_path / "k"), "--alg", "HS256"]
    )
    assert result.exit_code == 2
    assert "ES384 or RS384" in result.stderr
    assert not (tmp_path / "k").exists()
