"""Structure tests on the parsed GitHub Actions workflows: least permissions, actions pinned by commit SHA,
`${{ }}` kept out of shell, no persisted credentials, no terraform wrapper, OIDC, a concurrency group per
cluster, the apply job behind a protected environment, and every `run:` step calling a make target or a pgpipe
command that exists (the Makefile is parsed, pgpipe commands go through the real Click parser)."""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import click
import pytest
import yaml
from click.testing import CliRunner

from pipeline import ci
from pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("plan", "apply", "drift", "ci")
ENVIRONMENT = "production"  # the approval gate; README documents it
SHA_PIN = re.compile(r"^\s*(-\s+)?uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)(\s+#\s*(?P<comment>.*))?$")
VERSION_COMMENT = re.compile(r"^v\d+\.\d+\.\d+$")
WRITE_SCOPES = {"id-token", "pull-requests"}
SPEC_INPUTS = ("instance_type", "replica_count", "region", "postgres_version", "max_connections", "shared_buffers")
# Variables the runner sets for every step: the parser reads some of them as option defaults.
RUNNER_VARS = ("GITHUB_SHA", "GITHUB_REPOSITORY", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_RUN_ID",
               "GITHUB_TOKEN")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {name: load(name) for name in NAMES}


def jobs(workflows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            yield name, job_id, job


def steps(workflows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, job_id, job in jobs(workflows):
        for step in job["steps"]:
            yield f"{name}/{job_id}", step.get("name", step.get("uses", "?")), step


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def job_runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def test_the_four_workflows_exist_with_their_triggers(workflows: dict[str, dict[str, Any]]) -> None:
    assert set(workflows["plan"]["on"]) == {"pull_request"}
    assert set(workflows["apply"]["on"]) == {"push", "workflow_dispatch"}
    assert "schedule" in workflows["drift"]["on"]
    assert {"push", "pull_request"} <= set(workflows["ci"]["on"])


def test_no_workflow_runs_untrusted_code_with_secrets(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        assert "pull_request_target" not in workflow["on"], name
        assert "workflow_run" not in workflow["on"], name


# --- permissions ---------------------------------------------------------------------------------------
def test_every_workflow_grants_read_only_at_the_top(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        permissions = workflow.get("permissions")
        assert isinstance(permissions, dict), f"{name}: top-level permissions must be an explicit mapping"
        assert set(permissions.values()) <= {"read", "none"}, name


def test_jobs_write_only_what_they_need(workflows: dict[str, dict[str, Any]]) -> None:
    for name, job_id, job in jobs(workflows):
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), f"{name}/{job_id}: permissions must be a mapping, not a preset"
        written = {scope for scope, level in permissions.items() if level == "write"}
        assert written <= WRITE_SCOPES, f"{name}/{job_id} writes {written - WRITE_SCOPES}"


def test_only_jobs_that_assume_an_aws_role_get_an_oidc_token(workflows: dict[str, dict[str, Any]]) -> None:
    for name, job_id, job in jobs(workflows):
        assumes = any(uses(s, "aws-actions/configure-aws-credentials") for s in job["steps"])
        assert (job.get("permissions", {}).get("id-token") == "write") == assumes, f"{name}/{job_id}"


def test_aws_access_is_an_oidc_role_never_keys(workflows: dict[str, dict[str, Any]]) -> None:
    found = 0
    for where, _, step in steps(workflows):
        if uses(step, "aws-actions/configure-aws-credentials"):
            found += 1
            given = step.get("with", {})
            assert given.get("role-to-assume"), where
            assert not {"aws-access-key-id", "aws-secret-access-key"} & set(given), where
    assert found >= 4


# --- actions and shell ---------------------------------------------------------------------------------
def test_actions_are_pinned_by_commit_sha_with_the_version_in_a_comment() -> None:
    pins: dict[str, str] = {}
    for name in NAMES:
        for number, line in enumerate((WORKFLOWS / f"{name}.yml").read_text().splitlines(), 1):
            match = SHA_PIN.match(line)
            if not match:
                assert "uses:" not in line, f"{name}.yml:{number}: unparsed uses line"
                continue
            where = f"{name}.yml:{number}"
            assert re.fullmatch(r"[0-9a-f]{40}", match["ref"]), f"{where}: {match['ref']} is not a commit SHA"
            assert VERSION_COMMENT.match(match["comment"] or ""), f"{where}: no `# vX.Y.Z` comment"
            # One action, one pin: two SHAs for the same action would hide an unreviewed upgrade.
            assert pins.setdefault(match["action"], match["ref"]) == match["ref"], where
    assert len(pins) >= 6


def test_expressions_reach_shell_only_through_env(workflows: dict[str, dict[str, Any]]) -> None:
    for where, name, step in steps(workflows):
        assert "${{" not in str(step.get("run", "")), f"{where}: {name}"


def test_secrets_are_given_to_single_steps_only(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        assert "secrets." not in yaml.safe_dump(workflow.get("env", {})), name
        for job_id, job in workflow["jobs"].items():
            assert "secrets." not in yaml.safe_dump(job.get("env", {})), f"{name}/{job_id}"


def test_checkout_never_persists_the_token(workflows: dict[str, dict[str, Any]]) -> None:
    for where, _, step in steps(workflows):
        if uses(step, "actions/checkout"):
            assert step.get("with", {}).get("persist-credentials") is False, where


def test_terraform_is_set_up_without_its_wrapper(workflows: dict[str, dict[str, Any]]) -> None:
    found = 0
    for where, _, step in steps(workflows):
        if uses(step, "hashicorp/setup-terraform"):
            found += 1
            assert step["with"].get("terraform_wrapper") is False, where
    assert found >= 4


def test_every_job_has_a_timeout(workflows: dict[str, dict[str, Any]]) -> None:
    for name, job_id, job in jobs(workflows):
        assert isinstance(job.get("timeout-minutes"), int), f"{name}/{job_id}"


# --- the gate and concurrency --------------------------------------------------------------------------
def changing_jobs(workflows: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Jobs that call the apply or destroy stage, through make or pgpipe (`plan --destroy` only plans)."""
    return [
        (n, j, job)
        for n, j, job in jobs(workflows)
        if any({"apply", "destroy", "demo", "demo-down"} & set(argv) for argv in commands_of(job_runs(job)))
    ]


def test_applying_jobs_wait_in_the_protected_environment(workflows: dict[str, dict[str, Any]]) -> None:
    changing = changing_jobs(workflows)
    assert [(n, j) for n, j, _ in changing] == [("apply", "apply")]
    for name, job_id, job in changing:
        assert job.get("environment") == ENVIRONMENT, f"{name}/{job_id}"


def test_the_readme_names_the_environment_and_what_to_configure() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## GitHub Actions"):]
    for needed in (f"`{ENVIRONMENT}`", "AWS_PLAN_ROLE_ARN", "AWS_APPLY_ROLE_ARN", "SSH_PRIVATE_KEY",
                   "PGPIPE_REPLICATION_PASSWORD", "PGPIPE_ADMIN_PASSWORD", "self-hosted"):
        assert needed in section, needed


def test_jobs_that_touch_a_clusters_state_share_one_group_per_cluster(workflows: dict[str, dict[str, Any]]) -> None:
    groups = {}
    for name, job_id in (("apply", "plan"), ("apply", "apply"), ("drift", "drift")):
        concurrency = workflows[name]["jobs"][job_id]["concurrency"]
        assert concurrency["cancel-in-progress"] is False, f"{name}/{job_id}: never cancel a running apply"
        groups[(name, job_id)] = concurrency["group"]
    assert len(set(groups.values())) == 1, groups
    assert "matrix.cluster.name" in next(iter(groups.values()))


# --- inputs go through the spec model --------------------------------------------------------------------
def test_dispatch_offers_the_issue_inputs(workflows: dict[str, dict[str, Any]]) -> None:
    inputs = workflows["apply"]["on"]["workflow_dispatch"]["inputs"]
    assert inputs["action"]["options"] == ["plan", "apply", "destroy"]
    assert {"cluster", *SPEC_INPUTS} <= set(inputs)


def test_each_spec_input_reaches_an_option_of_generate(workflows: dict[str, dict[str, Any]]) -> None:
    env = workflows["apply"]["env"]
    options = {p.name for p in cli.commands["generate"].params}
    for field in SPEC_INPUTS:
        assert env[f"PGPIPE_GENERATE_{field.upper()}"] == f"${{{{ inputs.{field} }}}}", field
        assert field in options, field


def test_an_invalid_input_fails_generate_with_the_specs_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--workdir", str(tmp_path), "generate", "--spec", str(ROOT / "clusters" / "demo.json")],
        env={"PGPIPE_GENERATE_REPLICA_COUNT": "99"},
    )
    assert result.exit_code == 2 and "replica_count" in result.output


def test_an_empty_input_keeps_the_spec_files_value(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--workdir", str(tmp_path), "generate", "--spec", str(ROOT / "clusters" / "demo.json")],
        env={"PGPIPE_GENERATE_REPLICA_COUNT": "", "PGPIPE_GENERATE_SHARED_BUFFERS": "64MB"},
    )
    assert result.exit_code == 0, result.output
    spec = (tmp_path / "demo" / "spec.json").read_text()
    assert '"replica_count": 2' in spec and '"shared_buffers": "64MB"' in spec


def test_the_plan_artifact_is_named_as_apply_looks_for_it(workflows: dict[str, dict[str, Any]]) -> None:
    cluster, sha = "${{ matrix.cluster.name }}", "${{ github.event.pull_request.head.sha }}"
    assert workflows["plan"]["jobs"]["plan"]["env"]["ARTIFACT"] == ci.plan_artifact_name(cluster, sha)


# --- every run step calls something that exists ----------------------------------------------------------
def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*)\s*:(?!=)", line)
        if match:
            targets.add(match[1])
    return targets


def commands_of(script: str) -> list[list[str]]:
    return [shlex.split(line) for line in script.replace("\\\n", " ").splitlines() if line.strip()]


def pgpipe_commands(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Parse argv exactly as the chained group does, without running anything; returns the command names.
    Shell variables become placeholders; options and commands must exist and take what they are given."""
    for var in [*env, *RUNNER_VARS]:
        monkeypatch.setenv(var, "1")
    args = [re.sub(r"\$\{?\w+\}?", "1", arg) for arg in argv]
    ctx = cli.make_context("pgpipe", args)
    rest = [*ctx._protected_args, *ctx.args]
    names = []
    while rest:
        name, command, rest = cli.resolve_command(ctx, rest)
        assert command is not None and command.name is not None, name
        sub = command.make_context(name or "", rest, parent=ctx, allow_extra_args=True, allow_interspersed_args=False)
        names.append(command.name)
        rest = [*sub._protected_args, *sub.args]
    return names


def run_steps(workflows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            for step in job["steps"]:
                if "run" in step:
                    env = {**workflow.get("env", {}), **job.get("env", {}), **step.get("env", {})}
                    for argv in commands_of(step["run"]):
                        yield f"{name}/{job_id}/{step.get('name')}", argv, env


def test_every_run_step_calls_make_or_pgpipe(workflows: dict[str, dict[str, Any]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    targets = make_targets()
    checked = 0
    for where, argv, env in run_steps(workflows):
        words = argv[1:] if argv[0] == "sudo" else argv
        if words[0] == "make":
            called = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert called and set(called) <= targets, f"{where}: make {called} (targets: {sorted(targets)})"
        else:
            assert Path(words[0]).name == "pgpipe", f"{where}: {argv[0]} is neither make nor pgpipe"
            with monkeypatch.context() as patch:
                assert pgpipe_commands(words[1:], env, patch), where
        checked += 1
    assert checked >= 30


def test_the_parser_used_above_rejects_what_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    for argv in (["--cluster", "x", "pr-comment", "--no-such-option"], ["no-such-command"],
                 ["--cluster", "x", "ssh-rule", "open"]):
        with pytest.raises(click.UsageError):
            pgpipe_commands(argv, {}, monkeypatch)


def test_makefile_recipes_call_pgpipe_commands_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t$(PGPIPE) ") and "$(if" not in line:
            argv = shlex.split(re.sub(r"\$\(\w+\)", "x", line.strip().removeprefix("$(PGPIPE) ")))
            with monkeypatch.context() as patch:
                assert pgpipe_commands(argv, {}, patch), line
            checked += 1
    assert checked >= 8


# --- which clusters a workflow acts on, and its step outputs ---------------------------------------------
def git(repo: Path, *args: str) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str | None]) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "change")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    commit(tmp_path, {
        "clusters/orders.json": '{"name": "orders", "target": "aws"}',
        "clusters/billing-db.json": '{"name": "billing"}',
        "clusters/demo.json": '{"name": "demo", "target": "local"}',
        "pipeline/x.py": "", "templates/terraform/aws/main.tf.j2": "", "README.md": "",
    })
    return tmp_path


def names(found: list[ci.ClusterFile]) -> list[str]:
    return [c.name for c in found]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"clusters/orders.json": '{"name": "orders", "target": "aws", "replica_count": 3}'}, ["orders"]),
        ({"README.md": "docs"}, []),
        ({"templates/terraform/aws/main.tf.j2": "# changed"}, ["billing", "orders"]),
        ({"pipeline/x.py": "# changed"}, ["billing", "demo", "orders"]),
        ({"clusters/orders.json": None}, []),
    ],
)
def test_a_change_touches_the_clusters_it_renders(repo: Path, change: dict[str, str | None],
                                                  expected: list[str]) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, change)
    assert names(ci.select(repo, base=base, head=head)) == expected


def test_clusters_are_named_by_their_spec_not_their_file(repo: Path) -> None:
    found = {c.name: c for c in ci.select(repo, target="aws")}
    assert found["billing"].as_dict() == {"name": "billing", "spec": "clusters/billing-db.json", "target": "aws"}
    assert "demo" not in found


def test_a_named_cluster_must_exist_with_that_target(repo: Path) -> None:
    assert names(ci.select(repo, only=["billing"], target="aws")) == ["billing"]
    for wrong in (["nope"], ["demo"], ["orders; rm -rf /"]):
        with pytest.raises(ci.PgpipeError, match="no cluster"):
            ci.select(repo, only=wrong, target="aws")


def test_a_new_branch_without_a_base_takes_every_cluster(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert names(ci.select(repo, base="0" * 40, head=head, target="aws")) == ["billing", "orders"]


def test_step_outputs_use_a_delimiter_no_value_can_forge(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    ci.set_output("clusters", '[{"name": "orders"}]\nEOF\nforged=true', str(out))
    lines = out.read_text().splitlines()
    delimiter = lines[0].split("<<", 1)[1]
    assert lines[0] == f"clusters<<{delimiter}" and lines[-1] == delimiter and len(delimiter) >= 32
    assert "forged=true" in lines[1:-1]


def test_the_step_summary_is_cut_below_githubs_limit(tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    ci.append_step_summary("| row |\n" * 300_000, str(out))
    assert len(out.read_bytes()) <= ci.STEP_SUMMARY_LIMIT and "(cut:" in out.read_text()


# --- finding the merged pull request's plan (GitHub REST on a loopback stand-in) ----------------------------
class PullsAndArtifacts(BaseHTTPRequestHandler):
    """/commits/<sha>/pulls and /actions/artifacts?name=, as GitHub's REST API answers them."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/repos/o/r/commits/merge111/pulls":
            data: Any = [{"number": 3, "merged_at": None, "merge_commit_sha": "other", "head": {"sha": "x"}},
                         {"number": 7, "merged_at": "2026-01-01T00:00:00Z", "merge_commit_sha": "merge111",
                          "head": {"sha": "head777"}}]
        elif url.path.startswith("/repos/o/r/commits/"):
            data = []
        elif url.path == "/repos/o/r/actions/artifacts":
            name = parse_qs(url.query)["name"][0]
            runs = [(11, "2026-01-01T10:00:00Z", False), (12, "2026-01-02T10:00:00Z", False),
                    (13, "2026-01-03T10:00:00Z", True)]
            found = [{"name": name, "expired": expired, "created_at": at, "workflow_run": {"id": run}}
                     for run, at, expired in runs] if name == "plan-orders-head777" else []
            data = {"total_count": len(found), "artifacts": found}
        else:
            self.send_error(404)
            return
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def rest() -> Iterator[ci.GitHubClient]:
    server = HTTPServer(("127.0.0.1", 0), PullsAndArtifacts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ci.GitHubClient("o/r", "ghs_test_token_123", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


def test_the_newest_live_plan_of_the_merged_pull_request_is_found(rest: ci.GitHubClient) -> None:
    assert ci.find_pr_plan(rest, "orders", "merge111") == {
        "found": "true", "name": "plan-orders-head777", "run_id": "12", "pr": "7", "head_sha": "head777"
    }


def test_a_cluster_the_pull_request_did_not_plan_is_planned_again(rest: ci.GitHubClient) -> None:
    assert ci.find_pr_plan(rest, "billing", "merge111")["found"] == "false"


def test_a_direct_push_has_no_pull_request_plan(rest: ci.GitHubClient) -> None:
    assert ci.find_pr_plan(rest, "orders", "direct222") == {"found": "false"}
