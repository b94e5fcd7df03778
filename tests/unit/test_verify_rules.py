"""verify's judgement of the hosts' raw answers: every rule can fail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.spec import parse_spec
from pipeline.stages.verify import evaluate, render_table

SPEC = parse_spec({"name": "demo", "target": "local", "replica_count": 2, "shared_buffers": "128MB"})
OUTPUTS = {
    "primary": {"name": "demo-primary", "private_ip": "198.18.0.10"},
    "replicas": [
        {"name": "demo-replica-1", "private_ip": "198.18.0.11"},
        {"name": "demo-replica-2", "private_ip": "198.18.0.12"},
    ],
}


def answer(status: dict[str, Any] | None, marker: str) -> dict[str, Any]:
    return {
        "marker": {"rc": 0, "stdout": marker},
        "status": {"rc": 0, "stdout": json.dumps(status)} if status is not None else {"rc": 2, "stdout": ""},
    }


def healthy() -> dict[str, dict[str, Any]]:
    senders = [
        {"application_name": n, "state": "streaming", "sync_state": "async", "replay_lag_bytes": 0}
        for n in ("demo-replica-1", "demo-replica-2")
    ]
    slots = [
        {"slot_name": s, "slot_type": "physical", "active": True, "retained_bytes": 0}
        for s in ("demo_replica_1", "demo_replica_2")
    ]
    primary = {
        "in_recovery": False,
        "replication": senders,
        "slots": slots,
        "settings": {"max_connections": "100", "shared_buffers": "128MB"},
    }
    replica = {"in_recovery": True, "receiver": {"status": "streaming"}, "lag_bytes": 0, "lag_seconds": 0}
    return {
        "demo-primary": answer(primary, "written 1000"),
        "demo-replica-1": answer(replica, "seen 1012"),
        "demo-replica-2": answer(replica, "seen 1030"),
    }


def failed(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["name"], c["host"]) for c in report["checks"] if not c["ok"]}


def test_a_healthy_cluster_passes_with_marker_times() -> None:
    report = evaluate(SPEC, OUTPUTS, healthy())
    assert report["ok"] and failed(report) == set()
    assert [r["marker_ms"] for r in report["replicas"]] == [12, 30]
    assert "verify: " in render_table(report) and "0 failed" in render_table(report)


def test_an_unreachable_replica_fails_every_replica_check() -> None:
    answers = healthy()
    del answers["demo-replica-2"]
    report = evaluate(SPEC, OUTPUTS, answers)
    assert ("replica-reachable", "demo-replica-2") in failed(report)
    assert ("marker-replicated", "demo-replica-2") in failed(report)
    assert not report["ok"]


def test_a_replica_missing_from_pg_stat_replication_fails() -> None:
    answers = healthy()
    primary = json.loads(answers["demo-primary"]["status"]["stdout"])
    primary["replication"] = primary["replication"][:1]
    answers["demo-primary"]["status"]["stdout"] = json.dumps(primary)
    assert failed(evaluate(SPEC, OUTPUTS, answers)) == {("streaming-from-primary", "demo-replica-2")}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["slots"][0].update(active=False), ("slot-active", "demo-replica-1")),
        (
            lambda p: p["slots"].append({"slot_name": "demo_replica_3", "slot_type": "physical", "active": False}),
            ("no-stale-slots", "demo-primary"),
        ),
        (lambda p: p["settings"].update(max_connections="90"), ("max-connections", "demo-primary")),
        (lambda p: p["settings"].update(shared_buffers="256MB"), ("shared-buffers", "demo-primary")),
        (lambda p: p.update(in_recovery=True), ("primary-not-in-recovery", "demo-primary")),
    ],
)
def test_each_primary_side_fault_is_reported(mutate: Any, expected: tuple[str, str]) -> None:
    answers = healthy()
    primary = json.loads(answers["demo-primary"]["status"]["stdout"])
    mutate(primary)
    answers["demo-primary"]["status"]["stdout"] = json.dumps(primary)
    assert failed(evaluate(SPEC, OUTPUTS, answers)) == {expected}


def test_a_replica_that_never_saw_the_marker_fails() -> None:
    answers = healthy()
    answers["demo-replica-1"]["marker"] = {"rc": 3, "stdout": "timeout"}
    assert failed(evaluate(SPEC, OUTPUTS, answers)) == {("marker-replicated", "demo-replica-1")}


def test_shared_buffers_in_other_units_is_the_same_memory() -> None:
    answers = healthy()
    primary = json.loads(answers["demo-primary"]["status"]["stdout"])
    primary["settings"]["shared_buffers"] = "131072kB"
    answers["demo-primary"]["status"]["stdout"] = json.dumps(primary)
    assert evaluate(SPEC, OUTPUTS, answers)["ok"]


def test_sync_mode_needs_enough_synchronous_standbys() -> None:
    spec = parse_spec({"name": "demo", "target": "local", "replica_count": 2, "replication_mode": "sync"})
    assert ("synchronous-standbys", "demo-primary") in failed(evaluate(spec, OUTPUTS, healthy()))
