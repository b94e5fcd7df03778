"""apply: the gate. Applies `plan/plan.tfplan` only when the plan, the rendered config, the spec and the state
are exactly what was planned and a person approved that very manifest; then writes `outputs.json`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import GateRefused, WorkspaceError
from pipeline.stages.plan import terraform_for
from pipeline.terraform import StateIdentity
from pipeline.workspace import Workspace, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Approval:
    """Who approved, how, and (optionally) which manifest they looked at."""

    approver: str
    method: str  # "interactive", "flag", "environment", "api", "github-environment"
    manifest_sha256: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    outputs: dict[str, Any]
    manifest_sha256: str


def load_manifest(ws: Workspace) -> tuple[dict[str, Any], str]:
    if not ws.manifest_json.is_file() or not ws.plan_file.is_file():
        raise GateRefused(f"no saved plan in {ws.plan_dir}: run `pgpipe plan` first", reason="plan-missing")
    try:
        manifest = json.loads(ws.manifest_json.read_text())
    except json.JSONDecodeError:
        raise GateRefused(f"{ws.manifest_json} is corrupt: plan again", reason="plan-changed") from None
    return manifest, sha256_file(ws.manifest_json)


def check_gate(
    ws: Workspace, manifest: dict[str, Any], manifest_sha256: str, approval: Approval | None, *, allow_destroy: bool
) -> None:
    """Raise GateRefused with its reason unless this plan may be applied now."""
    if sha256_file(ws.plan_file) != manifest.get("plan_sha256") or (
        ws.plan_json.is_file() and sha256_file(ws.plan_json) != manifest.get("plan_json_sha256")
    ):
        raise GateRefused("the saved plan is not the one that was planned and summarised", reason="plan-changed")
    if ws.terraform_hash() != manifest.get("terraform_sha256"):
        raise GateRefused("the rendered Terraform changed since plan: plan again", reason="config-changed")
    if not ws.spec_json.is_file() or sha256_file(ws.spec_json) != manifest.get("spec_sha256"):
        raise GateRefused("spec.json changed since plan: plan again", reason="config-changed")
    if manifest.get("dangerous") and not (allow_destroy or manifest.get("destroy")):
        raise GateRefused(
            "the plan would lose data (" + "; ".join(manifest["dangerous"]) + "): apply with --allow-destroy"
            " if that is intended",
            reason="destroy-not-allowed",
        )
    if approval is None or not approval.approver.strip():
        raise GateRefused("the plan was not approved", reason="not-approved")
    if approval.manifest_sha256 is not None and approval.manifest_sha256 != manifest_sha256:
        raise GateRefused(
            f"the approval is for manifest {approval.manifest_sha256[:12]}…, but the plan's manifest is"
            f" {manifest_sha256[:12]}…",
            reason="not-approved",
        )


def check_state(current: StateIdentity, manifest: dict[str, Any]) -> None:
    planned = manifest.get("state") or {}
    if current.as_dict() != {"lineage": planned.get("lineage"), "serial": planned.get("serial")}:
        raise GateRefused(
            f"the state changed since plan (planned against lineage {planned.get('lineage')} serial"
            f" {planned.get('serial')}, now {current.lineage} serial {current.serial}): plan again",
            reason="state-changed",
        )


def apply(ws: Workspace, approval: Approval | None, *, allow_destroy: bool = False) -> ApplyResult:
    """Apply the approved plan; refuse with a reason otherwise. Writes approval.json and outputs.json."""
    manifest, manifest_sha256 = load_manifest(ws)
    check_gate(ws, manifest, manifest_sha256, approval, allow_destroy=allow_destroy)
    assert approval is not None
    tf = terraform_for(ws)
    tf.init()
    check_state(tf.state_identity(), manifest)
    record = {
        "approver": approval.approver,
        "method": approval.method,
        "manifest_sha256": manifest_sha256,
        "plan_sha256": manifest["plan_sha256"],
        "destroy": bool(manifest.get("destroy")),
        "allow_destroy": allow_destroy,
        "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    ws.write_json(ws.approval_json, record)
    log.info("approved by %s (%s) for manifest %s", approval.approver, approval.method, manifest_sha256)
    if manifest.get("has_changes"):
        tf.apply(ws.plan_file)
    else:
        log.info("the plan has no changes: nothing to apply")
    outputs = {name: value.get("value") for name, value in tf.outputs().items()}
    if manifest.get("destroy"):
        for path in (ws.outputs_json, ws.inventory_ini):
            path.unlink(missing_ok=True)
    else:
        ws.write_json(ws.outputs_json, outputs)
    ws.write_json(ws.approval_json, {**record, "applied_at": datetime.now(UTC).isoformat(timespec="seconds")})
    return ApplyResult(True, outputs, manifest_sha256)


def read_outputs(ws: Workspace) -> dict[str, Any]:
    outputs = ws.read_json(ws.outputs_json, "apply")
    if not isinstance(outputs, dict) or "primary" not in outputs:
        raise WorkspaceError(f"{ws.outputs_json} has no `primary`: apply again", reason="outputs-invalid")
    return outputs
