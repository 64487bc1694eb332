"""Who is calling: static API keys and OAuth2 JWT bearer tokens. I/O: fetches the JWKS over HTTP.

:class:`Authenticator` turns the ``Authorization: Bearer <token>`` value into a
:class:`Principal`. A token equal to one of the configured API keys (compared in constant time
against every key) is an API-key principal with every scope. Otherwise, when a JWKS URL is
configured, the token must be a JWT whose header names an allowed asymmetric algorithm and a key
of that JWKS (``kid``) of the algorithm's key type, signed by it, unexpired, and carrying the
configured issuer and audience; its scopes come from ``scope`` (space-separated) or ``scp``. Any
other header (no ``kid``, an algorithm that is not allowed, ``none``, HMAC, a key of another type,
``crit`` extensions, a header that is not JSON) is a 401, never a 500.
Scopes: ``read`` and ``write`` on ``/api``; SMART v1/v2 system scopes (``system/*.read``,
``system/Task.read``, ``system/Task.rs``) on ``/fhir``. Tokens are never logged; the subject of
an API key is a short digest of it, so audit records can tell keys apart without storing them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt
from starlette.concurrency import run_in_threadpool

from cm_fhir.settings import AuthSettings

__all__ = [
    "ALL_SCOPES",
    "AuthError",
    "Authenticator",
    "Principal",
    "grants_fhir",
    "grants_fhir_read",
]

log = logging.getLogger(__name__)

ALL_SCOPES = frozenset({"read", "write", "system/*.read", "system/*.*"})
AuthMethod = Literal["api-key", "jwt"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a subject, its scopes and how it proved who it is."""

    subject: str
    scopes: frozenset[str]
    method: AuthMethod

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class AuthError(Exception):
    """Authentication failed (401) or the scope is insufficient (403). Carries no token."""

    def __init__(self, status: int, reason: str, *, scope: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.scope = scope
        super().__init__(reason)

    @property
    def www_authenticate(self) -> str:
        error = "insufficient_scope" if self.status == 403 else "invalid_token"
        value = f'Bearer realm="cm-fhir", error="{error}"'
        if self.scope:
            value += f', scope="{self.scope}"'
        return value


def grants_fhir(
    scopes: frozenset[str], resource_type: str, action: Literal["r", "c", "u", "d"]
) -> bool:
    """Whether SMART system scopes allow ``action`` on ``resource_type``: v1 ``.read`` (for
    ``r``), ``.write`` (for ``c``, ``u`` and ``d``) or ``.*``; v2 permission letters
    (``cruds``)."""
    v1 = "read" if action == "r" else "write"
    for scope in scopes:
        context, _, rest = scope.partition("/")
        if context != "system" or "." not in rest:
            continue
        target, _, permission = rest.partition(".")
        if target not in ("*", resource_type):
            continue
        permission = permission.split("?", 1)[0]
        if permission in (v1, "*") or (
            permission and set(permission) <= set("cruds") and action in permission
        ):
            return True
    return False


def grants_fhir_read(scopes: frozenset[str], resource_type: str) -> bool:
    """Whether SMART system scopes allow reading ``resource_type`` (v1 ``.read``/``.*``, v2)."""
    return grants_fhir(scopes, resource_type, "r")


class _HttpxJwkClient(jwt.PyJWKClient):
    """PyJWKClient that fetches with httpx (timeouts, no redirects, testable with respx)."""

    def __init__(self, uri: str, *, timeout: float, lifespan: int) -> None:
        super().__init__(uri, cache_keys=True, lifespan=lifespan, timeout=int(timeout))
        self._http_timeout = timeout

    def fetch_data(self) -> Any:
        try:
            response = httpx.get(self.uri, timeout=self._http_timeout, follow_redirects=False)
            response.raise_for_status()
            jwk_set = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise jwt.PyJWKClientConnectionError(
                f"cannot fetch the JWKS: {type(exc).__name__}"
            ) from exc
        if not isinstance(jwk_set, dict):
            raise jwt.PyJWKClientError("the JWKS endpoint did not return a JSON object")
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.put(jwk_set)
        return jwk_set


def _key_subject(key: str) -> str:
    return "api-key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class Authenticator:
    """Checks bearer tokens against the configured API keys and JWKS."""

    def __init__(self, api_keys: list[str], settings: AuthSettings) -> None:
        self._keys = [(key.encode(), _key_subject(key)) for key in api_keys]
        self._settings = settings
        self._jwks: _HttpxJwkClient | None = None
        if settings.jwks_url is not None:
            self._jwks = _HttpxJwkClient(
                settings.jwks_url,
                timeout=settings.jwks_timeout,
                lifespan=settings.jwks_cache_seconds,
            )

    @property
    def configured(self) -> bool:
        return bool(self._keys) or self._jwks is not None

    def _match_key(self, token: str) -> str | None:
        candidate = token.encode()
        found: str | None = None
        for key, subject in self._keys:  # compare with every key: time does not leak which
            if hmac.compare_digest(candidate, key):
                found = subject
        return found

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value; raises :class:`AuthError`."""
        if not authorization:
            raise AuthError(401, "a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
        subject = self._match_key(token)
        if subject is not None:
            return Principal(subject, ALL_SCOPES, "api-key")
        if self._jwks is None or token.count(".") != 2:
            raise AuthError(401, "the token is not valid")
        return await run_in_threadpool(self._verify_jwt, token)

    def _verify_jwt(self, token: str) -> Principal:
        assert self._jwks is not None
        settings = self._settings
        try:
            alg, kid = _expected_header(token, settings.algorithms)
            signing_key = self._jwks.get_signing_key(kid)
            _check_key_fits(signing_key, alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={
                    "require": ["exp", "sub"]
                    + (["iss"] if settings.issuer else [])
                    + (["aud"] if settings.audience else []),
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "the token has expired") from exc
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS unavailable: %s", exc)
            raise AuthError(401, "the token cannot be checked now (JWKS unavailable)") from exc
        except jwt.PyJWKClientError as exc:
            raise AuthError(401, "the token is signed by an unknown key") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"the token is not valid ({type(exc).__name__})") from exc
        except (TypeError, ValueError) as exc:  # a key the crypto library cannot use with alg
            raise AuthError(401, "the token's key does not fit its algorithm") from exc
        scopes = _scopes_of(claims)
        subject = str(claims.get("client_id") or claims["sub"])
        return Principal(subject, scopes, "jwt")


#: The JWK key type each JWS algorithm family signs with.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _expected_header(token: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    """The token's ``alg`` and ``kid``, if its header is one we accept; else InvalidTokenError.

    Accepted: a JSON object naming an allowed asymmetric ``alg`` and a string ``kid``, and no
    ``crit`` extensions (none is understood here).
    """
    header = jwt.get_unverified_header(token)
    if not isinstance(header, dict):
        raise jwt.InvalidTokenError("the header is not a JSON object")
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in allowed or alg[:2] not in _KEY_TYPES:
        raise jwt.InvalidAlgorithmError("the algorithm is not accepted")
    if not isinstance(kid, str) or not kid:
        raise jwt.InvalidTokenError("the header names no key (kid)")
    if "crit" in header:
        raise jwt.InvalidTokenError("critical header extensions are not supported")
    return alg, kid


def _check_key_fits(key: jwt.PyJWK, alg: str) -> None:
    """The JWKS key named by ``kid`` must be of the token algorithm's key type."""
    if key.key_type != _KEY_TYPES[alg[:2]]:
        raise jwt.InvalidAlgorithmError("the key named by kid is not of the token's key type")


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    value = claims.get("scope", claims.get("scp", ""))
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(item) for item in value)
    return frozenset()
