"""SMART Backend Services auth (``client_credentials`` with a ``private_key_jwt`` assertion).

The client proves who it is with a short JWT signed by its private key (RS384 or ES384): ``iss``
and ``sub`` are the client id, ``aud`` is the token endpoint, ``exp`` at most five minutes ahead,
``jti`` unique per assertion, and the header names the key (``kid``) registered in the EHR's copy
of our JWKS (``cm-fhir keys generate`` prints it). Scopes are SMART system scopes such as
``system/Task.cu system/Patient.rs``. Discovery, caching and the one refresh on a 401 are in
:class:`~cm_fhir.fhir_client.auth.TokenAuth`.
"""

from __future__ import annotations

import uuid
from typing import Any

import jwt

from cm_fhir.fhir_client.auth import TokenAuth
from cm_fhir.fhir_client.keys import Algorithm, PrivateKey, algorithm_of, key_id

__all__ = ["ASSERTION_TYPE", "MAX_ASSERTION_LIFETIME", "SmartBackendAuth", "client_assertion"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300


def client_assertion(
    key: PrivateKey,
    *,
    client_id: str,
    token_url: str,
    now: float,
    kid: str | None = None,
    algorithm: Algorithm | None = None,
    lifetime: int = MAX_ASSERTION_LIFETIME,
) -> str:
    """A signed client assertion for one token request."""
    if not 0 < lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError("a client assertion lives at most 300 seconds")
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": int(now),
        "exp": int(now) + lifetime,
        "jti": uuid.uuid4().hex,
    }
    headers = {"kid": kid or key_id(key), "typ": "JWT"}
    return jwt.encode(claims, key, algorithm=algorithm or algorithm_of(key), headers=headers)


class SmartBackendAuth(TokenAuth):
    """SMART Backend Services for ``client_id`` with ``private_key`` (see the module docstring)."""

    def __init__(
        self,
        fhir_base_url: str,
        client_id: str,
        private_key: PrivateKey,
        *,
        scopes: str,
        kid: str | None = None,
        assertion_lifetime: int = MAX_ASSERTION_LIFETIME,
        **options: Any,
    ) -> None:
        super().__init__(fhir_base_url, scopes=scopes, **options)
        self.client_id = client_id
        self._key = private_key
        self.algorithm = algorithm_of(private_key)
        self.kid = kid or key_id(private_key)
        self._lifetime = assertion_lifetime
        if not 0 < assertion_lifetime <= MAX_ASSERTION_LIFETIME:
            raise ValueError("a client assertion lives at most 300 seconds")

    def _client_authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        assertion = client_assertion(
            self._key,
            client_id=self.client_id,
            token_url=token_url,
            now=self._clock(),
            kid=self.kid,
            algorithm=self.algorithm,
            lifetime=self._lifetime,
        )
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, {}
