"""Domain value objects <-> FHIR R4 datatypes (as plain JSON dicts), in both directions. Pure.

The mapper builds plain dicts in a fixed key order, so the same input always serialises to the same
bytes; :mod:`cm_fhir.fhir.models` validates them with fhir.resources when asked.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cm_fhir.domain.codes import IdentifierKind, PartyKind
from cm_fhir.domain.common import Code, Identifier, PartyRef, Quantity, Range
from cm_fhir.errors import MappingError

Json = dict[str, Any]
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def instant(value: datetime) -> str:
    return value.isoformat()


def parse_instant(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise MappingError("a dateTime is required here", path=path)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise MappingError("not a FHIR dateTime with a time and offset", path=path) from exc
    if parsed.tzinfo is None:
        raise MappingError("a dateTime with a time needs a timezone offset", path=path)
    return parsed


def day(value: date) -> str:
    return value.isoformat()


def parse_day(value: Any, path: str) -> date:
    if not isinstance(value, str):
        raise MappingError("a date is required here", path=path)
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise MappingError("not a FHIR date (YYYY-MM-DD)", path=path) from exc


def number(value: Decimal) -> int | float:
    """A JSON number for a Decimal: ints stay ints; others go through their shortest repr."""
    if value == value.to_integral_value() and value.as_tuple().exponent >= 0:  # type: ignore[operator]
        return int(value)
    return float(value)


def parse_number(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise MappingError("expected a number", path=path)
    return Decimal(str(value))


def identifier(ident: Identifier) -> Json:
    out: Json = {}
    if ident.kind is not None:
        out["type"] = {"coding": [{"system": V2_0203, "code": ident.kind.value}]}
    out["system"] = ident.system
    out["value"] = ident.value
    if ident.assigner is not None:
        out["assigner"] = {"display": ident.assigner}
    return out


def parse_identifier(data: Json, path: str) -> Identifier:
    kind = None
    codings = data.get("type", {}).get("coding", [])
    for coding in codings:
        if coding.get("system") == V2_0203:
            try:
                kind = IdentifierKind(coding.get("code"))
            except ValueError as exc:
                raise MappingError("unknown identifier type code", path=f"{path}.type") from exc
    try:
        return Identifier(
            system=data["system"],
            value=data["value"],
            kind=kind,
            assigner=data.get("assigner", {}).get("display"),
        )
    except KeyError as exc:
        raise MappingError(f"identifier lacks '{exc.args[0]}'", path=path) from exc


def coding(code: Code) -> Json:
    out: Json = {"system": code.system, "code": code.code}
    if code.display is not None:
        out["display"] = code.display
    return out


def codeable(code: Code) -> Json:
    return {"coding": [coding(code)]}


def parse_coding(data: Json, path: str) -> Code:
    if "system" not in data or "code" not in data:
        raise MappingError("a coding needs a system and a code", path=path)
    return Code(system=data["system"], code=data["code"], display=data.get("display"))


def parse_codeable(data: Json, path: str) -> Code:
    codings = data.get("coding") or []
    if not codings:
        raise MappingError("a CodeableConcept needs a coding", path=path)
    return parse_coding(codings[0], f"{path}.coding[0]")


def reference(party: PartyRef) -> Json:
    out: Json = {"type": party.kind.value}
    if party.identifier is not None:
        out["identifier"] = identifier(party.identifier)
    if party.display is not None:
        out["display"] = party.display
    return out


def parse_reference(data: Json, path: str) -> PartyRef:
    try:
        kind = PartyKind(str(data.get("type")))
    except ValueError as exc:
        raise MappingError("a party reference needs a known 'type'", path=f"{path}.type") from exc
    ident = data.get("identifier")
    return PartyRef(
        kind=kind,
        identifier=parse_identifier(ident, f"{path}.identifier") if ident else None,
        display=data.get("display"),
    )


def quantity(q: Quantity) -> Json:
    out: Json = {"value": number(q.value)}
    if q.unit is not None:
        out["unit"] = q.unit
    if q.system is not None:
        out["system"] = q.system
    if q.code is not None:
        out["code"] = q.code
    return out


def parse_quantity(data: Json, path: str) -> Quantity:
    return Quantity(
        value=parse_number(data.get("value"), f"{path}.value"),
        unit=data.get("unit"),
        system=data.get("system"),
        code=data.get("code"),
    )


def range_(r: Range) -> Json:
    out: Json = {}
    if r.low is not None:
        out["low"] = quantity(r.low)
    if r.high is not None:
        out["high"] = quantity(r.high)
    return out


def parse_range(data: Json, path: str) -> Range:
    low, high = data.get("low"), data.get("high")
    return Range(
        low=parse_quantity(low, f"{path}.low") if low else None,
        high=parse_quantity(high, f"{path}.high") if high else None,
    )


def extension_value(ext: Json, key: str, path: str) -> Any:
    if key not in ext:
        raise MappingError(f"extension lacks {key}", path=path)
    return ext[key]
