"""The FHIR client: how cm-fhir talks to EHR and payer FHIR R4 endpoints. I/O edge.

It may import :mod:`cm_fhir.fhir` and :mod:`cm_fhir.errors`, never the store or the API.

- :class:`FhirClient` (``client``): read, vread, search with paging, create and conditional create,
  update with If-Match, conditional update, delete, transaction, batch, and
  :meth:`FhirClient.write_bundle`, which adapts to the server (``bundles``, ``capabilities``).
- Errors: HTTP statuses and OperationOutcomes become :mod:`cm_fhir.errors` ``Remote*`` classes in
  one table (``status``); only transport errors, 429 and 5xx are retryable.
- :class:`RetryPolicy` (``retry``): tenacity; idempotent or conditional requests only; backoff
  with jitter; Retry-After / RateLimit; a cap per attempt and a total budget.
- :class:`CircuitBreaker` (``breaker``): per endpoint; closed, open, half-open.
- Auth as ``httpx.Auth`` (``auth``, ``smart``): SMART Backend Services, client secret, bearer.
- :func:`update_owned` / :func:`reapply` (``precondition``): on a 412, re-read, re-apply the
  fields we own, update with the new ETag.
- ``keys``: key pairs and the JWKS to register (``cm-fhir keys generate``).
"""

from __future__ import annotations

from cm_fhir.fhir_client.auth import BearerAuth, ClientSecretAuth, TokenAuth
from cm_fhir.fhir_client.breaker import BreakerSnapshot, BreakerState, CircuitBreaker
from cm_fhir.fhir_client.capabilities import ServerCapabilities
from cm_fhir.fhir_client.client import FhirClient, WriteMode
from cm_fhir.fhir_client.precondition import merge_owned, reapply, update_owned
from cm_fhir.fhir_client.responses import EntryResult, FhirResponse
from cm_fhir.fhir_client.retry import RetryPolicy
from cm_fhir.fhir_client.smart import SmartBackendAuth

__all__ = [
    "BearerAuth",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "ClientSecretAuth",
    "EntryResult",
    "FhirClient",
    "FhirResponse",
    "RetryPolicy",
    "ServerCapabilities",
    "SmartBackendAuth",
    "TokenAuth",
    "WriteMode",
    "merge_owned",
    "reapply",
    "update_owned",
]
