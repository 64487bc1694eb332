"""The typed spec of ``mappings/payer-exchange.yaml``: how a utilization review travels as Da
Vinci PAS resources, and the rules a payer-side cm-fhir decides by. Pure apart from reading the
file in :func:`load_payer_exchange`.

The review-action map (X12 306 codes as PAS carries them -> decision) has a ``default`` used for a
code it does not list and for a response without one; the bundled default is ``pended``, the
neutral answer. URLs that are not absolute are resolved against the canonical base of
``fhir-identity.yaml`` by :func:`load_payer_exchange`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cm_fhir.domain.codes import LevelOfCare, NotificationEvent, ReviewDecision
from cm_fhir.domain.common import PartyRef
from cm_fhir.mapping.loader import load_with_overrides
from cm_fhir.mapping.registry import absolute_uri, default_registry, load_registry

__all__ = [
    "PAYER_EXCHANGE_FILE",
    "AlertsSpec",
    "AutoDecision",
    "PasSpec",
    "PayerExchange",
    "ReviewActions",
    "default_payer_exchange",
    "load_payer_exchange",
]

PAYER_EXCHANGE_FILE: Final = "payer-exchange.yaml"

Uri = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]
Token = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PasProfiles(_Spec):
    request_bundle: Uri
    response_bundle: Uri
    claim: Uri
    claim_response: Uri
    inquiry_request_bundle: Uri
    claim_inquiry: Uri


class PasExtensions(_Spec):
    review_action: Uri
    review_action_code: Uri
    next_review: Uri


class SupportingInfoCategories(_Spec):
    admission_date: Token
    level_of_care: Token
    criteria: Token
    clinical_summary: Token


class PasIdentifierSystems(_Spec):
    claim: Uri
    claim_response: Uri
    authorization: Uri


class PasSpec(_Spec):
    """The ``pas`` section: profiles, extensions, supporting-info categories, systems."""

    profiles: PasProfiles
    extensions: PasExtensions
    supporting_info_system: Uri
    supporting_info: SupportingInfoCategories
    review_action_system: Uri
    identifier_systems: PasIdentifierSystems


class ReviewActions(_Spec):
    """Review-action code -> decision, with the decision for any other code (or none)."""

    default: ReviewDecision
    codes: dict[Token, ReviewDecision] = Field(min_length=1)

    def decision(self, code: str | None) -> ReviewDecision:
        """The decision a review-action code stands for; ``default`` when unknown or absent."""
        if code is None:
            return self.default
        return self.codes.get(code, self.default)


class AlertProfiles(_Spec):
    bundle: Uri
    message_header: Uri
    encounter: Uri


class AlertsSpec(_Spec):
    """The ``alerts`` section: Da Vinci Unsolicited Notifications of admission, transfer and
    discharge (event code system, event -> code, profiles, the Bundle identifier system)."""

    event_system: Uri
    events: dict[NotificationEvent, Token]
    profiles: AlertProfiles
    identifier_system: Uri

    @model_validator(mode="after")
    def _every_event_has_a_code(self) -> AlertsSpec:
        missing = set(NotificationEvent) - set(self.events)
        if missing:
            raise ValueError(f"alerts.events: no code for {sorted(e.value for e in missing)}")
        return self

    def event_of(self, code: str) -> NotificationEvent | None:
        """The event a notification-event code stands for (None: not one of ours)."""
        return next((e for e, c in self.events.items() if c == code), None)


class PayerCodeSystems(_Spec):
    level_of_care: Uri
    review_type: Uri
    criteria_set: Uri


class AutoDecision(_Spec):
    """One payer-side rule: a request it matches is decided at once."""

    level_of_care: LevelOfCare
    decision: ReviewDecision
    diagnosis_prefixes: tuple[Token, ...] = ()
    max_quantity: int | None = Field(default=None, ge=1)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _decides(self) -> AutoDecision:
        if self.decision == ReviewDecision.PENDED:
            raise ValueError("a rule decides: approved, partially-approved or denied")
        return self


class PayerExchange(_Spec):
    """``mappings/payer-exchange.yaml``."""

    pas: PasSpec
    alerts: AlertsSpec
    review_actions: ReviewActions
    decision_codes: dict[ReviewDecision, Token]
    code_systems: PayerCodeSystems
    payer_programme: Token
    provider: PartyRef | None = None
    """Hospital side: the requester and sender when a case names no managing organisation."""
    auto_decisions: tuple[AutoDecision, ...] = ()

    @model_validator(mode="after")
    def _every_decision_has_a_code(self) -> PayerExchange:
        missing = {d.value for d in ReviewDecision} - {d.value for d in self.decision_codes}
        if missing:
            raise ValueError(f"decision_codes: no review-action code for {sorted(missing)}")
        return self


def _resolved(spec: PayerExchange, base: str) -> PayerExchange:
    def resolve(section: BaseModel) -> dict[str, str]:
        return {k: absolute_uri(base, v) for k, v in dict(section).items()}

    pas = spec.pas.model_copy(
        update={
            "profiles": PasProfiles(**resolve(spec.pas.profiles)),
            "extensions": PasExtensions(**resolve(spec.pas.extensions)),
            "identifier_systems": PasIdentifierSystems(**resolve(spec.pas.identifier_systems)),
        }
    )
    alerts = spec.alerts.model_copy(
        update={
            "profiles": AlertProfiles(**resolve(spec.alerts.profiles)),
            "identifier_system": absolute_uri(base, spec.alerts.identifier_system),
        }
    )
    return spec.model_copy(
        update={
            "pas": pas,
            "alerts": alerts,
            "code_systems": PayerCodeSystems(**resolve(spec.code_systems)),
        }
    )


def load_payer_exchange(override_dir: Path | None = None) -> PayerExchange:
    """Load ``payer-exchange.yaml`` (bundled, merged with ``override_dir``), URLs resolved."""
    spec = load_with_overrides(PAYER_EXCHANGE_FILE, PayerExchange, override_dir)
    return _resolved(spec, load_registry(override_dir).canonical_base)


@cache
def default_payer_exchange() -> PayerExchange:
    """The spec from the bundled file plus ``CM_FHIR_MAPPINGS_DIR`` overrides, loaded once."""
    spec = load_with_overrides(PAYER_EXCHANGE_FILE, PayerExchange)
    return _resolved(spec, default_registry().canonical_base)
