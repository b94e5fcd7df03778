"""The whole chain on the local target with real terraform, sandbox hosts, sshd, ansible-playbook and
PostgreSQL: generate, plan, approved apply, configure, verify; scaling 2 -> 3 -> 1 without touching healthy
hosts; the gate's cases that need an applied cluster; no secret in any artifact; destroy leaves nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pipeline import sandbox
from pipeline.cli import cli
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

CLUSTER = "e2e"
APPROVE = ["--approve", "--approver", "ci-test"]


class Cluster:
    """A cluster driven through the CLI in its own workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ws = workdir / CLUSTER
        self.spec_file = workdir / f"{CLUSTER}.json"

    def pgpipe(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--workdir", str(self.workdir), *args], catch_exceptions=False)

    def write_spec(self, **changes: Any) -> None:
        spec = json.loads((ROOT / "clusters" / "demo.json").read_text()) | {"name": CLUSTER} | changes
        self.spec_file.write_text(json.dumps(spec))

    def ok(self, *args: str) -> Result:
        result = self.pgpipe(*args)
        assert result.exit_code == 0, result.output
        return result

    def rollout(self, **changes: Any) -> None:
        self.write_spec(**changes)
        self.ok("generate", "--spec", str(self.spec_file), "plan", "apply", *APPROVE, "configure", "verify")

    def report(self) -> dict[str, Any]:
        return json.loads((self.ws / "reports" / "verify.json").read_text())

    def sql(self, host: str, query: str) -> str:
        result = sandbox.exec_in(CLUSTER, host, ["su", "postgres", "-c", f'psql -XAtc "{query}"'], timeout=30)
        return result.stdout.strip()

    def identity(self, host: str) -> tuple[str, str]:
        """When the postmaster started and which cluster it runs: a restart or rebuild changes one of them."""
        started = self.sql(host, "SELECT pg_postmaster_start_time()")
        system = self.sql(host, "SELECT system_identifier FROM pg_control_system()")
        return started, system


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("pipeline"))
    c.write_spec()
    try:
        c.ok("generate", "--spec", str(c.spec_file), "plan")
        # Kept to show later that a plan made against the empty state cannot be applied once state exists.
        shutil.copytree(c.ws / "plan", c.workdir / "plan-on-empty-state")
        c.ok("--cluster", CLUSTER, "apply", *APPROVE, "configure", "verify")
        yield c
    finally:
        c.pgpipe("--cluster", CLUSTER, "destroy", *APPROVE)
        sandbox.down(CLUSTER)


def test_the_chain_ends_with_every_replica_streaming(cluster: Cluster) -> None:
    report = cluster.report()
    assert report["ok"], report
    assert [r["name"] for r in report["replicas"]] == ["e2e-replica-1", "e2e-replica-2"]
    assert all(r["state"] == "streaming" and r["slot_active"] for r in report["replicas"])


def test_the_artifacts_of_every_stage_are_in_the_workspace(cluster: Cluster) -> None:
    for name in (
        "spec.json",
        "terraform/main.tf",
        "plan/plan.tfplan",
        "plan/plan.json",
        "plan/summary.md",
        "plan/manifest.json",
        "approval.json",
        "outputs.json",
        "inventory.ini",
        "reports/verify.json",
    ):
        assert (cluster.ws / name).is_file(), name
    approval = json.loads((cluster.ws / "approval.json").read_text())
    assert approval["approver"] == "ci-test" and approval["applied_at"]


def test_the_inventory_has_the_groups_of_the_original_api(cluster: Cluster) -> None:
    text = (cluster.ws / "inventory.ini").read_text()
    assert "[primary]\ne2e-primary " in text
    assert "[replicas]\ne2e-replica-1 " in text and "\ne2e-replica-2 " in text


def test_configure_again_changes_nothing_and_restarts_nothing(cluster: Cluster) -> None:
    hosts = ["e2e-primary", "e2e-replica-1", "e2e-replica-2"]
    before = {h: cluster.identity(h) for h in hosts}
    cluster.ok("--cluster", CLUSTER, "configure")
    assert json.loads((cluster.ws / "reports" / "configure.json").read_text())["changed"] == 0
    assert {h: cluster.identity(h) for h in hosts} == before


def test_a_plan_made_against_the_empty_state_is_refused_once_state_exists(cluster: Cluster) -> None:
    saved = cluster.ws / "plan"
    current = cluster.workdir / "plan-current"
    saved.rename(current)
    shutil.copytree(cluster.workdir / "plan-on-empty-state", saved)
    try:
        result = cluster.pgpipe("--cluster", CLUSTER, "apply", *APPROVE)
        assert result.exit_code == 1 and "apply failed [state-changed]" in result.output, result.output
    finally:
        shutil.rmtree(saved)
        current.rename(saved)


def test_a_plan_that_replaces_the_primary_needs_allow_destroy(cluster: Cluster) -> None:
    cluster.write_spec(local_subnet="198.19.254.0/24")
    result = cluster.pgpipe("generate", "--spec", str(cluster.spec_file), "plan", "apply", *APPROVE)
    assert result.exit_code == 1 and "apply failed [destroy-not-allowed]" in result.output, result.output
    summary = (cluster.ws / "plan" / "summary.md").read_text()
    assert "**DANGER: the primary e2e-primary would be replaced" in summary
    cluster.write_spec()
    cluster.ok("generate", "--spec", str(cluster.spec_file), "plan")
    assert json.loads((cluster.ws / "plan" / "manifest.json").read_text())["has_changes"] is False


def test_scaling_up_adds_a_streaming_replica_without_touching_the_others(cluster: Cluster) -> None:
    kept = ["e2e-primary", "e2e-replica-1", "e2e-replica-2"]
    before = {h: cluster.identity(h) for h in kept}
    cluster.rollout(replica_count=3)
    assert {h: cluster.identity(h) for h in kept} == before
    report = cluster.report()
    assert report["ok"] and [r["name"] for r in report["replicas"]][-1] == "e2e-replica-3"


def test_scaling_down_removes_replicas_and_drops_their_slots(cluster: Cluster) -> None:
    kept = ["e2e-primary", "e2e-replica-1"]
    before = {h: cluster.identity(h) for h in kept}
    cluster.rollout(replica_count=1)
    assert {h: cluster.identity(h) for h in kept} == before
    assert (
        cluster.sql("e2e-primary", "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots")
        == "e2e_replica_1"
    )
    assert cluster.report()["ok"]


def test_no_secret_appears_in_any_artifact_or_log(cluster: Cluster) -> None:
    secrets = [p.read_text().strip() for p in (cluster.ws / "secrets").iterdir()]
    assert len(secrets) == 2 and all(len(s) >= 16 for s in secrets)
    for path in cluster.ws.rglob("*"):
        if path.is_file() and "secrets" not in path.relative_to(cluster.ws).parts and ".terraform" not in path.parts:
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"a secret leaked into {path}"
    assert (cluster.ws / "secrets").stat().st_mode & 0o077 == 0


def test_destroy_leaves_no_host_namespace_route_or_process(cluster: Cluster) -> None:
    cluster.ok("--cluster", CLUSTER, "destroy", *APPROVE)
    assert not (cluster.ws / "outputs.json").exists()
    assert CLUSTER not in sandbox.status()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"pgpipe_{CLUSTER}_" not in namespaces
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f" {sandbox.bridge_name(CLUSTER)}:" not in links
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert sandbox.default_subnet(CLUSTER) not in routes
    mounts = Path("/proc/mounts").read_text()
    assert str(sandbox.sandbox_dir(CLUSTER)) not in mounts
    assert not sandbox.sandbox_dir(CLUSTER).exists()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert str(sandbox.sandbox_dir(CLUSTER)).encode() not in cmdline.read_bytes(), f"left running: {cmdline}"
        except (FileNotFoundError, ProcessLookupError):
            continue
