"""``cm-fhir adt inspect FILE...``: show the ADT events HL7v2 files hold. I/O edge.

Reads each file (a message, a batch or several messages back to back), parses every message with
:func:`cm_fhir.hl7v2.adt.parse_adt` and prints one block per message, or JSON with ``--json``.
Parse errors are reported with their segment and field position. ``--dry-run`` runs the messages
through the worker's own stages (MSH-11 per ``worker.apply_processing_ids``, the workflow, the
needs-attention policy) against the stored state and shows how each would settle and the case and
FHIR resource changes, without committing (:mod:`cm_fhir.worker.dry_run`), against the same
database ``serve`` uses (the shared settings flags; a database that does not exist yet is named
and treated as empty). ``--mappings`` and ``--timezone`` are the ``mappings_dir`` and ``timezone``
settings. Exit status: 0 if every message parsed, 1 if any message failed, 2 if a file (or the
concept-map spec) could not be read.

The reading and parsing (:func:`inspect_files`) is kept apart from the printing so other commands
(e.g. a dry run through the workflow) can reuse the parsed events.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import typer

from cm_fhir.cli._app import adt_app
from cm_fhir.cli.options import (
    MappingsOption,
    StoreOptions,
    TimezoneOption,
    database_label,
    store_options,
)
from cm_fhir.errors import (
    Hl7ParseError,
    InboundMessageError,
    MappingError,
)
from cm_fhir.settings import Settings

if TYPE_CHECKING:
    from cm_fhir.hl7v2.events import AdtEvent, Location, MappedCode, PersonName, UnsupportedMessage
    from cm_fhir.mapping.adt_maps import AdtConceptMaps


__all__ = ["InspectedFile", "InspectedMessage", "inspect_files"]


@dataclass(frozen=True)
class InspectedMessage:
    """One message of a file: its parsed result, or the error that stopped it."""

    index: int
    result: AdtEvent | UnsupportedMessage | None = None
    error: InboundMessageError | MappingError | None = None
    text: str = ""  # the message as read (the dry run processes it as the worker would)


@dataclass(frozen=True)
class InspectedFile:
    """One file: its messages, or why it could not be read."""

    path: Path
    messages: list[InspectedMessage] = field(default_factory=list)
    unreadable: str | None = None


def inspect_files(
    paths: list[Path], maps: AdtConceptMaps, default_tz: tzinfo | None = None
) -> list[InspectedFile]:
    """Read and parse every message of every file; errors are collected, not raised."""
    from cm_fhir.hl7v2.adt import parse_adt
    from cm_fhir.hl7v2.normalise import split_batch

    inspected: list[InspectedFile] = []
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            inspected.append(InspectedFile(path, unreadable=exc.strerror or "unreadable"))
            continue
        try:
            texts = split_batch(raw)
        except Hl7ParseError as exc:
            inspected.append(InspectedFile(path, [InspectedMessage(1, error=exc)]))
            continue
        messages: list[InspectedMessage] = []
        for index, text in enumerate(texts, start=1):
            try:
                messages.append(
                    InspectedMessage(index, parse_adt(text, maps, default_tz=default_tz), text=text)
                )
            except (InboundMessageError, MappingError) as exc:
                messages.append(InspectedMessage(index, error=exc, text=text))
        inspected.append(InspectedFile(path, messages))
    return inspected


def _error_json(error: InboundMessageError | MappingError) -> dict[str, Any]:
    location = error.location if isinstance(error, InboundMessageError) else error.path
    return {"type": type(error).__name__, "location": location, "message": str(error)}


def _to_json(files: list[InspectedFile]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in files:
        entry: dict[str, Any] = {"file": str(item.path)}
        if item.unreadable is not None:
            entry["unreadable"] = item.unreadable
        entry["messages"] = [
            {"index": m.index, "error": _error_json(m.error)}
            if m.error is not None
            else {
                "index": m.index,
                "result": m.result.model_dump(mode="json") if m.result else None,
            }
            for m in item.messages
        ]
        out.append(entry)
    return out


def _name(name: PersonName | None) -> str:
    if name is None:
        return "-"
    return " ".join(p for p in (name.prefix, *name.given, name.family, name.suffix) if p) or "-"


def _code(code: MappedCode | None) -> str:
    if code is None:
        return "-"
    target = code.target or "?"
    return f"{code.source} -> {target}" + ("" if code.mapped else " (unmapped)")


def _place(location: Location | None) -> str:
    if location is None:
        return "-"
    parts = (location.facility, location.point_of_care, location.room, location.bed)
    return "/".join(p or "" for p in parts).strip("/") or "-"


def _event_lines(event: AdtEvent) -> list[str]:
    from cm_fhir.hl7v2.structures import event_description

    patient = event.patient
    ids = ", ".join(
        f"{i.value} ({i.assigning_authority or '-'}, {i.type_code or '-'})"
        for i in patient.identifiers
    )
    lines = [
        f"  event      ADT^{event.event} {event_description(event.event)}"
        f" [{event.structure}, v{event.version}]",
        f"  control id {event.message_control_id}",
        f"  from       {event.sending_application or '-'} @ {event.sending_facility or '-'}",
        f"  time       {event.trigger_time.isoformat() if event.trigger_time else '-'}",
        f"  patient    {_name(patient.name)}; born {patient.birth_date or '-'};"
        f" sex {patient.sex or '-'}",
        f"  ids        {ids}",
    ]
    visit = event.visit
    if visit is not None:
        doctors = ", ".join(f"{p.id or '-'} {_name(p.name)}" for p in visit.attending) or "-"
        lines += [
            f"  visit      {visit.visit_number or '-'}; class {_code(visit.patient_class)};"
            f" service {visit.hospital_service or '-'}",
            f"  location   {_place(visit.location)} (prior {_place(visit.prior_location)})",
            f"  attending  {doctors}",
            f"  admitted   {visit.admit_time or '-'}; discharged {visit.discharge_time or '-'};"
            f" expected {visit.expected_discharge or '-'}",
            f"  disposition {_code(visit.discharge_disposition)};"
            f" destination {_code(visit.discharge_destination)}",
        ]
    lines += [
        f"  diagnosis  {d.code or '-'} ({d.system or '-'}) {d.type or ''}".rstrip()
        for d in event.diagnoses
    ]
    lines += [
        f"  insurance  {i.payer_name or i.payer_id or '-'}; member {i.member_id or '-'}"
        for i in event.insurances
    ]
    for merge in event.merges:
        prior = ", ".join(i.value for i in merge.prior_identifiers)
        surviving = ", ".join(i.value for i in merge.surviving_identifiers)
        lines.append(f"  merge      prior {prior} -> {surviving}")
    if event.cleared:
        lines.append(f"  cleared    {', '.join(event.cleared)}")
    return lines


def _print_text(files: list[InspectedFile]) -> None:
    from cm_fhir.hl7v2.events import UnsupportedMessage

    for item in files:
        if item.unreadable is not None:
            typer.echo(f"{item.path}: cannot read file ({item.unreadable})", err=True)
            continue
        total = len(item.messages)
        for message in item.messages:
            header = f"== {item.path} message {message.index}/{total}"
            if message.error is not None:
                where = _error_json(message.error)["location"] or "-"
                typer.echo(f"{header}: ERROR at {where}: {message.error}", err=True)
            elif isinstance(message.result, UnsupportedMessage):
                result = message.result
                typer.echo(
                    f"{header}: ignored {result.message_type}^{result.event or '-'}"
                    f" ({result.reason})"
                )
            elif message.result is not None:
                typer.echo(header)
                typer.echo("\n".join(_event_lines(message.result)))


def _print_dry_run(files: list[InspectedFile], settings: Settings) -> None:
    from cm_fhir.service_roles import site_mappings  # the store only when asked
    from cm_fhir.store.engine import async_url
    from cm_fhir.worker.dry_run import dry_run, render

    texts = [m.text.encode() for f in files for m in f.messages if m.text]
    url = settings.effective_database_url
    target = async_url(url)
    if target.get_backend_name() == "sqlite" and not Path(str(target.database)).is_file():
        label = database_label(settings)
        typer.echo(f"note: no database at {label} yet: every patient is new", err=True)
        url = "sqlite://"  # an empty in-memory store; creates no file
    mappings = site_mappings(settings)
    effects = asyncio.run(
        dry_run(
            texts,
            url,
            search_path=settings.database_schema,
            rules=mappings.rules,
            maps=mappings.maps,
            registry=mappings.registry,
            apply_processing_ids=settings.worker.apply_processing_ids,  # as the worker does
        )
    )
    typer.echo("\n".join(render(effects)))
    for item in files:
        for message in item.messages:
            if message.error is not None:
                where = _error_json(message.error)["location"] or "-"
                typer.echo(f"{item.path} message {message.index}: ERROR at {where}", err=True)


@adt_app.command("inspect")
@store_options
def inspect(
    files: list[Path] = typer.Argument(..., help="HL7v2 files (messages or batches)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what the messages would change in the store; commit nothing."
    ),
    mappings: MappingsOption = None,
    timezone: TimezoneOption = None,
    store: StoreOptions = StoreOptions(),
) -> None:
    """Print the ADT event(s) each file holds, or the errors with their positions."""
    from cm_fhir.mapping.adt_maps import load_adt_concept_maps

    settings = store.settings(
        mappings_dir=mappings,
        timezone=timezone,
    )
    maps = load_adt_concept_maps(settings.mappings_dir)
    default_tz = ZoneInfo(settings.timezone) if settings.timezone else None
    inspected = inspect_files(files, maps, default_tz)
    if dry_run:
        _print_dry_run(inspected, settings)
    elif as_json:
        typer.echo(json.dumps(_to_json(inspected), indent=2))
    else:
        _print_text(inspected)
    if any(item.unreadable is not None for item in inspected):
        raise typer.Exit(2)
    if any(m.error is not None for item in inspected for m in item.messages):
        raise typer.Exit(1)
