"""`pgpipe plan-check` with the real terraform binary on the local target, as apply.yml uses it: a plan made in
one job (the pull request's) is carried as an artifact into a fresh workspace regenerated from the merged spec,
and is reused only when it still matches; any change sends the workflow to plan again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CLUSTER = "handoff"


def pgpipe(workdir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--workdir", str(workdir), *args], catch_exceptions=False)


def spec_file(folder: Path, **changes: object) -> Path:
    spec = json.loads((ROOT / "clusters" / "demo.json").read_text()) | {"name": CLUSTER, **changes}
    path = folder / f"{CLUSTER}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What plan.yml uploads: plan/ and the provider lock file of a generated and planned cluster."""
    made = tmp_path_factory.mktemp("pr-job")
    result = pgpipe(made, "generate", "--spec", str(spec_file(made)), "plan")
    assert result.exit_code == 0, result.output
    upload = tmp_path_factory.mktemp("artifact")
    shutil.copytree(made / CLUSTER / "plan", upload / "plan")
    (upload / "terraform").mkdir()
    shutil.copy2(made / CLUSTER / "terraform" / ".terraform.lock.hcl", upload / "terraform")
    return upload


def apply_job(tmp_path: Path, artifact: Path, **changes: object) -> Path:
    """A new job: generate from the (merged) spec, then download the artifact into the workspace."""
    result = pgpipe(tmp_path, "generate", "--spec", str(spec_file(tmp_path, **changes)))
    assert result.exit_code == 0, result.output
    shutil.copytree(artifact, tmp_path / CLUSTER, dirs_exist_ok=True)
    return tmp_path


def test_the_pull_requests_plan_still_matches_in_a_fresh_job(tmp_path: Path, artifact: Path) -> None:
    result = pgpipe(apply_job(tmp_path, artifact), "--cluster", CLUSTER, "plan-check")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matches"] is True


def test_a_spec_changed_by_the_merge_needs_a_new_plan(tmp_path: Path, artifact: Path) -> None:
    result = pgpipe(apply_job(tmp_path, artifact, replica_count=1), "--cluster", CLUSTER, "plan-check")
    assert result.exit_code == 1 and "plan-check failed [config-changed]" in result.output


def test_a_tampered_plan_file_needs_a_new_plan(tmp_path: Path, artifact: Path) -> None:
    workdir = apply_job(tmp_path, artifact)
    with (workdir / CLUSTER / "plan" / "plan.tfplan").open("ab") as handle:
        handle.write(b"\0")
    result = pgpipe(workdir, "--cluster", CLUSTER, "plan-check")
    assert result.exit_code == 1 and "plan-check failed [plan-changed]" in result.output


def test_no_artifact_means_no_plan(tmp_path: Path) -> None:
    pgpipe(tmp_path, "generate", "--spec", str(spec_file(tmp_path)))
    result = pgpipe(tmp_path, "--cluster", CLUSTER, "plan-check")
    assert result.exit_code == 1 and "plan-check failed [plan-missing]" in result.output
