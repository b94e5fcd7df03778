"""The rendered AWS Terraform against the real tools that run here: `terraform fmt -check` and `terraform console`
(terraform 1.0.3; `validate` needs the AWS provider, which is not available offline), and checkov, offline, with
zero failures beyond the waivers of checkov/waivers.yaml for 0, 2 and 15 replicas and both access modes."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.checks import CheckovReport, find_checkov, load_waivers, parse_hcl, run_checkov
from pipeline.paths import PROJECT_ROOT
from pipeline.proc import run
from pipeline.spec import ClusterSpec, parse_spec
from pipeline.stages.generate import generate
from pipeline.terraform import find_binary
from pipeline.workspace import Workspace

pytestmark = pytest.mark.integration

EXAMPLE = json.loads((PROJECT_ROOT / "examples" / "aws.json").read_text())
PRIVATE = {
    "access": "private",
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}
VARIANTS: dict[str, dict[str, Any]] = {
    "public-0": {"replica_count": 0},
    "public-2": {"replica_count": 2},
    "public-15": {"replica_count": 15},
    "private-0": {**PRIVATE, "replica_count": 0},
    "private-2": {
        **PRIVATE,
        "replica_count": 2,
        "backend": {"type": "s3", "bucket": "example-pgpipe-state", "region": "eu-west-1", "use_lockfile": True},
    },
    "private-15": {**PRIVATE, "replica_count": 15, "admin_cidrs": [], "client_cidrs": []},
}


def aws_spec(**overrides: Any) -> ClusterSpec:
    return parse_spec({**EXAMPLE, **overrides})


def terraform_env() -> dict[str, str]:
    # This machine points TF_CLI_CONFIG_FILE at a missing file; fmt and console need no CLI config at all.
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant generated into its own workspace: name -> terraform/ folder."""
    root = tmp_path_factory.mktemp("aws-static")
    folders = {}
    for name, overrides in VARIANTS.items():
        ws = Workspace(root / name)
        generate(aws_spec(name=f"orders-{name}", **overrides), ws)
        folders[name] = ws.terraform_dir
    return folders


@pytest.fixture(scope="module")
def checkov() -> str:
    binary = find_checkov()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("checkov is required in CI: run `make setup` (it installs .venv-checkov)")
        pytest.skip("checkov is not installed (make setup installs it into .venv-checkov); CI would fail here")
    return binary


@pytest.fixture(scope="module")
def reports(rendered: dict[str, Path], checkov: str) -> dict[str, CheckovReport]:
    return {name: run_checkov(folder, checkov) for name, folder in rendered.items()}


# --- terraform fmt ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_files_are_terraform_fmt_clean(variant: str, rendered: dict[str, Path]) -> None:
    result = run(
        [find_binary(), "fmt", "-check", "-diff", "-list=true", str(rendered[variant])],
        timeout=60,
        ok_codes=range(256),
        env=terraform_env(),
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_fmt_check_can_fail(tmp_path: Path, rendered: dict[str, Path]) -> None:
    """A misaligned file is caught: the check above is not vacuous."""
    text = (
        (rendered["public-2"] / "versions.tf")
        .read_text()
        .replace('source  = "hashicorp/aws"', 'source = "hashicorp/aws"')
    )
    (tmp_path / "versions.tf").write_text(text)
    result = run([find_binary(), "fmt", "-check", str(tmp_path)], timeout=60, ok_codes=range(256), env=terraform_env())
    assert result.returncode != 0


# --- zones, evaluated by terraform itself ------------------------------------------------------------------
def host_zones(terraform_dir: Path, zone_names: list[str], scratch: Path) -> dict[str, str]:
    """Which zone each host lands in, computed by `terraform console` from the rendered module's own
    expressions: its network locals and its subnets' count and zone, with the zone list as an input."""
    main = parse_hcl(terraform_dir / "main.tf")
    locals_ = {
        k: v for block in main["locals"] for k, v in block.items() if k in ("zones", "zone_count", "host_subnet_id")
    }
    subnet = next(b["aws_subnet"]["public"] for b in main["resource"] if "aws_subnet" in b)

    def expr(value: str) -> str:
        inner = value.removeprefix("${").removesuffix("}")
        inner = inner.replace("data.aws_availability_zones.pinned.names", "var.pinned_zone_names")
        return re.sub(r"aws_subnet\.public\[(.+?)\]\.id", r"local.subnet_zone[\1]", inner)

    subnet_zone = (
        f"[for i in range({expr(subnet['count'])}) : {expr(subnet['availability_zone']).replace('count.index', 'i')}]"
    )
    body = "\n".join(f"  {k} = {expr(v)}" for k, v in locals_.items())
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "main.tf").write_text(
        'variable "hosts" {\n  type = any\n}\n\nvariable "pinned_zone_names" {\n  type = list(string)\n}\n\n'
        f"locals {{\n{body}\n  subnet_zone = {subnet_zone}\n}}\n"
    )
    tfvars = json.loads((terraform_dir / "terraform.tfvars.json").read_text())
    (scratch / "in.tfvars.json").write_text(json.dumps({"hosts": tfvars["hosts"], "pinned_zone_names": zone_names}))
    result = run(
        [find_binary(), "console", "-var-file=in.tfvars.json"],
        timeout=60,
        cwd=scratch,
        stdin="jsonencode(local.host_subnet_id)\n",
        env=terraform_env(),
    )
    zones: dict[str, str] = json.loads(json.loads(result.stdout.strip()))
    return zones


@pytest.mark.parametrize("replicas", [0, 1, 2, 5, 15])
@pytest.mark.parametrize("zone_names", [["eu-west-1c", "eu-west-1a", "eu-west-1b"], ["us-west-1b", "us-west-1c"]])
def test_hosts_spread_round_robin_over_the_zones(replicas: int, zone_names: list[str], tmp_path: Path) -> None:
    spec = aws_spec(replica_count=replicas)
    ws = Workspace(tmp_path / "ws")
    generate(spec, ws)
    zones = host_zones(ws.terraform_dir, zone_names, tmp_path / "console")
    assert set(zones) == set(spec.host_names)
    counts = Counter(zones.values())
    assert len(counts) == min(len(spec.host_names), len(zone_names))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert zones[spec.primary_name] == sorted(zone_names)[0]


def test_removing_the_last_replica_moves_no_other_host(tmp_path: Path) -> None:
    zone_names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    before, after = Workspace(tmp_path / "before"), Workspace(tmp_path / "after")
    for ws, replicas in ((before, 3), (after, 2)):
        generate(aws_spec(replica_count=replicas), ws)
    zones_before = host_zones(before.terraform_dir, zone_names, tmp_path / "c1")
    zones_after = host_zones(after.terraform_dir, zone_names, tmp_path / "c2")
    assert set(zones_before) - set(zones_after) == {"orders-replica-3"}
    assert {h: zones_before[h] for h in zones_after} == zones_after


# --- checkov ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkov_finds_nothing_beyond_the_waivers(variant: str, reports: dict[str, CheckovReport]) -> None:
    report = reports[variant]
    assert report.failed == []
    # checkov really judged the hosts and the group: IMDSv2, encrypted root volume, rule descriptions, port 22.
    for check, address in [
        ("CKV_AWS_79", "aws_instance.host"),
        ("CKV_AWS_8", "aws_instance.host"),
        ("CKV_AWS_3", "aws_ebs_volume.data"),
        ("CKV_AWS_23", "aws_security_group.cluster"),
        ("CKV_AWS_24", "aws_security_group.cluster"),
    ]:
        assert (check, address) in report.passed


def test_every_waiver_is_still_needed(reports: dict[str, CheckovReport]) -> None:
    used = {(w.check, w.resource) for report in reports.values() for _, w in report.waived}
    assert {(w.check, w.resource) for w in load_waivers()} == used


def test_the_public_address_waiver_is_used_only_with_public_access(reports: dict[str, CheckovReport]) -> None:
    for name, report in reports.items():
        waived = {w.check for _, w in report.waived}
        assert ("CKV_AWS_88" in waived) is name.startswith("public"), name


def test_checkov_sees_a_world_open_ssh_rule(tmp_path: Path, checkov: str) -> None:
    """The group's rules are ordered so that checkov reads them all: with the world allowed it must fail."""
    ws = Workspace(tmp_path / "world")
    generate(aws_spec(allow_world=True, admin_cidrs=["0.0.0.0/0"]), ws)
    report = run_checkov(ws.terraform_dir, checkov)
    assert [(f.check, f.address) for f in report.failed] == [("CKV_AWS_24", "aws_security_group.cluster")]
