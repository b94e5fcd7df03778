"""The apply gate with the real terraform binary on the local target: every tampering is refused with its
reason and a non-zero exit, before terraform touches state or makes a host. (The cases that need an applied
cluster, state changed and the primary destroyed, are in test_pipeline.py.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CLUSTER = "gate"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir holding a generated and planned (never applied) local cluster."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    workdir = tmp_path_factory.mktemp("planned")
    spec = json.loads((ROOT / "clusters" / "demo.json").read_text()) | {"name": CLUSTER}
    (workdir / "gate.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(
        cli,
        ["--workdir", str(workdir), "generate", "--spec", str(workdir / "gate.json"), "plan"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return workdir


@pytest.fixture
def ws(planned: Path, tmp_path: Path) -> Path:
    """A private copy of the planned workspace to tamper with."""
    copy = tmp_path / "wd"
    shutil.copytree(planned, copy, symlinks=True)
    return copy / CLUSTER


def apply(pgpipe: Callable[..., Result], ws: Path, *extra: str) -> Result:
    return pgpipe("--cluster", CLUSTER, "apply", *extra, workdir=ws.parent)


def assert_refused(result: Result, reason: str, ws: Path) -> None:
    assert result.exit_code == 1, result.output
    assert f"apply failed [{reason}]" in result.output
    assert not (ws / "terraform" / "terraform.tfstate").exists(), "state must be untouched"
    assert not (ws / "outputs.json").exists()


APPROVE = ("--approve", "--approver", "alice")


def test_no_plan_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    shutil.rmtree(ws / "plan")
    assert_refused(apply(pgpipe, ws, *APPROVE), "plan-missing", ws)


def test_an_edited_plan_file_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    with (ws / "plan" / "plan.tfplan").open("ab") as handle:
        handle.write(b"\0")
    assert_refused(apply(pgpipe, ws, *APPROVE), "plan-changed", ws)


def test_an_edited_plan_json_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    path = ws / "plan" / "plan.json"
    path.write_text(path.read_text().replace("demo", "dem0", 1) + " ")
    assert_refused(apply(pgpipe, ws, *APPROVE), "plan-changed", ws)


def test_a_rendered_tf_file_edited_after_plan_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    with (ws / "terraform" / "main.tf").open("a") as handle:
        handle.write('\nresource "null_resource" "extra" {}\n')
    assert_refused(apply(pgpipe, ws, *APPROVE), "config-changed", ws)


def test_a_new_tf_file_after_plan_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    (ws / "terraform" / "override.tf").write_text('resource "null_resource" "x" {}\n')
    assert_refused(apply(pgpipe, ws, *APPROVE), "config-changed", ws)


def test_a_spec_changed_after_plan_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    spec = json.loads((ws / "spec.json").read_text())
    spec["replica_count"] = 3
    (ws / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    assert_refused(apply(pgpipe, ws, *APPROVE), "config-changed", ws)


def test_a_spec_made_invalid_after_plan_is_refused_as_changed(pgpipe: Callable[..., Result], ws: Path) -> None:
    (ws / "spec.json").write_text('{"name": "gate", "replica_count": 99}\n')
    assert_refused(apply(pgpipe, ws, *APPROVE), "config-changed", ws)


def test_no_approval_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    assert_refused(apply(pgpipe, ws), "not-approved", ws)


def test_an_approval_typed_wrong_is_refused(
    pgpipe: Callable[..., Result], ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.cli.interactive", lambda: True)
    result = pgpipe("--cluster", CLUSTER, "apply", workdir=ws.parent, input="not-the-name\n")
    assert "3 to add, 0 to change, 0 to destroy" in result.stderr, "the summary is shown before asking"
    assert_refused(result, "not-approved", ws)


def test_an_approval_for_another_manifest_is_refused(pgpipe: Callable[..., Result], ws: Path) -> None:
    assert_refused(apply(pgpipe, ws, *APPROVE, "--manifest", "0" * 64), "not-approved", ws)


def test_approve_without_an_approver_is_a_usage_error(pgpipe: Callable[..., Result], ws: Path) -> None:
    result = apply(pgpipe, ws, "--approve")
    assert result.exit_code == 2 and "--approver" in result.output


def test_plan_is_deterministic_and_reports_changes_with_detailed_exitcode(
    pgpipe: Callable[..., Result], ws: Path
) -> None:
    before = {p.name: p.read_bytes() for p in (ws / "terraform").glob("*.tf")}
    result = pgpipe("generate", "--spec", str(ws / "spec.json"), "plan", "--detailed-exitcode", workdir=ws.parent)
    assert result.exit_code == 2, result.output
    assert result.stdout.strip().endswith("plan/plan.json")
    assert before == {p.name: p.read_bytes() for p in (ws / "terraform").glob("*.tf")}


def test_a_relative_workdir_plans_from_any_folder(
    pgpipe: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """terraform runs in the workspace's terraform/ folder: relative paths must not leak into its config."""
    monkeypatch.chdir(tmp_path)
    spec = json.loads((ROOT / "clusters" / "demo.json").read_text()) | {"name": "relative"}
    (tmp_path / "relative.json").write_text(json.dumps(spec))
    result = pgpipe("generate", "--spec", "relative.json", "plan", workdir=Path("rel-wd"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rel-wd" / "relative" / "plan" / "manifest.json").is_file()
