"""Wall time of the postgresql_replication role on sandbox hosts: first and second run (the second must report
changed=0) on 1 primary + 2 replicas, then the first run on 1 primary + 6 replicas (the replicas clone in
parallel, so it should cost far less than three times as much). Prints figures; asserts only that the runs work.
It makes sandbox hosts and PostgreSQL clusters, so run it alone:

    flock /tmp/pgpipe-heavy.lock .venv/bin/python bench/bench_role.py
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import sandbox  # noqa: E402  (the repository's package, not an installed one)

SANDBOX = "role-bench"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def inventory(path: Path, ips: dict[str, str], primary: str) -> Path:
    def line(host: str) -> str:
        return f"{host} ansible_host={ips[host]} postgresql_replication_address={ips[host]}"

    path.write_text("\n".join([
        "[primary]", line(primary), "[replicas]", *(line(h) for h in ips if h != primary), "[all:vars]",
        "ansible_user=root", f"ansible_ssh_private_key_file={sandbox.client_key(SANDBOX)}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={sandbox.known_hosts(SANDBOX)} -o StrictHostKeyChecking=yes'",
        "ansible_become_method=su", "postgresql_replication_package_source=distro",
    ]) + "\n")
    return path


def run_role(inventory_file: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds of one site.yml run, and the number of changes it reported."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_file), "playbooks/site.yml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    seconds = time.perf_counter() - start
    recap = RECAP.findall(result.stdout)
    if result.returncode != 0 or not recap or any(int(u) or int(f) for _h, _c, u, f in recap):
        sys.exit(f"site.yml failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return seconds, sum(int(changed) for _host, changed, _u, _f in recap)


def cluster_runs(replicas: int, runs: int, env: dict[str, str], tmp: Path) -> list[tuple[float, int]]:
    hosts = ["bench-primary", *(f"bench-replica-{i}" for i in range(1, replicas + 1))]
    sandbox.down(SANDBOX)
    try:
        start = time.perf_counter()
        ips = sandbox.up(SANDBOX, dict.fromkeys(hosts))
        print(f"  {len(hosts)} sandbox hosts up in {time.perf_counter() - start:.1f} s", flush=True)
        inv = inventory(tmp / f"inventory-{replicas}.ini", ips, hosts[0])
        return [run_role(inv, env) for _ in range(runs)]
    finally:
        sandbox.down(SANDBOX)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, default=6, help="replicas of the larger cluster")
    args = parser.parse_args()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PGPIPE_REPLICATION_PASSWORD": secrets.token_urlsafe(24), "PGPIPE_ADMIN_PASSWORD": secrets.token_urlsafe(24)}
    with tempfile.TemporaryDirectory(prefix="pgpipe-bench-role-") as tmp:
        print("1 primary + 2 replicas:", flush=True)
        (first, changed_first), (second, changed_second) = cluster_runs(2, 2, env, Path(tmp))
        print(f"  first run   {first:6.1f} s  changed={changed_first}")
        print(f"  second run  {second:6.1f} s  changed={changed_second}")
        print(f"1 primary + {args.many} replicas:", flush=True)
        ((many, changed_many),) = cluster_runs(args.many, 1, env, Path(tmp))
        print(f"  first run   {many:6.1f} s  changed={changed_many}")
    ratio = many / first
    print(f"\nfirst run, {args.many} versus 2 replicas: {ratio:.2f}x the time for {args.many / 2:.0f}x the replicas")
    if changed_second:
        sys.exit("the second run changed something: the role is not idempotent")


if __name__ == "__main__":
    main()
