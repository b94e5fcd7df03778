"""configure: outputs.json + spec.json -> inventory.ini (+ group_vars/all.yml) -> the role via playbooks/site.yml.
Re-running it on a healthy cluster changes nothing and restarts nothing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import secrets
from pipeline.ansible import run_playbook
from pipeline.errors import WorkspaceError
from pipeline.paths import PLAYBOOKS
from pipeline.render import render
from pipeline.spec import ClusterSpec
from pipeline.stages.apply import read_outputs
from pipeline.stages.plan import load_workspace_spec
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

SSH_KEY_ENV = "PGPIPE_SSH_PRIVATE_KEY_FILE"


@dataclass(frozen=True)
class ConfigureResult:
    inventory: Path
    changed: int
    recap: dict[str, dict[str, int]]


def ssh_common_args(spec: ClusterSpec, ws: Workspace) -> str:
    if spec.target == "local":
        # Sandbox hosts get new host keys each time they are made: nothing to pin.
        return "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    return f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={ws.root.resolve() / 'known_hosts'}"


def role_vars(spec: ClusterSpec, *, drop_stale_slots: bool) -> dict[str, Any]:
    """The role's settings from the spec, typed (INI group vars would all be strings)."""
    distro = spec.target == "local" or spec.os == "al2023"
    return {
        "postgresql_replication_version": spec.postgres_version,
        "postgresql_replication_package_source": "distro" if distro else "pgdg",
        "postgresql_replication_max_connections": spec.max_connections,
        "postgresql_replication_shared_buffers": spec.shared_buffers,
        "postgresql_replication_mode": spec.replication_mode,
        "postgresql_replication_sync_standbys": spec.sync_standbys or 1,
        "postgresql_replication_client_cidrs": spec.client_cidrs,
        "postgresql_replication_parameters": spec.postgres_parameters,
        "postgresql_replication_drop_stale_slots": drop_stale_slots,
    }


def _host(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "ansible_host": entry.get("public_ip") or entry["private_ip"]}


def build_inventory(
    spec: ClusterSpec, outputs: dict[str, Any], ws: Workspace, ssh_key: str | None, *, drop_stale_slots: bool = True
) -> Path:
    key = ssh_key or outputs.get("ssh_private_key_file")
    if not key:
        raise WorkspaceError(
            f"no SSH private key for the hosts: give --ssh-key FILE or set {SSH_KEY_ENV}", reason="ssh-key-missing"
        )
    text = render(
        "ansible/inventory.ini.j2",
        {
            "primary": _host(outputs["primary"]),
            "replicas": [_host(r) for r in outputs.get("replicas") or []],
            "ssh_user": outputs["ssh_user"],
            "ssh_key": key,
            "become_method": outputs.get("become_method") or "sudo",
            "ssh_common_args": ssh_common_args(spec, ws),
        },
    )
    ws.write_text(
        ws.root / "group_vars" / "all.yml",
        yaml.safe_dump(role_vars(spec, drop_stale_slots=drop_stale_slots), sort_keys=True),
    )
    return ws.write_text(ws.inventory_ini, text)


def configure(ws: Workspace, *, ssh_key: str | None = None, drop_stale_slots: bool = True) -> ConfigureResult:
    spec = load_workspace_spec(ws)
    outputs = read_outputs(ws)
    inventory = build_inventory(
        spec, outputs, ws, ssh_key or os.environ.get(SSH_KEY_ENV), drop_stale_slots=drop_stale_slots
    )
    hosts = 1 + len(outputs.get("replicas") or [])
    log.info("configuring %d host(s) of %s with the postgresql_replication role", hosts, spec.name)
    run = run_playbook(PLAYBOOKS / "site.yml", inventory, extra_env=secrets.environment(ws))
    ws.write_json(ws.root / "reports" / "configure.json", {"changed": run.changed, "recap": run.recap})
    log.info("configure done: %d change(s)", run.changed)
    return ConfigureResult(inventory, run.changed, run.recap)
