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
) -> float:
    for resource in resources:  # warm caches (compiled profiles, model classes)
        work(resource)
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for resource in resources:
            work(resource)
        done += len(resources)
    return done / elapsed


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

    # Alternate short rounds so a burst of load elsewhere hits both sides alike; report the
    # median of the per-round ratios and each side's best round.
    ours_rates, base_rates, ratios = [], [], []
    for _ in range(args.rounds):
        ours_rates.append(rate(ours, resources, args.seconds / args.rounds))
        base_rates.append(rate(baseline, resources, args.seconds / args.rounds))
        ratios.append(ours_rates[-1] / base_rates[-1])
    print(f"resources in sample: {len(resources)}; {args.rounds} alternating rounds")
    print(f"profile validation (cm_fhir.profiles): {max(ours_rates):,.0f} resources/s (best)")
    print(f"baseline fhir.resources R4B model_validate: {max(base_rates):,.0f} resources/s (best)")
    print(f"ratio ours/baseline: {statistics.median(ratios):.2f} (median of rounds)")


if __name__ == "__main__":
    main()
