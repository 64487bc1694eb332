"""Properties of the discharge-planning workflow over whole generated ADT feeds.

Feeds (:mod:`feed_strategies`) hold several patients at two facilities that reuse visit numbers
and MRN values, random interleavings of A01/A02/A03/A06/A07/A08/A11/A12/A13/A16/A25/A40, late
and repeated arrivals. Each message is real ER7 text, parsed by ``parse_adt`` and applied with
``apply_event`` to the state filed under its patient key, the way the worker files states
(:class:`~cm_fhir.worker.states.PatientBook`: aliases after an A40, ``merged`` states for it).
Over every feed:

- no case mixes patients: a case's patient identifiers, encounters, id and resource ids belong
  to one generated patient (or the patients an A40 merged);
- at most one live (not final) case per patient and visit, after every message;
- every resource of every changed case passes our profiles and holds no empty element, array or
  extension;
- redelivering a message (same bytes) changes nothing, whenever it arrives;
- the cases do not depend on arrival order: the event times order every feed completely, so a
  feed's cases equal those of the same messages delivered in event-time order.

The default run is deterministic and quick (``make test``); the ``slow`` variants search many
more feeds (``make soak``). A property that fails on the current workflow keeps its test, marked
``xfail(strict=True)`` with the bug it shows, and its shrunk counterexample is an ``@example``.
The last tests send one smaller feed through the real worker on SQLite and PostgreSQL and check
the same properties on what it committed. No I/O outside those tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case
from cm_fhir.fhir import (
    ReferenceStyle,
    case_to_resources,
    map_case_json,
    validate_bundle,
    validate_resource,
)
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.registry import default_registry
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.worker import replay
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import Outcome, PatientState, apply_event, patient_keys
from feed_strategies import FACILITIES, Feed, Msg, feeds
from worker_fixtures import (
    cases,
    expected_states,
    fhir_resources,
    inbox_messages,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
)
from workflow_messages import NOW, Visit, hours, maps, rules
from workflow_messages import run as run_events

Json = dict[str, Any]

FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOAK = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the feed through the pure workflow ------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One arrival: the message, the state before, the outcome, and whether it came before."""

    msg: Msg
    before: PatientState
    outcome: Outcome
    repeated: bool


@dataclass
class Run:
    feed: Feed
    book: PatientBook = field(default_factory=lambda: PatientBook({}))
    deliveries: list[Delivery] = field(default_factory=list)

    def deliver(self, msg: Msg, *, file: bool = True) -> Delivery:
        event = parse_adt(self.feed.raw(msg), maps())
        assert isinstance(event, AdtEvent)
        key, *others = patient_keys(event, rules())
        before = self.book.state(key)
        merged = self.book.merged(key, others)
        outcome = apply_event(event, before, rules(), now=NOW, merged=merged)
        repeated = any(d.msg == msg for d in self.deliveries)
        delivery = Delivery(msg, before, outcome, repeated)
        if file:
            self.book.file(key, outcome.state, outcome.retired_keys)
            self.deliveries.append(delivery)
        return delivery

    def states(self) -> dict[str, PatientState]:
        """The final states by the key they are filed under (through their stored JSON)."""
        documents, _ = self.book.dirty()
        return {k: PatientState.model_validate_json(d) for k, d in documents.items()}

    def emitted(self) -> list[Case]:
        """Every changed case of every delivery, once each."""
        return list(
            {
                c.model_dump_json(): c for d in self.deliveries for c in d.outcome.changed_cases
            }.values()
        )


def run(feed: Feed) -> Run:
    result = Run(feed)
    for msg in feed.arrivals:
        result.deliver(msg)
    return result


def short(case: Case) -> str:
    """A case in one line, for failure messages (synthetic data only)."""
    tasks = " ".join(f"{t.id}:{t.status.value}" for t in case.tasks)
    who = ",".join(f"{i.assigner}:{i.value}" for i in case.patient.identifiers)
    visits = ",".join(e.value for e in case.encounters)
    return f"{case.id} {case.status.value} patient={who} visits={visits} [{tasks}]"


# -- the properties ------------------------------------------------------------------------------


def patient_of(feed: Feed) -> dict[tuple[str | None, str], str]:
    """(PID-3.4 authority, PID-3.1 value) -> the generated patient."""
    return {(p.authority, p.mrn): p.name for p in feed.patients}


def case_group(feed: Feed, case: Case) -> frozenset[str]:
    """The identity group of the one generated patient a case belongs to; fails if it mixes."""
    who = patient_of(feed)
    groups = feed.groups()
    names = set()
    for ident in case.patient.identifiers:
        found = who.get((ident.assigner, ident.value))
        assert found is not None, f"unknown patient identifier in {short(case)}"
        names.add(found)
    owners = {groups[n] for n in names}
    assert len(owners) == 1, f"case mixes patients {sorted(names)}: {short(case)}"
    (group,) = owners
    visits = {v for (_, v), owner in feed.visit_owner().items() if owner in group}
    foreign = [e.value for e in case.encounters if e.value not in visits]
    assert not foreign, f"case names visits {foreign} of another patient: {short(case)}"
    return group


def no_case_mixes_patients(feed: Feed) -> None:
    result = run(feed)
    final = [c for s in result.states().values() for c in s.cases]
    groups_of: dict[str, set[frozenset[str]]] = defaultdict(set)
    systems: dict[tuple[str, str], set[str]] = defaultdict(set)
    every = [*result.emitted(), *final]
    for case in every:
        group = case_group(feed, case)
        groups_of[case.id].add(group)
        for ident in case.patient.identifiers:
            systems[(ident.system, ident.value)].add(f"{ident.assigner}:{ident.value}")
    shared = {cid: sorted(map(sorted, g)) for cid, g in groups_of.items() if len(g) > 1}
    assert not shared, f"one case id for different patients: {shared}"
    clash = {f"{s}|{v}": sorted(p) for (s, v), p in systems.items() if len(p) > 1}
    assert not clash, f"one FHIR identifier for different patients: {clash}"
    resource_groups: dict[tuple[str, str], set[frozenset[str]]] = defaultdict(set)
    for case in every:
        for resource in case_to_resources(case, default_registry()):
            resource_groups[(resource["resourceType"], resource["id"])].add(case_group(feed, case))
    shared_ids = sorted(f"{t}/{i}" for (t, i), g in resource_groups.items() if len(g) > 1)
    assert not shared_ids, f"one resource id for different patients: {shared_ids}"


def live_cases_by_visit(
    feed: Feed, cases: Iterable[Case]
) -> dict[tuple[frozenset[str], str], list[str]]:
    live: dict[tuple[frozenset[str], str], list[str]] = defaultdict(list)
    for case in cases:
        if not case.is_final:
            group = case_group(feed, case)
            for enc in case.encounters:
                live[(group, enc.value)].append(case.id)
    return live


def one_live_case_per_patient_visit(feed: Feed) -> None:
    result = run(feed)
    for delivery in result.deliveries:
        live = live_cases_by_visit(feed, delivery.outcome.state.cases)
        twice = {v: ids for (_, v), ids in live.items() if len(ids) > 1}
        assert not twice, f"after {delivery.msg.short()}: live cases {twice}"
    final = [c for s in result.states().values() for c in s.cases]
    twice = {v: ids for (_, v), ids in live_cases_by_visit(feed, final).items() if len(ids) > 1}
    assert not twice, f"live cases of one patient-visit at the end: {twice}"


def empty_parts(value: Any, path: str = "") -> list[str]:
    """Paths of empty objects, arrays and strings (and extensions without a value) in JSON."""
    if isinstance(value, dict):
        found = [path or "(root)"] if not value else []
        in_extension = path.rsplit(".", 1)[-1].startswith("extension")
        if in_extension and not any(k.startswith("value") or k == "extension" for k in value):
            found.append(f"{path} (extension without a value)")
        for key, item in value.items():
            found += empty_parts(item, f"{path}.{key}" if path else key)
        return found
    if isinstance(value, list):
        found = [path] if not value else []
        for i, item in enumerate(value):
            found += empty_parts(item, f"{path}[{i}]")
        return found
    if value is None or (isinstance(value, str) and not value.strip()):
        return [path]
    return []


@cache
def profile_issues(data: bytes) -> tuple[str, ...]:
    """Our profiles' error issues for one resource (canonical JSON), cached across examples."""
    resource = orjson.loads(data)
    where = f"{resource['resourceType']}/{resource.get('id')}"
    issues = error_issues(default_validator().validate(resource))
    return tuple(f"{where}: {i['expression'][0]}: {i['details']['text']}" for i in issues)


def canonical(resource: Json) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def every_resource_passes_profiles(feed: Feed) -> None:
    problems: list[str] = []
    for case in run(feed).emitted():
        for resource in case_to_resources(case, default_registry()):
            problems += profile_issues(canonical(resource))
    assert not problems, "\n".join(dict.fromkeys(problems))


def no_resource_has_empty_parts(feed: Feed) -> None:
    problems: list[str] = []
    for case in run(feed).emitted():
        bundle = orjson.loads(map_case_json(case, default_registry(), validate=False))
        problems += [f"Bundle of {case.id}: empty {p}" for p in empty_parts(bundle)]
    assert not problems, "\n".join(dict.fromkeys(problems))


def unchanged(delivery: Delivery) -> str | None:
    """Why a redelivery changed something, or None."""
    changed = [short(c) for c in delivery.outcome.changed_cases]
    if changed:
        return f"{delivery.msg.short()} again changed {changed}"
    if delivery.outcome.state != delivery.before:
        return f"{delivery.msg.short()} again changed the patient state"
    return None


def redelivery_changes_nothing(feed: Feed) -> None:
    result = run(feed)
    changes = [unchanged(d) for d in result.deliveries if d.repeated]
    changes += [unchanged(result.deliver(m, file=False)) for m in feed.messages]
    found = [c for c in changes if c is not None]
    assert not found, "\n".join(found)


def cases_by_key(result: Run) -> dict[tuple[str, str], Case]:
    return {(k, c.id): c for k, s in result.states().items() for c in s.cases}


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ: ``path: a != b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def order_differences(arrived: dict[Any, Case], in_order: dict[Any, Case]) -> list[str]:
    """The cases that differ between two deliveries, field by field (a few lines per case)."""
    differ = []
    for key in sorted(arrived.keys() | in_order.keys()):
        a, b = arrived.get(key), in_order.get(key)
        if a == b:
            continue
        if a is None or b is None:
            differ.append(f"{key[1]} only {'in order' if a is None else 'as arrived'}")
            continue
        found = differences(a.model_dump(mode="json"), b.model_dump(mode="json"), key[1])
        differ += [f"as arrived != in order: {d}" for d in found[:6]]
    return differ


def arrival_order_does_not_matter(feed: Feed) -> None:
    differ = order_differences(cases_by_key(run(feed)), cases_by_key(run(feed.in_order())))
    assert not differ, "\n".join(differ)


@FAST
@given(feed=feeds())
def test_a_feed_reads_back_from_its_short_form(feed: Feed) -> None:
    assert Feed.parse(feed.short()) == feed
    for msg in feed.messages:
        event = parse_adt(feed.raw(msg), maps())
        assert isinstance(event, AdtEvent)
        assert (event.event, event.message_control_id) == (msg.event, msg.control_id)
        assert event.sending_facility == FACILITIES[msg.facility][0]


# Shrunk counterexamples these properties found, in short form (see feed_strategies); every
# property runs them first, so a fix turns a strict xfail into a pass, and fixed ones stay as
# regressions.
COUNTEREXAMPLES = {
    # Two facilities' V1 (case ids once came from PV1-19.1 alone: one case dp-V1 for both).
    "visit-number-reused-by-another-facility": (
        "patients: N:N1/1948/-/- S:S1/1948/-/-; N1 A01 N:N1/V1 @1; S1 A01 S:S1/V1 @2"
    ),
    # The survivor opened dp-V2 for the prior patient's visit before the (late) A40 arrived;
    # the merge moves the prior patient's live dp-V2-2 beside it (and drops its dp-V2).
    "late-merge-two-live-cases": (
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N1 A01 N:N2/V2 @1;"
        " N2 A11 N:N2/V2 @2; N3 A01 N:N2/V2 @3; N5 A06 N:N1/V2 @5; N4 A40 N:N1 @4 prior=N:N2"
    ),
    # A discharge arriving before its admission (the case once opened in transition and the late
    # A01 did not give it its active period).
    "discharge-before-admit": "patients: N:N1/1948/I50.9/-; N2 A03 N:N1/V1 @2; N1 A01 N:N1/V1 @1",
    # A pending discharge arriving before the admission (its tasks were once dated at the A01).
    "pending-discharge-before-admit": (
        "patients: N:N1/1948/I50.9/-; N2 A16 N:N1/V1 @2 edd; N1 A01 N:N1/V1 @1"
    ),
    # The merged patient's visit discharged (under the surviving MRN) before its admission and
    # the A40 arrive: the case never had its active period.
    "merged-visit-discharged-before-the-merge-arrives": (
        "patients: S:M1/1948/I50.9/PAYER01 S:M2/1948/I50.9/PAYER01; S5 A03 S:M1/V2 @9;"
        " S2 A01 S:M2/V2 @2; S3 A40 S:M1 @3 prior=S:M2"
    ),
    # A readmission that qualifies only through the first visit's discharge: when V2's A16 and
    # then its A01 arrive late, the re-derived dp-V2 lacks the A01's payer-notification task.
    "readmission-screening-across-visits": (
        "patients: S:M1/1999/S52.5/PAYER01; S4 A03 S:M1/V1 @5; S17 A16 S:M1/V2 @32;"
        " S9 A03 S:M1/V2 @12; S10 A03 S:M1/V1 @13; S11 A01 S:M1/V2 @15"
    ),
    # V2's A16 (PV2-9) arrives after the class change closed the case: a closed case's visit
    # once dropped its log at once, so the late A16 was not applied and the expected date lost.
    "late-expected-date-after-rederived-readmission": (
        "patients: N:N1/1999/S52.5/PAYER01; N6 A01 N:N1/V2 @10; N1 A03 N:N1/V2 @1;"
        " N11 A08 N:N1/V2 @16 class=E; N4 A16 N:N1/V2 @5 edd"
    ),
    # In order V1's second discharge resets the outcome the readmission gave it (zero counts);
    # a fold once evaluated outcomes only after its last event, so the re-derived case had none.
    "outcome-of-a-readmission-undone-by-a-later-discharge": (
        "patients: N:N1/1948/I50.9/PAYER01; N7 A03 N:N1/V1 @7; N2 A03 N:N1/V1 @2; N3 A01 N:N1/V2 @3"
    ),
    # The prior patient's visit, first seen at 5 under its own MRN, arrives after the merge at 6:
    # its case id once took the survivor's key (in order it has the prior patient's).
    "prior-patients-visit-arriving-after-the-merge": (
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N6 A40 N:N1 @6 prior=N:N2;"
        " N5 A01 N:N2/V2 @5"
    ),
    # The survivor's EHR opened V2 under the surviving MRN (@8) before the prior patient's own
    # A01 for it (@1) and the merge arrived: the visit is the prior patient's, and the case the
    # survivor's message opened is a duplicate (two live cases for V2 once remained).
    "prior-patients-visit-opened-first-under-the-survivor": (
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N8 A01 N:N1/V2 @8;"
        " N2 A40 N:N1 @2 prior=N:N2; N1 A01 N:N2/V2 @1"
    ),
    # V2's late discharge (14) is V1's readmission: in order V1's outcome is evaluated then; the
    # late event once re-derived V2 alone, leaving V1's outcome dated by V2's A16 (15).
    "late-readmission-of-an-earlier-visits-outcome": (
        "patients: S:M1/1948/I50.9/PAYER01; S7 A16 S:M1/V2 @15 edd; S2 A03 S:M1/V1 @10;"
        " S6 A03 S:M1/V2 @14"
    ),
    # The late A01 (class E) and A16 (class I) leave no class change for V2's A02: in order no
    # case opens; the case the A02 opened when it came first was once kept beside the state.
    "case-the-new-order-does-not-open": (
        "patients: N:N1/1948/I50.9/PAYER01; N11 A02 N:N1/V2 @11; N2 A01 N:N1/V2 @2 class=E;"
        " N10 A16 N:N1/V2 @10 edd"
    ),
    # V4's admission reports the death (1, PID-30) and arrives after V3's discharge (8): V3's
    # late A01 (7) re-derived V3 alone, without the death V4 reported, and opened a case.
    "death-reported-by-another-visit": (
        "patients: N:N2/1948/I50.9/PAYER01; N8 A03 N:N2/V3 @8 dead; N1 A01 N:N2/V4 @1 dead;"
        " N7 A01 N:N2/V3 @7 dead"
    ),
    # The discharge reporting the death (9) arrives after the A13 cancelling it (11): the fold
    # put both in place, then the late death was applied once more after the fold.
    "late-death-already-cancelled": (
        "patients: N:N1/1948/I50.9/PAYER01; N9 A13 N:N1/V1 @11; N1 A01 N:N1/V1 @1;"
        " N7 A03 N:N1/V1 @9 dead"
    ),
    # The late death (3, V2's admission) re-derived V2 and V3 but not V1 (no events after 3):
    # V1's case stayed open beside the death.
    "late-death-of-a-patient-with-an-earlier-visit": (
        "patients: N:N1/1948/I50.9/PAYER01; N8 A01 N:N1/V3 @8; N2 A04 N:N1/V1 @2;"
        " N3 A01 N:N1/V2 @3 dead"
    ),
}


def with_counterexamples(test: Callable[..., None]) -> Callable[..., None]:
    for text in COUNTEREXAMPLES.values():
        test = example(feed=Feed.parse(text))(test)
    return test


Property = Callable[[Feed], None]
PROPERTIES = [
    pytest.param(no_case_mixes_patients, id="no-case-mixes-patients"),
    pytest.param(one_live_case_per_patient_visit, id="one-live-case-per-patient-visit"),
    pytest.param(every_resource_passes_profiles, id="every-resource-passes-profiles"),
    pytest.param(no_resource_has_empty_parts, id="no-resource-has-empty-parts"),
    pytest.param(redelivery_changes_nothing, id="redelivery-changes-nothing"),
    pytest.param(arrival_order_does_not_matter, id="arrival-order-does-not-matter"),
]


@FAST
@with_counterexamples
@given(feed=feeds())
@pytest.mark.parametrize("check", PROPERTIES)
def test_property(check: Property, feed: Feed) -> None:
    note(f"feed: {feed.short()}")
    check(feed)


@pytest.mark.slow
@SOAK
@with_counterexamples
@given(feed=feeds(max_events_per_visit=8))
@pytest.mark.parametrize("check", PROPERTIES)
def test_property_soak(check: Property, feed: Feed) -> None:
    note(f"feed: {feed.short()}")
    check(feed)


# -- one feed through the real worker, on SQLite and PostgreSQL ------------------------------------

#: Four patients; both facilities have an M1 and a V1, V2; late and repeated arrivals; an A11 and
#: a new admit, an A13 and a new discharge, an A12, an A25, and an A40 after which the merged
#: patient's visit is discharged under the surviving MRN.
WORKER_FEED = Feed.parse(
    """
    patients: N:M1/1948/I50.9/PAYER01 N:M2/1950/J44.1/MEDICARE S:M1/1948/I50.9/- S:M2/1999/-/-
    N1 A01 N:M1/V1 @1
    S1 A01 S:M1/V1 @2 class=E loc=ED
    N2 A01 N:M2/V2 @3 loc=5NORTH
    S2 A06 S:M1/V1 @4
    N3 A02 N:M1/V1 @5 loc=5NORTH
    N4 A08 N:M2/V2 @6 edd
    S3 A02 S:M1/V1 @7 loc=3EAST
    N5 A16 N:M1/V1 @8 edd
    S4 A12 S:M1/V1 @9 loc=ED
    N7 A11 N:M2/V2 @11
    N6 A01 N:M2/V2 @10 loc=5NORTH
    N8 A01 N:M2/V2 @12
    S5 A07 S:M1/V1 @13 class=O
    N9 A03 N:M1/V1 @14 disp=03
    N9 A03 N:M1/V1 @14 disp=03
    S6 A01 S:M2/V2 @15
    N10 A13 N:M1/V1 @16
    N11 A40 N:M1 @17 prior=N:M2
    S7 A25 S:M1/V1 @18
    N12 A03 N:M1/V1 @19 disp=06
    N13 A03 N:M1/V2 @20 disp=62
    S8 A03 S:M2/V2 @21 disp=01
    S2 A06 S:M1/V1 @4
    N11 A40 N:M1 @17 prior=N:M2
    """
)


@dataclass
class Committed:
    """What the worker committed: state documents by key, case rows, outbox and served rows."""

    states: dict[str, PatientState]
    cases: dict[str, Any]
    outbox: list[Any]
    served: list[Any]

    def snapshot(self) -> tuple[object, ...]:
        """Everything a redelivery must leave alone (row contents, not timestamps)."""
        return (
            {k: s.model_dump_json() for k, s in self.states.items()},
            {k: (r.patient_key, r.status, r.case_json) for k, r in self.cases.items()},
            [(r.case_id, r.bundle) for r in self.outbox],
            sorted((r.resource_type, r.id, r.version_id, r.resource) for r in self.served),
        )


async def committed(engine: AsyncEngine) -> Committed:
    documents = {
        r.patient_key: PatientState.model_validate_json(r.document)
        for r in await rows(engine, patient_states)
        if r.document is not None and r.alias_of is None
    }
    return Committed(
        documents,
        {r.case_id: r for r in await rows(engine, cases)},
        await rows(engine, outbox),
        await rows(engine, fhir_resources),
    )


async def through_the_worker(engine: AsyncEngine, feed: Feed) -> Committed:
    """Send the feed's arrivals into the inbox, run a worker dry, read back what it committed."""
    raws = [feed.raw(m) for m in feed.arrivals]
    acks = await ingest(engine, raws)
    assert all(b"MSA|AA|" in ack for ack in acks)
    await settle_worker(engine, batch_size=5)
    assert {r.state for r in await rows(engine, inbox_messages)} == {"processed"}
    found = await committed(engine)
    assert found.states == expected_states(raws), "the worker agrees with the pure workflow"
    return found


async def test_worker_commits_no_case_that_mixes_patients(worker_engine: AsyncEngine) -> None:
    found = await through_the_worker(worker_engine, WORKER_FEED)
    by_key = {(k, c.id): c for k, s in found.states.items() for c in s.cases}
    for row in found.cases.values():
        case_group(WORKER_FEED, Case.model_validate_json(row.case_json))
    overwritten = [
        f"{cid} of {key}"
        for (key, cid), case in by_key.items()
        if cid not in found.cases
        or (found.cases[cid].patient_key, found.cases[cid].case_json)
        != (key, case.model_dump_json())
    ]
    assert not overwritten, f"case rows hold another patient's case: {overwritten}"
    expected = {
        (r["resourceType"], r["id"]): r
        for case in by_key.values()
        for r in case_to_resources(case, default_registry(), ReferenceStyle.RELATIVE)
    }
    served = {(r.resource_type, r.id): orjson.loads(r.resource) for r in found.served}
    assert served == expected


async def test_worker_commits_one_live_case_per_patient_visit(worker_engine: AsyncEngine) -> None:
    found = await through_the_worker(worker_engine, WORKER_FEED)
    in_states = [c for s in found.states.values() for c in s.cases]
    in_rows = [Case.model_validate_json(r.case_json) for r in found.cases.values()]
    for where, cases_found in (("states", in_states), ("case rows", in_rows)):
        live = live_cases_by_visit(WORKER_FEED, cases_found)
        twice = {v: ids for (_, v), ids in live.items() if len(ids) > 1}
        assert not twice, f"{where}: live cases {twice}"


def committed_resources(found: Committed) -> list[tuple[str, Json]]:
    """Every resource the worker committed (outbox bundles and served rows), with its place."""
    out = [(f"outbox bundle of {r.case_id}", orjson.loads(r.bundle)) for r in found.outbox]
    out += [(f"served {r.resource_type}/{r.id}", orjson.loads(r.resource)) for r in found.served]
    return out


async def test_worker_commits_only_resources_our_profiles_accept(
    worker_engine: AsyncEngine,
) -> None:
    found = await through_the_worker(worker_engine, WORKER_FEED)
    assert found.outbox
    assert found.served
    problems: list[str] = []
    for where, resource in committed_resources(found):
        if resource["resourceType"] == "Bundle":
            validate_bundle(resource)
            inner = [e["resource"] for e in resource["entry"]]
        else:
            validate_resource(resource)
            inner = [resource]
        problems += [f"{where}: {p}" for r in inner for p in profile_issues(canonical(r))]
    assert not problems, "\n".join(dict.fromkeys(problems))


async def test_worker_commits_no_empty_parts(worker_engine: AsyncEngine) -> None:
    found = await through_the_worker(worker_engine, WORKER_FEED)
    problems = [f"{where}: {p}" for where, r in committed_resources(found) for p in empty_parts(r)]
    assert not problems, "\n".join(dict.fromkeys(problems))


async def test_worker_redelivery_changes_nothing(worker_engine: AsyncEngine) -> None:
    before = (await through_the_worker(worker_engine, WORKER_FEED)).snapshot()
    acks = await ingest(worker_engine, [WORKER_FEED.raw(m) for m in WORKER_FEED.arrivals])
    assert all(b"MSA|AA|" in ack for ack in acks)
    await settle_worker(worker_engine)
    assert (await committed(worker_engine)).snapshot() == before
    assert await replay(worker_engine) == len(WORKER_FEED.messages)
    result = await settle_worker(worker_engine)
    assert result.processed == len(WORKER_FEED.messages)
    assert (await committed(worker_engine)).snapshot() == before


async def test_worker_result_does_not_depend_on_arrival_order(worker_engine: AsyncEngine) -> None:
    found = await through_the_worker(worker_engine, WORKER_FEED)
    arrived = {(k, c.id): c for k, s in found.states.items() for c in s.cases}
    differ = order_differences(arrived, cases_by_key(run(WORKER_FEED.in_order())))
    assert not differ, "\n".join(differ)


def test_a_cancel_resent_after_many_later_messages_changes_nothing() -> None:
    visit = Visit()
    history = [
        visit.adt("A01", "M1", hours(0)),
        visit.adt("A11", "M2", hours(1)),
        visit.adt("A01", "M3", hours(2)),
        *(visit.adt("A08", f"U{i}", hours(3 + i / 60)) for i in range(600)),
    ]
    state, _ = run_events(history)
    again = apply_event(history[1], state, rules(), now=NOW)
    assert [short(c) for c in again.changed_cases] == []
    assert again.state == state
