"""Streaming replication as the primary and the replicas report it, and data flowing through it."""

from __future__ import annotations

import time
import uuid

from pg_cluster import Cluster, slot_name

CATCH_UP_SECONDS = 5.0


def test_each_replica_streams_exactly_once_under_its_own_name(cluster: Cluster) -> None:
    rows = cluster.primary.sql_json(
        "SELECT coalesce(json_agg(json_build_object('name', application_name, 'state', state)), '[]') "
        "FROM pg_stat_replication"
    )
    streaming = sorted(row["name"] for row in rows if row["state"] == "streaming")
    assert streaming == sorted(r.name for r in cluster.replicas)
    assert len(rows) == len(cluster.replicas)


def test_each_replica_has_one_active_slot(cluster: Cluster) -> None:
    rows = cluster.primary.sql_json(
        "SELECT coalesce(json_object_agg(slot_name, active), '{}') FROM pg_replication_slots "
        "WHERE slot_type = 'physical'"
    )
    assert rows == {slot_name(r.name): True for r in cluster.replicas}


def test_primary_is_not_in_recovery(cluster: Cluster) -> None:
    assert cluster.primary.sql("SELECT pg_is_in_recovery()") == "f"


def test_every_replica_is_in_recovery(cluster: Cluster) -> None:
    assert {r.name: r.sql("SELECT pg_is_in_recovery()") for r in cluster.replicas} == {
        r.name: "t" for r in cluster.replicas
    }


def test_every_replica_receives_wal_by_streaming_from_the_primary(cluster: Cluster) -> None:
    seen = {
        r.name: r.sql("SELECT status || ' ' || sender_host || ' ' || slot_name FROM pg_stat_wal_receiver")
        for r in cluster.replicas
    }
    assert seen == {r.name: f"streaming {cluster.primary.address} {slot_name(r.name)}" for r in cluster.replicas}


def test_a_row_written_on_the_primary_is_read_on_every_replica_within_5_s(cluster: Cluster) -> None:
    token = uuid.uuid4().hex
    cluster.primary.sql(
        "CREATE TABLE IF NOT EXISTS pgpipe_infra_probe (id bigserial PRIMARY KEY, token text NOT NULL); "
        f"INSERT INTO pgpipe_infra_probe (token) VALUES ('{token}')"
    )
    query = f"SELECT count(*) FROM pgpipe_infra_probe WHERE token = '{token}'"
    waiting = {r.name: r for r in cluster.replicas}
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while waiting and time.monotonic() < deadline:
        for name, replica in list(waiting.items()):
            result = replica.psql(query)
            if result.rc == 0 and result.stdout.strip() == "1":
                del waiting[name]
        if waiting:
            time.sleep(0.2)
    cluster.primary.sql(f"DELETE FROM pgpipe_infra_probe WHERE token = '{token}'")
    assert not waiting, f"not on {sorted(waiting)} within {CATCH_UP_SECONDS} s"


def test_a_write_on_a_replica_fails_as_read_only(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        result = replica.psql("CREATE TABLE pgpipe_infra_read_only (id int)")
        assert result.rc != 0
        assert "read-only transaction" in result.stderr, replica.name
