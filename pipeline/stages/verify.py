"""verify: proves replication works over the same SSH path as configure: every replica streaming from the
primary on its own active slot, a marker row written on the primary read back on each replica (with the time
it took), replay lag, stale slots, settings in effect. Writes `reports/verify.json`; fails with reasons."""

from __future__ import annotations

import json
import logging
import secrets as _random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.ansible import run_playbook
from pipeline.errors import AnsibleError, VerifyFailed
from pipeline.paths import PLAYBOOKS
from pipeline.spec import ClusterSpec, memory_kb
from pipeline.stages.apply import read_outputs
from pipeline.stages.configure import build_inventory
from pipeline.stages.plan import load_workspace_spec
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

MARKER_TIMEOUT_S = 30


@dataclass(frozen=True)
class Check:
    name: str
    host: str
    ok: bool
    detail: str = ""


def slot_name(host: str) -> str:
    return host.replace("-", "_")


def _parse_status(answer: dict[str, Any]) -> dict[str, Any] | None:
    status = answer.get("status") or {}
    if status.get("rc") != 0:
        return None
    try:
        parsed: dict[str, Any] = json.loads(status.get("stdout", ""))
    except json.JSONDecodeError:
        return None
    return parsed


def _marker_time(answer: dict[str, Any], word: str) -> int | None:
    out = str((answer.get("marker") or {}).get("stdout", "")).split()
    return int(out[1]) if len(out) == 2 and out[0] == word and out[1].isdigit() else None


def evaluate(spec: ClusterSpec, outputs: dict[str, Any], answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Judge the hosts' raw answers; pure, so every rule is unit-testable."""
    primary = outputs["primary"]["name"]
    replicas = [r["name"] for r in outputs.get("replicas") or []]
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []

    pstatus = _parse_status(answers.get(primary, {}))
    checks.append(
        Check(
            "primary-reachable",
            primary,
            pstatus is not None,
            "" if pstatus else "no status from the primary (unreachable or PostgreSQL down)",
        )
    )
    pstatus = pstatus or {}
    checks.append(Check("primary-not-in-recovery", primary, pstatus.get("in_recovery") is False))
    written = _marker_time(answers.get(primary, {}), "written")
    checks.append(Check("marker-written", primary, written is not None))
    settings = pstatus.get("settings") or {}
    if settings:
        checks.append(
            Check(
                "max-connections",
                primary,
                settings.get("max_connections") == str(spec.max_connections),
                f"in effect: {settings.get('max_connections')}",
            )
        )
        checks.append(
            Check(
                "shared-buffers",
                primary,
                _same_memory(settings.get("shared_buffers"), spec.shared_buffers),
                f"in effect: {settings.get('shared_buffers')}",
            )
        )

    senders = pstatus.get("replication") or []
    slots = {s["slot_name"]: s for s in pstatus.get("slots") or []}
    for name in replicas:
        row = _replica_row(name, answers.get(name, {}), senders, slots, written, checks)
        rows.append(row)

    expected_slots = {slot_name(n) for n in replicas}
    stale = sorted(s for s in slots if s not in expected_slots)
    checks.append(
        Check(
            "no-stale-slots",
            primary,
            not stale,
            f"slots of hosts that are not replicas keep WAL forever: {', '.join(stale)}" if stale else "",
        )
    )
    if spec.replication_mode == "sync":
        synced = sum(1 for s in senders if s.get("sync_state") in ("sync", "quorum"))
        checks.append(
            Check(
                "synchronous-standbys",
                primary,
                synced >= (spec.sync_standbys or 1),
                f"{synced} standby(s) synchronous, {spec.sync_standbys} wanted",
            )
        )

    failed = [c for c in checks if not c.ok]
    return {
        "cluster": spec.name,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ok": not failed,
        "passed": len(checks) - len(failed),
        "failed": len(failed),
        "primary": primary,
        "replicas": rows,
        "stale_slots": stale,
        "checks": [asdict(c) for c in checks],
    }


def _same_memory(actual: Any, wanted: str) -> bool:
    try:
        return memory_kb(str(actual)) == memory_kb(wanted)
    except ValueError:
        return False


def _replica_row(
    name: str,
    answer: dict[str, Any],
    senders: list[dict[str, Any]],
    slots: dict[str, Any],
    written: int | None,
    checks: list[Check],
) -> dict[str, Any]:
    status = _parse_status(answer)
    checks.append(
        Check(
            "replica-reachable",
            name,
            status is not None,
            "" if status else "no status (unreachable or PostgreSQL down)",
        )
    )
    status = status or {}
    receiver = status.get("receiver") or {}
    checks.append(Check("replica-in-recovery", name, status.get("in_recovery") is True))
    checks.append(
        Check(
            "wal-receiver-streaming",
            name,
            receiver.get("status") == "streaming",
            f"wal receiver: {receiver.get('status') or 'absent'}",
        )
    )
    mine = [s for s in senders if s.get("application_name") == name]
    streaming = [s for s in mine if s.get("state") == "streaming"]
    checks.append(
        Check(
            "streaming-from-primary",
            name,
            len(mine) == 1 and len(streaming) == 1,
            f"{len(mine)} sender row(s) on the primary, {len(streaming)} streaming",
        )
    )
    slot = slots.get(slot_name(name))
    checks.append(
        Check(
            "slot-active",
            name,
            bool(slot and slot.get("active") and slot.get("slot_type") == "physical"),
            "slot missing" if slot is None else ("" if slot.get("active") else "slot inactive"),
        )
    )
    seen = _marker_time(answer, "seen")
    marker_ms = max(0, seen - written) if seen is not None and written is not None else None
    checks.append(
        Check(
            "marker-replicated",
            name,
            marker_ms is not None,
            f"{marker_ms} ms" if marker_ms is not None else f"not seen within {MARKER_TIMEOUT_S} s",
        )
    )
    return {
        "name": name,
        "state": streaming[0]["state"] if streaming else (mine[0]["state"] if mine else "absent"),
        "sync_state": mine[0].get("sync_state") if mine else None,
        "slot": slot_name(name),
        "slot_active": bool(slot and slot.get("active")),
        "replay_lag_bytes": status.get("lag_bytes"),
        "replay_lag_seconds": status.get("lag_seconds"),
        "sender_replay_lag_bytes": mine[0].get("replay_lag_bytes") if mine else None,
        "marker_ms": marker_ms,
    }


def render_table(report: dict[str, Any]) -> str:
    lines = [f"{'replica':<28} {'state':<10} {'slot':<8} {'lag bytes':>10} {'lag s':>7} {'marker ms':>10}"]
    for row in report["replicas"]:
        lag_s = row["replay_lag_seconds"]
        lines.append(
            f"{row['name']:<28} {row['state']:<10} {'active' if row['slot_active'] else 'inactive':<8}"
            f" {row['replay_lag_bytes'] if row['replay_lag_bytes'] is not None else '-':>10}"
            f" {f'{lag_s:.3f}' if isinstance(lag_s, int | float) else '-':>7}"
            f" {row['marker_ms'] if row['marker_ms'] is not None else '-':>10}"
        )
    for check in report["checks"]:
        if not check["ok"]:
            lines.append(f"FAILED {check['name']} on {check['host']}: {check['detail']}")
    lines.append(f"verify: {report['passed']} checks passed, {report['failed']} failed")
    return "\n".join(lines)


def collect(ws: Workspace, spec: ClusterSpec, outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run the verify playbook and read each host's raw answers."""
    inventory = build_inventory(spec, outputs, ws, None) if not ws.inventory_ini.is_file() else ws.inventory_ini
    raw = Path(tempfile.mkdtemp(prefix=".verify-", dir=ws.root))
    try:
        try:
            run_playbook(
                PLAYBOOKS / "verify.yml",
                inventory,
                extra_vars={
                    "pgpipe_verify_token": _random.token_hex(8),
                    "pgpipe_verify_timeout": str(MARKER_TIMEOUT_S),
                    "pgpipe_verify_dir": str(raw.resolve()),
                },
                timeout=MARKER_TIMEOUT_S + 300,
            )
        except AnsibleError as exc:
            log.warning("verify playbook: %s", exc)
        return {p.stem: json.loads(p.read_text()) for p in raw.glob("*.json")}
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def verify(ws: Workspace) -> dict[str, Any]:
    spec = load_workspace_spec(ws)
    outputs = read_outputs(ws)
    report = evaluate(spec, outputs, collect(ws, spec, outputs))
    ws.write_json(ws.verify_json, report)
    log.info("%s", render_table(report))
    if not report["ok"]:
        failed = [f"{c['name']} on {c['host']}" for c in report["checks"] if not c["ok"]]
        raise VerifyFailed("replication checks failed: " + ", ".join(failed), report=report)
    return report
