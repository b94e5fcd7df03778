"""The whole chain over HTTP on the local target, with real terraform, sandbox hosts, sshd, ansible-playbook and
PostgreSQL: generate-terraform, plan, a refused and then an approved apply (async, with a second request for
the cluster refused meanwhile), apply_ansible_configuration with new PostgreSQL settings, then the cluster's
status. The cluster is destroyed through the CLI's gate at the end, whatever happened."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from pipeline import sandbox
from pipeline.api import create_app
from pipeline.cli import cli
from pipeline.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

CLUSTER = "apichain"
TOKEN = "integration-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = {"instance_type": "t3.medium", "replica_count": 2, "region": "us-east-1", "target": "local",
        "max_connections": 100, "shared_buffers": "128MB", "postgres_version": 15}
JOB_TIMEOUT_S = 900


class Chain:
    """The client, the workspace and every answer of the chain, for the small tests below to look at."""

    def __init__(self, workdir: Path, client: TestClient) -> None:
        self.workdir = workdir
        self.client = client
        self.ws = Workspace.for_cluster(CLUSTER, workdir)
        self.answers: dict[str, Any] = {}

    def post(self, path: str, body: Any = None, **params: str) -> Any:
        return self.client.post(path, params={"cluster": CLUSTER, **params}, json=body, headers=AUTH)

    def wait(self, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            view: dict[str, Any] = self.client.get(url, headers=AUTH).json()
            if view["status"] in ("succeeded", "failed"):
                return view
            time.sleep(0.5)
        raise AssertionError(f"{url} still running after {JOB_TIMEOUT_S} s")

    def snapshot(self) -> dict[str, bytes]:
        skip = ("logs/", "terraform/.terraform/")
        return {
            str(p.relative_to(self.ws.root)): p.read_bytes()
            for p in sorted(self.ws.root.rglob("*"))
            if p.is_file() and not str(p.relative_to(self.ws.root)).startswith(skip) and p.name != ".lock"
        }


def destroy(workdir: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--workdir", str(workdir), "--cluster", CLUSTER, "destroy", "--approve", "--approver", "api-test"]
    )
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, claim_sandbox: Callable[[str], None]) -> Iterator[Chain]:
    claim_sandbox(CLUSTER)  # takes down what a killed earlier run left, and the sandbox at the session's end
    workdir = tmp_path_factory.mktemp("apichain")
    try:
        with TestClient(create_app(workdir, token=TOKEN)) as client:
            c = Chain(workdir, client)
            run(c)
            yield c
    finally:
        try:
            if (workdir / CLUSTER / "terraform").is_dir():
                destroy(workdir)
        finally:
            sandbox.down(CLUSTER)


def run(c: Chain) -> None:
    """The chain, as a client script would call it; every answer is kept for the tests."""
    c.answers["generate"] = c.post("/generate-terraform", SPEC)
    assert c.answers["generate"].status_code == 200, c.answers["generate"].text
    c.answers["plan"] = c.post("/generate-terraform-plan")
    assert c.answers["plan"].status_code == 200, c.answers["plan"].text
    manifest = c.answers["plan"].json()["manifest_sha256"]

    before_refusal = c.snapshot()
    c.answers["wrong-hash"] = c.post("/generate-terraform-apply", {"manifest_sha256": "0" * 64, "approver": "ops"})
    c.answers["no-change-after-refusal"] = c.snapshot() == before_refusal

    c.answers["apply-202"] = c.post("/generate-terraform-apply", {"manifest_sha256": manifest, "approver": "ops"},
                                    **{"async": "true"})
    assert c.answers["apply-202"].status_code == 202, c.answers["apply-202"].text
    c.answers["plan-while-applying"] = c.post("/generate-terraform-plan")
    c.answers["apply-job"] = c.wait(c.answers["apply-202"].headers["Location"])
    assert c.answers["apply-job"]["status"] == "succeeded", c.answers["apply-job"]
    c.answers["terraform-before-configure"] = c.ws.terraform_hash()

    settings = {"replica_count": 2, "region": "us-east-1", "max_connections": 150, "shared_buffers": "64MB",
                "image_tag": "15-alpine"}
    c.answers["configure"] = c.post("/apply_ansible_configuration", settings)
    c.answers["scale-without-plan"] = c.post("/apply_ansible_configuration", {**settings, "replica_count": 3})
    c.answers["status"] = c.client.get(f"/clusters/{CLUSTER}", headers=AUTH)


def test_generate_renders_the_local_target(chain: Chain) -> None:
    files = chain.answers["generate"].json()["files"]
    assert 'resource "null_resource" "host"' in files["main.tf"]


def test_the_plan_answers_with_summary_json_and_manifest_hash(chain: Chain) -> None:
    plan = chain.answers["plan"].json()
    assert plan["has_changes"] is True
    assert "3 to add, 0 to change, 0 to destroy" in plan["summary"]
    assert plan["manifest_sha256"] in plan["summary"]
    assert len(plan["plan"]["resource_changes"]) == 3


def test_an_apply_with_another_manifest_is_refused_and_changes_nothing(chain: Chain) -> None:
    answer = chain.answers["wrong-hash"]
    assert answer.status_code == 409 and answer.json()["reason"] == "not-approved"
    assert chain.answers["no-change-after-refusal"]


def test_a_request_for_the_cluster_while_it_applies_is_409(chain: Chain) -> None:
    answer = chain.answers["plan-while-applying"]
    assert answer.status_code == 409 and answer.json()["reason"] == "workspace-busy"


def test_the_apply_job_answers_with_the_outputs_and_a_masked_log(chain: Chain) -> None:
    job = chain.answers["apply-job"]
    outputs = job["result"]["outputs"]
    assert outputs["primary"]["name"] == f"{CLUSTER}-primary"
    assert [r["name"] for r in outputs["replicas"]] == [f"{CLUSTER}-replica-1", f"{CLUSTER}-replica-2"]
    assert any("approved by ops (api)" in line for line in job["log"])
    approval = json.loads(chain.ws.approval_json.read_text())
    assert (approval["approver"], approval["method"]) == ("ops", "api")


def test_configure_answers_with_a_passing_verify_report(chain: Chain) -> None:
    answer = chain.answers["configure"]
    assert answer.status_code == 200, answer.text
    report = answer.json()["report"]
    assert report["ok"] is True and report["failed"] == 0
    assert {r["name"]: r["state"] for r in report["replicas"]} == {
        f"{CLUSTER}-replica-1": "streaming", f"{CLUSTER}-replica-2": "streaming"
    }


def test_the_new_settings_are_in_effect_and_in_spec_json(chain: Chain) -> None:
    body = chain.answers["configure"].json()
    assert body["updated"] == ["max_connections", "shared_buffers"]
    checks = {c["name"]: c for c in body["report"]["checks"] if c["name"] in ("max-connections", "shared-buffers")}
    assert checks["max-connections"]["ok"] and checks["max-connections"]["detail"] == "in effect: 150"
    assert checks["shared-buffers"]["ok"]
    spec = json.loads(chain.ws.spec_json.read_text())
    assert (spec["max_connections"], spec["shared_buffers"]) == (150, "64MB")


def test_the_new_settings_leave_the_rendered_terraform_unchanged(chain: Chain) -> None:
    assert chain.ws.terraform_hash() == chain.answers["terraform-before-configure"]


def test_more_replicas_without_plan_and_apply_is_409(chain: Chain) -> None:
    answer = chain.answers["scale-without-plan"]
    assert answer.status_code == 409 and answer.json()["reason"] == "infrastructure-change"


def test_the_cluster_status_shows_every_stage_done(chain: Chain) -> None:
    view = chain.answers["status"].json()
    states = {name: stage["state"] for name, stage in view["stages"].items()}
    # spec.json changed after the plan (new settings), so the saved plan is stale: applying it would be refused.
    assert states == {"generate": "done", "plan": "stale", "apply": "done", "configure": "done", "verify": "passed"}
    assert view["reports"]["verify"]["ok"] is True and view["job"] is None


def test_no_answer_carries_a_secret(chain: Chain) -> None:
    secrets = [p.read_text().strip() for p in (chain.ws.root / "secrets").iterdir()]
    assert secrets
    texts = [a.text if hasattr(a, "text") else json.dumps(a) for a in chain.answers.values()]
    for secret in secrets:
        assert not any(secret in text for text in texts)
