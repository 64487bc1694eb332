"""Benchmark: ADT parsing throughput of ``parse_adt`` against a full hl7apy parse.

Both run in the same process on the same synthetic messages (A01, A02, A03, A08 and A40, each with
EVN, PID, PV1, PV2, DG1 and IN1 where the event has them). The baseline is
``hl7apy.parser.parse_message`` on the normalised text, which builds the whole message tree; our
``parse_adt`` normalises, splits and extracts a typed ``AdtEvent``. Prints messages per second for
each and the ratio.

Usage: ``python bench/bench_adt_parse.py [--messages N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from hl7apy.parser import parse_message

from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.normalise import normalise_message
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps
from cm_fhir.mapping.loader import bundled_mappings_dir, load_yaml_model

STRUCTURES = {"A01": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03", "A08": "ADT_A01"}


def synthetic_message(index: int) -> str:
    """One synthetic ADT message; the event and values vary with ``index``."""
    event = ["A01", "A02", "A03", "A08", "A40"][index % 5]
    structure = STRUCTURES.get(event, "ADT_A39")
    segments = [
        f"MSH|^~\\&|ADTSYS|FAC{index % 3}|CMFHIR|CM|20240305101500+0100||ADT^{event}^{structure}"
        f"|MSG{index:06d}|P|2.5.1",
        f"EVN|{event}|20240305101200+0100||||20240305100000+0100",
        f"PID|1||MRN{index:06d}^^^NSH^MR~E{index}^^^EMPI^PI||PATIENT{index}^GIVEN^M^^^^L||19610304|F",
    ]
    if event == "A40":
        segments.append(f"MRG|OLD{index:06d}^^^NSH^MR||||V{index}")
        return "\r".join(segments)
    pv1 = [""] * 46
    pv1[1:4] = ["1", "I", f"4WEST^{400 + index % 50}^B^NORTHSIDE"]
    pv1[6] = "3EAST^301^A^NORTHSIDE" if event == "A02" else ""
    pv1[7] = "D0042^CARDIO^CARLA^M^^DR"
    pv1[10] = "MED"
    pv1[17] = "D0077^ADMITTER^ALEX"
    pv1[19] = f"V{index:07d}"
    pv1[36] = "03" if event == "A03" else ""
    pv1[44] = "20240305093000+0100"
    pv1[45] = "20240309141500+0100" if event == "A03" else ""
    segments += [
        "PV1|" + "|".join(pv1[1:]),
        "PV2|||||||||20240309",
        "DG1|1|I10|I50.9^Heart failure, unspecified^I10||20240305|A",
        "IN1|1|PLAN-GOLD^Gold plan|PAYER01|Example Health Plan" + "|" * 32 + f"MEM{index}",
    ]
    return "\r".join(segments)


def throughput(work: Callable[[str], object], messages: list[str], seconds: float) -> float:
    """Messages per second of ``work`` over repeated passes lasting at least ``seconds``."""
    done = 0
    start = time.perf_counter()
    while True:
        for message in messages:
            work(message)
            done += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="distinct synthetic messages")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per contender")
    args = parser.parse_args()
    maps = load_yaml_model(bundled_mappings_dir() / ADT_CONCEPT_MAPS_FILE, AdtConceptMaps)
    messages = [synthetic_message(i) for i in range(args.messages)]
    raw = [m.replace("\r", "\n").encode() for m in messages]  # as files usually arrive

    ours = throughput(lambda m: parse_adt(m, maps), [r.decode() for r in raw], args.seconds)
    baseline = throughput(lambda m: parse_message(normalise_message(m)), messages, args.seconds)
    print(f"parse_adt (normalise + extract AdtEvent): {ours:10.0f} msgs/s")
    print(f"hl7apy.parse_message (full tree):         {baseline:10.0f} msgs/s")
    print(f"ratio parse_adt / hl7apy:                 {ours / baseline:10.1f}x")


if __name__ == "__main__":
    main()
