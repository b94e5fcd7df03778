"""pipeline.aws against moto (the AWS boundary, served in-process): preflight and each of its failure
messages, the idempotent remote-state bootstrap, and the temporary SSH rule, which must be gone after a run
also when configure fails. boto3 never reaches the network: credentials are fake and the metadata service off."""

from __future__ import annotations

import base64
import http.server
import json
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import click
import pytest
from moto import mock_aws

from pipeline import aws
from pipeline.cli import cli
from pipeline.errors import AwsError
from pipeline.spec import ClusterSpec, parse_spec
from pipeline.workspace import Workspace

REGION = "eu-west-1"
PUBLIC_CIDR = "18.200.0.0/16"  # an ordinary public block (only ever written into mocked rules)
RUNNER = "52.95.110.1"


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ssh_key(kind: str = "ssh-ed25519", *, body: bytes | None = None, rsa_bits: int = 3072) -> str:
    """An OpenSSH public key line built from its wire format (no key material is ever needed)."""
    if body is None:
        if kind == "ssh-ed25519":
            body = _field(kind.encode()) + _field(bytes(range(32)))
        elif kind == "ssh-rsa":
            modulus = (1 << (rsa_bits - 1)) | 1
            body = _field(kind.encode()) + _field(b"\x01\x00\x01") + _field(modulus.to_bytes(rsa_bits // 8 + 1, "big"))
        else:
            body = _field(kind.encode()) + _field(b"nistp256") + _field(b"\x04" + bytes(64))
    return f"{kind} {base64.b64encode(body).decode()} ops@example"


def make_spec(**overrides: Any) -> ClusterSpec:
    data: dict[str, Any] = {
        "name": "orders",
        "target": "aws",
        "region": REGION,
        "instance_type": "t3.medium",
        "os": "al2023",
        "replica_count": 2,
        "ssh_public_key": ssh_key(),
        "admin_cidrs": [PUBLIC_CIDR],
    }
    data.update(overrides)
    return parse_spec(data)


def _fake_aws_env(patch: pytest.MonkeyPatch, folder: Path) -> None:
    """Fake credentials, no config files, no instance metadata: nothing can reach real AWS."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        patch.delenv(var)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_SESSION_TOKEN", "testing")
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    patch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
    for var in ("GITHUB_ACTIONS", "GITHUB_RUN_ID", "PGPIPE_RUNNER_CIDR"):
        patch.delenv(var, raising=False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_aws_env(monkeypatch, tmp_path)


@pytest.fixture
def session(aws_env: None) -> Iterator[Any]:
    """A fresh mocked AWS account for tests that change it."""
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture(scope="class")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One mocked AWS account shared by the preflight tests that only read it (moto's EC2 is slow to start);
    class-scoped, so it ends before any test that needs an account of its own starts."""
    with pytest.MonkeyPatch.context() as patch:
        _fake_aws_env(patch, tmp_path_factory.mktemp("aws"))
        with mock_aws():
            yield boto3.session.Session(region_name=REGION)


def errors(report: aws.PreflightReport) -> dict[str, str]:
    return {f.reason: f.message for f in report.errors}


# --- preflight -----------------------------------------------------------------------------------------
def test_preflight_without_credentials_says_how_to_get_them(session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    report = aws.preflight(make_spec(), aws=boto3.session.Session(region_name=REGION))
    assert "configure-aws-credentials" in errors(report)["no-credentials"]
    assert not {"region", "instance-type", "ami"} & {f.check for f in report.findings}


def _type_missing_from_zone_c(region: str) -> str:
    """A type moto offers in zones a and b of `region` but not in c (found, not assumed)."""
    ec2 = boto3.client("ec2", region_name=region)
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(LocationType="availability-zone")
    zones: dict[str, set[str]] = {}
    for page in pages:
        for offer in page["InstanceTypeOfferings"]:
            zones.setdefault(offer["InstanceType"], set()).add(offer["Location"])
    for kind, found in sorted(zones.items()):
        if kind.startswith(("m5", "c5", "c6")) and found >= {f"{region}a", f"{region}b"} and f"{region}c" not in found:
            return kind
    pytest.fail(f"moto offers no type in {region}a and b but not c")


def test_preflight_checks_the_zones_of_the_given_subnets(session: Any) -> None:
    kind = _type_missing_from_zone_c("eu-central-1")
    ec2 = session.client("ec2", region_name="eu-central-1")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet_c = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.3.0/24", AvailabilityZone="eu-central-1c")
    spec = make_spec(region="eu-central-1", instance_type=kind, shared_buffers="1GB", vpc_id=vpc,
                     subnet_ids=[subnet_c["Subnet"]["SubnetId"]])
    assert "not offered in eu-central-1c" in errors(aws.preflight(spec, aws=session))["instance-type-unavailable"]


def test_preflight_refuses_subnets_outside_the_vpc(session: Any) -> None:
    ec2 = session.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    other = ec2.describe_subnets()["Subnets"][0]["SubnetId"]  # a default-VPC subnet
    report = aws.preflight(make_spec(vpc_id=vpc, subnet_ids=[other]), aws=session)
    assert f"{other} are not in {vpc}" in errors(report)["network-invalid"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (ssh_key("ecdsa-sha2-nistp256"), "cannot be imported as EC2 key pairs"),
        (ssh_key("ssh-rsa", rsa_bits=1024), "has 1024 bits"),
        (ssh_key("ssh-ed25519", body=_field(b"ssh-rsa") + _field(b"x")), "its body is a ssh-rsa key"),
        (ssh_key("ssh-ed25519", body=_field(b"ssh-ed25519") + _field(b"short")), "not 32 bytes"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI ops", "damaged"),
    ],
)
def test_ssh_keys_ec2_would_refuse(key: str, expected: str) -> None:
    assert expected in (aws.ssh_key_problem(key) or "")


def test_ssh_keys_ec2_accepts() -> None:
    assert aws.ssh_key_problem(ssh_key()) is None
    assert aws.ssh_key_problem(ssh_key("ssh-rsa", rsa_bits=3072)) is None


def _no_aws() -> Any:
    """A session whose every client call fails the test: for checks that must stay local."""

    class NoAws:
        def client(self, *_: Any, **__: Any) -> Any:
            raise AssertionError("AWS was called")

    return NoAws()


def test_preflight_points_to_bootstrap_until_the_state_bucket_exists(session: Any) -> None:
    backend = {"type": "s3", "bucket": "orders-state-test", "region": REGION, "dynamodb_table": "pgpipe-locks"}
    spec = make_spec(backend=backend)
    assert "pgpipe backend bootstrap" in errors(aws.preflight(spec, aws=session))["backend-missing"]
    aws.bootstrap_backend("orders-state-test", "pgpipe-locks", REGION, aws=session)
    assert aws.preflight(spec, aws=session, require_remote_state=True).errors == []


def test_preflight_leaves_the_local_target_alone(aws_env: None) -> None:
    report = aws.preflight(make_spec(target="local", ssh_public_key=None), aws=_no_aws())
    assert report.errors == [] and [f.check for f in report.findings] == ["target"]


class TestPreflightReadOnly:
    """Preflight against one shared, unchanged account."""

    def test_preflight_passes_a_sound_spec_and_names_the_zones(self, reader: Any) -> None:
        report = aws.preflight(make_spec(), aws=reader)
        assert report.errors == []
        assert report.account == "123456789012"
        assert report.zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        assert {f.check for f in report.findings} >= {"ssh-key", "cidrs", "credentials", "region", "network",
                                                       "instance-type", "ami"}

    def test_preflight_refuses_a_region_the_account_has_not_enabled(self, reader: Any) -> None:
        report = aws.preflight(make_spec(region="ap-east-1"), aws=reader)
        assert "ap-east-1 is not enabled for this account" in errors(report)["region-disabled"]

    def test_preflight_refuses_an_instance_type_the_region_does_not_offer(self, reader: Any) -> None:
        report = aws.preflight(make_spec(instance_type="p5.48xlarge"), aws=reader)
        assert "p5.48xlarge is not offered in eu-west-1" in errors(report)["instance-type-unavailable"]

    def test_preflight_checks_the_instance_type_in_each_zone_hosts_would_use(self, reader: Any) -> None:
        kind = _type_missing_from_zone_c("eu-central-1")
        spec = make_spec(region="eu-central-1", instance_type=kind, shared_buffers="1GB")
        three_hosts = aws.preflight(spec, aws=reader)
        assert "eu-central-1c, where hosts would run" in errors(three_hosts)["instance-type-unavailable"]
        two_hosts = aws.preflight(
            make_spec(region="eu-central-1", instance_type=kind, replica_count=1, shared_buffers="1GB"), aws=reader
        )
        assert two_hosts.errors == [] and two_hosts.zones == ["eu-central-1a", "eu-central-1b"]

    def test_preflight_reports_an_image_parameter_that_does_not_resolve(self, reader: Any) -> None:
        report = aws.preflight(make_spec(os="debian12"), aws=reader)
        message = errors(report)["ami-unresolvable"]
        assert "/aws/service/debian/release/12/latest/amd64" in message and "does not exist" in message

    def test_preflight_reports_a_key_ec2_would_refuse(self, reader: Any) -> None:
        report = aws.preflight(make_spec(ssh_public_key=ssh_key("ssh-rsa", rsa_bits=1024)), aws=reader)
        assert "has 1024 bits" in errors(report)["ssh-key-invalid"]

    def test_preflight_refuses_cidrs_no_real_client_has(self, reader: Any) -> None:
        report = aws.preflight(make_spec(admin_cidrs=["203.0.113.0/28"]), aws=reader)
        assert "never a real client's address" in errors(report)["cidr-invalid"]

    def test_preflight_warns_but_passes_private_cidrs_on_public_hosts(self, reader: Any) -> None:
        report = aws.preflight(make_spec(client_cidrs=["10.0.0.0/8"]), aws=reader)
        assert report.errors == []
        assert any("10.0.0.0/8 is a private range" in f.message for f in report.findings if f.level == "warning")

    def test_preflight_refuses_more_cidrs_than_a_security_group_holds(self, reader: Any) -> None:
        blocks = [f"18.{i}.0.0/16" for i in range(60)]  # 60 + the runner's temporary rule > 60
        report = aws.preflight(make_spec(admin_cidrs=blocks), aws=reader)
        assert "holds at most 60 inbound rules" in errors(report)["cidr-invalid"]

    def test_preflight_in_ci_requires_remote_state(self, reader: Any) -> None:
        report = aws.preflight(make_spec(), aws=reader, require_remote_state=True)
        assert "lost after the run" in errors(report)["remote-state-required"]

    def test_preflight_lists_every_problem_and_keeps_the_first_reason(self, reader: Any) -> None:
        report = aws.preflight(make_spec(admin_cidrs=["203.0.113.0/28"], instance_type="p5.48xlarge"), aws=reader)
        with pytest.raises(AwsError) as caught:
            report.raise_for_errors()
        assert caught.value.reason == "cidr-invalid"
        assert "2 problem(s)" in str(caught.value) and "p5.48xlarge" in str(caught.value)


# --- remote state --------------------------------------------------------------------------------------
BUCKET, TABLE = "pgpipe-state-test", "pgpipe-locks"


def test_bootstrap_creates_a_safe_bucket_and_the_lock_table(session: Any) -> None:
    result = aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    s3, ddb = session.client("s3"), session.client("dynamodb")
    assert result.created == ["bucket", "lock-table"]
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == aws.PUBLIC_ACCESS_BLOCK
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_bootstrap_again_changes_nothing(session: Any) -> None:
    aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    again = aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    assert (again.created, again.updated) == ([], [])


def test_bootstrap_repairs_a_setting_someone_turned_off(session: Any) -> None:
    aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    s3 = session.client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_public_access_block(Bucket=BUCKET)
    assert aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session).updated == ["versioning", "public-access-block"]
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"


def test_bootstrap_keeps_statements_others_put_in_the_bucket_policy(session: Any) -> None:
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    theirs = {"Sid": "AuditRead", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
              "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]}))
    aws.bootstrap_backend(BUCKET, None, REGION, aws=session)
    sids = [s["Sid"] for s in json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]]
    assert sids == ["AuditRead", aws.TLS_ONLY_SID]


def test_bootstrap_with_a_kms_key(session: Any) -> None:
    aws.bootstrap_backend(BUCKET, None, REGION, kms_key_id="alias/pgpipe-state", aws=session)
    rules = session.client("s3").get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                              "KMSMasterKeyID": "alias/pgpipe-state"}


def test_bootstrap_in_us_east_1(session: Any) -> None:
    assert aws.bootstrap_backend(BUCKET, TABLE, "us-east-1", aws=session).created == ["bucket", "lock-table"]


def test_bootstrap_refuses_a_bucket_in_another_region(session: Any) -> None:
    session.client("s3", region_name="eu-central-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    with pytest.raises(AwsError, match="exists in eu-central-1, not eu-west-1") as caught:
        aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    assert caught.value.reason == "bucket-unavailable"


def test_bootstrap_refuses_a_table_terraform_cannot_lock_with(session: Any) -> None:
    session.client("dynamodb").create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(AwsError, match="its key is not LockID") as caught:
        aws.bootstrap_backend(BUCKET, TABLE, REGION, aws=session)
    assert caught.value.reason == "lock-table-invalid"


def test_backend_commands_from_a_spec_file(session: Any, pgpipe: Any, tmp_path: Path) -> None:
    spec_file = tmp_path / "orders.json"
    backend = {"type": "s3", "bucket": BUCKET, "region": REGION, "dynamodb_table": TABLE}
    spec_file.write_text(make_spec(backend=backend).to_json())
    assert pgpipe("backend", "check", "--spec", str(spec_file)).exit_code == 1
    made = pgpipe("backend", "bootstrap", "--spec", str(spec_file))
    assert made.exit_code == 0 and json.loads(made.stdout)["backend"] == backend
    assert pgpipe("backend", "check", "--spec", str(spec_file)).exit_code == 0


# --- the temporary SSH rule ----------------------------------------------------------------------------
@pytest.fixture
def group(session: Any) -> str:
    """The cluster's security group as the aws root module makes it, with one permanent admin rule."""
    ec2 = session.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    tags = [{"Key": "Cluster", "Value": "orders"}, {"Key": "ManagedBy", "Value": "pgpipe"}]
    group_id = ec2.create_security_group(
        GroupName="pgpipe-orders", Description="pgpipe cluster orders", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[aws.ssh_permission(PUBLIC_CIDR, "admin")])
    return str(group_id)


def ingress(session: Any, group_id: str) -> dict[str, bool]:
    """Each inbound SSH source of the group -> whether its rule is tagged temporary."""
    rules = session.client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )["SecurityGroupRules"]
    return {
        r["CidrIpv4"]: any(t["Key"] == aws.TEMPORARY_TAG for t in r.get("Tags", []))
        for r in rules
        if not r["IsEgress"] and r["FromPort"] == 22
    }


def test_the_rule_is_added_tagged_then_removed_leaving_permanent_rules(session: Any, group: str) -> None:
    ec2 = session.client("ec2")
    rule = aws.add_ssh_rule(ec2, group, f"{RUNNER}/32", cluster="orders", run="github-7-1")
    assert rule is not None and ingress(session, group) == {PUBLIC_CIDR: False, f"{RUNNER}/32": True}
    assert aws.remove_ssh_rules(ec2, group) == [rule]
    assert ingress(session, group) == {PUBLIC_CIDR: False}


def test_adding_twice_keeps_one_rule(session: Any, group: str) -> None:
    ec2 = session.client("ec2")
    first = aws.add_ssh_rule(ec2, group, f"{RUNNER}/32", cluster="orders", run="a")
    assert aws.add_ssh_rule(ec2, group, f"{RUNNER}/32", cluster="orders", run="a") == first


def test_an_address_a_permanent_rule_admits_gets_no_rule(session: Any, group: str) -> None:
    ec2 = session.client("ec2")
    assert aws.add_ssh_rule(ec2, group, PUBLIC_CIDR, cluster="orders", run="a") is None
    assert aws.remove_ssh_rules(ec2, group) == [] and ingress(session, group) == {PUBLIC_CIDR: False}


def test_the_context_removes_the_rule_when_the_block_fails(session: Any, group: str) -> None:
    ec2 = session.client("ec2")
    with pytest.raises(RuntimeError), aws.temporary_ssh_rule(ec2, group, f"{RUNNER}/32", cluster="orders", run="a"):
        assert ingress(session, group)[f"{RUNNER}/32"] is True
        raise RuntimeError("configure failed")
    assert ingress(session, group) == {PUBLIC_CIDR: False}


def test_the_group_is_found_by_name_not_only_by_tags(session: Any, group: str) -> None:
    # Default tags also mark the VPC's default group with Cluster=orders: the name tells them apart.
    ec2 = session.client("ec2")
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    ec2.create_tags(Resources=[default], Tags=[{"Key": "Cluster", "Value": "orders"},
                                               {"Key": "ManagedBy", "Value": "pgpipe"}])
    assert aws.find_security_group(ec2, make_spec(), None) == group
    assert aws.find_security_group(ec2, make_spec(), {"security_group_id": "sg-0123456789abcdef0"}) == (
        "sg-0123456789abcdef0"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(RUNNER, f"{RUNNER}/32"), ("2600:1f18::1", "2600:1f18::1/128"), (f"{RUNNER}/32", f"{RUNNER}/32")],
)
def test_runner_addresses_become_single_address_blocks(value: str, expected: str) -> None:
    assert aws.runner_cidr(value) == expected


@pytest.mark.parametrize("value", ["10.1.2.3", "52.95.110.0/24", "not-an-ip", "198.18.0.5"])
def test_runner_addresses_that_are_refused(value: str) -> None:
    with pytest.raises(AwsError):
        aws.runner_cidr(value)


def test_the_runner_address_is_read_from_the_checkip_service() -> None:
    class CheckIp(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(f"{RUNNER}\n".encode())

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), CheckIp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert aws.discover_address(f"http://127.0.0.1:{server.server_port}/") == f"{RUNNER}/32"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(AwsError, match="give --cidr"):
        aws.discover_address(f"http://127.0.0.1:{server.server_port}/", timeout=2)


# --- the CLI around the rule: removed also when configure fails -----------------------------------------
@pytest.fixture
def workspace(tmp_path: Path, group: str) -> Workspace:
    """A workspace after apply, as far as the rule needs: spec.json and an outputs.json naming the group."""
    ws = Workspace.for_cluster("orders", tmp_path / "ws")
    ws.write_text(ws.spec_json, make_spec().to_json())
    ws.write_json(ws.outputs_json, {"security_group_id": group})
    return ws


def test_until_exit_removes_the_rule_when_configure_fails(session: Any, group: str, workspace: Workspace,
                                                          pgpipe: Any) -> None:
    result = pgpipe("--cluster", "orders", "ssh-rule", "add", "--cidr", RUNNER, "--until-exit", "configure")
    added = json.loads(result.stdout.split("\n}\n")[0] + "}")
    assert added["rule_id"].startswith("sgr-") and added["cidr"] == f"{RUNNER}/32"
    assert result.exit_code == 1 and "configure failed" in result.stderr
    assert ingress(session, group) == {PUBLIC_CIDR: False}


def test_until_exit_removes_the_rule_when_the_chain_succeeds(session: Any, group: str, workspace: Workspace,
                                                             pgpipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, bool]] = []

    @click.command("probe")
    def probe() -> None:
        seen.append(ingress(session, group))

    monkeypatch.setitem(cli.commands, "probe", probe)
    result = pgpipe("--cluster", "orders", "ssh-rule", "add", "--cidr", RUNNER, "--until-exit", "probe")
    assert result.exit_code == 0
    assert seen == [{PUBLIC_CIDR: False, f"{RUNNER}/32": True}]
    assert ingress(session, group) == {PUBLIC_CIDR: False}


def test_add_then_remove_as_separate_steps(session: Any, group: str, workspace: Workspace, pgpipe: Any) -> None:
    assert pgpipe("--cluster", "orders", "ssh-rule", "add", "--cidr", RUNNER).exit_code == 0
    assert ingress(session, group)[f"{RUNNER}/32"] is True
    removed = pgpipe("--cluster", "orders", "ssh-rule", "remove")
    assert removed.exit_code == 0 and len(json.loads(removed.stdout)["removed"]) == 1
    assert ingress(session, group) == {PUBLIC_CIDR: False}


def test_private_clusters_need_no_rule(aws_env: None, tmp_path: Path, pgpipe: Any) -> None:
    ws = Workspace.for_cluster("orders", tmp_path / "ws")
    spec = make_spec(access="private", vpc_id="vpc-0123456789abcdef0", subnet_ids=["subnet-0123456789abcdef0"])
    ws.write_text(ws.spec_json, spec.to_json())
    result = pgpipe("--cluster", "orders", "ssh-rule", "add", "--cidr", RUNNER)
    assert result.exit_code == 0 and "self-hosted runner" in json.loads(result.stdout)["skipped"]
