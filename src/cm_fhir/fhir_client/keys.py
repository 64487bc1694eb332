"""Key pairs for SMART Backend Services: generate, save, load, and the public JWKS to register.

A client signs its token requests with a private key (RS384: RSA 3072; ES384: EC P-384) and the
EHR verifies them with the public key registered as a JWKS. The key id (``kid``) is the key's
RFC 7638 JWK thumbprint, so the same key always has the same id and nothing else needs storing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = [
    "Algorithm",
    "PrivateKey",
    "algorithm_of",
    "generate_private_key",
    "jwks",
    "key_id",
    "load_private_key",
    "private_pem",
    "public_jwk",
    "write_private_key",
]

Algorithm = Literal["RS384", "ES384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
RSA_BITS = 3072


def generate_private_key(algorithm: Algorithm = "ES384") -> PrivateKey:
    if algorithm == "RS384":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if algorithm == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unsupported algorithm {algorithm!r}; use RS384 or ES384")


def algorithm_of(key: PrivateKey) -> Algorithm:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError("EC keys must be on curve P-384 for ES384")


def private_pem(key: PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    """A PEM private key (RSA, or EC on P-384); ValueError for anything else."""
    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the key must be an RSA or EC private key")
    algorithm_of(key)
    return key


def write_private_key(key: PrivateKey, path: Path, *, overwrite: bool = False) -> None:
    """Write the PEM readable by its owner only (0600), created with that mode, never widened."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    os.chmod(path, 0o600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_members(key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        return dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    return dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))


def key_id(key: PrivateKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of the public key."""
    members = _public_members(key)
    required = ("e", "kty", "n") if members["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """The public key as a JWK with ``kid``, ``alg``, ``use: sig`` and ``key_ops: [verify]``."""
    members = _public_members(key)
    return {
        **members,
        "kid": kid or key_id(key),
        "alg": algorithm_of(key),
        "use": "sig",
        "key_ops": ["verify"],
    }


def jwks(key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """The JWKS (``{"keys": [...]}``) to register with the EHR."""
    return {"keys": [public_jwk(key, kid)]}
