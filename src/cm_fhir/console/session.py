"""Console sessions: who signed in, until when, and the CSRF token of their forms. No I/O.

Sessions are kept on the server, in memory: the browser holds only a random session id in an
``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when the console is reached over https),
scoped to the console's path, with a ``Max-Age``. The store keeps the key or access token the
user signed in with, so every console request is authenticated again by the API's own
:class:`~cm_fhir.api.auth.Authenticator` (an expired JWT or a removed API key ends the session)
and every API call the console makes carries it, with its scopes. Nothing is signed, so there is
no signing key to keep: a restart signs everyone out. The store is keyed by a digest of the id,
not the id itself.

Each session has its own CSRF token, sent in a hidden field of every form that changes anything
and compared in constant time. The sign-in form, before any session exists, uses a
double-submit token: a short-lived cookie and the same value in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "COOKIE",
    "PRE_COOKIE",
    "Session",
    "SessionStore",
    "cookie_header",
    "expired_cookie_header",
    "same_token",
]

COOKIE = "cm_fhir_console"
PRE_COOKIE = "cm_fhir_console_signin"


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(slots=True)
class Session:
    """One signed-in user."""

    token: str = field(repr=False)
    subject: str
    method: str
    scopes: frozenset[str]
    created: datetime
    expires: datetime
    last_seen: datetime
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class SessionStore:
    """In-memory sessions with an absolute lifetime and an idle timeout; at most ``capacity``."""

    def __init__(
        self,
        *,
        lifetime: timedelta = timedelta(hours=8),
        idle: timedelta = timedelta(minutes=30),
        capacity: int = 10_000,
    ) -> None:
        self.lifetime = lifetime
        self.idle = idle
        self.capacity = capacity
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self,
        token: str,
        subject: str,
        method: str,
        scopes: frozenset[str],
        now: datetime | None = None,
    ) -> tuple[str, Session]:
        """A new session; returns the id for the cookie and the session."""
        now = now or datetime.now(UTC)
        self._sweep(now)
        if len(self._sessions) >= self.capacity:  # drop the oldest rather than grow without end
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(token, subject, method, scopes, now, now + self.lifetime, now)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None, now: datetime | None = None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarted), else None."""
        if not session_id:
            return None
        now = now or datetime.now(UTC)
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if now >= session.expires or now - session.last_seen >= self.idle:
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def _sweep(self, now: datetime) -> None:
        dead = [
            key
            for key, s in self._sessions.items()
            if now >= s.expires or now - s.last_seen >= self.idle
        ]
        for key in dead:
            del self._sessions[key]


def cookie_header(name: str, value: str, *, path: str, max_age: int, secure: bool) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, scoped to ``path``, Secure on https."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def expired_cookie_header(name: str, *, path: str, secure: bool) -> str:
    return cookie_header(name, "", path=path, max_age=0, secure=secure)
