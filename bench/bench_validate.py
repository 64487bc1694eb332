"""Profile validation throughput: resources per second through `default_validator().validate`.

Baseline, measured side by side in the same run on the same resources: the fhir.resources R4B
models' `model_validate` (structure and primitive types only; no profiles, bindings or
invariants). The resources are the entries of the mapped example Bundles, repeated to fill the
sample. Prints resources/s for both and the ratio (ours / baseline).

Usage: python bench/bench_validate.py [--seconds 6] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from cm_fhir.domain import Case
from cm_fhir.fhir import map_case_json
from cm_fhir.profiles import default_validator

ROOT = Path(__file__).resolve().parent.parent


def example_resources() -> list[dict[str, Any]]:
    resources = []
    for path in sorted((ROOT / "examples").glob("*.json")):
        case = Case.model_validate(json.loads(path.read_text(encoding="utf-8")))
        bundle = json.loads(map_case_json(case, validate=False))
        resources += [entry["resource"] for entry in bundle["entry"]]
    if not resources:
        raise SystemExit("no examples/*.json to benchmark")
    return resources


def rate(
    work: Callable[[dict[str, Any]], object], resources: list[dict[str, Any]], seconds: float
) -> tuple[float, float]:
    """Resources per second of wall time and of this process's CPU time."""
    for resource in resources:  # warm caches (compiled profiles, model classes)
        work(resource)
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - started) < seconds:
        for resource in resources:
            work(resource)
        done += len(resources)
    return done / elapsed, done / max(time.process_time() - cpu_started, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="total per side")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    resources = example_resources()
    validator = default_validator()

    def ours(resource: dict[str, Any]) -> object:
        return validator.validate(resource)

    def baseline(resource: dict[str, Any]) -> object:
        return get_fhir_model_class(resource["resourceType"]).model_validate(resource)

    # Alternate short rounds so a burst of load elsewhere hits both sides alike. On a shared
    # machine wall time swings with other work; CPU time of this process swings much less, so
    # the ratio is taken on CPU time (median of the rounds); wall figures are the best round.
    wall: dict[str, list[float]] = {"ours": [], "base": []}
    ratios = []
    for _ in range(args.rounds):
        ours_wall, ours_cpu = rate(ours, resources, args.seconds / args.rounds)
        base_wall, base_cpu = rate(baseline, resources, args.seconds / args.rounds)
        wall["ours"].append(ours_wall)
        wall["base"].append(base_wall)
        ratios.append(ours_cpu / base_cpu)
    print(f"resources in sample: {len(resources)}; {args.rounds} alternating rounds")
    print(f"profile validation (cm_fhir.profiles): {max(wall['ours']):,.0f} resources/s")
    print(f"baseline fhir.resources R4B model_validate: {max(wall['base']):,.0f} resources/s")
    print(f"ratio ours/baseline: {statistics.median(ratios):.2f} (CPU time, median of rounds)")


if __name__ == "__main__":
    main()
