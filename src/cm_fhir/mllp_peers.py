"""Who may hold an MLLP connection, and how many: admission bookkeeping. No I/O (clock passed in).

:class:`PeerGate` decides at accept whether a connection may stay: the listener is not stopping,
the global limit and the per-peer limits (by address, and by TLS client identity when there is
one) have room, the address is inside the allowlist (CIDR networks; empty allows every address),
and the address is not cooling down. A peer cools down when it sends ``unreadable_limit``
unreadable frames within ``unreadable_window`` seconds: for ``cooldown`` seconds its connections
are closed at accept. Every refusal is counted by reason. :class:`RefusalLog` decides which
refusals are also written down for the operator (once per address and reason per minute, and a
bounded number per minute in all), so a refused peer cannot fill the disk. :func:`is_loopback` and
:func:`parse_networks` are the address helpers the service and the settings share.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Admission",
    "GateLimits",
    "Network",
    "PeerGate",
    "RefusalLog",
    "is_loopback",
    "parse_networks",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (a bind here is reachable from this machine only)."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_networks(values: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    """``["10.1.0.0/16", "192.0.2.7"]`` -> networks (a bare address is a single-host network).

    Raises:
        ValueError: naming the position (from 1) of an entry that is not an address or network.
    """
    networks: list[Network] = []
    for position, value in enumerate(values, start=1):
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"entry {position} is not an IP address or CIDR network") from None
    return tuple(networks)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class GateLimits(Protocol):
    """The admission settings the gate reads (0 disables a limit); the listener's configuration
    (:class:`cm_fhir.listener_config.ListenerConfig`) is one, so they are defined once."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_peer(self) -> int: ...
    @property
    def allowed_networks(self) -> tuple[Network, ...]: ...
    @property
    def unreadable_limit(self) -> int: ...
    @property
    def unreadable_window(self) -> float: ...
    @property
    def cooldown(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer at accept: admitted, or the reason (a counter name) it was refused."""

    admitted: bool
    reason: str = ""


@dataclass(slots=True)
class _PeerState:
    unreadable: deque[float] = field(default_factory=deque)
    cool_until: float = 0.0


class PeerGate:
    """Connection counts per address and identity, the allowlist and cool-downs."""

    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        self._open = 0
        self._by_address: Counter[str] = Counter()
        self._by_identity: Counter[str] = Counter()
        self._peers: dict[str, _PeerState] = {}
        self.refused: Counter[str] = Counter()
        self.cooldowns = 0

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def tracked_peers(self) -> int:
        """Addresses with unreadable frames in the window or a cool-down (bounded memory)."""
        return len(self._peers)

    def admit(self, address: str, identity: str | None, now: float) -> Admission:
        """Take a slot for a new connection from ``address`` (and TLS ``identity``), or refuse."""
        limits = self.limits
        reason = ""
        peer = self._peers.get(address)
        if peer is not None and 0.0 < peer.cool_until <= now:
            peer.cool_until = 0.0  # the cool-down is over
        if limits.allowed_networks and not self._allowed(address):
            reason = "not_allowed"
        elif peer is not None and peer.cool_until > now:
            reason = "cooling_down"
        elif limits.max_connections and self._open >= limits.max_connections:
            reason = "limit"
        elif per_peer := limits.max_connections_per_peer:
            if self._by_address[address] >= per_peer:
                reason = "peer_limit"
            elif identity is not None and self._by_identity[identity] >= per_peer:
                reason = "identity_limit"
        if reason:
            self.refused[reason] += 1
            return Admission(False, reason)
        self._open += 1
        self._by_address[address] += 1
        if identity is not None:
            self._by_identity[identity] += 1
        return Admission(True)

    def release(self, address: str, identity: str | None, now: float) -> None:
        """Give back the slot :meth:`admit` took (and forget a peer with nothing pending)."""
        self._open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]
        if identity is not None:
            self._by_identity[identity] -= 1
            if self._by_identity[identity] <= 0:
                del self._by_identity[identity]
        peer = self._peers.get(address)
        if peer is not None and address not in self._by_address:
            window = peer.unreadable
            while window and window[0] <= now - self.limits.unreadable_window:
                window.popleft()
            if not window and peer.cool_until <= now:
                del self._peers[address]

    def unreadable(self, address: str, now: float) -> bool:
        """Record an unreadable frame from ``address``; True when that starts a cool-down."""
        limits = self.limits
        if not limits.unreadable_limit:
            return False
        peer = self._peers.setdefault(address, _PeerState())
        window = peer.unreadable
        window.append(now)
        while window and window[0] <= now - limits.unreadable_window:
            window.popleft()
        if len(window) < limits.unreadable_limit or peer.cool_until > now:
            return False
        window.clear()
        peer.cool_until = now + limits.cooldown
        self.cooldowns += 1
        return True

    def cooling_down(self, address: str, now: float) -> bool:
        peer = self._peers.get(address)
        return peer is not None and peer.cool_until > now

    def _allowed(self, address: str) -> bool:
        ip = _address(address)
        return ip is not None and any(ip in network for network in self.limits.allowed_networks)


class RefusalLog:
    """Which refusals are recorded: the first per (address, reason) in each ``window`` seconds,
    and at most ``limit`` in all per window; the others are only counted. Bounded memory."""

    def __init__(self, window: float = 60.0, limit: int = 100) -> None:
        self.window = window
        self.limit = limit
        self._started = float("-inf")
        self._seen: set[tuple[str, str]] = set()
        self.skipped = 0

    def should_record(self, address: str, reason: str, now: float) -> bool:
        """True when this refusal is to be written down (and remembered for the window)."""
        if now - self._started >= self.window:
            self._started, self._seen = now, set()
        key = (address, reason)
        if key in self._seen or len(self._seen) >= self.limit:
            self.skipped += 1
            return False
        self._seen.add(key)
        return True
