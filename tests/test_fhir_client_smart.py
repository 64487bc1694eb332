"""SMART Backend Services over real HTTP: the test FHIR server's token endpoint checks the signed
assertion against the JWKS we register (`cm-fhir keys generate` prints it), then every FHIR request
needs its bearer token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.errors import RemoteAuthError
from cm_fhir.fhir_client import ClientSecretAuth, FhirClient, RetryPolicy, SmartBackendAuth
from cm_fhir.fhir_client.keys import generate_private_key, jwks, load_private_key
from fhir_server_fixture import FhirFaults

ONCE = RetryPolicy(max_attempts=1)
SCOPES = "system/Task.cu system/Task.rs"


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
async def test_a_registered_key_gets_a_token_and_reads(
    faulty_fhir_server: FhirFaults, tmp_path: Path, algorithm: str
) -> None:
    pem = tmp_path / "client.pem"
    generated = CliRunner().invoke(app, ["keys", "generate", "--out", str(pem), "--alg", algorithm])
    assert generated.exit_code == 0, generated.output
    faulty_fhir_server.require_auth("cm-fhir-test", jwks=json.loads(generated.stdout))
    key = load_private_key(pem.read_bytes())
    auth = SmartBackendAuth(faulty_fhir_server.base_url, "cm-fhir-test", key, scopes=SCOPES)
    async with FhirClient(faulty_fhir_server.base_url, auth=auth, retry=ONCE) as client:
        created = await client.create(
            {"resourceType": "Task", "status": "requested", "intent": "order"}
        )
        assert created.resource is not None
        for _ in range(3):
            await client.read("Task", created.resource["id"])
    assert auth.tokens_fetched == 1
    counts = faulty_fhir_server.requests()["by_type"]
    assert counts["token"] == 1
    assert counts["smart-configuration"] == 1
    assert "unauthorised" not in counts


async def test_without_a_token_the_server_refuses(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.require_auth("c", jwks=jwks(generate_private_key("ES384")))
    async with FhirClient(faulty_fhir_server.base_url, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError) as caught:
            await client.read("Task", "x")
    assert caught.value.status == 401


async def test_a_key_the_server_does_not_know_is_refused(faulty_fhir_server: FhirFaults) -> None:
    registered, ours = generate_private_key("ES384"), generate_private_key("ES384")
    # the same kid as the registered key, but signed by another: only the signature check stops it
    faulty_fhir_server.require_auth("c", jwks=jwks(registered, kid="k1"))
    auth = SmartBackendAuth(faulty_fhir_server.base_url, "c", ours, scopes=SCOPES, kid="k1")
    async with FhirClient(faulty_fhir_server.base_url, auth=auth, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError, match="invalid_client"):
            await client.read("Task", "x")
    assert faulty_fhir_server.requests()["by_type"].get("Task") is None


async def test_another_client_id_is_refused(faulty_fhir_server: FhirFaults) -> None:
    key = generate_private_key("RS384")
    faulty_fhir_server.require_auth("registered", jwks=jwks(key))
    auth = SmartBackendAuth(faulty_fhir_server.base_url, "someone-else", key, scopes=SCOPES)
    async with FhirClient(faulty_fhir_server.base_url, auth=auth, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError):
            await client.read("Task", "x")


async def test_a_revoked_token_is_replaced_once(faulty_fhir_server: FhirFaults) -> None:
    key = generate_private_key("ES384")
    faulty_fhir_server.require_auth("c", jwks=jwks(key))
    auth = SmartBackendAuth(faulty_fhir_server.base_url, "c", key, scopes=SCOPES)
    async with FhirClient(faulty_fhir_server.base_url, auth=auth, retry=ONCE) as client:
        await client.capabilities()
        [r async for r in client.search("Task", {"_count": "1"})]
        faulty_fhir_server.revoke_tokens()
        [r async for r in client.search("Task", {"_count": "1", "_offset": "0"})]
    assert auth.tokens_fetched == 2  # a fresh assertion (new jti): the server refuses replays
    assert faulty_fhir_server.requests()["by_type"]["unauthorised"] == 1


async def test_client_secret(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.require_auth("c", client_secret="s3cret:with%odd chars")
    good = ClientSecretAuth(
        faulty_fhir_server.base_url, "c", "s3cret:with%odd chars", scopes=SCOPES
    )
    async with FhirClient(faulty_fhir_server.base_url, auth=good, retry=ONCE) as client:
        [r async for r in client.search("Task", {"_count": "1"})]
    bad = ClientSecretAuth(faulty_fhir_server.base_url, "c", "wrong", scopes=SCOPES)
    async with FhirClient(faulty_fhir_server.base_url, auth=bad, retry=ONCE) as client:
        with pytest.raises(RemoteAuthError):
            await client.read("Task", "x")
