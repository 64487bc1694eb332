"""The one exception tree of cm-fhir. Pure: no I/O.

::

    CmFhirError
    ├── ConfigError                 bad configuration, raised at start-up only
    │   ├── MappingSpecError        a file in mappings/ is invalid (file, key path, reason)
    │   └── ProfileError            a StructureDefinition or value set cannot be loaded
    ├── DomainError                 a change the case-management process forbids
    │   └── TransitionError         a status change outside the allowed state machine
    ├── InboundMessageError         an inbound HL7v2 message is refused -> ACK AE/AR with ERR
    │   ├── FramingError            MLLP framing is broken (e.g. message too large)
    │   ├── Hl7ParseError           the message cannot be parsed
    │   └── UnsupportedEventError   a message type/version we do not handle
    ├── MappingError                valid spec, but the data cannot be mapped -> 422 / AE
    ├── SearchParameterError        a FHIR search the facade does not support -> 400
    ├── StoreError                  the database refused or could not commit a write (retryable)
    ├── ValidationError             profile violations; carries an OperationOutcome (dict)
    ├── RecordNotFound              a local record (case, resource) does not exist -> 404
    ├── RecordConflict              a local write conflicts with what is stored -> 409
    │   └── RecordVersionMismatch   If-Match names another version than the stored one -> 412
    └── RemoteFhirError             a remote FHIR server refused or failed (status, outcome)
        ├── RemoteUnavailable       transport errors, timeouts, 5xx (retryable)
        │   └── CircuitOpen         the endpoint's circuit breaker refuses calls for now
        ├── RemoteRateLimited       429, with retry_after seconds (retryable)
        ├── RemoteAuthError         401 / 403
        ├── RemoteNotFound          404 / 410
        ├── RemoteConflict          409
        ├── RemotePreconditionFailed 412 (If-Match mismatch, several conditional matches)
        └── RemoteInvalid           400 / 422
            └── RemoteTooCostly     413, or 400/422 with issue code too-costly (e.g. a size cap)

Local conditions (``Record*``) and remote ones (``Remote*``) never share a class, so a 404 from an
EHR can never be answered to an API client as if one of our records were missing. Only
``RemoteFhirError.retryable`` errors are retried (``cm_fhir.fhir_client`` maps statuses to classes
in one table).

Errors of other libraries (hl7apy, pydantic, SQLAlchemy, httpx) are translated into this tree where
they enter, and never leak past an edge. Messages never contain PHI: they name positions (file, key
path, segment and field), not values.
"""

from __future__ import annotations

from typing import Any


class CmFhirError(Exception):
    """Root of every error cm-fhir raises on purpose."""


class ConfigError(CmFhirError):
    """Configuration that cannot be used; raised at start-up."""


class MappingSpecError(ConfigError):
    """A file in ``mappings/`` failed validation."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class ProfileError(ConfigError):
    """A profile, value set or code system cannot be loaded."""


class DomainError(CmFhirError):
    """A change the case-management process does not allow."""


class TransitionError(DomainError):
    """A status transition outside the state machine."""

    def __init__(self, entity: str, current: str, target: str, allowed: frozenset[str]) -> None:
        self.entity = entity
        self.current = current
        self.target = target
        self.allowed = allowed
        options = ", ".join(sorted(allowed)) or "none (terminal state)"
        super().__init__(
            f"{entity} cannot go from '{current}' to '{target}'; "
            f"allowed from '{current}': {options}"
        )


class InboundMessageError(CmFhirError):
    """An inbound message is refused. ``code`` is an HL7 table 0357 error code."""

    code: str = "207"
    ack_code: str = "AE"

    def __init__(self, message: str, *, location: str | None = None, code: str | None = None):
        self.location = location
        if code is not None:
            self.code = code
        super().__init__(message)


class FramingError(InboundMessageError):
    """Broken MLLP framing, e.g. a frame over the size limit."""

    code = "100"
    ack_code = "AR"


class Hl7ParseError(InboundMessageError):
    """The message cannot be parsed (segment sequence, data type, required field)."""

    code = "100"
    ack_code = "AE"


class UnsupportedEventError(InboundMessageError):
    """A message type, event or version we do not handle."""

    code = "200"
    ack_code = "AR"


class StoreError(CmFhirError):
    """The database could not commit a write; the caller may retry (the listener answers AR/CE)."""


class MappingError(CmFhirError):
    """The mapping spec is valid but this data cannot be mapped."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class SearchParameterError(CmFhirError):
    """A search parameter, modifier, prefix or value the FHIR facade does not support."""

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        self.reason = reason
        super().__init__(f"search parameter '{parameter}': {reason}")


class ValidationError(CmFhirError):
    """Profile or structure violations. ``outcome`` is an OperationOutcome as a dict."""

    def __init__(self, message: str, outcome: dict[str, Any]) -> None:
        self.outcome = outcome
        super().__init__(message)


class RecordNotFound(CmFhirError):
    """A local record (a case, a stored resource) does not exist."""

    status = 404


class RecordConflict(CmFhirError):
    """A local write conflicts with what is stored."""

    status = 409


class RecordVersionMismatch(RecordConflict):
    """The version a client named (If-Match) is not the stored one."""

    status = 412


class RemoteFhirError(CmFhirError):
    """A remote FHIR server answered with an error, or could not be reached (``status`` None).

    ``outcome`` is the server's OperationOutcome (a dict) when it sent one; it may quote the data
    sent, so it is kept for the operator's view and never logged. ``retryable`` says whether the
    same request may succeed later.
    """

    retryable = False
    #: Seconds the server (or our circuit breaker) asked to wait before trying again, if said.
    retry_after: float | None = None

    def __init__(
        self, status: int | None, message: str, outcome: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.outcome = outcome
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)


class _RemoteRetryLater(RemoteFhirError):
    """A remote failure worth trying again, after ``retry_after`` seconds when the server said."""

    retryable = True

    def __init__(
        self,
        status: int | None,
        message: str,
        outcome: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, message, outcome)


class RemoteUnavailable(_RemoteRetryLater):
    """Transport errors, timeouts and 5xx: the server may answer later."""


class CircuitOpen(RemoteUnavailable):
    """The endpoint's circuit breaker is open: no call is made until ``retry_after`` seconds."""

    def __init__(self, endpoint: str, retry_after: float) -> None:
        self.endpoint = endpoint
        super().__init__(None, f"circuit open for {endpoint}", retry_after=retry_after)


class RemoteRateLimited(_RemoteRetryLater):
    """429: the server asks to slow down; ``retry_after`` seconds when it said so."""


class RemoteAuthError(RemoteFhirError):
    """401 or 403, or a token endpoint that refuses our credentials."""


class RemoteNotFound(RemoteFhirError):
    """404 or 410."""


class RemoteConflict(RemoteFhirError):
    """409."""


class RemotePreconditionFailed(RemoteFhirError):
    """412: If-Match names an older version, or a conditional write matched several resources."""


class RemoteInvalid(RemoteFhirError):
    """400 or 422: the server refuses the content; ``outcome`` says why."""


class RemoteTooCostly(RemoteInvalid):
    """The server refuses the request's size (413, or issue code ``too-costly``)."""
