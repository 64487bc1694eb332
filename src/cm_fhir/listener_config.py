"""How the MLLP listener is configured: :class:`ListenerConfig`, built from the ``mllp`` settings
(a thin adapter: its defaults are :class:`~cm_fhir.settings.MllpSettings`),
the server TLS context (optionally mutual TLS) and the exposure check. No sockets are opened here;
TLS files are read when a context is built.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, fields
from pathlib import Path

from cm_fhir.errors import ConfigError
from cm_fhir.mllp_peers import Network, is_loopback, parse_networks
from cm_fhir.settings import MllpSettings

__all__ = ["ListenerConfig", "check_exposure", "server_tls_context", "tls_identity"]

_DEFAULTS = MllpSettings()  # the defaults live in the settings model only
_FROM_FILES = ("ssl_context", "allowed_networks")  # built from settings, not copied


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Where and how the listener accepts connections (0 disables a limit or a timeout).

    The defaults are those of :class:`~cm_fhir.settings.MllpSettings`, where each is documented.
    """

    host: str = _DEFAULTS.host
    port: int = _DEFAULTS.port
    max_connections: int = _DEFAULTS.max_connections
    max_connections_per_peer: int = _DEFAULTS.max_connections_per_peer  # per address and TLS id
    max_message_bytes: int = _DEFAULTS.max_message_bytes
    idle_timeout: float = _DEFAULTS.idle_timeout  # seconds without a whole frame
    frame_timeout: float = _DEFAULTS.frame_timeout  # seconds from a start block to its end block
    ssl_context: ssl.SSLContext | None = None
    shutdown_grace: float = _DEFAULTS.shutdown_grace
    allowed_networks: tuple[Network, ...] = ()  # empty: every address
    allowed_senders: tuple[str, ...] = _DEFAULTS.allowed_senders  # MSH-3|MSH-4; empty: every one
    unreadable_keep_bytes: int = _DEFAULTS.unreadable_keep_bytes
    unreadable_limit: int = _DEFAULTS.unreadable_limit  # unreadable frames per window, then a pause
    unreadable_window: float = _DEFAULTS.unreadable_window
    cooldown: float = _DEFAULTS.cooldown
    allow_public_bind: bool = _DEFAULTS.allow_public_bind

    @classmethod
    def from_settings(cls, mllp: MllpSettings) -> ListenerConfig:
        """The listener configuration of the ``mllp`` settings (TLS files are loaded here)."""
        try:
            networks = parse_networks(mllp.allowed_networks)
        except ValueError as exc:
            raise ConfigError(f"mllp.allowed_networks: {exc}") from None
        copied = {
            item.name: getattr(mllp, item.name)
            for item in fields(cls)
            if item.name not in _FROM_FILES
        }
        return cls(
            **copied,
            ssl_context=server_tls_context(mllp.tls_cert, mllp.tls_key, mllp.tls_client_ca),
            allowed_networks=networks,
        )


def server_tls_context(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> ssl.SSLContext | None:
    """The listener's TLS context (None without a certificate); ``client_ca`` requires client
    certificates signed by that CA (mutual TLS).

    Raises:
        ConfigError: only one of cert and key, a CA without them, or files that do not load.
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("mllp.tls_client_ca needs mllp.tls_cert and mllp.tls_key")
        return None
    if cert is None or key is None:
        raise ConfigError("mllp.tls_cert and mllp.tls_key go together")
    for setting, path in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"mllp.{setting}: {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except OSError as exc:  # ssl.SSLError is an OSError
        where = f" {exc.filename}" if exc.filename else ""
        reason = getattr(exc, "reason", None) or exc.strerror or "unusable"
        raise ConfigError(
            f"cannot load the MLLP TLS certificate, key or CA{where} "
            f"(mllp.tls_cert, mllp.tls_key, mllp.tls_client_ca): {reason}"
        ) from exc
    return context


def check_exposure(config: ListenerConfig) -> None:
    """Refuse to listen beyond loopback with neither TLS nor an address allowlist.

    Raises:
        ConfigError: unless ``allow_public_bind`` says this is intended.
    """
    if is_loopback(config.host) or config.allow_public_bind:
        return
    if config.ssl_context is None and not config.allowed_networks:
        raise ConfigError(
            f"MLLP on {config.host} would accept plain TCP from any address: configure TLS "
            "(mllp.tls_cert/tls_key), an address allowlist (mllp.allowed_networks), or set "
            "mllp.allow_public_bind"
        )


def tls_identity(transport: asyncio.BaseTransport) -> str | None:
    """The subject of the client certificate (mutual TLS), or None."""
    certificate = transport.get_extra_info("peercert")
    if not certificate:
        return None
    subject = certificate.get("subject", ())
    return ",".join(f"{name}={value}" for rdn in subject for name, value in rdn) or None
