"""Run every benchmark in this folder, one after the other, and print their figures.

Each benchmark measures its baseline side by side in the same run and prints the ratio; running
them one at a time keeps them from competing for the machine's cores.
Run: ``make bench`` (or ``.venv/bin/python bench/run_all.py [name ...]``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem in wanted)
    failed = 0
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"({script.stem}: {time.perf_counter() - start:.0f} s, exit {result.returncode})")
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
