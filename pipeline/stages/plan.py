"""plan: terraform init + plan + show -json -> `plan/` (plan.tfplan, plan.json, summary.md, manifest.json).
The manifest pins everything the apply gate checks: the plan's hash, the rendered config's and spec's hashes,
the terraform version, and the state lineage and serial the plan was made against."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import redact
from pipeline.spec import ClusterSpec, parse_spec
from pipeline.terraform import Terraform
from pipeline.workspace import Workspace, dump_json, sha256_file, write_atomic

log = logging.getLogger(__name__)

HOST_TYPES = frozenset({"aws_instance", "null_resource"})
DATA_VOLUME_TYPES = frozenset({"aws_ebs_volume"})


@dataclass(frozen=True)
class PlanResult:
    has_changes: bool
    plan_json: Path
    summary: str
    manifest: dict[str, Any]
    manifest_sha256: str


def load_workspace_spec(ws: Workspace) -> ClusterSpec:
    return parse_spec(ws.read_json(ws.spec_json, "generate"))


def terraform_for(ws: Workspace) -> Terraform:
    return Terraform(ws.terraform_dir, config_file=ws.root / "terraform.rc")


def _managed_changes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    # A plan with no providers has no `resource_changes` key at all.
    return [rc for rc in plan.get("resource_changes", []) if rc.get("mode") == "managed"]


def _verb(actions: list[str]) -> str:
    if "delete" in actions and "create" in actions:
        return "replace"
    return {"create": "create", "delete": "delete", "update": "update", "read": "read"}.get(actions[0], "no-op")


def dangerous_changes(plan: dict[str, Any], spec: ClusterSpec) -> list[str]:
    """Changes that lose data: the primary or a data volume replaced or destroyed."""
    found = []
    for rc in _managed_changes(plan):
        actions = rc["change"]["actions"]
        if "delete" not in actions:
            continue
        verb = "replaced" if "create" in actions else "destroyed"
        if rc["type"] in HOST_TYPES and rc.get("index") == spec.primary_name:
            found.append(f"the primary {spec.primary_name} would be {verb} ({rc['address']})")
        elif rc["type"] in DATA_VOLUME_TYPES:
            found.append(f"data volume {rc.get('index', rc['name'])} would be {verb} ({rc['address']})")
    return found


def change_counts(plan: dict[str, Any]) -> dict[str, int]:
    counts = {"add": 0, "change": 0, "destroy": 0}
    for rc in _managed_changes(plan):
        actions = rc["change"]["actions"]
        counts["add"] += "create" in actions
        counts["change"] += "update" in actions
        counts["destroy"] += "delete" in actions
    return counts


def host_rows(plan: dict[str, Any], spec: ClusterSpec) -> list[dict[str, str]]:
    """One row per host in the plan (kept, added or removed): name, role, type, zone, action."""
    rows = []
    for rc in _managed_changes(plan):
        if rc["type"] not in HOST_TYPES:
            continue
        after = rc["change"].get("after") or rc["change"].get("before") or {}
        name = str(rc.get("index", rc["name"]))
        rows.append(
            {
                "name": name,
                "role": "primary" if name == spec.primary_name else "replica",
                "type": spec.instance_type if rc["type"] == "aws_instance" else "sandbox host",
                "zone": str(
                    after.get("availability_zone") or ("local" if spec.target == "local" else "(known after apply)")
                ),
                "action": _verb(rc["change"]["actions"]),
            }
        )
    return sorted(rows, key=lambda r: (r["role"] != "primary", r["name"]))


def render_summary(plan: dict[str, Any], spec: ClusterSpec, *, destroy: bool, manifest_sha256: str) -> str:
    danger = dangerous_changes(plan, spec)
    counts = change_counts(plan)
    kind = "destroy plan" if destroy else "plan"
    where = f"target {spec.target}, {spec.region}" if spec.target == "aws" else f"target {spec.target}"
    lines = [f"## pgpipe {kind}: `{spec.name}` ({where})", ""]
    for item in danger:
        lines.append(f"**DANGER: {item}.**  ")
    if danger:
        lines += ["**Applying needs `--allow-destroy`.**", ""]
    if any(counts.values()):
        lines.append(f"**{counts['add']} to add, {counts['change']} to change, {counts['destroy']} to destroy.**")
    else:
        lines.append("**No changes.** The infrastructure matches the configuration.")
    rows = host_rows(plan, spec)
    if rows:
        lines += ["", "| host | role | type | zone | action |", "|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['role']} | {r['type']} | {r['zone']} | {r['action']} |" for r in rows]
    lines += [
        "",
        f"PostgreSQL {spec.postgres_version}, {spec.replica_count} replica(s), {spec.replication_mode} replication,"
        f" max_connections={spec.max_connections}, shared_buffers={spec.shared_buffers}.",
        "",
        f"Manifest `{manifest_sha256}`",
    ]
    return "\n".join(lines) + "\n"


def plan(ws: Workspace, *, destroy: bool = False) -> PlanResult:
    """Plan the workspace's rendered config and replace `plan/` with the new artifacts, all or nothing."""
    spec = load_workspace_spec(ws)
    tf = terraform_for(ws)
    version = tf.version()
    tf.init()
    state = tf.state_identity()
    staging = Path(tempfile.mkdtemp(prefix=".plan-", dir=ws.root))
    staging.chmod(0o755)
    try:
        planfile = staging / "plan.tfplan"
        has_changes = tf.plan(planfile, destroy=destroy)
        plan_text = redact.scrub(dump_json(tf.show_json(planfile)))
        write_atomic(staging / "plan.json", plan_text)
        plan_data = json.loads(plan_text)
        manifest = {
            "cluster": spec.name,
            "target": spec.target,
            "destroy": destroy,
            "has_changes": has_changes,
            "plan_sha256": sha256_file(planfile),
            "plan_json_sha256": sha256_file(staging / "plan.json"),
            "terraform_sha256": ws.terraform_hash(),
            "spec_sha256": sha256_file(ws.spec_json),
            "terraform_version": version,
            "state": state.as_dict(),
            "dangerous": dangerous_changes(plan_data, spec),
            "counts": change_counts(plan_data),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_atomic(staging / "manifest.json", dump_json(manifest))
        manifest_sha256 = sha256_file(staging / "manifest.json")
        summary = render_summary(plan_data, spec, destroy=destroy, manifest_sha256=manifest_sha256)
        write_atomic(staging / "summary.md", summary)
        _swap_in(staging, ws.plan_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s", summary.strip())
    return PlanResult(has_changes, ws.plan_json, summary, manifest, manifest_sha256)


def _swap_in(new: Path, target: Path) -> None:
    """Replace the folder `target` by `new` with two renames, so readers never see a mix of two plans."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=".plan-old-", dir=target.parent))
        old.rmdir()
        target.rename(old)
    new.rename(target)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
