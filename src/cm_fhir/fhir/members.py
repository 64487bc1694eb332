"""A member as a payer knows them: the Patient's member-id identifiers first. Pure.

A notification, a PAS request or an inquiry names the patient by every identifier the sender has,
in the sender's order (its MRN first, as a rule). A payer knows the member by the member id, so
:func:`member_patient` puts the identifiers it recognises as member ids first, typed ``MB``: those
typed ``MB`` already, those in one of ``member_id_systems`` (``mappings/payer-exchange.yaml``) and
an untyped one whose value is the Coverage's ``subscriberId`` (the Patient gives it its system).
A member is then matched by system and value (:func:`cm_fhir.workflow.facts.member_keys`), never by
the value alone: the same value in another system is another member.
"""

from __future__ import annotations

from collections.abc import Sequence

from cm_fhir.domain.codes import IdentifierKind
from cm_fhir.domain.common import Identifier, PatientRef
from cm_fhir.mapping.payer_exchange import PayerExchange

__all__ = ["member_patient"]


def member_patient(
    identifiers: Sequence[Identifier], subscriber_id: str | None, spec: PayerExchange
) -> PatientRef:
    """The patient with the identifiers the payer recognises as member ids first, typed ``MB``
    (see the module docstring); the others follow in the order given."""

    def is_member(ident: Identifier) -> bool:
        if ident.kind == IdentifierKind.MEMBER_ID or ident.system in spec.member_id_systems:
            return True
        return ident.kind is None and subscriber_id is not None and ident.value == subscriber_id

    members = [i.model_copy(update={"kind": IdentifierKind.MEMBER_ID}) for i in identifiers]
    chosen = [m for m, i in zip(members, identifiers, strict=True) if is_member(i)]
    return PatientRef(identifiers=(*chosen, *(i for i in identifiers if not is_member(i))))
