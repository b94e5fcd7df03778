"""Benchmark: bring 3 sandbox hosts up and down, in-process and the way terraform does it (one CLI call per
host, all at once). Needs root. Prints its figures."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import sandbox  # noqa: E402 - the path above makes the checkout importable

NAME = "bench-sandbox"
SUBNET = "198.19.249.0/24"
HOSTS = ["bench-primary", "bench-replica-1", "bench-replica-2"]
ROUNDS = 3


def timed(func: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def cli_parallel(action: str) -> None:
    base = [sys.executable, "-m", "pipeline", "sandbox", action, "--sandbox", NAME]
    extra = ["--subnet", SUBNET] if action == "up" else []
    calls = [subprocess.Popen([*base, *extra, "--host", host], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for host in HOSTS]
    if any(call.wait(120) for call in calls):
        raise SystemExit(f"a `sandbox {action}` call failed")


def main() -> None:
    rows: list[tuple[str, float, float]] = []
    try:
        sandbox.down(NAME)
        for _ in range(ROUNDS):
            up = timed(sandbox.up, NAME, dict.fromkeys(HOSTS), SUBNET)
            down = timed(sandbox.down, NAME)
            rows.append(("library", up, down))
        for _ in range(ROUNDS):
            rows.append(("cli, 3 calls at once", timed(cli_parallel, "up"), timed(cli_parallel, "down")))
    finally:
        sandbox.down(NAME)
    print(f"3 sandbox hosts, {ROUNDS} rounds each (seconds)")
    for how in dict.fromkeys(row[0] for row in rows):
        ups = [r[1] for r in rows if r[0] == how]
        downs = [r[2] for r in rows if r[0] == how]
        print(f"  {how:22s} up  best {min(ups):5.2f}  worst {max(ups):5.2f}"
              f"   down best {min(downs):5.2f}  worst {max(downs):5.2f}")


if __name__ == "__main__":
    main()
