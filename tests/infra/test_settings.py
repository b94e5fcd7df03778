"""The inventory's settings are the ones the servers run with."""

from __future__ import annotations

from pg_cluster import Cluster


def _same_setting(name: str, wanted: object) -> str:
    """SQL telling whether parameter `name` runs with `wanted`; sizes compare by bytes (1024kB = 1MB)."""
    value = str(wanted).replace("'", "''")
    return (
        f"SELECT CASE WHEN current_setting('{name}') ~ '^[0-9]+ ?[kMGT]?B$' "
        f"THEN pg_size_bytes(current_setting('{name}')) = pg_size_bytes('{value}') "
        f"ELSE lower(current_setting('{name}')) = lower('{value}') END"
    )


def test_max_connections_is_in_effect_on_every_host(cluster: Cluster) -> None:
    wanted = str(cluster.settings.get("postgresql_replication_max_connections", 100))
    assert {n.name: n.sql("SHOW max_connections") for n in cluster.nodes} == {n.name: wanted for n in cluster.nodes}


def test_shared_buffers_is_in_effect_on_every_host(cluster: Cluster) -> None:
    query = _same_setting("shared_buffers", cluster.settings.get("postgresql_replication_shared_buffers", "128MB"))
    assert {n.name: n.sql(query) for n in cluster.nodes} == {n.name: "t" for n in cluster.nodes}


def test_extra_parameters_are_in_effect_on_every_host(cluster: Cluster) -> None:
    parameters = cluster.settings.get("postgresql_replication_parameters") or {}
    for name, value in parameters.items():
        assert {n.name: n.sql(_same_setting(name, value)) for n in cluster.nodes} == {
            n.name: "t" for n in cluster.nodes
        }, name


def test_the_primary_waits_for_standbys_only_in_sync_mode(cluster: Cluster) -> None:
    names = cluster.primary.sql("SHOW synchronous_standby_names")
    if cluster.settings.get("postgresql_replication_mode", "async") == "sync":
        k = cluster.settings.get("postgresql_replication_sync_standbys", 1)
        assert names == f"ANY {k} (" + ", ".join(f'"{r.name}"' for r in cluster.replicas) + ")"
    else:
        assert names == ""


def test_replication_settings_are_sized_for_the_replicas(cluster: Cluster) -> None:
    senders = int(cluster.primary.sql("SHOW max_wal_senders"))
    slots = int(cluster.primary.sql("SHOW max_replication_slots"))
    assert cluster.primary.sql("SHOW wal_level") == "replica"
    assert senders >= 2 * len(cluster.replicas)
    assert slots >= len(cluster.replicas)
