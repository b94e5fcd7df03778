"""The cluster spec's bad-input table, through the real command line: every field's bad values (injection
attempts included) exit with status 2, name the field, the value and what is allowed, and write nothing.
Also: image_tag mapping, flags > environment > file, and the warning above five replicas."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from pipeline.paths import PROJECT_ROOT
from pipeline.spec import ClusterSpec, S3Backend

EXAMPLE: dict[str, Any] = json.loads((PROJECT_ROOT / "examples" / "aws.json").read_text())
SSH_KEY = EXAMPLE["ssh_public_key"]
PRIVATE_KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQ"
PRIVATE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PRIVATE_KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
S3 = {"type": "s3", "bucket": "example-pgpipe-state", "region": "eu-west-1", "dynamodb_table": "pgpipe-locks"}
SUBNETS = ["subnet-0123456789abcdef0"]


class Case:
    """One bad input: spec fields to change, and what the message must say."""

    def __init__(self, field: str, changes: dict[str, Any], shown: str | None, allowed: str, *, id: str) -> None:
        self.field, self.changes, self.shown, self.allowed, self.id = field, changes, shown, allowed, id

    def __repr__(self) -> str:
        return self.id


def bad(field: str, value: Any, allowed: str, *, shown: str | None = "repr", id: str, **more: Any) -> Case:
    """`field` set to `value` (plus `more` fields); the message shows repr(value) unless `shown` says otherwise."""
    top = field.split(".")[0]
    return Case(field, {top: value, **more}, repr(value) if shown == "repr" else shown, allowed, id=id)


CASES = [
    # name
    bad("name", "Demo", "DNS label", id="name-uppercase"),
    bad("name", "a" * 33, "1-32 of a-z", id="name-too-long"),
    bad("name", "demo\n", "DNS label", id="name-trailing-newline"),
    bad("name", "demo;rm -rf /", "DNS label", id="name-shell"),
    bad("name", "-demo", "starting with a letter", id="name-leading-dash"),
    bad("name", 7, "valid string", id="name-number"),
    # target, region, instance_type, os
    bad("target", "gcp", "'aws' or 'local'", id="target"),
    bad("region", "mars-1", "allowed: af-south-1", id="region-unknown"),
    bad("region", "eu-west-1\n", "allowed: af-south-1", id="region-newline"),
    bad("instance_type", "t3", "such as t3.medium", id="instance-type-form"),
    bad("instance_type", "t3.medium\n", "such as t3.medium", id="instance-type-newline"),
    bad("instance_type", "t3.medium; curl evil", "such as t3.medium", id="instance-type-injection"),
    bad("instance_type", "t2.large", "previous-generation type", id="instance-type-previous-generation"),
    bad("os", "windows", "'debian12', 'ubuntu2404' or 'al2023'", id="os"),
    # replica_count
    bad("replica_count", 16, "less than or equal to 15", id="replicas-too-many"),
    bad("replica_count", -1, "greater than or equal to 0", id="replicas-negative"),
    bad("replica_count", "two", "valid integer", id="replicas-word"),
    bad("replica_count", True, "whole number", id="replicas-bool"),
    bad("replica_count", 1.5, "valid integer", id="replicas-fraction"),
    # postgres_version and image_tag
    bad("postgres_version", 12, "greater than or equal to 13", id="version-old"),
    bad("postgres_version", 18, "less than or equal to 17", id="version-new"),
    bad("image_tag", "latest", "allowed: 13..17", id="image-tag-latest"),
    bad("image_tag", "12-alpine", "allowed: 13..17", id="image-tag-old"),
    bad("image_tag", "14-alpine\n", "allowed: 13..17", id="image-tag-newline"),
    bad("image_tag", "14-alpine", "postgres_version is 15", postgres_version=15, id="image-tag-clash"),
    # max_connections, shared_buffers
    bad("max_connections", 9, "greater than or equal to 10", id="connections-few"),
    bad("max_connections", 10001, "less than or equal to 10000", id="connections-many"),
    bad("max_connections", "100; DROP TABLE x", "valid integer", id="connections-injection"),
    bad("shared_buffers", "1GB'\nlisten_addresses='*'", "digits then kB, MB or GB", id="buffers-injection"),
    bad("shared_buffers", "1GB\n", "digits then kB, MB or GB", id="buffers-newline"),
    bad("shared_buffers", "1TB", "digits then kB, MB or GB", id="buffers-unit"),
    bad("shared_buffers", "64kB", "minimum of 128kB", id="buffers-small"),
    bad("shared_buffers", "16GB", "8 GiB of memory of m7g.large", id="buffers-above-memory"),
    # replication_mode, sync_standbys
    bad("replication_mode", "semi", "'async' or 'sync'", id="mode"),
    bad("replication_mode", "sync", "at least one replica", replica_count=0, id="mode-sync-no-replica"),
    bad("sync_standbys", 3, "allowed: 1..2", replication_mode="sync", id="standbys-above-replicas"),
    bad("sync_standbys", 1, "only allowed with replication_mode 'sync'", id="standbys-async"),
    bad("sync_standbys", 0, "greater than or equal to 1", replication_mode="sync", id="standbys-zero"),
    # postgres_parameters
    bad(
        "postgres_parameters",
        {"listen_addresses": "*"},
        "managed by pgpipe",
        shown="'listen_addresses'",
        id="parameter-managed",
    ),
    bad(
        "postgres_parameters",
        {"work_mem": "4MB'\ninclude '/tmp/x"},
        "allowed: letters, digits",
        shown="work_mem=\"4MB'\\ninclude '/tmp/x\"",
        id="parameter-injection",
    ),
    bad(
        "postgres_parameters",
        {"work_mem": "4MB\n"},
        "allowed: letters, digits",
        shown="work_mem='4MB\\n'",
        id="parameter-newline",
    ),
    bad("postgres_parameters", {"Work-Mem": "4MB"}, "a-z, 0-9, _ and .", shown="'Work-Mem'", id="parameter-name"),
    bad("postgres_parameters", "work_mem=4MB", "valid dictionary", id="parameters-not-a-mapping"),
    # volumes
    bad("data_volume_gb", 0, "greater than or equal to 1", id="data-volume-zero"),
    bad("data_volume_gb", 20000, "less than or equal to 16384", id="data-volume-huge"),
    bad("root_volume_gb", 4, "greater than or equal to 8", id="root-volume-small"),
    # ssh_public_key
    bad("ssh_public_key", "not a key", "OpenSSH public key", id="ssh-key-garbage"),
    bad(
        "ssh_public_key",
        f"{SSH_KEY}\nssh-rsa AAAAB3Nza other",
        "OpenSSH public key",
        shown="'" + SSH_KEY[:20],
        id="ssh-key-two-lines",
    ),
    bad("ssh_public_key", PRIVATE_KEY, "give the public key", shown=None, id="ssh-key-private"),
    bad("ssh_public_key", None, "required for target 'aws'", shown=None, id="ssh-key-missing"),
    # admin_cidrs, client_cidrs, allow_world
    bad("admin_cidrs", ["0.0.0.0/0"], "set allow_world: true", shown="'0.0.0.0/0'", id="admin-world"),
    bad(
        "admin_cidrs",
        ["0.0.0.0/1", "128.0.0.0/1"],
        "set allow_world: true",
        shown="0.0.0.0/1, 128.0.0.0/1",
        id="admin-world-halves",
    ),
    bad("admin_cidrs", ["10.0.0.1/8"], "host bits must be zero", shown="'10.0.0.1/8'", id="admin-host-bits"),
    bad("admin_cidrs", ["office"], "CIDR block such as", shown="'office'", id="admin-word"),
    bad("admin_cidrs", "10.0.0.0/8", "valid list", id="admin-not-a-list"),
    bad("client_cidrs", ["::/0"], "set allow_world: true", shown="'::/0'", id="client-world-ipv6"),
    bad("client_cidrs", ["10.0.0.0/8\n"], "CIDR block such as", shown="'10.0.0.0/8\\n'", id="client-newline"),
    bad("allow_world", "maybe", "valid boolean", id="allow-world"),
    # access, vpc_id, subnet_ids
    bad("access", "internal", "'public' or 'private'", id="access"),
    Case("subnet_ids", {"access": "private"}, None, "needs existing subnet_ids", id="private-needs-subnets"),
    bad("vpc_id", "vpc-xyz", "VPC id such as", id="vpc-id"),
    Case("subnet_ids", {"vpc_id": "vpc-0123456789abcdef0"}, None, "required when vpc_id", id="vpc-needs-subnets"),
    bad("subnet_ids", ["subnet-zz"], "subnet id such as", shown="'subnet-zz'", id="subnet-id"),
    Case("vpc_id", {"subnet_ids": SUBNETS}, None, "required when subnet_ids are given", id="subnets-need-vpc"),
    # tags
    bad("tags", {"Name": "x"}, "reserved: Name", shown="'Name'", id="tag-reserved"),
    bad("tags", {"aws:createdBy": "x"}, "no aws:", shown="'aws:createdBy'", id="tag-aws-prefix"),
    bad("tags", {"team": "db\nops"}, "0-256 of letters", shown="team='db\\nops'", id="tag-newline"),
    bad("tags", {"team": 5}, "valid string", id="tag-number", shown="5"),
    # backend
    bad("backend", "gcs", "'local', 's3'", id="backend-type"),
    bad(
        "backend.s3.bucket", {**S3, "bucket": "Bad_Bucket"}, "S3 bucket name", shown="'Bad_Bucket'", id="backend-bucket"
    ),
    bad("backend.s3.key", {**S3, "key": "state\nx"}, "safe S3 key", shown="'state\\nx'", id="backend-key"),
    bad(
        "backend.s3.region",
        {**S3, "region": "nowhere-1"},
        "not an AWS region",
        shown="'nowhere-1'",
        id="backend-region",
    ),
    bad(
        "backend.s3.dynamodb_table",
        {**S3, "dynamodb_table": 'x"}\n${file("/etc/passwd")}'},
        "DynamoDB table name",
        shown='\'x"}\\n${file("/etc/passwd")}\'',
        id="backend-table-injection",
    ),
    bad(
        "backend.s3",
        {k: v for k, v in S3.items() if k != "dynamodb_table"},
        "needs a lock",
        shown=None,
        id="backend-no-lock",
    ),
    bad(
        "backend.s3.use_lockfile",
        {**S3, "use_lockfile": "perhaps"},
        "valid boolean",
        shown="'perhaps'",
        id="backend-lockfile",
    ),
    bad(
        "backend.s3.bucket",
        {k: v for k, v in S3.items() if k != "bucket"},
        "Field required",
        shown=None,
        id="backend-no-bucket",
    ),
    # local_subnet, unknown fields
    bad("local_subnet", "10.0.0.0/24", "inside 198.18.0.0/15", id="local-subnet-outside"),
    bad("local_subnet", "198.18.0.0/16", "must be a /24", id="local-subnet-size"),
    bad("local_subnet", "198.18.0.1/24", "not a CIDR block", id="local-subnet-host-bits"),
    bad("replicas", 2, "unknown field; allowed fields: name, target", shown=None, id="unknown-field"),
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the environment a test sets may reach the spec."""
    for key in list(os.environ):
        if key.startswith("PGPIPE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "workspaces"
    yield path


def write_spec(tmp_path: Path, changes: dict[str, Any], base: dict[str, Any] | None = None) -> Path:
    data = {**(EXAMPLE if base is None else base), "backend": "local", **changes}
    for key in [k for k, v in data.items() if v is None]:
        del data[key]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def generate(runner: CliRunner, workdir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(cli, ["--workdir", str(workdir), "generate", *args], env=env)


def written_spec(workdir: Path, name: str = "orders") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / name / "spec.json").read_text())
    return data


# --- the table ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bad_input_exits_2_names_field_value_and_allowed_and_writes_nothing(
    case: Case, runner: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, case.changes)))
    assert result.exit_code == 2, result.output
    message = result.output.split("Error: Invalid value for spec: ", 1)[1]
    assert f"{case.field}: " in message or message.startswith(case.field), message
    if case.shown is not None:
        assert case.shown in message, message
    assert case.allowed in message, message
    assert not workdir.exists()


def test_the_table_covers_every_field() -> None:
    covered = {case.field.split(".")[0] for case in CASES}
    assert set(ClusterSpec.model_fields) <= covered
    backend_fields = {case.field.split(".")[2] for case in CASES if case.field.startswith("backend.s3.")}
    assert set(S3Backend.model_fields) - {"type"} <= backend_fields | {"dynamodb_table", "use_lockfile"}
    assert {"bucket", "key", "region", "dynamodb_table", "use_lockfile"} <= backend_fields


def test_a_private_key_is_refused_without_echoing_it(runner: CliRunner, workdir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(PRIVATE_KEY)
    for value in (PRIVATE_KEY, str(key_file)):
        result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, {"ssh_public_key": value})))
        assert result.exit_code == 2 and "private key" in result.output
        assert PRIVATE_KEY_BODY not in result.output
    assert not workdir.exists()


def test_every_bad_field_gets_its_own_message(runner: CliRunner, workdir: Path, tmp_path: Path) -> None:
    changes = {"replica_count": 16, "shared_buffers": "1GB'\nlisten_addresses='*'", "image_tag": "99", "os": "bsd"}
    result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, changes)))
    assert result.exit_code == 2
    lines = result.output.split("Error: Invalid value for spec: ", 1)[1].strip().splitlines()
    assert sorted(line.strip().split(":")[0] for line in lines) == sorted(changes)


@pytest.mark.parametrize(
    ("args", "field", "allowed"),
    [
        (["--shared-buffers", "1GB'\nlisten_addresses='*'"], "shared_buffers", "digits then kB, MB or GB"),
        (["--replica-count", "16"], "replica_count", "less than or equal to 15"),
        (["--image-tag", "12-alpine"], "image_tag", "allowed: 13..17"),
        (["--name", "Orders DB"], "name", "DNS label"),
        (["--os", "windows"], "--os", "'windows' is not one of"),
        (["--ssh-public-key", "/nonexistent/id.pub"], "ssh_public_key", "OpenSSH public key"),
    ],
    ids=["buffers-injection", "replicas", "image-tag", "name", "os-choice", "ssh-key-path"],
)
def test_bad_flags_exit_2_and_write_nothing(
    args: list[str], field: str, allowed: str, runner: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, {})), *args)
    assert result.exit_code == 2, result.output
    assert field in result.output and allowed in result.output
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"PGPIPE_SPEC_REPLICA_COUNT": "99"}, "replica_count"),
        ({"PGPIPE_SPEC_ADMIN_CIDRS": '["0.0.0.0/0"]'}, "admin_cidrs"),
        ({"PGPIPE_SPEC_SHARED_BUFFERS": "1GB'\nlisten_addresses='*'"}, "shared_buffers"),
        ({"PGPIPE_SPEC_REPLICAS": "2"}, "replicas"),
    ],
    ids=["replicas", "world-cidr", "buffers-injection", "unknown-field"],
)
def test_bad_environment_exits_2_and_writes_nothing(
    env: dict[str, str], field: str, runner: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, {})), env=env)
    assert result.exit_code == 2 and f"{field}: " in result.output, result.output
    assert not workdir.exists()


# --- what good input becomes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tag", "version"), [("14-alpine", 14), ("16", 16), ("15.4-bookworm", 15), ("13.2", 13), ("17-alpine3.20", 17)]
)
def test_image_tag_sets_the_major_version(
    tag: str, version: int, runner: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, {"postgres_version": None, "image_tag": tag})
    assert generate(runner, workdir, "--spec", str(spec)).exit_code == 0
    written = written_spec(workdir)
    assert written["postgres_version"] == version and "image_tag" not in written


def test_flags_override_environment_which_overrides_the_file(runner: CliRunner, workdir: Path, tmp_path: Path) -> None:
    spec = str(write_spec(tmp_path, {"replica_count": 1, "max_connections": 150}))
    env = {"PGPIPE_SPEC_REPLICA_COUNT": "2", "PGPIPE_SPEC_TAGS": '{"team": "db"}'}
    assert generate(runner, workdir, "--spec", spec).exit_code == 0
    assert written_spec(workdir)["replica_count"] == 1
    assert generate(runner, workdir, "--spec", spec, env=env).exit_code == 0
    assert (written_spec(workdir)["replica_count"], written_spec(workdir)["tags"]) == (2, {"team": "db"})
    assert generate(runner, workdir, "--spec", spec, "--replica-count", "3", env=env).exit_code == 0
    final = written_spec(workdir)
    assert (final["replica_count"], final["tags"], final["max_connections"]) == (3, {"team": "db"}, 150)


def test_a_later_layer_sets_the_version_by_either_name(runner: CliRunner, workdir: Path, tmp_path: Path) -> None:
    spec = str(write_spec(tmp_path, {"postgres_version": 16}))
    assert generate(runner, workdir, "--spec", spec, "--image-tag", "14-alpine").exit_code == 0
    assert written_spec(workdir)["postgres_version"] == 14
    env = {"PGPIPE_SPEC_IMAGE_TAG": "13"}
    assert generate(runner, workdir, "--spec", spec, "--postgres-version", "15", env=env).exit_code == 0
    assert written_spec(workdir)["postgres_version"] == 15


def test_an_ssh_key_path_becomes_the_key_text(runner: CliRunner, workdir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "id_ed25519.pub"
    key_file.write_text(SSH_KEY + "\n")
    spec = write_spec(tmp_path, {"ssh_public_key": str(key_file)})
    assert generate(runner, workdir, "--spec", str(spec)).exit_code == 0
    assert written_spec(workdir)["ssh_public_key"] == SSH_KEY


@pytest.mark.parametrize(("replicas", "warned"), [(5, False), (6, True), (15, True)])
def test_more_than_five_replicas_warn(
    replicas: int, warned: bool, runner: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    result = generate(runner, workdir, "--spec", str(write_spec(tmp_path, {"replica_count": replicas})))
    assert result.exit_code == 0
    warning = f"{replicas} replicas: every replica adds network and CPU load on the primary"
    assert (warning in result.stderr) is warned
    assert warning not in result.stdout  # stdout carries only the path
