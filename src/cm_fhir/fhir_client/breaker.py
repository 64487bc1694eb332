"""A circuit breaker per endpoint: stop calling a server that keeps failing, probe it later.

``closed``: calls go through; ``failure_threshold`` consecutive failures open it. ``open``: calls
fail at once with :class:`~cm_fhir.errors.CircuitOpen` until ``cool_down`` seconds have passed.
``half-open``: one probe call goes through (others are refused while it runs); its success closes
the circuit, its failure opens it for another cool-down. A failure is what says the server is
down: a transport error, a timeout, a 5xx (:class:`~cm_fhir.errors.RemoteUnavailable`). A 4xx or a
429 is an answer from a live server and counts as a success for the circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cm_fhir.errors import CircuitOpen

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True)
class BreakerSnapshot:
    """The breaker's state for /metrics and the API."""

    endpoint: str
    state: BreakerState
    consecutive_failures: int
    opened_count: int
    retry_in: float | None


class CircuitBreaker:
    def __init__(
        self,
        endpoint: str = "",
        *,
        failure_threshold: int = 5,
        cool_down: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cool_down < 0:
            raise ValueError("failure_threshold must be >= 1 and cool_down >= 0")
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cool_down:
            return "half-open"
        return "open"

    def _retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cool_down - (self._clock() - self._opened_at))

    def before_call(self) -> None:
        """Raise CircuitOpen if no call may go out now; in half-open, admit one probe."""
        state = self.state
        if state == "closed":
            return
        if state == "open" or self._probing:
            raise CircuitOpen(self.endpoint, self._retry_in() or self.cool_down)
        self._probing = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._opened_count += 1
        self._probing = False

    def release(self) -> None:
        """A call admitted by :meth:`before_call` ended without saying anything about the server
        (e.g. it was cancelled): let another probe through."""
        self._probing = False

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        return BreakerSnapshot(
            endpoint=self.endpoint,
            state=state,
            consecutive_failures=self._failures,
            opened_count=self._opened_count,
            retry_in=self._retry_in() if state == "open" else None,
        )
