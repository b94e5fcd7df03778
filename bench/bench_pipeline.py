"""Benchmark: the demo chain on the local target (generate, plan, apply, configure, verify), a second configure
on the healthy cluster, and destroy. Target: the chain under 60 s once set up. Prints its figures."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "benchpipe"


def pgpipe(workdir: Path, *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--workdir", str(workdir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"pgpipe {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        spec = json.loads((ROOT / "clusters" / "demo.json").read_text()) | {"name": CLUSTER}
        (workdir / "spec.json").write_text(json.dumps(spec))
        approve = ("--approve", "--approver", "bench")
        try:
            chain = pgpipe(
                workdir,
                "generate",
                "--spec",
                str(workdir / "spec.json"),
                "plan",
                "apply",
                *approve,
                "configure",
                "verify",
            )
            again = pgpipe(workdir, "--cluster", CLUSTER, "configure")
            verify = pgpipe(workdir, "--cluster", CLUSTER, "verify")
            report = json.loads((workdir / CLUSTER / "reports" / "verify.json").read_text())
        finally:
            down = pgpipe(workdir, "--cluster", CLUSTER, "destroy", *approve)
    print(f"demo chain (1 primary + 2 replicas), generate..verify: {chain:6.1f} s  (target < 60 s)")
    print(f"configure again on a healthy cluster:                  {again:6.1f} s")
    print(f"verify alone:                                          {verify:6.1f} s")
    print(f"destroy:                                               {down:6.1f} s")
    for row in report["replicas"]:
        print(f"  {row['name']}: marker replicated in {row['marker_ms']} ms")


if __name__ == "__main__":
    main()
