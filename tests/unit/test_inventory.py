"""configure's inventory: groups as the original API made them, typed role settings, no secret anywhere."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from pipeline.errors import WorkspaceError
from pipeline.spec import parse_spec
from pipeline.stages.configure import build_inventory
from pipeline.workspace import Workspace

OUTPUTS = {
    "primary": {"name": "c-primary", "private_ip": "10.0.1.10", "public_ip": "203.0.113.10", "data_device": "/dev/sdf"},
    "replicas": [{"name": "c-replica-1", "private_ip": "10.0.2.11", "public_ip": None, "data_device": None}],
    "ssh_user": "admin",
    "become_method": "sudo",
}


def render(tmp_path: Path, **spec: object) -> tuple[configparser.ConfigParser, dict[str, object], str]:
    ws = Workspace(tmp_path)
    parsed = parse_spec({"name": "c", "target": "local", **spec})
    path = build_inventory(parsed, OUTPUTS, ws, "/keys/id_ed25519")
    ini = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",), interpolation=None)
    ini.read_string(path.read_text())
    return ini, yaml.safe_load((tmp_path / "group_vars" / "all.yml").read_text()), path.read_text()


def test_groups_primary_and_replicas_with_ssh_to_the_public_address(tmp_path: Path) -> None:
    ini, _, text = render(tmp_path)
    assert list(ini["primary"]) == ["c-primary"]
    assert list(ini["replicas"]) == ["c-replica-1"]
    assert "c-primary ansible_host=203.0.113.10 postgresql_replication_address=10.0.1.10" in text
    assert "postgresql_replication_data_device=/dev/sdf" in text
    assert "c-replica-1 ansible_host=10.0.2.11 postgresql_replication_address=10.0.2.11\n" in text


def test_connection_settings_come_from_the_outputs(tmp_path: Path) -> None:
    _, _, text = render(tmp_path)
    assert "ansible_user=admin\n" in text and "ansible_become_method=sudo\n" in text
    assert "ansible_ssh_private_key_file=/keys/id_ed25519\n" in text


def test_role_settings_are_typed(tmp_path: Path) -> None:
    _, role_vars, _ = render(tmp_path, max_connections=250, client_cidrs=["10.9.0.0/16"], shared_buffers="256MB")
    assert role_vars["postgresql_replication_max_connections"] == 250
    assert role_vars["postgresql_replication_client_cidrs"] == ["10.9.0.0/16"]
    assert role_vars["postgresql_replication_drop_stale_slots"] is True
    assert role_vars["postgresql_replication_package_source"] == "distro"


def test_no_key_at_all_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="--ssh-key"):
        build_inventory(parse_spec({"name": "c", "target": "local"}), OUTPUTS, Workspace(tmp_path), None)


def test_the_inventory_never_holds_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPIPE_REPLICATION_PASSWORD", "repl-secret-value")
    _, role_vars, text = render(tmp_path)
    assert "repl-secret-value" not in text + yaml.safe_dump(role_vars)
    assert "password" not in text.lower()
