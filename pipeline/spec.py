"""ClusterSpec: the one validated description of a cluster. CLI flags, spec files, environment variables,
workflow inputs and HTTP bodies all become a ClusterSpec here, or a SpecError naming every bad field."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import SpecError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")
INSTANCE_TYPE_RE = re.compile(
    r"^(?P<family>[a-z]+[0-9]+[a-z-]*)\.(?P<size>nano|micro|small|medium|large|xlarge|[0-9]+xlarge|metal(-[0-9]+xl)?)$"
)
# Previous-generation families: no EBS optimisation, which every database host gets.
PREVIOUS_GENERATION = frozenset({"t1", "t2", "m1", "m2", "m3", "c1", "c3", "r3", "i2", "g2", "hs1", "cc2", "cr1"})
GRAVITON_RE = re.compile(r"^([a-z]+[0-9]+g[a-z]*|a1)$")
MEMORY_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>kB|MB|GB)$")
IMAGE_TAG_RE = re.compile(r"^(?P<major>[0-9]+)(\.[0-9]+)?(-[a-z0-9.]+)?$")
PARAM_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.]{0,62}$")
PARAM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:,/+ -]{0,256}$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{0,256}$")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\n]{0,200})?$")
DYNAMODB_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
VPC_RE = re.compile(r"^vpc-[0-9a-f]{8,17}$")
SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")

OS_CHOICES = ("debian12", "ubuntu2404", "al2023")
MIN_PG, MAX_PG = 13, 17
MAX_REPLICAS = 15
REPLICA_WARNING = 5
RESERVED_TAGS = ("Name", "Cluster", "Role", "ManagedBy")
# Parameters the role owns: setting them by hand would break replication or the hba rules.
MANAGED_PARAMETERS = frozenset(
    {
        "listen_addresses", "port", "wal_level", "max_wal_senders", "max_replication_slots", "hot_standby",
        "primary_conninfo", "primary_slot_name", "synchronous_standby_names", "data_directory", "hba_file",
        "ident_file", "config_file", "password_encryption", "max_connections", "shared_buffers", "include",
        "include_dir", "include_if_exists", "archive_command", "restore_command", "ssl_key_file",
    }
)

# Memory (GiB) of burstable sizes; other known families scale with vCPUs.
BURSTABLE_GIB = {"nano": 0.5, "micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
GIB_PER_VCPU = {"m": 4, "c": 2, "r": 8, "x": 16, "z": 8}
KNOWN_FAMILIES = re.compile(r"^(t[234]a?g?|[mcr][5-8][aig]?[dn]*|x2[gi][de]*|z1d)$")


@functools.cache
def aws_regions() -> frozenset[str]:
    """The commercial-partition regions of the botocore that is installed (read offline)."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or spec.origin is None:
        return frozenset()
    data = json.loads((Path(spec.origin).parent / "data" / "endpoints.json").read_text())
    return frozenset(region for part in data["partitions"] for region in part["regions"])


def image_tag_major(tag: str) -> int | None:
    """The major version an image tag such as `14-alpine` names, or None when it names no supported one."""
    match = IMAGE_TAG_RE.fullmatch(tag)
    major = int(match["major"]) if match else None
    return major if major is not None and MIN_PG <= major <= MAX_PG else None


def memory_kb(value: str) -> int:
    match = MEMORY_RE.fullmatch(value)
    if not match:
        raise ValueError(value)
    return int(match["n"]) * {"kB": 1, "MB": 1024, "GB": 1024 * 1024}[match["unit"]]


def instance_memory_gib(instance_type: str) -> float | None:
    """The memory of an instance type when its family is known, else None."""
    match = INSTANCE_TYPE_RE.fullmatch(instance_type)
    if not match or not KNOWN_FAMILIES.fullmatch(match["family"]):
        return None
    family, size = match["family"], match["size"]
    if family.startswith("t"):
        return BURSTABLE_GIB.get(size)
    vcpus = {"medium": 1, "large": 2, "xlarge": 4}.get(size)
    if vcpus is None and size.endswith("xlarge"):
        vcpus = 4 * int(size[: -len("xlarge")])
    ratio = GIB_PER_VCPU.get(family[0])
    return None if vcpus is None or ratio is None else float(vcpus * ratio)


def architecture(instance_type: str) -> Literal["arm64", "x86_64"]:
    match = INSTANCE_TYPE_RE.fullmatch(instance_type)
    return "arm64" if match and GRAVITON_RE.fullmatch(match["family"]) else "x86_64"


def _cidr_list(values: list[str], field: str, allow_world: bool) -> list[str]:
    out = []
    for value in values:
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR block such as 203.0.113.0/24 (host bits must be zero)") from None
        if net.prefixlen == 0 and not allow_world:
            raise ValueError(
                f"{value!r} opens the port to the whole internet; give narrower blocks, or set allow_world: true"
            )
        out.append(str(net))
    for version in (4, 6):
        # Halves such as 0.0.0.0/1 + 128.0.0.0/1 are the whole internet too.
        family: list[Any] = [n for n in map(ipaddress.ip_network, out) if n.version == version]
        if not allow_world and any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(family)):
            raise ValueError(
                f"{', '.join(map(str, family))} together open the port to the whole internet; give narrower"
                " blocks, or set allow_world: true"
            )
    return sorted(set(out), key=out.index)


def default_sandbox_subnet(name: str) -> str:
    """The /24 inside the test range that a sandbox (or a local cluster) named `name` gets when none is given:
    derived from the name, so that it is stable across runs and two names rarely collide."""
    index = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % 512
    return str(ipaddress.ip_network((int(TEST_RANGE.network_address) + index * 256, 24)))


class LocalBackend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["local"] = "local"


class S3Backend(BaseModel):
    """Remote state in S3, locked by a DynamoDB table or (terraform 1.10+) an S3 lock file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["s3"]
    bucket: str
    key: str | None = Field(default=None, description="state object key; default pgpipe/<cluster>/terraform.tfstate")
    region: str
    dynamodb_table: str | None = None
    use_lockfile: bool = False

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not BUCKET_RE.fullmatch(value) or ".." in value:
            raise ValueError(f"{value!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)

    @field_validator("dynamodb_table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is not None and not DYNAMODB_TABLE_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a DynamoDB table name (3-255 of letters, digits and _.-)")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]{1,1024}", value):
            raise ValueError(f"{value!r} is not a safe S3 key (letters, digits and !_.*'()/-)")
        return value

    @model_validator(mode="after")
    def _lock(self) -> S3Backend:
        if self.dynamodb_table is None and not self.use_lockfile:
            raise ValueError("an S3 backend needs a lock: set dynamodb_table or use_lockfile: true")
        return self


def _check_region(value: str) -> str:
    regions = aws_regions()
    if regions and value not in regions:
        raise ValueError(f"{value!r} is not an AWS region; allowed: {', '.join(sorted(regions))}")
    return value


class ClusterSpec(BaseModel):
    """A PostgreSQL primary with `replica_count` asynchronous (or synchronous) streaming replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="cluster name: a DNS label of at most 32 characters")
    target: Literal["aws", "local"] = Field(default="aws", description="where the hosts run")
    region: str = Field(default="us-east-1", description="AWS region")
    instance_type: str = Field(default="t3.medium", description="EC2 instance type")
    os: Literal["debian12", "ubuntu2404", "al2023"] = Field(default="debian12", description="host image")
    replica_count: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = Field(default=2, description="number of replicas")
    postgres_version: Annotated[int, Field(ge=MIN_PG, le=MAX_PG)] = Field(default=15, description="major version")
    image_tag: str | None = Field(
        default=None, exclude=True, description="the original API's image tag, e.g. 14-alpine: sets postgres_version"
    )
    max_connections: Annotated[int, Field(ge=10, le=10000)] = 100
    shared_buffers: str = Field(default="128MB", description="PostgreSQL memory value, e.g. 256MB")
    replication_mode: Literal["async", "sync"] = "async"
    sync_standbys: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    postgres_parameters: dict[str, str] = Field(default_factory=dict, description="further postgresql.conf settings")
    data_volume_gb: Annotated[int, Field(ge=1, le=16384)] = 20
    root_volume_gb: Annotated[int, Field(ge=8, le=1024)] = 16
    ssh_public_key: str | None = Field(default=None, description="OpenSSH public key, or a path to one")
    # allow_world comes before the CIDR lists: their validators read it.
    allow_world: bool = Field(default=False, description="permit 0.0.0.0/0 and ::/0 in the CIDR lists")
    admin_cidrs: list[str] = Field(default_factory=list, description="who may reach SSH (22)")
    client_cidrs: list[str] = Field(default_factory=list, description="who may reach PostgreSQL (5432)")
    access: Literal["public", "private"] = "public"
    vpc_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    backend: Annotated[LocalBackend | S3Backend, Field(discriminator="type")] = Field(default_factory=LocalBackend)
    local_subnet: str | None = Field(default=None, description="local target: a /24 in 198.18.0.0/15")

    # --- input normalisation ------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _image_tag(cls, data: Any) -> Any:
        """Accept the original API's `image_tag` (e.g. `14-alpine`) as the major version. A bad tag is left to
        the field's validator and a clash with postgres_version to the cross-field rules, so that every other
        field is still checked."""
        if not isinstance(data, dict) or data.get("image_tag") is None:
            return data
        major = image_tag_major(str(data["image_tag"]))
        if major is not None and data.get("postgres_version") is None:
            data = {**data, "postgres_version": major}
        return data

    @model_validator(mode="before")
    @classmethod
    def _backend_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("backend"), str):
            data = dict(data)
            data["backend"] = {"type": data["backend"]}
        return data

    # --- fields -------------------------------------------------------------------------------------
    @field_validator(
        "replica_count", "postgres_version", "max_connections", "sync_standbys", "data_volume_gb", "root_volume_gb",
        mode="before",
    )
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        """pydantic takes true as 1 in lax mode; a count of `true` is a mistake, not a number."""
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a whole number")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a DNS label: 1-32 of a-z, 0-9 and '-', starting with a letter,"
                " not ending with '-'"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        match = INSTANCE_TYPE_RE.fullmatch(value)
        if not match:
            raise ValueError(f"{value!r} is not an EC2 instance type such as t3.medium or m7g.large")
        if match["family"] in PREVIOUS_GENERATION:
            raise ValueError(
                f"{value!r} is a previous-generation type that cannot be EBS-optimised; allowed: current"
                " families such as t3, t4g, m7g, r7g"
            )
        return value

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and image_tag_major(value) is None:
            raise ValueError(
                f"{value!r} does not name a supported PostgreSQL version; allowed: {MIN_PG}..{MAX_PG}"
                " such as '14' or '14-alpine'"
            )
        return value

    @field_validator("admin_cidrs", "client_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _cidr_list(value, info.field_name or "", bool(info.data.get("allow_world", False)))

    @field_validator("shared_buffers")
    @classmethod
    def _shared_buffers(cls, value: str) -> str:
        if not MEMORY_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a PostgreSQL memory value: digits then kB, MB or GB, e.g. 256MB")
        if memory_kb(value) < 128:
            raise ValueError(f"{value!r} is below PostgreSQL's minimum of 128kB")
        return value

    @field_validator("postgres_parameters")
    @classmethod
    def _parameters(cls, value: dict[str, str]) -> dict[str, str]:
        for key, setting in value.items():
            if not PARAM_NAME_RE.fullmatch(key):
                raise ValueError(f"{key!r} is not a PostgreSQL parameter name (a-z, 0-9, _ and .)")
            if key in MANAGED_PARAMETERS:
                raise ValueError(f"{key!r} is managed by pgpipe; use the spec's own field or leave it to the role")
            if not PARAM_VALUE_RE.fullmatch(str(setting)):
                raise ValueError(
                    f"{key}={setting!r} has characters that are not allowed; allowed: letters, digits, space"
                    " and _.:,/+-"
                )
        return dict(sorted(value.items()))

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "PRIVATE KEY" in value:
            raise ValueError("this is a private key; give the public key (the private key never enters Terraform)")
        text = value.strip()
        if not SSH_KEY_RE.fullmatch(text):
            path = Path(value).expanduser()
            if path.is_file() and path.stat().st_size < 16384:
                text = path.read_text().strip()
                if "PRIVATE KEY" in text:
                    raise ValueError(f"{value!r} is a private key file; give the .pub file")
            if not SSH_KEY_RE.fullmatch(text):
                raise ValueError(
                    f"{value[:60]!r} is neither an OpenSSH public key (ssh-ed25519, ssh-rsa, ecdsa-sha2-*) nor"
                    " a path to one"
                )
        return text

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, value: str | None) -> str | None:
        if value is not None and not VPC_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a VPC id such as vpc-0123456789abcdef0")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        for subnet in value:
            if not SUBNET_RE.fullmatch(subnet):
                raise ValueError(f"{subnet!r} is not a subnet id such as subnet-0123456789abcdef0")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if key in RESERVED_TAGS:
                raise ValueError(f"tag {key!r} is set by pgpipe; reserved: {', '.join(RESERVED_TAGS)}")
            if key.lower().startswith("aws:") or not TAG_KEY_RE.fullmatch(key):
                raise ValueError(f"tag key {key!r} is not allowed (1-128 of letters, digits, space, _.:/=+@-; no aws:)")
            if not TAG_VALUE_RE.fullmatch(tag):
                raise ValueError(f"tag {key}={tag!r} is not allowed (0-256 of letters, digits, space, _.:/=+@-)")
        return dict(sorted(value.items()))

    @field_validator("local_subnet")
    @classmethod
    def _local_subnet(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR block") from None
        if net.prefixlen != 24 or not net.subnet_of(TEST_RANGE):  # type: ignore[arg-type]
            raise ValueError(f"{value!r} must be a /24 inside {TEST_RANGE} (the range reserved for tests)")
        return str(net)

    # --- cross-field rules --------------------------------------------------------------------------
    @model_validator(mode="after")
    def _cross(self) -> ClusterSpec:
        problems: list[str] = []
        if self.image_tag is not None and image_tag_major(self.image_tag) != self.postgres_version:
            problems.append(
                f"image_tag: {self.image_tag!r} says version {image_tag_major(self.image_tag)} but postgres_version"
                f" is {self.postgres_version}"
            )
        memory = instance_memory_gib(self.instance_type)
        if memory is not None and memory_kb(self.shared_buffers) > memory * 1024 * 1024:
            problems.append(
                f"shared_buffers: {self.shared_buffers!r} is more than the {memory:g} GiB of memory of"
                f" {self.instance_type}"
            )
        if self.replication_mode == "sync":
            if self.replica_count == 0:
                problems.append("replication_mode: 'sync' needs at least one replica")
            elif self.sync_standbys is None:
                object.__setattr__(self, "sync_standbys", 1)
            elif self.sync_standbys > self.replica_count:
                problems.append(
                    f"sync_standbys: {self.sync_standbys} is more than replica_count {self.replica_count};"
                    f" allowed: 1..{self.replica_count}"
                )
        elif self.sync_standbys is not None:
            problems.append(f"sync_standbys: {self.sync_standbys} is only allowed with replication_mode 'sync'")
        if self.target == "aws":
            if self.ssh_public_key is None:
                problems.append("ssh_public_key: required for target 'aws' (an OpenSSH public key or a path to one)")
            if self.access == "private" and not self.subnet_ids:
                problems.append("subnet_ids: access 'private' needs existing subnet_ids (and vpc_id)")
            if self.subnet_ids and self.vpc_id is None:
                problems.append("vpc_id: required when subnet_ids are given")
            if self.vpc_id is not None and not self.subnet_ids:
                problems.append("subnet_ids: required when vpc_id is given")
        if problems:
            raise ValueError("\n".join(problems))
        if self.replica_count > REPLICA_WARNING:
            log.warning(
                "%d replicas: every replica adds network and CPU load on the primary (WAL is sent to each);"
                " consider cascading replication or fewer replicas",
                self.replica_count,
            )
        return self

    # --- derived values -----------------------------------------------------------------------------
    @property
    def architecture(self) -> Literal["arm64", "x86_64"]:
        return architecture(self.instance_type)

    @property
    def primary_name(self) -> str:
        return f"{self.name}-primary"

    @property
    def replica_names(self) -> list[str]:
        return [f"{self.name}-replica-{i}" for i in range(1, self.replica_count + 1)]

    @property
    def host_names(self) -> list[str]:
        return [self.primary_name, *self.replica_names]

    @property
    def state_key(self) -> str:
        if isinstance(self.backend, S3Backend) and self.backend.key:
            return self.backend.key
        return f"pgpipe/{self.name}/terraform.tfstate"

    @property
    def sandbox_subnet(self) -> str:
        """The local target's /24: given, or derived from the name so that two clusters rarely collide."""
        return self.local_subnet or default_sandbox_subnet(self.name)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


# --- loading ----------------------------------------------------------------------------------------
ENV_PREFIX = "PGPIPE_SPEC_"
VERSION_FIELDS = frozenset({"image_tag", "postgres_version"})


SPEC_FIELDS = frozenset({*ClusterSpec.model_fields, "image_tag"})


def _format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith(("function-", "tagged-")))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "value_error" and not loc:
            # Model-level rules report "field: message" lines, one per bad field.
            for line in msg.splitlines():
                field, sep, rest = line.partition(": ")
                problems.append((field, rest) if sep and field in SPEC_FIELDS else ("", line))
            continue
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(ClusterSpec.model_fields)
            msg = f"unknown field; allowed fields: {allowed}"
        elif err["type"] not in ("value_error", "missing"):
            msg = f"{err.get('input')!r} is not allowed: {msg}"
        problems.append((loc, msg))
    return problems


def parse_spec(data: Mapping[str, Any]) -> ClusterSpec:
    """Validate a mapping into a ClusterSpec, or raise SpecError listing every bad field."""
    try:
        return ClusterSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_format_errors(exc)) from None


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([("spec", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError([("spec", f"{path} is not valid {kind}: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([("spec", f"{path} must hold a mapping of fields, not {type(data).__name__}")])
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`PGPIPE_SPEC_<FIELD>` variables; lists and mappings are given as JSON."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            field = key[len(ENV_PREFIX):].lower()
            if value.startswith(("[", "{")):
                try:
                    out[field] = json.loads(value)
                    continue
                except json.JSONDecodeError:
                    pass
            out[field] = value
    return out


def load_spec(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterSpec:
    """File, then environment, then explicit overrides (flags, HTTP fields): later wins."""
    data: dict[str, Any] = read_spec_file(path) if path is not None else {}
    for layer in (env_overrides(os.environ if environ is None else environ), overrides or {}):
        given = {k: v for k, v in layer.items() if v is not None}
        if VERSION_FIELDS & given.keys():
            # image_tag and postgres_version both set the version: a later layer's one replaces both.
            for key in VERSION_FIELDS:
                data.pop(key, None)
        data.update(given)
    return parse_spec(data)
