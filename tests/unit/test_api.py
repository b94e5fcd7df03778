"""The HTTP API in-process (no terraform, no hosts): auth, 422 naming each bad field, 409 for a refused gate and
for a busy cluster with the workspace left intact, the async job flow, and no stack trace or secret in any
answer. The stages that run terraform and the role over HTTP are in tests/integration/test_api_chain.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline import api, redact
from pipeline.api import check_bind, create_app, settings_update
from pipeline.errors import PgpipeError
from pipeline.spec import parse_spec
from pipeline.stages.generate import render_terraform
from pipeline.workspace import Workspace

TOKEN = "unit-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOCAL = {"instance_type": "t3.medium", "replica_count": 2, "region": "us-east-1", "target": "local"}
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvTbsGkZ2cIq1zH0Fh2bqVYyO0l0u8V2G7aQ9yY0mB2 ops@example"
ENDPOINTS = [
    ("POST", "/generate-terraform"),
    ("POST", "/generate-terraform-plan"),
    ("POST", "/generate-terraform-apply"),
    ("POST", "/apply_ansible_configuration"),
    ("GET", "/clusters/default"),
    ("GET", "/jobs/" + "0" * 32),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def client(workdir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(workdir, token=TOKEN)) as test_client:
        yield test_client


def generate(client: TestClient, cluster: str = "c1", **fields: Any) -> Any:
    return client.post("/generate-terraform", params={"cluster": cluster}, json={**LOCAL, **fields}, headers=AUTH)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def wait_for(client: TestClient, job_url: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = client.get(job_url, headers=AUTH).json()
        if view["status"] in ("succeeded", "failed"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"{job_url} did not finish")


def fields_of(answer: Any) -> set[str]:
    return {entry["field"] for entry in answer.json()["errors"]}


# --- auth ---------------------------------------------------------------------------------------------------
def test_health_needs_no_token(client: TestClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_token_is_401_and_touches_nothing(client: TestClient, workdir: Path, method: str, path: str) -> None:
    answer = client.request(method, path, json=LOCAL)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not workdir.exists()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_wrong_token_is_403(client: TestClient, method: str, path: str) -> None:
    answer = client.request(method, path, json=LOCAL, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
    assert answer.status_code == 403 and answer.json()["reason"] == "forbidden"


def test_the_token_is_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr("pipeline.api.hmac.compare_digest", spy)
    assert client.get("/clusters/c1", headers=AUTH).status_code == 404
    assert seen == [(TOKEN.encode(), TOKEN.encode())]


# --- generate and 422 ---------------------------------------------------------------------------------------
def test_generate_writes_the_validated_spec_and_terraform(client: TestClient, workdir: Path) -> None:
    answer = generate(client)
    assert answer.status_code == 200, answer.text
    ws = Workspace.for_cluster("c1", workdir)
    assert ws.spec_json.read_text() == parse_spec({**LOCAL, "name": "c1"}).to_json()
    assert answer.json()["files"] == {p.name: p.read_text() for p in ws.rendered_files()}
    assert answer.json()["terraform_sha256"] == ws.terraform_hash()


@pytest.mark.parametrize(
    ("params", "body_name", "cluster"),
    [({}, None, "default"), ({}, "frombody", "frombody"), ({"cluster": "fromquery"}, None, "fromquery")],
)
def test_the_cluster_comes_from_the_query_or_the_body_name(
    client: TestClient, params: dict[str, str], body_name: str | None, cluster: str
) -> None:
    body = {**LOCAL, **({"name": body_name} if body_name else {})}
    answer = client.post("/generate-terraform", params=params, json=body, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["cluster"] == cluster


def test_two_different_names_are_422(client: TestClient) -> None:
    answer = client.post("/generate-terraform", params={"cluster": "a"}, json={**LOCAL, "name": "b"}, headers=AUTH)
    assert answer.status_code == 422 and fields_of(answer) == {"name"}


def test_an_invalid_spec_is_422_with_one_entry_per_bad_field(client: TestClient, workdir: Path) -> None:
    body = {"instance_type": "huge", "replica_count": 99, "region": "mars-1", "shared_buffers": "lots",
            "image_tag": "99-alpine", "target": "moon"}
    answer = client.post("/generate-terraform", json=body, headers=AUTH)
    assert answer.status_code == 422
    errors = {e["field"]: e for e in answer.json()["errors"]}
    assert set(errors) == {"instance_type", "replica_count", "region", "shared_buffers", "image_tag", "target"}
    for field, entry in errors.items():
        assert entry["value"] == body[field] and entry["allowed"] and entry["message"], entry
    assert errors["replica_count"]["allowed"] == "an integer from 0 to 15"
    assert errors["target"]["allowed"] == "one of: aws, local"
    assert not workdir.exists()


def test_the_original_three_fields_are_required(client: TestClient) -> None:
    answer = client.post("/generate-terraform", json={"target": "local"}, headers=AUTH)
    assert answer.status_code == 422
    assert fields_of(answer) == {"instance_type", "replica_count", "region"}


@pytest.mark.parametrize("body", [[1, 2], "text", 3])
def test_a_body_that_is_not_an_object_is_422(client: TestClient, body: Any) -> None:
    answer = client.post("/generate-terraform", json=body, headers=AUTH)
    assert answer.status_code == 422 and fields_of(answer) == {"body"}


def test_malformed_json_is_422(client: TestClient) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    answer = client.post("/generate-terraform-apply", content=b"{nope", headers=headers)
    assert answer.status_code == 422 and fields_of(answer) == {"body"}


@pytest.mark.parametrize("name", ["../escape", "UPPER", "a_b", "-a", "x" * 33])
def test_bad_cluster_names_never_reach_the_disk(client: TestClient, tmp_path: Path, name: str) -> None:
    before = snapshot(tmp_path)
    for method, path, params in [
        ("POST", "/generate-terraform-plan", {"cluster": name}),
        ("POST", "/generate-terraform", {"cluster": name}),
        ("GET", f"/clusters/{name}", {}),
    ]:
        answer = client.request(method, path, params=params, json=LOCAL, headers=AUTH)
        assert answer.status_code in (404, 422), (path, answer.text)  # 404: a name with '/' is another path
    assert snapshot(tmp_path) == before


def test_a_server_path_is_not_read_as_an_ssh_key(client: TestClient, tmp_path: Path) -> None:
    key_file = tmp_path / "id.pub"
    key_file.write_text(SSH_KEY + "\n")
    answer = client.post(
        "/generate-terraform", json={**LOCAL, "target": "aws", "ssh_public_key": str(key_file)}, headers=AUTH
    )
    assert answer.status_code == 422 and fields_of(answer) == {"ssh_public_key"}


def test_a_private_key_is_never_echoed(client: TestClient) -> None:
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
    private = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----"
    answer = client.post("/generate-terraform", json={**LOCAL, "target": "aws", "ssh_public_key": private},
                         headers=AUTH)
    assert answer.status_code == 422
    assert body not in answer.text


def test_a_registered_secret_never_appears_in_an_answer(client: TestClient) -> None:
    redact.register("s3cr3t-replication-password")
    answer = client.post("/generate-terraform", json={**LOCAL, "instance_type": "s3cr3t-replication-password"},
                         headers=AUTH)
    assert answer.status_code == 422
    assert "s3cr3t-replication-password" not in answer.text and "***" in answer.text
    assert TOKEN not in client.post("/generate-terraform", json={**LOCAL, "region": TOKEN}, headers=AUTH).text


@pytest.mark.parametrize(
    ("path", "body"),
    [("/generate-terraform-plan", None), ("/generate-terraform-apply", {"manifest_sha256": "a" * 64, "approver": "a"}),
     ("/apply_ansible_configuration", {})],
)
def test_a_cluster_never_generated_is_409_and_leaves_no_folder(
    client: TestClient, workdir: Path, path: str, body: Any
) -> None:
    answer = client.post(path, params={"cluster": "ghost"}, json=body, headers=AUTH)
    assert answer.status_code == 409 and answer.json()["reason"] == "spec-missing"
    assert not (workdir / "ghost").exists()


# --- the gate -----------------------------------------------------------------------------------------------
def test_apply_without_a_plan_is_refused_with_409(client: TestClient, workdir: Path) -> None:
    generate(client)
    answer = client.post("/generate-terraform-apply", params={"cluster": "c1"},
                         json={"manifest_sha256": "a" * 64, "approver": "alice"}, headers=AUTH)
    assert answer.status_code == 409
    assert answer.json()["reason"] == "plan-missing"
    assert str(workdir) not in answer.text
    ws = Workspace.for_cluster("c1", workdir)
    assert not ws.approval_json.exists() and not ws.outputs_json.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"manifest_sha256": "abc", "approver": "alice"}, "manifest_sha256"),
        ({"manifest_sha256": "a" * 64, "approver": "   "}, "approver"),
        ({"manifest_sha256": "a" * 64, "approver": "eve\nforged log line"}, "approver"),
        ({"manifest_sha256": "a" * 64}, "approver"),
        ({"approver": "alice"}, "manifest_sha256"),
        ({"manifest_sha256": "a" * 64, "approver": "alice", "force": True}, "force"),
    ],
)
def test_apply_needs_the_manifest_hash_and_an_approver(client: TestClient, body: dict[str, Any], field: str) -> None:
    generate(client)
    answer = client.post("/generate-terraform-apply", params={"cluster": "c1"}, json=body, headers=AUTH)
    assert answer.status_code == 422 and fields_of(answer) == {field}


# --- one job per cluster, intact workspaces ---------------------------------------------------------------
def test_a_stage_running_in_another_process_is_409_and_the_workspace_is_intact(
    client: TestClient, workdir: Path
) -> None:
    generate(client)
    ws = Workspace.for_cluster("c1", workdir)
    before = snapshot(ws.root)
    with ws.lock():  # what `pgpipe plan` in another shell holds
        answers = [
            generate(client, replica_count=5),
            client.post("/generate-terraform-plan", params={"cluster": "c1"}, headers=AUTH),
            client.post("/apply_ansible_configuration", params={"cluster": "c1"}, json={}, headers=AUTH),
        ]
    for answer in answers[:2]:
        assert answer.status_code == 409 and answer.json()["reason"] == "workspace-busy"
    assert answers[2].status_code == 409  # outputs-missing is found before the lock is even tried
    assert snapshot(ws.root) == before


def test_a_second_request_while_a_job_runs_is_409(
    client: TestClient, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_generate = api.run_generate

    def held_generate(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)  # keeps each job running, its cluster's lock taken, until the requests are made
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(api, "run_generate", held_generate)
    try:
        first = client.post("/generate-terraform", params={"cluster": "c1", "async": "true"}, json=LOCAL,
                            headers=AUTH)
        assert first.status_code == 202
        second = generate(client, replica_count=5)
        other_cluster = client.post("/generate-terraform", params={"cluster": "c2", "async": "true"}, json=LOCAL,
                                    headers=AUTH)
        status = client.get("/clusters/c1", headers=AUTH)
    finally:
        release.set()
    assert second.status_code == 409 and second.json()["reason"] == "workspace-busy"
    assert first.json()["job_id"] in second.json()["message"]
    assert other_cluster.status_code == 202
    assert status.json()["job"] == first.json()["job_id"]
    assert wait_for(client, first.headers["Location"])["status"] == "succeeded"
    assert wait_for(client, other_cluster.headers["Location"])["status"] == "succeeded"
    spec = json.loads(Workspace.for_cluster("c1", workdir).spec_json.read_text())
    assert spec["replica_count"] == LOCAL["replica_count"]


def test_concurrent_requests_leave_one_whole_spec_and_its_terraform(client: TestClient, workdir: Path) -> None:
    answers: dict[int, int] = {}
    barrier = threading.Barrier(6)

    def post(replicas: int) -> None:
        barrier.wait()
        answers[replicas] = generate(client, replica_count=replicas).status_code

    threads = [threading.Thread(target=post, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(answers.values()) <= {200, 409} and 200 in answers.values()
    ws = Workspace.for_cluster("c1", workdir)
    spec = parse_spec(json.loads(ws.spec_json.read_text()))
    assert answers[spec.replica_count] == 200
    assert {p.name: p.read_text() for p in ws.rendered_files()} == render_terraform(spec)


# --- async jobs ---------------------------------------------------------------------------------------------
def test_an_async_request_answers_202_and_the_job_tells_the_result_and_log(client: TestClient) -> None:
    answer = client.post("/generate-terraform", params={"cluster": "c1", "async": "true"}, json=LOCAL, headers=AUTH)
    assert answer.status_code == 202
    assert answer.headers["Location"] == answer.json()["url"] == f"/jobs/{answer.json()['job_id']}"
    view = wait_for(client, answer.headers["Location"])
    assert view["status"] == "succeeded" and view["status_code"] == 200
    assert view["result"]["cluster"] == "c1" and "main.tf" in view["result"]["files"]
    assert any("generated 5 files for cluster c1" in line for line in view["log"])
    later = client.get(answer.headers["Location"], params={"offset": view["next_offset"]}, headers=AUTH).json()
    assert later["log"] == []


def test_an_async_refused_gate_ends_as_a_failed_job_with_409(client: TestClient) -> None:
    generate(client)
    answer = client.post("/generate-terraform-apply", params={"cluster": "c1", "async": "true"},
                         json={"manifest_sha256": "a" * 64, "approver": "alice"}, headers=AUTH)
    assert answer.status_code == 202
    view = wait_for(client, answer.headers["Location"])
    assert view["status"] == "failed" and view["status_code"] == 409
    assert view["error"]["reason"] == "plan-missing" and view["result"] is None


def test_an_unknown_job_is_404(client: TestClient) -> None:
    answer = client.get("/jobs/" + "f" * 32, headers=AUTH)
    assert answer.status_code == 404 and answer.json()["reason"] == "not-found"


# --- unexpected failures ------------------------------------------------------------------------------------
def test_an_unexpected_error_is_a_generic_500_without_trace_or_secret(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    redact.register("pa55word-in-a-frame")

    def broken(*_: Any) -> None:
        import logging

        logging.getLogger("pipeline.stages.generate").info("using pa55word-in-a-frame")
        raise RuntimeError("boom with pa55word-in-a-frame")

    monkeypatch.setattr("pipeline.api.run_generate", broken)
    answer = generate(client)
    assert answer.status_code == 500
    assert answer.json()["reason"] == "internal-error"
    assert "boom" not in answer.text and "Traceback" not in answer.text and "pa55word" not in answer.text
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    incident = answer.json()["message"].split("incident ")[1].rstrip(")")
    assert any(incident in r.getMessage() for r in caplog.records if r.levelname == "ERROR")

    job = client.post("/generate-terraform", params={"cluster": "c2", "async": "true"}, json=LOCAL, headers=AUTH)
    view = wait_for(client, job.headers["Location"])
    assert view["status_code"] == 500 and "pa55word" not in json.dumps(view)
    assert any("using ***" in line for line in view["log"])


# --- configure: PostgreSQL settings only -----------------------------------------------------------------
def applied(client: TestClient, workdir: Path, replicas: int = 2) -> Workspace:
    """A generated cluster with the outputs an apply writes (configure reads only those)."""
    generate(client, replica_count=replicas)
    ws = Workspace.for_cluster("c1", workdir)
    host = {"public_ip": None, "data_device": None}
    ws.write_json(ws.outputs_json, {
        "primary": {"name": "c1-primary", "private_ip": "198.18.0.10", **host},
        "replicas": [{"name": f"c1-replica-{i}", "private_ip": f"198.18.0.{10 + i}", **host}
                     for i in range(1, replicas + 1)],
        "ssh_user": "root",
    })
    return ws


def test_configure_before_apply_is_409(client: TestClient) -> None:
    generate(client)
    answer = client.post("/apply_ansible_configuration", params={"cluster": "c1"}, json={}, headers=AUTH)
    assert answer.status_code == 409 and answer.json()["reason"] == "outputs-missing"


@pytest.mark.parametrize("change", [{"replica_count": 3}, {"replica_count": 0}, {"region": "eu-west-1"}])
def test_configure_refuses_other_hosts_than_applied(client: TestClient, workdir: Path, change: dict[str, Any]) -> None:
    ws = applied(client, workdir)
    before = snapshot(ws.root)
    answer = client.post("/apply_ansible_configuration", params={"cluster": "c1"},
                         json={"max_connections": 200, **change}, headers=AUTH)
    assert answer.status_code == 409 and answer.json()["reason"] == "infrastructure-change"
    assert "/generate-terraform-plan" in answer.json()["message"]
    assert snapshot(ws.root) == before


def test_configure_refuses_a_spec_json_that_was_not_applied(client: TestClient, workdir: Path) -> None:
    applied(client, workdir)
    generate(client, replica_count=3)  # regenerated, not planned nor applied
    answer = client.post("/apply_ansible_configuration", params={"cluster": "c1"}, json={}, headers=AUTH)
    assert answer.status_code == 409 and "3 replica(s) but 2 are applied" in answer.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"shared_buffers": "lots"}, "shared_buffers"), ({"max_connections": 5}, "max_connections"),
     ({"image_tag": "9.6"}, "image_tag"), ({"max_connections": "many"}, "max_connections"),
     ({"wal_level": "minimal"}, "wal_level")],
)
def test_configure_validates_settings_with_the_spec_model(
    client: TestClient, workdir: Path, body: dict[str, Any], field: str
) -> None:
    applied(client, workdir)
    answer = client.post("/apply_ansible_configuration", params={"cluster": "c1"}, json=body, headers=AUTH)
    assert answer.status_code == 422 and fields_of(answer) == {field}


@pytest.mark.parametrize("target", ["local", "aws"])
def test_postgres_settings_leave_the_rendered_terraform_unchanged(target: str) -> None:
    current = parse_spec({**LOCAL, "name": "c1", "target": target, "ssh_public_key": SSH_KEY})
    outputs = {"primary": {}, "replicas": [{}, {}]}
    given = {"max_connections": 300, "shared_buffers": "256MB", "image_tag": "15-alpine", "replica_count": 2,
             "region": "us-east-1"}
    spec, updated = settings_update(current, outputs, given)
    assert updated == ["max_connections", "shared_buffers"]
    assert (spec.postgres_version, spec.max_connections, spec.shared_buffers) == (15, 300, "256MB")
    assert render_terraform(spec) == render_terraform(current)


def test_a_major_version_change_on_a_running_cluster_is_refused() -> None:
    current = parse_spec({**LOCAL, "name": "c1"})
    with pytest.raises(PgpipeError) as err:
        settings_update(current, {"replicas": [{}, {}]}, {"image_tag": "16-alpine"})
    assert err.value.reason == "version-change" and "not done in place" in str(err.value)


def test_the_same_settings_update_nothing() -> None:
    current = parse_spec({**LOCAL, "name": "c1"})
    spec, updated = settings_update(current, {"replicas": [{}, {}]}, {"max_connections": 100, "image_tag": "15"})
    assert updated == [] and spec.to_json() == current.to_json()


# --- cluster status -------------------------------------------------------------------------------------------
def test_cluster_status_tells_the_stages_from_the_artifacts(client: TestClient) -> None:
    assert client.get("/clusters/c1", headers=AUTH).status_code == 404
    generate(client)
    view = client.get("/clusters/c1", headers=AUTH).json()
    assert view["spec"]["name"] == "c1" and view["job"] is None
    assert {k: v["state"] for k, v in view["stages"].items()} == {
        "generate": "done", "plan": "missing", "apply": "missing", "configure": "missing", "verify": "missing"
    }


# --- serving ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_may_serve_without_a_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "198.18.0.1", "example.internal"])
def test_any_other_address_needs_a_token(host: str) -> None:
    with pytest.raises(PgpipeError) as refused:
        check_bind(host, None)
    assert refused.value.reason == "token-required"
    check_bind(host, TOKEN)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(PgpipeError, match="too short"):
        check_bind("127.0.0.1", "short")


def test_serve_refuses_a_public_address_without_a_token(pgpipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.delenv("PGPIPE_API_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without a token" in result.output


def test_pgpipe_help_does_not_import_fastapi() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom pipeline.cli import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(cli, ['serve', '--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_original_three_field_body_works_with_the_servers_defaults(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aws cluster needs an SSH key: the operator gives it once in the server's environment."""
    body = {"instance_type": "t3.medium", "replica_count": 2, "region": "eu-west-1"}
    refused = client.post("/generate-terraform", params={"cluster": "orig"}, json=body, headers=AUTH)
    assert refused.status_code == 422 and fields_of(refused) == {"ssh_public_key"}
    monkeypatch.setenv("PGPIPE_SPEC_SSH_PUBLIC_KEY", SSH_KEY)
    monkeypatch.setenv("PGPIPE_SPEC_ADMIN_CIDRS", '["203.0.113.0/24"]')
    answer = client.post("/generate-terraform", params={"cluster": "orig"}, json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["spec"]["admin_cidrs"] == ["203.0.113.0/24"]
    assert answer.json()["spec"]["region"] == "eu-west-1"
