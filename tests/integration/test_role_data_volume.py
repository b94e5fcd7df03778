"""The role's data volume on sandbox hosts: each host's `postgresql_replication_data_device` is a loop device
backed by a sparse file; the role must make a filesystem on it, mount it by UUID through the host's own
/etc/fstab on the PostgreSQL home, replicate from there, and leave it alone on a second run (no reformat).

    flock /tmp/pgpipe-heavy.lock .venv/bin/pytest -q tests/integration/test_role_data_volume.py
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline import proc, sandbox
from pipeline.ansible import PlaybookRun
from pipeline.paths import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

SANDBOX = "vol"
PRIMARY = "vol-primary"
REPLICA = "vol-replica"
HOME = "/var/lib/postgresql"
DATA_DIR = f"{HOME}/15/main"
MARKER = f"{HOME}/pgpipe-volume-marker"
VOLUME_BYTES = 1 << 30  # sparse: only what mkfs and PostgreSQL write takes space
PSQL = ["psql", "--no-psqlrc", "--no-align", "--tuples-only", "--quiet", "--set=ON_ERROR_STOP=1",
        "--username=postgres", "--dbname=postgres"]


@dataclass
class VolumeCluster:
    """The module's cluster: each host's loop device, the inventory, the secrets and the playbook runs."""

    devices: dict[str, str]
    inventory: Path
    secrets: dict[str, str]
    runs: list[PlaybookRun] = field(default_factory=list)

    def playbook(self) -> PlaybookRun:
        env = {**os.environ, **self.secrets, "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        args = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory),
                str(PROJECT_ROOT / "playbooks" / "site.yml")]
        run = PlaybookRun()
        result = proc.run(args, timeout=900, env=env, cwd=PROJECT_ROOT, on_line=run.feed, ok_codes=range(256))
        self.runs.append(run)
        assert result.returncode == 0, f"site.yml failed: {run.failures}\n{result.stdout[-3000:]}"
        return run

    def sh(self, host: str, *argv: str) -> str:
        return sandbox.exec_in(SANDBOX, host, list(argv), timeout=60, check=True).stdout.strip()

    def sql(self, host: str, query: str) -> str:
        return sandbox.exec_in(SANDBOX, host, PSQL, stdin=query, timeout=60, check=True).stdout.strip()

    def uuid(self, host: str) -> str:
        return blkid(self.devices[host]).get("UUID", "")


def blkid(device: str) -> dict[str, str]:
    """What the device holds, read by the machine (not the host): TYPE, UUID, LABEL..."""
    out = proc.run(["blkid", "--probe", "--output", "export", device], timeout=30, ok_codes=(0, 2)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _inventory(path: Path, ips: dict[str, str], devices: dict[str, str]) -> Path:
    def line(host: str) -> str:
        return (f"{host} ansible_host={ips[host]} postgresql_replication_address={ips[host]} "
                f"postgresql_replication_data_device={devices[host]}")

    key, known = sandbox.client_key(SANDBOX), sandbox.known_hosts(SANDBOX)
    path.write_text("\n".join([
        "[primary]", line(PRIMARY), "[replicas]", line(REPLICA), "[all:vars]",
        "ansible_user=root", f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'",
        "ansible_become_method=su", "postgresql_replication_version=15",
        "postgresql_replication_package_source=distro",
    ]) + "\n")
    return path


def _attach(image: Path) -> str:
    with image.open("wb") as handle:
        handle.truncate(VOLUME_BYTES)
    return proc.run(["losetup", "--find", "--show", str(image)], timeout=30).stdout.strip()


@pytest.fixture(scope="module")
def cluster(make_sandbox: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[VolumeCluster]:
    """A primary and a replica, each with a blank loop device as its data device, configured once by site.yml.
    The sandbox goes down first (its mount namespaces hold the filesystems), then each loop device made here
    is detached by the name losetup gave back, whatever happened."""
    if not Path("/dev/loop-control").exists():
        pytest.skip("loop devices are not available on this machine")
    tmp = tmp_path_factory.mktemp("vol")
    devices: dict[str, str] = {}
    try:
        for host in (PRIMARY, REPLICA):
            devices[host] = _attach(tmp / f"{host}.img")
        made = make_sandbox(SANDBOX, [PRIMARY, REPLICA])
        vol = VolumeCluster(devices, _inventory(tmp / "inventory.ini", made.ips, devices),
                            {"PGPIPE_REPLICATION_PASSWORD": secrets.token_urlsafe(24),
                             "PGPIPE_ADMIN_PASSWORD": secrets.token_urlsafe(24)})
        assert all(not blkid(device) for device in devices.values()), "a fresh loop device was not blank"
        vol.playbook()
        yield vol
    finally:
        try:
            sandbox.down(SANDBOX)
        finally:
            for device in devices.values():
                proc.run(["losetup", "--detach", device], timeout=30, ok_codes=range(256))


def test_the_role_makes_a_filesystem_on_each_blank_device(cluster: VolumeCluster) -> None:
    for device in cluster.devices.values():
        assert blkid(device).get("TYPE") == "ext4"
        assert blkid(device).get("LABEL") == "pgdata"


def test_the_data_directory_is_on_the_data_device(cluster: VolumeCluster) -> None:
    for host, device in cluster.devices.items():
        # The sandbox's own bind mount of the home stays underneath: the last (topmost) mount is what shows.
        mounts = cluster.sh(host, "findmnt", "--noheadings", "--output", "SOURCE", "--target", DATA_DIR)
        assert mounts.splitlines()[-1] == device
        assert cluster.sh(host, "df", "--output=source", DATA_DIR).splitlines()[-1] == device
        assert cluster.sql(host, "SHOW data_directory") == DATA_DIR


def test_each_host_mounts_its_volume_by_uuid_from_its_own_fstab(cluster: VolumeCluster) -> None:
    machine_fstab = Path("/etc/fstab").read_text()
    for host in cluster.devices:
        fstab = [line.split() for line in cluster.sh(host, "cat", "/etc/fstab").splitlines()
                 if line.strip() and not line.startswith("#")]
        assert fstab == [[f"UUID={cluster.uuid(host)}", HOME, "ext4", "defaults,noatime,nofail", "0", "2"]]
        assert cluster.uuid(host) not in machine_fstab


def test_the_replica_streams_from_the_primary_into_its_volume(cluster: VolumeCluster) -> None:
    assert cluster.sql(PRIMARY, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") == REPLICA
    cluster.sql(PRIMARY, "CREATE TABLE volume_rows AS SELECT 'written on the primary'::text AS note")
    lsn = cluster.sql(PRIMARY, "SELECT pg_current_wal_insert_lsn()")
    cluster.sql(REPLICA, f"DO $$ BEGIN FOR i IN 1..600 LOOP EXIT WHEN pg_last_wal_replay_lsn() >= '{lsn}'; "
                         "PERFORM pg_sleep(0.1); END LOOP; END $$")
    assert cluster.sql(REPLICA, "SELECT note FROM volume_rows") == "written on the primary"


def test_a_second_run_changes_nothing_and_never_reformats(cluster: VolumeCluster) -> None:
    uuids = {host: cluster.uuid(host) for host in cluster.devices}
    started = {host: cluster.sql(host, "SELECT pg_postmaster_start_time()") for host in cluster.devices}
    for host in cluster.devices:
        cluster.sh(host, "sh", "-c", f"echo {host} > {MARKER}")
    run = cluster.playbook()
    assert run.changed == 0, run.recap
    for host in cluster.devices:
        assert cluster.sh(host, "cat", MARKER) == host
        assert cluster.uuid(host) == uuids[host]
        assert cluster.sql(host, "SELECT pg_postmaster_start_time()") == started[host]
