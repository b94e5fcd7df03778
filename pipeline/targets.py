"""What each Terraform target needs from a spec: the variables written to `terraform.tfvars.json`.
Values travel as variables, never pasted into HCL."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pipeline.spec import INSTANCE_TYPE_RE, ClusterSpec

SSH_USERS = {"debian12": "admin", "ubuntu2404": "ubuntu", "al2023": "ec2-user"}
# Public SSM parameters of each OS's current image, by architecture.
AMI_PARAMETERS = {
    "debian12": {
        "x86_64": "/aws/service/debian/release/12/latest/amd64",
        "arm64": "/aws/service/debian/release/12/latest/arm64",
    },
    "ubuntu2404": {
        "x86_64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
        "arm64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
    },
    "al2023": {
        "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    },
}
DATA_DEVICE = "/dev/sdf"
# Families on the Xen hypervisor: their EBS volumes appear as /dev/xvd*; every other family is built on Nitro
# (NVMe devices, named by volume id). AWS adds no new Xen families, so this list is closed.
XEN_FAMILIES = frozenset(
    {"c1", "c3", "c4", "cc2", "cr1", "d2", "f1", "g2", "g3", "g3s", "h1", "hs1", "i2", "i3", "m1", "m2", "m3", "m4",
     "p2", "p3", "r3", "r4", "t1", "t2", "x1", "x1e"}
)
SANDBOX_ROOT = Path(os.environ.get("PGPIPE_SANDBOX_ROOT", "/var/lib/pgpipe/sandbox"))


def host_roles(spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    """Each host's role and index; the index places it in a zone (aws) or an address (local)."""
    hosts: dict[str, dict[str, Any]] = {spec.primary_name: {"role": "primary", "index": 0}}
    for i, name in enumerate(spec.replica_names, start=1):
        hosts[name] = {"role": "replica", "index": i}
    return hosts


def _by_family(cidrs: list[str]) -> tuple[list[str], list[str]]:
    """Split CIDR blocks into IPv4 and IPv6: a security-group rule takes them in separate arguments."""
    ipv4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    return ipv4, [c for c in cidrs if c not in ipv4]


def is_nitro(instance_type: str) -> bool:
    match = INSTANCE_TYPE_RE.fullmatch(instance_type)
    if match is None:
        return True
    return match["family"] not in XEN_FAMILIES or match["size"].startswith("metal")


def aws_vars(spec: ClusterSpec) -> dict[str, Any]:
    admin_ipv4, admin_ipv6 = _by_family(spec.admin_cidrs)
    client_ipv4, client_ipv6 = _by_family(spec.client_cidrs)
    return {
        "cluster_name": spec.name,
        "region": spec.region,
        "instance_type": spec.instance_type,
        "ami_ssm_parameter": AMI_PARAMETERS[spec.os][spec.architecture],
        "ssh_user": SSH_USERS[spec.os],
        "ssh_public_key": spec.ssh_public_key,
        "hosts": host_roles(spec),
        "root_volume_gb": spec.root_volume_gb,
        "data_volume_gb": spec.data_volume_gb,
        "data_device_name": DATA_DEVICE,
        "nitro": is_nitro(spec.instance_type),
        "admin_ipv4_cidrs": admin_ipv4,
        "admin_ipv6_cidrs": admin_ipv6,
        "client_ipv4_cidrs": client_ipv4,
        "client_ipv6_cidrs": client_ipv6,
        "access": spec.access,
        "vpc_id": spec.vpc_id,
        "subnet_ids": spec.subnet_ids,
        "tags": spec.tags,
    }


def sandbox_address(spec: ClusterSpec, index: int) -> str:
    net = ipaddress.ip_network(spec.sandbox_subnet)
    return str(net.network_address + 10 + index)


def local_vars(spec: ClusterSpec) -> dict[str, Any]:
    hosts = host_roles(spec)
    for host in hosts.values():
        host["private_ip"] = sandbox_address(spec, host["index"])
    return {
        "cluster_name": spec.name,
        "sandbox": spec.name,
        "subnet": spec.sandbox_subnet,
        "hosts": hosts,
        "ssh_user": "root",
        "ssh_private_key_file": str(SANDBOX_ROOT / spec.name / "ssh" / "id_ed25519"),
    }


TARGET_VARS = {"aws": aws_vars, "local": local_vars}
