"""Settings of the FHIR endpoints the outbox is delivered to (pydantic). No I/O.

The simple case is one URL: ``cm-fhir serve --ehr-url URL`` (or ``CM_FHIR_EHR_URL``) configures
the endpoint ``default`` without auth, receiving everything. ``[ehr]`` in the config file holds
the delivery loop's settings and any number of ``[[ehr.endpoints]]``, each with its own base URL,
auth (none, a static bearer token, OAuth2 client secret, or SMART Backend Services with a private
key), the resource types and programmes it receives, how Bundles are sent and a rate limit.

Payers are configured the same way: ``--payer-url URL`` (``CM_FHIR_PAYER_URL``) is the payer
endpoint ``payer``, receiving every payer's messages; ``[[payer.endpoints]]`` adds more, each
naming the payer identifiers it serves. A payer endpoint receives messages (Da Vinci Alerts
notifications, PAS ``Claim/$submit``), never the case Bundles an EHR endpoint receives, so its
name must differ from every EHR endpoint's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "PAYER_ENDPOINT",
    "EhrSettings",
    "EndpointAuth",
    "EndpointSettings",
    "PayerEndpointSettings",
    "PayerSettings",
    "configured_endpoints",
    "configured_payers",
]

#: The payer endpoint ``--payer-url`` configures.
PAYER_ENDPOINT = "payer"

AuthKind = Literal["none", "bearer", "client-secret", "smart-backend"]
SendMode = Literal["auto", "transaction", "batch", "individual"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointAuth(_Section):
    """How cm-fhir authenticates to one endpoint."""

    kind: AuthKind = "none"
    token: SecretStr | None = Field(None, description="bearer: the static token.")
    client_id: str | None = Field(None, description="client-secret and smart-backend.")
    client_secret: SecretStr | None = Field(None, description="client-secret.")
    key_file: Path | None = Field(
        None, description="smart-backend: PEM private key (`cm-fhir keys generate` writes one)."
    )
    kid: str | None = Field(None, description="smart-backend: the key id registered with the EHR.")
    alg: Literal["RS384", "ES384"] | None = Field(
        None, description="smart-backend: RS384 or ES384; unset: as the key file holds."
    )
    scopes: tuple[str, ...] = ("system/Task.cu", "system/Patient.rs")
    token_url: str | None = Field(
        None, description="Token endpoint; unset: discovered from .well-known/smart-configuration."
    )

    @model_validator(mode="after")
    def _complete(self) -> EndpointAuth:
        needed: dict[str, list[tuple[str, object]]] = {
            "none": [],
            "bearer": [("token", self.token)],
            "client-secret": [("client_id", self.client_id), ("client_secret", self.client_secret)],
            "smart-backend": [("client_id", self.client_id), ("key_file", self.key_file)],
        }
        absent = [name for name, value in needed[self.kind] if value is None]
        if absent:
            raise ValueError(f"auth kind {self.kind} needs {', '.join(absent)}")
        return self


class EndpointSettings(_Section):
    """One FHIR endpoint that receives outbox Bundles."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str = Field(pattern=r"^https?://", description="The FHIR base URL.")
    auth: EndpointAuth = EndpointAuth()
    resource_types: tuple[str, ...] = Field(
        (), description="Resource types it receives (empty: all)."
    )
    programmes: tuple[str, ...] = Field((), description="Case programmes it receives (empty: all).")
    mode: SendMode = Field(
        "auto", description="auto follows the CapabilityStatement; or force one way of sending."
    )
    max_transaction_entries: int | None = Field(
        None, gt=0, description="Split transactions above this size (auto: as the server says)."
    )
    rate_limit: float = Field(0.0, ge=0, description="Requests per second; 0: no limit.")
    timeout: float = Field(30.0, gt=0, description="Seconds per request.")
    patient_references: Literal["resolve", "identifier"] = Field(
        "resolve",
        description="resolve: look the EHR's Patient up by identifier and write literal "
        "references where found; identifier: always logical identifier references.",
    )
    task_poll_interval: float = Field(
        60.0,
        ge=0,
        description="Status back: seconds between polls for our Tasks changed on the endpoint "
        "(Task?_lastUpdated=gt...); 0: no polling.",
    )
    notification_secret: SecretStr | None = Field(
        None,
        description="Status back: the bearer secret the endpoint's Subscription notifications "
        "carry (POST /fhir/subscription-notification/<name>); unset: none accepted.",
    )
    subscriptions: tuple[str, ...] = Field(
        (),
        description="Status back: the endpoint's Subscriptions (ids or Subscription/<id>) whose "
        "notifications are accepted; empty: any Subscription of this endpoint (a relative "
        "reference or one under its base URL). Others are refused (403).",
    )
    reread_notified_tasks: bool = Field(
        True,
        description="Status back: read each notified Task from the endpoint before applying it, "
        "also when the notification carries the full resource (a payload is not trusted).",
    )


class EhrSettings(_Section):
    """The ``sync`` worker role and the endpoints it delivers to."""

    endpoints: tuple[EndpointSettings, ...] = ()
    batch_patients: int = Field(50, gt=0, description="Patients claimed per endpoint per pass.")
    cases_per_transaction: int = Field(
        10,
        gt=0,
        description="Cases of different patients written in one transaction, within the "
        "endpoint's transaction cap (learnt once from its first size refusal); a transaction "
        "refused otherwise is sent again case by case, so a bad case fails only itself.",
    )
    concurrent_requests: int = Field(
        4,
        gt=0,
        description="Requests in flight at once per endpoint, and claimed batches being "
        "written (one patient's writes always go one after the other).",
    )
    poll_interval: float = Field(
        0.2,
        gt=0,
        description="Seconds between polls when idle; a commit of outbox rows wakes the role "
        "sooner (in its process; from any process on PostgreSQL).",
    )
    lease_seconds: float = Field(
        120.0, gt=0, description="How long claimed rows stay reserved for one sync worker."
    )
    retry_base: float = Field(2.0, gt=0, description="First back-off after a failed attempt, s.")
    retry_max: float = Field(300.0, gt=0, description="Longest back-off, seconds.")
    shutdown_grace: float = Field(30.0, gt=0, description="Seconds to finish writes in flight.")
    breaker_failures: int = Field(
        5, gt=0, description="Failures in a row that open an endpoint's circuit breaker."
    )
    breaker_cool_down: float = Field(
        30.0, ge=0, description="Seconds an open breaker waits before one trial call."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EhrSettings:
        names = [e.name for e in self.endpoints]
        if len(names) != len(set(names)):
            raise ValueError("every ehr endpoint needs its own name")
        return self


def configured_endpoints(ehr_url: str | None, ehr: EhrSettings) -> tuple[EndpointSettings, ...]:
    """The endpoints to deliver to: ``default`` for ``ehr_url``, then ``ehr.endpoints``."""
    out = list(ehr.endpoints)
    if ehr_url is not None:
        if any(e.name == "default" for e in out):
            raise ValueError("ehr_url configures the endpoint 'default'; rename the other one")
        out.insert(0, EndpointSettings(name="default", base_url=ehr_url))
    return tuple(out)


class PayerEndpointSettings(EndpointSettings):
    """One payer (or its utilization-management organisation) cm-fhir sends messages to."""

    payers: tuple[str, ...] = Field(
        (),
        description="Identifier values of the payers it serves (a coverage's payer); empty: all.",
    )
    inquire_interval: float = Field(
        300.0,
        ge=0,
        description="Seconds between Claim/$inquire polls of a pended review (no later than the "
        "review's deadline); 0: no polling (the payer notifies).",
    )

    subscribe: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Subscribe at the payer to results of pended reviews (Da Vinci PAS topic) "
        "when payer.public_url is set: auto when its CapabilityStatement lists Subscription, "
        "always without asking, never (Claim/$inquire polling only).",
    )
    subscription_payload: Literal["id-only", "full-resource"] = Field(
        "id-only",
        description="What the payer's notifications carry: id-only (the decision is then read "
        "with Claim/$inquire) or full-resource (the ClaimResponse itself).",
    )

    def serves(self, payer: str | None) -> bool:
        return not self.payers or payer in self.payers


class PayerSettings(_Section):
    """The payers of the ``sync`` worker role."""

    endpoints: tuple[PayerEndpointSettings, ...] = ()
    token: SecretStr | None = Field(
        None, description="Bearer token the payer endpoint of payer_url is called with."
    )
    inquire_interval: float = Field(
        300.0, ge=0, description="inquire_interval of the payer endpoint of payer_url."
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The base URL at which payers reach this service's API (e.g. "
        "https://cm.example.org): payers that offer Subscriptions are asked to post notifications "
        "to <public_url>/fhir/subscription-notification/<endpoint>; unset: no subscription, "
        "pended reviews are followed with Claim/$inquire only.",
    )
    notify_events: tuple[Literal["admit", "transfer", "discharge"], ...] = Field(
        ("admit", "transfer", "discharge"),
        description="The ADT events a member's payer is notified of (Da Vinci Alerts).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> PayerSettings:
        names = [e.name for e in self.endpoints]
        if len(names) != len(set(names)):
            raise ValueError("every payer endpoint needs its own name")
        return self


def configured_payers(
    payer_url: str | None, payer: PayerSettings, ehr: tuple[EndpointSettings, ...] = ()
) -> tuple[PayerEndpointSettings, ...]:
    """The payer endpoints: ``payer`` for ``payer_url``, then ``payer.endpoints``."""
    out = list(payer.endpoints)
    if payer_url is not None:
        if any(e.name == PAYER_ENDPOINT for e in out):
            raise ValueError(
                "payer_url configures the payer endpoint 'payer'; rename the other one"
            )
        auth = EndpointAuth(kind="bearer", token=payer.token) if payer.token else EndpointAuth()
        simple = PayerEndpointSettings(
            name=PAYER_ENDPOINT,
            base_url=payer_url,
            auth=auth,
            inquire_interval=payer.inquire_interval,
        )
        out.insert(0, simple)
    clash = {e.name for e in out} & {e.name for e in ehr}
    if clash:
        raise ValueError(f"a payer endpoint and an ehr endpoint share the name {sorted(clash)[0]}")
    return tuple(out)
