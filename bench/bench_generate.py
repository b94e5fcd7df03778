"""Wall time of `pgpipe --help` (target 0.3 s) and of `pgpipe generate` for 15 replicas on the aws target
(target 1 s), each as a fresh subprocess, median of several runs; then where the generate run's import time goes
(`python -X importtime`), since start-up is most of it. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_generate.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The console script users run, as installed next to this interpreter (else the module).
SCRIPT = Path(sys.executable).parent / "pgpipe"
PGPIPE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pipeline"]
TARGETS = {"pgpipe --help": 0.3, "pgpipe generate (aws, 15 replicas)": 1.0}


def wall(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def slowest_imports(argv: list[str], top: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the top-level imports that took longest."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", *argv[len(PGPIPE) :]],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match[2]) <= 3:  # the program's own imports and their direct children
            rows.append((int(match[1]), ("  " if len(match[2]) > 1 else "") + match[3]))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgpipe-bench-") as tmp:
        spec = json.loads((ROOT / "examples" / "aws.json").read_text())
        spec.update(name="bench", replica_count=15)
        spec_file = Path(tmp) / "bench.json"
        spec_file.write_text(json.dumps(spec))
        commands = {
            "pgpipe --help": [*PGPIPE, "--help"],
            "pgpipe generate (aws, 15 replicas)": [
                *PGPIPE,
                "--workdir",
                f"{tmp}/ws",
                "generate",
                "--spec",
                str(spec_file),
            ],
        }
        print(f"{'command':40} {'median':>8} {'min':>8} {'max':>8} {'target':>8}  ({args.runs} runs each)")
        for label, argv in commands.items():
            times = wall(argv, args.runs)
            median = statistics.median(times)
            verdict = "ok" if median <= TARGETS[label] else "SLOW"
            print(f"{label:40} {median:8.3f} {min(times):8.3f} {max(times):8.3f} {TARGETS[label]:8.1f}  {verdict}")
        print("\nslowest imports of the generate run (cumulative ms):")
        for micros, module in slowest_imports(commands["pgpipe generate (aws, 15 replicas)"], 12):
            print(f"  {micros / 1000:7.1f}  {module}")


if __name__ == "__main__":
    main()
