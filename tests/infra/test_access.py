"""Who may connect, how passwords are stored, and where the secrets must never show."""

from __future__ import annotations

import os

import pytest
from pg_cluster import Cluster, Node

SECRET_ENV = ("PGPIPE_REPLICATION_PASSWORD", "PGPIPE_ADMIN_PASSWORD")
# Where PostgreSQL, its tools and Ansible write on a host; the shared temporary folders only near their top.
SCANNED = "/etc/postgresql /var/lib/postgresql /var/log/postgresql /var/lib/pgsql /run /root"
SCANNED_SHALLOW = "/tmp /var/tmp"


def _connect(node: Node, target: Node, *, user: str, replication: bool) -> str:
    """stderr of a password-less connection attempt from `node` to `target`, as root (no password file)."""
    conninfo = f"host={target.address} port=5432 user={user} dbname=postgres connect_timeout=5"
    if replication:
        conninfo += " replication=true"
    result = node.run("psql --no-password %s --command=IDENTIFY_SYSTEM", conninfo)
    assert result.rc != 0, f"{node.name} logged in to {target.name} as {user} without a password"
    return str(result.stderr)


def _replication_user(cluster: Cluster) -> str:
    return str(cluster.settings.get("postgresql_replication_user", "replicator"))


def test_replication_from_a_host_that_is_not_a_replica_is_refused_by_pg_hba(cluster: Cluster) -> None:
    error = _connect(cluster.primary, cluster.primary, user=_replication_user(cluster), replication=True)
    assert "no pg_hba.conf entry for replication connection" in error


def test_replication_from_a_replica_passes_pg_hba_and_then_needs_the_password(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        error = _connect(replica, cluster.primary, user=_replication_user(cluster), replication=True)
        assert "no pg_hba.conf entry" not in error
        assert "password" in error


def test_a_client_outside_the_client_networks_is_refused_by_pg_hba(cluster: Cluster) -> None:
    error = _connect(cluster.replicas[0], cluster.primary, user="postgres", replication=False)
    assert "no pg_hba.conf entry for host" in error


def test_role_passwords_are_stored_as_scram(cluster: Cluster) -> None:
    stored = cluster.primary.sql_json(
        "SELECT coalesce(json_object_agg(rolname, left(rolpassword, 14)), '{}') FROM pg_authid "
        "WHERE rolpassword IS NOT NULL"
    )
    assert stored.get(_replication_user(cluster)) == "SCRAM-SHA-256$"
    assert set(stored.values()) == {"SCRAM-SHA-256$"}


def test_the_replicas_password_file_is_postgres_own_and_private(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        found = replica.run("find /var/lib/postgresql /var/lib/pgsql -maxdepth 1 -name .pgpass -printf '%u %m\\n'")
        assert found.stdout.split() == ["postgres", "600"], replica.name


@pytest.fixture(scope="module")
def secrets() -> list[bytes]:
    values = [os.environ.get(name, "") for name in SECRET_ENV]
    if not all(values):
        pytest.skip(f"the cluster's secrets are needed in {' and '.join(SECRET_ENV)}")
    return [value.encode() for value in values]


def test_no_world_readable_file_holds_a_secret(cluster: Cluster, secrets: list[bytes]) -> None:
    # The files come back to the test; the secrets never go to the host (they would be on a command line).
    command = (f"{{ find {SCANNED} -type f -perm -o=r -size -1024k -print0;"
               f" find {SCANNED_SHALLOW} -maxdepth 2 -type f -perm -o=r -size -1024k -print0; }} 2>/dev/null"
               " | xargs -0 --no-run-if-empty cat 2>/dev/null; true")
    for node in cluster.nodes:
        content = node.run(command).stdout_bytes
        assert b"listen_addresses" in content, f"{node.name}: the scan read nothing"
        assert not any(secret in content for secret in secrets), node.name


def test_no_process_command_line_holds_a_secret(cluster: Cluster, secrets: list[bytes]) -> None:
    for node in cluster.nodes:
        lines = node.run("ps -e --no-headers -o args").stdout_bytes
        assert b"postgres" in lines, f"{node.name}: no process listed"
        assert not any(secret in lines for secret in secrets), node.name
