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

from cm_fhir.domain.codes import LevelOfCare, ReviewDecision
from cm_fhir.domain.common import PartyRef
from cm_fhir.domain.events import NoticeKind
from cm_fhir.mapping.loader import load_with_overrides
from cm_fhir.mapping.registry import absolute_uri, default_registry, load_registry

__all__ = [
    "PAYER_EXCHANGE_FILE",
    "AutoDecision",
    "Notifications",
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


class Notifications(_Spec):
    """The ``notifications`` section: Da Vinci Unsolicited Notifications a payer receives."""

    event_system: Uri
    events: dict[Token, NoticeKind] = Field(min_length=1)
    """MessageHeader.eventCoding code -> what happened to the stay."""
    bundle_profile: Uri | None = None
    concurrent_review_every: int = Field(default=1, ge=1, le=30)
    """Days from an admission (and from each review) to the next concurrent review."""
    message_header_profile: Uri | None = None
    encounter_profile: Uri | None = None
    identifier_system: Uri | None = None
    """The system of the Bundle identifier of the notifications a hospital sends."""

    def code_of(self, kind: NoticeKind) -> str:
        """The event code a notice of ``kind`` is sent with (the first listed)."""
        for code, meaning in self.events.items():
            if meaning == kind:
                return code
        raise ValueError(f"notifications.events: no code for {kind.value}")


class PayerExchange(_Spec):
    """``mappings/payer-exchange.yaml``."""

    pas: PasSpec
    review_actions: ReviewActions
    decision_codes: dict[ReviewDecision, Token]
    code_systems: PayerCodeSystems
    payer_programme: Token
    member_id_systems: tuple[Uri, ...] = ()
    """Payer side: identifier systems whose Patient identifiers are member ids even when untyped
    (an identifier typed ``MB``, or whose value is the Coverage's ``subscriberId``, is one too)."""
    provider: PartyRef | None = None
    """Hospital side: the requester and sender when a case names no managing organisation."""
    notifications: Notifications
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
    notifications = spec.notifications
    if notifications.identifier_system is not None:
        system = absolute_uri(base, notifications.identifier_system)
        notifications = notifications.model_copy(update={"identifier_system": system})
    return spec.model_copy(
        update={
            "pas": pas,
            "notifications": notifications,
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
