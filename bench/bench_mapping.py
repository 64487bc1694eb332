"""Mapping benchmark: case -> FHIR R4 transaction Bundle JSON.

Prints, for the example cases in ``examples/``:
- cases/s for case -> validated transaction Bundle JSON (``map_case_json``);
- the ratio of that time to fhir.resources' own ``Bundle.model_validate`` + ``model_dump_json`` of
  the same Bundle, measured side by side in this run (target <= 1.5x);
- cases/s for the unvalidated fast path (``validate=False``) and its speed-up over the validated
  path (target >= 20x).

Rounds of the three measurements are interleaved and the median round is reported, so a noisy
neighbour on a shared machine hurts all three alike.
Run: ``.venv/bin/python bench/bench_mapping.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cm_fhir.domain import Case
from cm_fhir.fhir import map_case, map_case_json
from cm_fhir.fhir.models import bundle_model_roundtrip
from cm_fhir.mapping.registry import default_registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def timed(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20, help="passes over the examples per round")
    args = parser.parse_args()

    registry = default_registry()
    cases = [Case.model_validate_json(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    bundles = [map_case(c, registry, validate=False) for c in cases]
    n = len(cases) * args.repeat

    def validated() -> None:
        for case in cases:
            map_case_json(case, registry, validate=True)

    def baseline() -> None:
        for bundle in bundles:
            bundle_model_roundtrip(bundle)

    def fast() -> None:
        for case in cases:
            map_case_json(case, registry, validate=False)

    validated()
    baseline()
    fast()  # warm caches
    runs: dict[str, list[float]] = {"validated": [], "baseline": [], "fast": []}
    for _ in range(args.rounds):
        runs["validated"].append(timed(validated, args.repeat))
        runs["baseline"].append(timed(baseline, args.repeat))
        fast_repeat = args.repeat * 10
        runs["fast"].append(timed(fast, fast_repeat) / 10)
    med = {k: statistics.median(v) for k, v in runs.items()}
    resources = sum(len(b["entry"]) for b in bundles)
    print(
        f"mapping benchmark: {len(cases)} example cases ({resources} resources), "
        f"{args.rounds} rounds x {n} cases, median round"
    )
    print(f"  validated case -> Bundle JSON      {n / med['validated']:>9.1f} cases/s")
    print(f"  fhir.resources validate+dump       {n / med['baseline']:>9.1f} cases/s (baseline)")
    print(f"  fast path (no validation)          {n / med['fast']:>9.1f} cases/s")
    print(
        f"  ratio validated / baseline time    {med['validated'] / med['baseline']:>9.2f}x "
        "(target <= 1.5x)"
    )
    print(
        f"  fast path speed-up over validated  {med['validated'] / med['fast']:>9.1f}x "
        "(target >= 20x)"
    )


if __name__ == "__main__":
    main()
