"""Admissions, transfers and discharges of members told to their payers (Da Vinci Alerts). No I/O.

:class:`PayerNotifier` turns one applied ADT event into the outbox messages it calls for: for an
admission (A01), a transfer (A02) or a discharge (A03) of a visit on a case with coverage, one
notification per payer that a :class:`~cm_fhir.store.case_writes.PayerRoute` serves, posted to
the payer's ``$process-message``. The messages are enqueued in the transaction that commits the
event's changes, so a notification is never lost and never sent for a change that was rolled
back; the sync worker delivers them and retries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from cm_fhir.domain.case import Case, Coverage
from cm_fhir.domain.common import Identifier
from cm_fhir.domain.events import EncounterNotice, NoticeKind
from cm_fhir.fhir import dumps
from cm_fhir.fhir.notification import notification_bundle
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.payer_exchange import PayerExchange
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.case_writes import PayerRoute
from cm_fhir.store.outbox import OutboxEntry
from cm_fhir.workflow import PatientState
from cm_fhir.workflow.facts import event_time, visit_identity

__all__ = ["PROCESS_MESSAGE", "TRIGGERS", "PayerNotifier"]

PROCESS_MESSAGE = "$process-message"
#: The trigger events a payer is told of.
TRIGGERS: dict[str, NoticeKind] = {
    "A01": NoticeKind.ADMIT,
    "A02": NoticeKind.TRANSFER,
    "A03": NoticeKind.DISCHARGE,
}
#: HL7 v2 patient class (PV1-2) -> v3 ActCode encounter class.
_CLASSES = {"I": "IMP", "E": "EMER", "O": "AMB", "P": "PRENC", "R": "AMB", "B": "IMP"}


def _encounter_of(case: Case, visit_number: str) -> Identifier | None:
    return next((e for e in case.encounters if e.value == visit_number), None)


def _location(event: AdtEvent) -> str | None:
    where = event.visit.location if event.visit is not None else None
    if where is None:
        return None
    parts = [p for p in (where.facility, where.point_of_care, where.room, where.bed) if p]
    return " ".join(parts) or None


@dataclass(frozen=True, slots=True)
class PayerNotifier:
    """Builds the payer notifications of applied ADT events (see the module docstring)."""

    routes: Sequence[PayerRoute]
    spec: PayerExchange
    canonical_base: str
    """Where the notifications say they come from (MessageHeader.source.endpoint)."""
    events: Collection[NoticeKind] = tuple(NoticeKind)

    def messages(
        self,
        event: AdtEvent,
        state: PatientState,
        rules: DischargeRules,
        patient_key: str,
        inbox_id: int | None,
        now: datetime,
    ) -> list[OutboxEntry]:
        """The outbox messages ``event`` (applied at ``now``, giving ``state``) calls for."""
        kind = TRIGGERS.get(str(event.event))
        if kind is None or kind not in self.events or not self.routes:
            return []
        visit = visit_identity(event, rules)
        if visit is None:
            return []
        out: list[OutboxEntry] = []
        told: set[tuple[str, str]] = set()
        for case in state.cases:
            encounter = _encounter_of(case, visit.value)
            if encounter is None:
                continue
            for coverage in case.coverage:
                for route in self._routes_for(coverage):
                    key = (route.name, coverage.payer.model_dump_json())
                    if key in told:
                        continue
                    told.add(key)
                    notice = self._notice(event, kind, case, coverage, encounter, rules, now)
                    out.append(self._entry(case, notice, route, patient_key, inbox_id))
        return out

    def _routes_for(self, coverage: Coverage) -> list[PayerRoute]:
        payer = coverage.payer.identifier.value if coverage.payer.identifier else None
        return [r for r in self.routes if r.serves(payer)]

    def _notice(
        self,
        event: AdtEvent,
        kind: NoticeKind,
        case: Case,
        coverage: Coverage,
        encounter: Identifier,
        rules: DischargeRules,
        now: datetime,
    ) -> EncounterNotice:
        visit = event.visit
        patient_class = visit.patient_class.source if visit and visit.patient_class else None
        payer = hashlib.sha256(coverage.payer.model_dump_json().encode()).hexdigest()[:12]
        sender = f"{event.sending_facility or ''}|{event.message_control_id}"
        return EncounterNotice(
            message_id=f"{sender[:150]}|{kind.value}|{payer}",
            source=self.canonical_base,
            kind=kind,
            at=event_time(event, rules, now),
            patient=case.patient,
            encounter=encounter,
            admitted=visit.admit_time if visit is not None else None,
            discharged=visit.discharge_time if visit is not None else None,
            encounter_class=_CLASSES.get(patient_class or "I", "IMP"),
            location=_location(event) if kind != NoticeKind.DISCHARGE else None,
            facility=case.managing_organization or self.spec.provider,
            payer=coverage.payer,
            member_id=coverage.member_id,
        )

    def _entry(
        self,
        case: Case,
        notice: EncounterNotice,
        route: PayerRoute,
        patient_key: str,
        inbox_id: int | None,
    ) -> OutboxEntry:
        bundle = notification_bundle(
            notice, self.spec, timestamp=notice.at, destination=route.base_url
        )
        data = dumps(bundle)
        ident = bundle["identifier"]
        key = f"{ident.get('system', '')}|{ident['value']}"
        return OutboxEntry(
            case_id=case.id,
            patient_key=patient_key,
            inbox_message_id=inbox_id,
            case_identifier=key[:500],
            identifiers=(f"Bundle|{key}",),
            bundle_sha256=hashlib.sha256(data).hexdigest(),
            bundle=data,
            endpoint=route.name,
            operation=PROCESS_MESSAGE,
        )
