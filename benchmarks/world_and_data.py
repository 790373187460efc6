"""Time the two things every stage waits for at start-up: building the world and loading records.

    .venv/bin/python benchmarks/world_and_data.py

Targets (2 CPU cores): the default world builds with its pretraining corpus in under 1 s, both in a fresh
process (which must not import torch) and in one that already has alignkit loaded; 10,000 preference
records load and validate in under 2 s. Each time is the median of five runs. Exits 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRESH_CODE = ("import sys, time; t = time.perf_counter(); from alignkit.world import build_world; "
              "build_world().pretraining_documents(); print(time.perf_counter() - t); "
              "assert 'torch' not in sys.modules, 'alignkit.world imported torch'")


def median_seconds(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from alignkit.data.sources import load_records, write_jsonl
    from alignkit.world import build_world

    fresh = statistics.median(
        float(subprocess.run([sys.executable, "-c", FRESH_CODE], capture_output=True, text=True,
                             check=True).stdout.strip()) for _ in range(5))
    in_process = median_seconds(lambda: build_world(seed=3).pretraining_documents())
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "big.jsonl", [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"}
                                                     for i in range(10_000)])
        load = median_seconds(lambda: load_records(path, "preference"))
    rows = [("world build, fresh process (s)", fresh, 1.0), ("world build, in process (s)", in_process, 1.0),
            ("10,000 preference records load (s)", load, 2.0)]
    missed = 0
    for name, value, target in rows:
        ok = value < target
        missed += not ok
        print(f"{name:<40} {value:7.3f}   target < {target:g}   {'ok' if ok else 'MISS'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
