"""AWS through boto3: the preflight checks run before a plan, the remote-state bucket and lock table, and the
temporary SSH rule that lets a CI runner reach public hosts while it configures them. boto3 is imported only
when one of these functions runs, so the CLI starts fast and works where boto3 is absent."""

from __future__ import annotations

import base64
import contextlib
import getpass
import ipaddress
import json
import logging
import os
import socket
import struct
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipeline.errors import AwsError
from pipeline.spec import ClusterSpec, S3Backend
from pipeline.targets import AMI_PARAMETERS, host_roles

log = logging.getLogger(__name__)

Level = Literal["ok", "warning", "error"]

# Ranges that are never the source address of a real client: documentation, benchmarking (our test range),
# loopback, link-local, multicast and "this network". A CIDR here in admin_cidrs or client_cidrs is a mistake.
NEVER_CLIENT = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15", "0.0.0.0/8", "127.0.0.0/8",
        "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "2001:db8::/32", "::1/128", "fe80::/10", "ff00::/8",
    )
)
# A security group holds at most 60 inbound rules per address family (the default quota).
MAX_RULES_PER_GROUP = 60
# EC2 ImportKeyPair accepts these key types only.
EC2_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
MIN_RSA_BITS = 2048
# The zones (by letter) a VPC made by the aws root module may use: its variable zone_letters' default.
ZONE_LETTERS = ("a", "b", "c")

TEMPORARY_TAG = "pgpipe:temporary"
CLUSTER_TAG = "pgpipe:cluster"
RUN_TAG = "pgpipe:run"
CHECKIP_URL = "https://checkip.amazonaws.com"
LOCK_KEY = "LockID"  # the hash key terraform's S3 backend writes its locks under
TLS_ONLY_SID = "DenyInsecureTransport"


# --- sessions and errors -------------------------------------------------------------------------------
def session(region: str) -> Any:
    """A boto3 session for `region` (boto3 imported here, not at CLI start-up)."""
    try:
        import boto3
    except ImportError:
        raise AwsError("boto3 is not installed: run `make setup`", reason="tool-missing") from None
    return boto3.session.Session(region_name=region)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


@contextlib.contextmanager
def aws_errors(action: str, reason: str = "aws") -> Iterator[None]:
    """Turn botocore's errors into an AwsError that says what pgpipe was doing."""
    try:
        yield
    except _botocore_errors() as exc:
        raise AwsError(f"{action}: {exc}", reason=reason) from None


# --- preflight -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One preflight result: `reason` is machine-readable and set for errors."""

    check: str
    level: Level
    message: str
    reason: str = ""


@dataclass
class PreflightReport:
    cluster: str
    region: str
    findings: list[Finding] = field(default_factory=list)
    account: str | None = None
    zones: list[str] = field(default_factory=list)

    def add(self, check: str, level: Level, message: str, reason: str = "") -> None:
        self.findings.append(Finding(check, level, message, reason))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "region": self.region,
            "account": self.account,
            "zones": self.zones,
            "ok": not self.errors,
            "findings": [asdict(f) for f in self.findings],
        }

    def raise_for_errors(self) -> None:
        """AwsError listing every error; its reason is the first error's reason."""
        errors = self.errors
        if errors:
            lines = "\n  ".join(f"{f.check}: {f.message}" for f in errors)
            raise AwsError(f"preflight found {len(errors)} problem(s):\n  {lines}", reason=errors[0].reason)


def preflight(spec: ClusterSpec, *, aws: Any = None, require_remote_state: bool = False) -> PreflightReport:
    """Check, before any plan, what would make the AWS target fail later. Local checks (key, CIDRs) always
    run; AWS checks stop at the first one the rest depend on (credentials, then region)."""
    report = PreflightReport(spec.name, spec.region)
    if spec.target != "aws":
        report.add("target", "ok", f"target {spec.target!r}: no AWS checks")
        return report
    check_ssh_key(spec, report)
    check_cidrs(spec, report)
    check_state_location(spec, report, require_remote_state=require_remote_state)
    aws = aws if aws is not None else session(spec.region)
    if not check_credentials(aws, spec.region, report) or not check_region(aws, spec.region, report):
        return report
    ec2 = aws.client("ec2", region_name=spec.region)
    zones = zones_used(ec2, spec, report)
    report.zones = zones
    if zones:
        check_instance_type(ec2, spec, zones, report)
    check_ami(aws, spec, report)
    if isinstance(spec.backend, S3Backend):
        check_backend(aws, spec.backend, report)
    return report


def check_ssh_key(spec: ClusterSpec, report: PreflightReport) -> None:
    key = spec.ssh_public_key
    if key is None:
        report.add("ssh-key", "error", "no ssh_public_key: the aws target imports it as the hosts' key pair",
                   "ssh-key-invalid")
        return
    problem = ssh_key_problem(key)
    if problem:
        report.add("ssh-key", "error", problem, "ssh-key-invalid")
    else:
        report.add("ssh-key", "ok", f"{key.split()[0]} key accepted by EC2")


def ssh_key_problem(key: str) -> str | None:
    """Why EC2 would refuse this OpenSSH public key, or None. Decodes the key blob: the prefix alone can lie."""
    parts = key.split()
    kind = parts[0]
    if kind not in EC2_KEY_TYPES:
        return f"{kind} keys cannot be imported as EC2 key pairs; use ssh-ed25519 (or ssh-rsa of {MIN_RSA_BITS}+ bits)"
    try:
        blob = base64.b64decode(parts[1], validate=True)
        fields = _ssh_fields(blob)
    except (ValueError, IndexError, struct.error):
        return "the public key's base64 body is damaged (copy the whole line of the .pub file)"
    if fields[0] != kind.encode():
        return f"the key says {kind} but its body is a {fields[0].decode(errors='replace')} key"
    if kind == "ssh-ed25519" and (len(fields) != 2 or len(fields[1]) != 32):
        return "the ssh-ed25519 key body is not 32 bytes long"
    if kind == "ssh-rsa":
        bits = int.from_bytes(fields[2], "big").bit_length() if len(fields) == 3 else 0
        if bits < MIN_RSA_BITS:
            return f"the RSA key has {bits} bits; EC2 and current OpenSSH need at least {MIN_RSA_BITS}"
    return None


def _ssh_fields(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed fields."""
    fields, offset = [], 0
    while offset < len(blob):
        (size,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + size > len(blob):
            raise ValueError("truncated")
        fields.append(blob[offset : offset + size])
        offset += size
    return fields


def check_cidrs(spec: ClusterSpec, report: PreflightReport) -> None:
    problems = 0
    for kind in ("admin_cidrs", "client_cidrs"):
        cidrs: list[str] = getattr(spec, kind)
        for cidr in cidrs:
            level, message = classify_cidr(cidr, spec.access)
            if level != "ok":
                problems += level == "error"
                report.add("cidrs", level, f"{kind}: {message}", "cidr-invalid" if level == "error" else "")
        # One rule per block; the admin group also takes the temporary rule of a CI run.
        room = MAX_RULES_PER_GROUP - (1 if kind == "admin_cidrs" else 0)
        if len(cidrs) > room:
            problems += 1
            report.add("cidrs", "error", f"{kind}: {len(cidrs)} blocks, but a security group holds at most"
                       f" {MAX_RULES_PER_GROUP} inbound rules; merge blocks", "cidr-invalid")
    if spec.access == "public" and not spec.admin_cidrs:
        report.add("cidrs", "warning", "no admin_cidrs: SSH is reachable only through a CI run's temporary rule")
    if not problems:
        report.add("cidrs", "ok", f"{len(spec.admin_cidrs)} admin and {len(spec.client_cidrs)} client CIDR block(s)")


def classify_cidr(cidr: str, access: str) -> tuple[Level, str]:
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == 0:
        return "warning", f"{cidr} opens the port to the whole internet (allow_world is set)"
    for bad in NEVER_CLIENT:
        if net.version == bad.version and (net.subnet_of(bad) or bad.subnet_of(net)):  # type: ignore[arg-type]
            return "error", f"{cidr} overlaps {bad}, which is never a real client's address (documentation,"\
                " test, loopback, link-local or multicast range)"
    if access == "public" and not net.is_global:
        return "warning", (f"{cidr} is a private range: with access 'public' it matches only traffic from inside"
                           " the VPC or over peering/VPN, not clients reaching the public addresses")
    if net.version == 4 and net.prefixlen < 8:
        return "warning", f"{cidr} is wider than a /8"
    return "ok", cidr


def check_state_location(spec: ClusterSpec, report: PreflightReport, *, require_remote_state: bool) -> None:
    if isinstance(spec.backend, S3Backend) or not require_remote_state:
        return
    report.add("backend", "error", "the state would stay on this machine and be lost after the run: set an s3"
               " backend in the spec (create it with `pgpipe backend bootstrap`)", "remote-state-required")


def check_credentials(aws: Any, region: str, report: PreflightReport) -> bool:
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    try:
        identity = aws.client("sts", region_name=region).get_caller_identity()
    except (NoCredentialsError, PartialCredentialsError):
        report.add("credentials", "error", "no AWS credentials found: in GitHub Actions use"
                   " aws-actions/configure-aws-credentials with role-to-assume (OIDC); locally set AWS_PROFILE"
                   " or the AWS_* variables", "no-credentials")
        return False
    except ClientError as exc:
        report.add("credentials", "error", f"AWS rejected the credentials ({error_code(exc)}): {exc}",
                   "bad-credentials")
        return False
    except _botocore_errors() as exc:
        report.add("credentials", "error", f"cannot reach AWS STS in {region}: {exc}", "aws-unreachable")
        return False
    report.account = str(identity.get("Account"))
    report.add("credentials", "ok", f"authenticated as {identity.get('Arn')}")
    return True


def check_region(aws: Any, region: str, report: PreflightReport) -> bool:
    ec2 = aws.client("ec2", region_name=region)
    try:
        regions = ec2.describe_regions(AllRegions=True)["Regions"]
    except _botocore_errors() as exc:
        report.add("region", "error", f"cannot list EC2 regions: {exc}", "region-unavailable")
        return False
    status = {r["RegionName"]: r.get("OptInStatus", "opt-in-not-required") for r in regions}
    if region not in status:
        report.add("region", "error", f"{region} is not an EC2 region of this account's partition",
                   "region-unavailable")
        return False
    if status[region] == "not-opted-in":
        report.add("region", "error", f"{region} is not enabled for this account: enable it under Account >"
                   " AWS Regions, or choose another region", "region-disabled")
        return False
    report.add("region", "ok", f"{region} is enabled ({status[region]})")
    return True


def available_zones(ec2: Any) -> list[str]:
    filters = [{"Name": "zone-type", "Values": ["availability-zone"]}, {"Name": "state", "Values": ["available"]}]
    return sorted(z["ZoneName"] for z in ec2.describe_availability_zones(Filters=filters)["AvailabilityZones"])


def host_zones(spec: ClusterSpec, zones: Sequence[str]) -> dict[str, str]:
    """Where each host lands in the VPC the aws root module makes: its zones are the region's pinned letters
    (a, b, c) that exist, in name order; host i goes to zone i mod min(host count, zone count)."""
    pinned = sorted(z for z in zones if z in {f"{spec.region}{letter}" for letter in ZONE_LETTERS})
    hosts = host_roles(spec)
    count = min(len(hosts), len(pinned))
    return {name: pinned[host["index"] % count] for name, host in hosts.items()} if count else {}


def zones_used(ec2: Any, spec: ClusterSpec, report: PreflightReport) -> list[str]:
    """The zones the hosts will run in: those of the subnets they are spread over, else the pinned zones."""
    if spec.subnet_ids:
        return subnet_zones(ec2, spec, report)
    try:
        zones = available_zones(ec2)
    except _botocore_errors() as exc:
        report.add("network", "error", f"cannot list availability zones: {exc}", "network-invalid")
        return []
    used = sorted(set(host_zones(spec, zones).values()))
    if not used:
        letters = ", ".join(f"{spec.region}{letter}" for letter in ZONE_LETTERS)
        report.add("network", "error", f"none of the zones {letters} is available", "network-invalid")
        return []
    report.add("network", "ok", f"a new VPC; hosts spread over {', '.join(used)}")
    return used


def subnet_zones(ec2: Any, spec: ClusterSpec, report: PreflightReport) -> list[str]:
    """Zones of the subnets hosts land in (host i on subnet i mod count, as the aws root module places them)."""
    try:
        subnets = ec2.describe_subnets(SubnetIds=list(spec.subnet_ids))["Subnets"]
    except _botocore_errors() as exc:
        report.add("network", "error", f"subnet_ids: {error_code(exc) or exc}: not all of"
                   f" {', '.join(spec.subnet_ids)} exist in {spec.region}", "network-invalid")
        return []
    foreign = [s["SubnetId"] for s in subnets if s["VpcId"] != spec.vpc_id]
    if foreign:
        report.add("network", "error", f"subnet(s) {', '.join(foreign)} are not in {spec.vpc_id}",
                   "network-invalid")
        return []
    zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}
    used_subnets = [spec.subnet_ids[h["index"] % len(spec.subnet_ids)] for h in host_roles(spec).values()]
    zones = sorted({zone_of[s] for s in used_subnets})
    report.add("network", "ok", f"subnets of {spec.vpc_id} in {', '.join(zones)}")
    return zones


def _offered(ec2: Any, location_type: str, instance_types: list[str]) -> list[dict[str, str]]:
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType=location_type, Filters=[{"Name": "instance-type", "Values": instance_types}]
    )
    return [offer for page in pages for offer in page["InstanceTypeOfferings"]]


def check_instance_type(ec2: Any, spec: ClusterSpec, zones: list[str], report: PreflightReport) -> None:
    wanted = spec.instance_type
    try:
        in_region = _offered(ec2, "region", [wanted])
        in_zones = {o["Location"] for o in _offered(ec2, "availability-zone", [wanted])}
        family = [] if in_region else _offered(ec2, "region", [wanted.split(".")[0] + ".*"])
    except _botocore_errors() as exc:
        report.add("instance-type", "error", f"cannot list instance type offerings: {exc}", "aws")
        return
    if not in_region:
        sizes = sorted({o["InstanceType"] for o in family})
        hint = f"; this family here: {', '.join(sizes[:8])}" if sizes else ""
        report.add("instance-type", "error", f"{wanted} is not offered in {spec.region}{hint}",
                   "instance-type-unavailable")
        return
    missing = [z for z in zones if z not in in_zones]
    if missing:
        report.add("instance-type", "error", f"{wanted} is not offered in {', '.join(missing)}, where hosts"
                   f" would run (offered in: {', '.join(sorted(in_zones)) or 'no zone'}); give subnet_ids in"
                   " other zones or choose another type", "instance-type-unavailable")
        return
    report.add("instance-type", "ok", f"{wanted} is offered in {', '.join(zones)}")


def check_ami(aws: Any, spec: ClusterSpec, report: PreflightReport) -> None:
    name = AMI_PARAMETERS[spec.os][spec.architecture]
    try:
        value = aws.client("ssm", region_name=spec.region).get_parameter(Name=name)["Parameter"]["Value"]
    except _botocore_errors() as exc:
        code = error_code(exc)
        why = "it does not exist there" if code == "ParameterNotFound" else f"{code or exc}"
        report.add("ami", "error", f"the {spec.os} {spec.architecture} image parameter {name} does not resolve"
                   f" in {spec.region}: {why}; choose another os or region", "ami-unresolvable")
        return
    if not str(value).startswith("ami-"):
        report.add("ami", "error", f"{name} resolves to {value!r}, not an image id", "ami-unresolvable")
        return
    report.add("ami", "ok", f"{spec.os} {spec.architecture}: {value}")


def check_backend(aws: Any, backend: S3Backend, report: PreflightReport) -> None:
    status = backend_status(aws, backend.bucket, backend.dynamodb_table, backend.region)
    missing = [what for what, ok in status.items() if not ok]
    if missing:
        report.add("backend", "error", f"remote state not ready ({', '.join(missing)}): run `pgpipe backend"
                   " bootstrap --spec <the spec file>`", "backend-missing")
    else:
        report.add("backend", "ok", f"s3://{backend.bucket} and its lock are ready")


# --- remote state --------------------------------------------------------------------------------------
@dataclass
class BackendResult:
    bucket: str
    region: str
    table: str | None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        backend: dict[str, Any] = {"type": "s3", "bucket": self.bucket, "region": self.region}
        if self.table:
            backend["dynamodb_table"] = self.table
        else:
            backend["use_lockfile"] = True
        return {"backend": backend, "created": self.created, "updated": self.updated}


def bootstrap_backend(
    bucket: str, table: str | None, region: str, *, kms_key_id: str | None = None, aws: Any = None
) -> BackendResult:
    """Create what terraform's S3 backend needs, or bring it to the safe settings; running it again changes
    nothing. The bucket: versioned (state history), encrypted by default, public access blocked, ACLs off,
    TLS only. The table: key LockID, on-demand, deletion protection."""
    aws = aws if aws is not None else session(region)
    result = BackendResult(bucket, region, table)
    s3 = aws.client("s3", region_name=region)
    with aws_errors(f"state bucket {bucket}", "backend-bootstrap"):
        ensure_bucket(s3, bucket, region, result)
        ensure_versioning(s3, bucket, result)
        ensure_encryption(s3, bucket, kms_key_id, result)
        ensure_public_access_block(s3, bucket, result)
        ensure_ownership(s3, bucket, result)
        ensure_tls_only(s3, bucket, result)
    if table:
        with aws_errors(f"lock table {table}", "backend-bootstrap"):
            ensure_lock_table(aws.client("dynamodb", region_name=region), table, result)
    log.info("state bucket %s and lock %s in %s: created %s, updated %s", bucket, table or "(S3 lock file)",
             region, ", ".join(result.created) or "nothing", ", ".join(result.updated) or "nothing")
    return result


def bucket_region(s3: Any, bucket: str) -> str | None:
    """The bucket's region, None when it does not exist; AwsError when someone else owns the name."""
    try:
        head = s3.head_bucket(Bucket=bucket)
    except _botocore_errors() as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(f"bucket {bucket} exists but this account cannot use it (another owner, or no"
                           " s3:ListBucket): choose another name", reason="bucket-unavailable") from None
        raise
    return str(head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region") or "us-east-1")


def ensure_bucket(s3: Any, bucket: str, region: str, result: BackendResult) -> None:
    found = bucket_region(s3, bucket)
    if found is None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint of itself
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        result.created.append("bucket")
    elif found != region:
        raise AwsError(f"bucket {bucket} exists in {found}, not {region}: set the backend's region to {found}",
                       reason="bucket-unavailable")


def ensure_versioning(s3: Any, bucket: str, result: BackendResult) -> None:
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        result.updated.append("versioning")


def _encryption_rule(kms_key_id: str | None) -> dict[str, Any]:
    if kms_key_id:
        return {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id},
            "BucketKeyEnabled": True,
        }
    return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


def ensure_encryption(s3: Any, bucket: str, kms_key_id: str | None, result: BackendResult) -> None:
    wanted = _encryption_rule(kms_key_id)["ApplyServerSideEncryptionByDefault"]
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except _botocore_errors() as exc:
        if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    current = [r.get("ApplyServerSideEncryptionByDefault", {}) for r in rules]
    if wanted not in current:
        s3.put_bucket_encryption(
            Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [_encryption_rule(kms_key_id)]}
        )
        result.updated.append("encryption")


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def ensure_public_access_block(s3: Any, bucket: str, result: BackendResult) -> None:
    try:
        current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except _botocore_errors() as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        current = {}
    if current != PUBLIC_ACCESS_BLOCK:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        result.updated.append("public-access-block")


def ensure_ownership(s3: Any, bucket: str, result: BackendResult) -> None:
    try:
        rules = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    except _botocore_errors() as exc:
        if error_code(exc) != "OwnershipControlsNotFoundError":
            raise
        rules = []
    if rules != [{"ObjectOwnership": "BucketOwnerEnforced"}]:
        s3.put_bucket_ownership_controls(
            Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        )
        result.updated.append("ownership")


def tls_only_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def ensure_tls_only(s3: Any, bucket: str, result: BackendResult) -> None:
    """Add the deny-without-TLS statement, keeping any statements someone else put in the policy."""
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except _botocore_errors() as exc:
        if error_code(exc) != "NoSuchBucketPolicy":
            raise
        policy = {"Version": "2012-10-17", "Statement": []}
    statements = policy.setdefault("Statement", [])
    if any(s.get("Sid") == TLS_ONLY_SID for s in statements):
        return
    statements.append(tls_only_statement(bucket))
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    result.updated.append("tls-only-policy")


def ensure_lock_table(ddb: Any, table: str, result: BackendResult) -> None:
    try:
        described = ddb.describe_table(TableName=table)["Table"]
    except _botocore_errors() as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": LOCK_KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": LOCK_KEY, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            DeletionProtectionEnabled=True,
            Tags=[{"Key": "ManagedBy", "Value": "pgpipe"}],
        )
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        result.created.append("lock-table")
        return
    if not lock_table_ok(described):
        raise AwsError(f"table {table} exists but its key is not {LOCK_KEY} (string): terraform cannot lock"
                       " with it; choose another table name", reason="lock-table-invalid")


def lock_table_ok(described: dict[str, Any]) -> bool:
    keys = described.get("KeySchema", [])
    types = {a["AttributeName"]: a["AttributeType"] for a in described.get("AttributeDefinitions", [])}
    return keys == [{"AttributeName": LOCK_KEY, "KeyType": "HASH"}] and types.get(LOCK_KEY) == "S"


def backend_status(aws: Any, bucket: str, table: str | None, region: str) -> dict[str, bool]:
    """Which parts of the remote state are in place (read-only: preflight and `backend check`)."""
    s3 = aws.client("s3", region_name=region)
    status: dict[str, bool] = {}
    with aws_errors(f"state bucket {bucket}", "backend-missing"):
        status["bucket"] = bucket_region(s3, bucket) == region
        if status["bucket"]:
            status["versioning"] = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
            try:
                pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            except _botocore_errors() as exc:
                if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
                    raise
                pab = {}
            status["public-access-block"] = pab == PUBLIC_ACCESS_BLOCK
    if table:
        with aws_errors(f"lock table {table}", "backend-missing"):
            try:
                described = aws.client("dynamodb", region_name=region).describe_table(TableName=table)["Table"]
            except _botocore_errors() as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                described = None
        status["lock-table"] = described is not None and lock_table_ok(described)
    return status


# --- the temporary SSH rule ----------------------------------------------------------------------------
def run_id() -> str:
    """What the temporary rule is tagged with: the GitHub run, or who runs pgpipe where."""
    if os.environ.get("GITHUB_RUN_ID"):
        return f"github-{os.environ['GITHUB_RUN_ID']}-{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    return f"local-{getpass.getuser()}@{socket.gethostname()}"


def discover_address(url: str = CHECKIP_URL, timeout: float = 10) -> str:
    """This machine's public address as AWS sees it (one HTTPS request to AWS's own checkip service)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
            text = response.read(64).decode().strip()
    except OSError as exc:
        raise AwsError(f"cannot learn this runner's public address from {url}: {exc}; give --cidr",
                       reason="runner-address") from None
    return runner_cidr(text)


def runner_cidr(value: str) -> str:
    """A single global address as a /32 (or /128) block; anything wider is refused."""
    try:
        net = ipaddress.ip_network(value if "/" in value else f"{value}/{32 if '.' in value else 128}")
    except ValueError:
        raise AwsError(f"{value!r} is not an IP address", reason="runner-address") from None
    if net.num_addresses != 1:
        raise AwsError(f"{value}: the temporary rule admits one address, not a range", reason="runner-address")
    if not net.is_global:
        raise AwsError(f"{value} is not a public address; with a runner inside the VPC use access 'private'",
                       reason="runner-address")
    return str(net)


def find_security_group(ec2: Any, spec: ClusterSpec, outputs: dict[str, Any] | None) -> str | None:
    """The group holding the hosts' SSH rules: outputs.json's `security_group_id`, else the group named
    pgpipe-<name> tagged Cluster=<name> and ManagedBy=pgpipe; None when there is none (destroyed)."""
    if outputs and outputs.get("security_group_id"):
        return str(outputs["security_group_id"])
    # Default tags put Cluster on the VPC's default group too: the name picks the cluster's own group.
    filters = [
        {"Name": "group-name", "Values": [f"pgpipe-{spec.name}"]},
        {"Name": "tag:Cluster", "Values": [spec.name]},
        {"Name": "tag:ManagedBy", "Values": ["pgpipe"]},
    ]
    with aws_errors("looking up the cluster's security group", "ssh-rule"):
        groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if len(groups) > 1:
        ids = ", ".join(g["GroupId"] for g in groups)
        raise AwsError(f"{len(groups)} security groups are tagged Cluster={spec.name} ({ids}): give"
                       " --security-group-id", reason="ssh-rule")
    return str(groups[0]["GroupId"]) if groups else None


def ssh_permission(cidr: str, description: str) -> dict[str, Any]:
    ranges = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
    block = {ranges[1]: cidr, "Description": description}
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, ranges[0]: [block]}


def temporary_rules(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    filters = [{"Name": "group-id", "Values": [group_id]}, {"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]}]
    with aws_errors(f"listing the temporary rules of {group_id}", "ssh-rule"):
        pages = ec2.get_paginator("describe_security_group_rules").paginate(Filters=filters)
        return [r for page in pages for r in page["SecurityGroupRules"] if not r.get("IsEgress")]


def add_ssh_rule(ec2: Any, group_id: str, cidr: str, *, cluster: str, run: str) -> str | None:
    """Admit `cidr` to port 22 with a rule tagged temporary; returns its id (None when a permanent rule
    already admits exactly this block, which is then left alone)."""
    tags = [
        {"Key": TEMPORARY_TAG, "Value": "true"},
        {"Key": CLUSTER_TAG, "Value": cluster},
        {"Key": RUN_TAG, "Value": run},
        {"Key": "Name", "Value": f"pgpipe temporary SSH ({run})"},
    ]
    try:
        response = ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[ssh_permission(cidr, f"pgpipe temporary SSH for {run}")],
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": tags}],
        )
    except _botocore_errors() as exc:
        if error_code(exc) != "InvalidPermission.Duplicate":
            raise AwsError(f"adding the temporary SSH rule to {group_id}: {exc}", reason="ssh-rule") from None
        existing = [r for r in temporary_rules(ec2, group_id) if cidr in (r.get("CidrIpv4"), r.get("CidrIpv6"))]
        if existing:
            return str(existing[0]["SecurityGroupRuleId"])
        log.info("%s already reaches SSH through a permanent rule of %s; nothing added", cidr, group_id)
        return None
    rule_id = str(response["SecurityGroupRules"][0]["SecurityGroupRuleId"])
    log.info("temporary SSH rule %s admits %s to %s", rule_id, cidr, group_id)
    return rule_id


def remove_ssh_rules(ec2: Any, group_id: str) -> list[str]:
    """Remove every temporary pgpipe rule of the group (only one run per cluster at a time touches it)."""
    ids = [str(r["SecurityGroupRuleId"]) for r in temporary_rules(ec2, group_id)]
    if ids:
        try:
            ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=ids)
        except _botocore_errors() as exc:
            if error_code(exc) != "InvalidGroup.NotFound":
                raise AwsError(f"removing temporary SSH rules {ids} from {group_id}: {exc}",
                               reason="ssh-rule") from None
        log.info("removed temporary SSH rule(s) %s from %s", ", ".join(ids), group_id)
    return ids


@contextlib.contextmanager
def temporary_ssh_rule(ec2: Any, group_id: str, cidr: str, *, cluster: str, run: str) -> Iterator[str | None]:
    """The rule exists exactly while the block runs, also when the block fails."""
    rule = add_ssh_rule(ec2, group_id, cidr, cluster=cluster, run=run)
    try:
        yield rule
    finally:
        remove_ssh_rules(ec2, group_id)


def ssh_rule_needed(spec: ClusterSpec) -> str | None:
    """Why no temporary rule is needed for this cluster, or None when it is."""
    if spec.target != "aws":
        return f"target {spec.target!r} has no security group"
    if spec.access != "public":
        return "access 'private': the runner must sit inside the VPC (a self-hosted runner)"
    return None
