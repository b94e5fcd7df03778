"""Faults on a live cluster made by the postgresql_replication role on sandbox hosts: a replica cut off past
wal_sender_timeout, a replica's postmaster killed, the primary restarted, the role re-run under write load, a
change that needs a restart, and sync mode. One cluster serves the module; tests run in file order and each
leaves the cluster streaming for the next.

    flock /tmp/pgpipe-heavy.lock .venv/bin/pytest -q tests/integration/test_role_faults.py
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline import proc, sandbox
from pipeline.ansible import PlaybookRun
from pipeline.paths import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

SANDBOX = "role-faults"
PRIMARY = "rf-primary"
REPLICAS = ["rf-replica-1", "rf-replica-2"]
LINK_DOWN_SECONDS = 70  # past wal_sender_timeout (60 s): the primary drops the replica and must take it back
CATCH_UP_SECONDS = 90
WRITER = "pgpipe-fault-writer"
PSQL = ["psql", "--no-psqlrc", "--no-align", "--tuples-only", "--quiet", "--set=ON_ERROR_STOP=1",
        "--username=postgres", "--dbname=postgres"]
ROWS = "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || payload, ',' ORDER BY id)), '-') FROM fault_rows"


@dataclass
class RoleCluster:
    """The module's cluster: its sandbox, inventory and secrets, the playbook runs so far, and the extra
    variables the current configuration was applied with."""

    inventory: Path
    secrets: dict[str, str]
    runs: list[tuple[PlaybookRun, str]] = field(default_factory=list)
    extra_vars: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [PRIMARY, *REPLICAS]

    def sql(self, host: str, query: str, *, timeout: float = 60) -> str:
        """SQL as the postgres role, run inside the host (it works while the host is cut off)."""
        return sandbox.exec_in(SANDBOX, host, PSQL, stdin=query, timeout=timeout, check=True).stdout.strip()

    def on_all(self, query: str) -> dict[str, str]:
        return {host: self.sql(host, query) for host in self.nodes}

    def playbook(self, **changes: str) -> PlaybookRun:
        """Run playbooks/site.yml as configure does, with the extra variables so far plus `changes`."""
        self.extra_vars.update(changes)
        env = {**os.environ, **self.secrets, "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        args = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory),
                str(PROJECT_ROOT / "playbooks" / "site.yml")]
        for key, value in self.extra_vars.items():
            args += ["-e", f"{key}={value}"]
        run = PlaybookRun()
        result = proc.run(args, timeout=900, env=env, cwd=PROJECT_ROOT, on_line=run.feed, ok_codes=range(256))
        self.runs.append((run, result.stdout + result.stderr))
        assert result.returncode == 0, f"site.yml failed: {run.failures}\n{result.stdout[-3000:]}"
        return run

    def start_times(self) -> dict[str, str]:
        return self.on_all("SELECT pg_postmaster_start_time()")

    def streaming(self) -> list[str]:
        return sorted(self.sql(PRIMARY, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
                      .split())

    def wait_caught_up(self) -> None:
        """Until every replica streams again and has replayed all the primary had written when called."""
        target = self.sql(PRIMARY, "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            replayed = all(self.sql(r, f"SELECT pg_last_wal_replay_lsn() >= '{target}'") == "t" for r in REPLICAS)
            if replayed and self.streaming() == sorted(REPLICAS):
                return
            time.sleep(1)
        raise AssertionError(f"not caught up with {target} within {CATCH_UP_SECONDS} s: streaming {self.streaming()}")


def _inventory(path: Path, ips: dict[str, str]) -> Path:
    """The inventory configure writes (the contract), plus the sandbox's known host keys."""

    def line(host: str) -> str:
        return (f"{host} ansible_host={ips[host]} postgresql_replication_address={ips[host]} "
                "postgresql_replication_data_device=")

    key, known = sandbox.client_key(SANDBOX), sandbox.known_hosts(SANDBOX)
    path.write_text("\n".join([
        "[primary]", line(PRIMARY), "[replicas]", *map(line, REPLICAS), "[all:vars]",
        "ansible_user=root", f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'",
        "ansible_become_method=su", "postgresql_replication_version=15",
        "postgresql_replication_package_source=distro", "postgresql_replication_max_connections=100",
        "postgresql_replication_shared_buffers=128MB", "postgresql_replication_mode=async",
        "postgresql_replication_sync_standbys=1", 'postgresql_replication_client_cidrs=["10.0.0.0/16"]',
        'postgresql_replication_parameters={"work_mem": "8MB"}', "postgresql_replication_drop_stale_slots=false",
    ]) + "\n")
    return path


@pytest.fixture(scope="module")
def cluster(make_sandbox: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleCluster]:
    """Three sandbox hosts configured once by site.yml; taken down when the module ends, whatever happened."""
    try:
        made = make_sandbox(SANDBOX, [PRIMARY, *REPLICAS])
        inventory = _inventory(tmp_path_factory.mktemp("role-faults") / "inventory.ini", made.ips)
        role_cluster = RoleCluster(inventory, {"PGPIPE_REPLICATION_PASSWORD": secrets.token_urlsafe(24),
                                               "PGPIPE_ADMIN_PASSWORD": secrets.token_urlsafe(24)})
        role_cluster.playbook()
        role_cluster.sql(PRIMARY, "CREATE TABLE fault_rows (id bigserial PRIMARY KEY, payload text NOT NULL)")
        role_cluster.wait_caught_up()
        yield role_cluster
    finally:
        sandbox.down(SANDBOX)


@contextmanager
def writing(cluster: RoleCluster) -> Iterator[None]:
    """Rows committed on the primary one by one, in one server-side loop, until the block ends."""
    loop = (f"SET application_name = '{WRITER}';\n"
            "DO $$ BEGIN FOR i IN 1..100000 LOOP INSERT INTO fault_rows (payload) "
            "VALUES (md5(i::text || clock_timestamp()::text)); COMMIT; PERFORM pg_sleep(0.05); END LOOP; END $$;")
    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(sandbox.exec_in, SANDBOX, PRIMARY, PSQL, stdin=loop, timeout=900)
        active = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{WRITER}'"
        while cluster.sql(PRIMARY, active) == "0" and not done.done():
            time.sleep(0.2)
        try:
            yield
        finally:
            cluster.sql(PRIMARY, f"SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                                 f"WHERE application_name = '{WRITER}'")
            result = done.result(timeout=60)
    assert "canceling statement due to user request" in result.stderr, result.stderr


def assert_same_rows_everywhere(cluster: RoleCluster) -> None:
    rows = cluster.on_all(ROWS)
    assert len(set(rows.values())) == 1, rows
    assert int(rows[PRIMARY].split()[0]) > 0


def test_a_replica_cut_off_past_wal_sender_timeout_catches_up(cluster: RoleCluster) -> None:
    victim = REPLICAS[0]
    with writing(cluster):
        sandbox.partition(SANDBOX, victim)
        try:
            cut_at = time.monotonic()
            dropped = False
            while time.monotonic() - cut_at < LINK_DOWN_SECONDS:
                dropped = dropped or victim not in cluster.streaming()
                time.sleep(2)
        finally:
            sandbox.heal(SANDBOX, victim)
    assert dropped, "the primary still streamed to the cut-off replica: the cut did not outlast wal_sender_timeout"
    cluster.wait_caught_up()
    assert_same_rows_everywhere(cluster)


def test_a_replica_whose_postmaster_was_killed_catches_up_once_started(cluster: RoleCluster) -> None:
    victim = REPLICAS[1]
    before = cluster.sql(victim, "SELECT pg_postmaster_start_time()")
    with writing(cluster):
        killed = sandbox.crash(SANDBOX, victim, r"^/usr/lib/postgresql/\d+/bin/postgres ")
        assert len(killed) == 1
        deadline = time.monotonic() + 30
        while sandbox.exec_in(SANDBOX, victim, ["pgrep", "-u", "postgres"]).returncode == 0:
            assert time.monotonic() < deadline, "the killed postmaster's children did not exit"
            time.sleep(0.5)
        time.sleep(2)  # rows the replica misses while it is down
        sandbox.exec_in(SANDBOX, victim, ["pg_ctlcluster", "15", "main", "start"], timeout=60, check=True)
    cluster.wait_caught_up()
    assert cluster.sql(victim, "SELECT pg_postmaster_start_time()") != before
    assert_same_rows_everywhere(cluster)


def test_replicas_reconnect_by_themselves_after_the_primary_restarts(cluster: RoleCluster) -> None:
    before = cluster.start_times()
    sandbox.exec_in(SANDBOX, PRIMARY, ["pg_ctlcluster", "15", "main", "restart", "--mode=fast"], timeout=60,
                    check=True)
    cluster.sql(PRIMARY, "INSERT INTO fault_rows (payload) VALUES ('after the primary restarted')")
    cluster.wait_caught_up()
    after = cluster.start_times()
    assert after[PRIMARY] != before[PRIMARY]
    assert {r: after[r] for r in REPLICAS} == {r: before[r] for r in REPLICAS}
    assert_same_rows_everywhere(cluster)


def _replica_identity(cluster: RoleCluster) -> dict[str, str]:
    """Start time, system identifier and a marker file's inode: a rebuilt data directory loses the marker."""
    identity = {}
    for host in cluster.nodes:
        stat = sandbox.exec_in(SANDBOX, host, ["stat", "--format=%i", "/var/lib/postgresql/15/main/pgpipe-marker"])
        identity[host] = " ".join([
            cluster.sql(host, "SELECT pg_postmaster_start_time() || ' ' || system_identifier FROM pg_control_system()"),
            stat.stdout.strip() or "no-marker",
        ])
    return identity


def test_rerunning_the_role_under_write_load_changes_and_restarts_nothing(cluster: RoleCluster) -> None:
    for host in cluster.nodes:
        sandbox.exec_in(SANDBOX, host, ["touch", "/var/lib/postgresql/15/main/pgpipe-marker"], check=True)
    before = _replica_identity(cluster)
    with writing(cluster):
        run = cluster.playbook()
    assert {h: (r["changed"], r["failed"]) for h, r in run.recap.items()} == {h: (0, 0) for h in cluster.nodes}
    assert _replica_identity(cluster) == before
    assert len({value.split()[-2] for value in before.values()}) == 1  # one system: the replicas are its clones
    cluster.wait_caught_up()
    assert_same_rows_everywhere(cluster)


def test_slots_of_replicas_that_left_are_reported_and_dropped_only_when_asked(cluster: RoleCluster) -> None:
    stale = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'rf_replica_gone'"
    cluster.sql(PRIMARY, "SELECT pg_create_physical_replication_slot('rf_replica_gone')")
    kept = cluster.playbook()
    assert kept.recap[PRIMARY]["changed"] == 0
    assert "Stale replication slot(s) rf_replica_gone: kept" in cluster.runs[-1][1]
    assert cluster.sql(PRIMARY, stale) == "1"
    dropped = cluster.playbook(postgresql_replication_drop_stale_slots="true")
    assert dropped.recap[PRIMARY]["changed"] == 1
    assert cluster.sql(PRIMARY, stale) == "0"


def test_a_change_that_needs_a_restart_restarts_every_host(cluster: RoleCluster) -> None:
    before = cluster.start_times()
    run = cluster.playbook(postgresql_replication_shared_buffers="96MB")
    assert all(run.recap[h]["changed"] > 0 for h in cluster.nodes)
    after = cluster.start_times()
    assert [h for h in cluster.nodes if after[h] == before[h]] == []
    assert cluster.on_all("SHOW shared_buffers") == {h: "96MB" for h in cluster.nodes}
    cluster.wait_caught_up()


def test_sync_mode_is_a_reload_and_a_commit_then_waits_for_a_standby(cluster: RoleCluster) -> None:
    before = cluster.start_times()
    cluster.playbook(postgresql_replication_mode="sync")
    assert cluster.start_times() == before
    assert cluster.sql(PRIMARY, "SHOW synchronous_standby_names") == 'ANY 1 ("rf-replica-1", "rf-replica-2")'
    cluster.wait_caught_up()
    assert cluster.sql(PRIMARY, "SELECT string_agg(sync_state, ' ') FROM pg_stat_replication") == "quorum quorum"

    insert = "INSERT INTO fault_rows (payload) VALUES ('committed in sync mode')"
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    with ThreadPoolExecutor(max_workers=1) as pool:
        for replica in REPLICAS:
            sandbox.partition(SANDBOX, replica)
        try:
            commit = pool.submit(cluster.sql, PRIMARY, insert, timeout=120)
            deadline = time.monotonic() + 20
            while cluster.sql(PRIMARY, waiting) == "0" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert cluster.sql(PRIMARY, waiting) == "1", "the commit did not wait for a standby"
            assert not commit.done()
        finally:
            for replica in REPLICAS:
                sandbox.heal(SANDBOX, replica)
        commit.result(timeout=90)
    cluster.wait_caught_up()
    assert_same_rows_everywhere(cluster)


def test_no_playbook_output_shows_a_secret(cluster: RoleCluster) -> None:
    assert len(cluster.runs) >= 2
    for _run, output in cluster.runs:
        assert "PLAY RECAP" in output
        assert not any(secret in output for secret in cluster.secrets.values())
