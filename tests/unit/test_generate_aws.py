"""The rendered Terraform of the aws target: parses, is deterministic, and has the structure the issue asks for
(hosts per replica count, zone spread, AMI per OS and architecture, stable identities, hardened hosts, a closed
security group, the output contract). Checked on python-hcl2's reading of the files, without terraform."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.checks import (
    StaticCheckFailed,
    checkov_env,
    find_world_open,
    load_waivers,
    parse_hcl_text,
    world_open_rules,
)
from pipeline.paths import PROJECT_ROOT
from pipeline.spec import ClusterSpec, parse_spec
from pipeline.stages.generate import HEADER, generate, render_terraform
from pipeline.workspace import Workspace

EXAMPLE = json.loads((PROJECT_ROOT / "examples" / "aws.json").read_text())
PRIVATE = {
    "access": "private",
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}
VARIANTS = {
    "public-0": {"replica_count": 0},
    "public-2": {"replica_count": 2},
    "public-15": {"replica_count": 15},
    "private-0": {**PRIVATE, "replica_count": 0},
    "private-2": {**PRIVATE, "replica_count": 2},
    "private-15": {**PRIVATE, "replica_count": 15},
    "no-cidrs": {"admin_cidrs": [], "client_cidrs": [], "backend": "local"},
}


def aws_spec(**overrides: Any) -> ClusterSpec:
    return parse_spec({**EXAMPLE, **overrides})


class Module:
    """One rendering: the file texts, each .tf file parsed, and the tfvars."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.files = render_terraform(spec)
        self.tfvars: dict[str, Any] = json.loads(self.files["terraform.tfvars.json"])

    @functools.cached_property
    def parsed(self) -> dict[str, Any]:
        return {name: parse_hcl_text(text) for name, text in self.files.items() if name.endswith(".tf")}

    def blocks(self, kind: str) -> dict[str, Any]:
        """`resource`/`data` blocks by "type.name"; `variable`/`output` blocks by name."""
        out: dict[str, Any] = {}
        for data in self.parsed.values():
            for block in data.get(kind, []):
                for key, body in block.items():
                    if kind in ("resource", "data"):
                        out.update({f"{key}.{name}": b for name, b in body.items()})
                    else:
                        out[key] = body
        return out

    @property
    def resources(self) -> dict[str, Any]:
        return self.blocks("resource")

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for data in self.parsed.values():
            for block in data.get("locals", []):
                merged.update(block)
        return merged


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def module(request: pytest.FixtureRequest) -> Module:
    return Module(aws_spec(**VARIANTS[request.param]))


@pytest.fixture(scope="module")
def public() -> Module:
    return Module(aws_spec())


@pytest.fixture(scope="module")
def private() -> Module:
    return Module(aws_spec(**PRIVATE))


# --- every rendering ------------------------------------------------------------------------------------------
def test_the_module_has_the_house_file_split(module: Module) -> None:
    expected = {"versions.tf", "variables.tf", "main.tf", "outputs.tf", "terraform.tfvars.json"}
    if module.spec.backend.type == "s3":
        expected.add("backend.tf")
    assert set(module.files) == expected


def test_every_terraform_file_starts_with_the_header(module: Module) -> None:
    assert all(text.startswith(HEADER + "\n") for name, text in module.files.items() if name.endswith(".tf"))


def test_every_terraform_file_parses(module: Module) -> None:
    assert set(module.parsed) == {n for n in module.files if n.endswith(".tf")}
    assert all(module.parsed.values())


def test_rendering_is_deterministic(module: Module) -> None:
    assert render_terraform(module.spec) == module.files


def test_hosts_are_the_primary_and_one_per_replica(module: Module) -> None:
    hosts = module.tfvars["hosts"]
    assert len(hosts) == 1 + module.spec.replica_count
    assert [n for n, h in hosts.items() if h["role"] == "primary"] == [module.spec.primary_name]
    assert sorted(h["index"] for h in hosts.values()) == list(range(len(hosts)))


def test_no_rule_opens_ssh_or_postgresql_to_the_world(module: Module) -> None:
    assert find_world_open(module.parsed, module.tfvars) == []


def test_every_variable_has_description_type_default_in_that_order(module: Module) -> None:
    for name, body in module.blocks("variable").items():
        assert [k for k in body if k in ("description", "type", "default")] == ["description", "type", "default"], name


def test_every_tfvars_value_is_a_declared_variable(module: Module) -> None:
    assert set(module.tfvars) <= set(module.blocks("variable"))


def test_no_dynamic_blocks_anywhere(module: Module) -> None:
    assert all("dynamic" not in text for text in module.files.values())


# --- hosts ----------------------------------------------------------------------------------------------------
def test_instances_volumes_and_attachments_are_keyed_by_host_name(public: Module) -> None:
    for address in ("aws_instance.host", "aws_ebs_volume.data", "aws_volume_attachment.data"):
        assert public.resources[address]["for_each"] == "${var.hosts}", address


def test_removing_the_last_replica_removes_exactly_that_host() -> None:
    three, two = Module(aws_spec(replica_count=3)), Module(aws_spec(replica_count=2))
    assert {n: t for n, t in three.files.items() if n.endswith(".tf")} == {
        n: t for n, t in two.files.items() if n.endswith(".tf")
    }
    before, after = three.tfvars.pop("hosts"), two.tfvars.pop("hosts")
    assert set(before) - set(after) == {"orders-replica-3"}
    assert {n: before[n] for n in after} == after
    assert three.tfvars == two.tfvars


def test_hosts_are_hardened(public: Module) -> None:
    host = public.resources["aws_instance.host"]
    assert host["metadata_options"][0]["http_tokens"] == "required"
    assert (host["monitoring"], host["ebs_optimized"]) == (True, True)
    root = host["root_block_device"][0]
    assert (root["volume_type"], root["encrypted"]) == ("gp3", True)
    assert host["lifecycle"][0]["ignore_changes"] == ["ami"]
    assert host["ami"] == "${data.aws_ssm_parameter.ami.insecure_value}"
    assert host["key_name"] == "${aws_key_pair.admin.key_name}"
    assert public.resources["aws_key_pair.admin"]["public_key"] == "${var.ssh_public_key}"


def test_each_host_has_an_encrypted_gp3_data_volume_in_its_zone(public: Module) -> None:
    volume = public.resources["aws_ebs_volume.data"]
    assert (volume["type"], volume["encrypted"], volume["size"]) == ("gp3", True, "${var.data_volume_gb}")
    assert volume["availability_zone"] == "${aws_instance.host[each.key].availability_zone}"
    attachment = public.resources["aws_volume_attachment.data"]
    assert attachment["device_name"] == "${var.data_device_name}"
    assert attachment["stop_instance_before_detaching"] is True
    assert public.tfvars["data_device_name"] == "/dev/sdf"


def test_hosts_are_tagged_with_name_role_cluster_and_manager(public: Module) -> None:
    tags = public.resources["aws_instance.host"]["tags"]
    assert "Name = each.key" in tags and "Role = each.value.role" in tags
    assert public.locals["common_tags"] == '${merge(var.tags, {Cluster = var.cluster_name, ManagedBy = "pgpipe"})}'
    provider = public.blocks("provider")["aws"]
    assert provider["region"] == "${var.region}"
    assert provider["default_tags"][0]["tags"] == "${local.common_tags}"


# The vendors' public parameters, written out here so that a typo in targets.py cannot hide.
AMI_PARAMETERS = {
    ("debian12", "arm64"): "/aws/service/debian/release/12/latest/arm64",
    ("debian12", "x86_64"): "/aws/service/debian/release/12/latest/amd64",
    ("ubuntu2404", "arm64"): "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
    ("ubuntu2404", "x86_64"): "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    ("al2023", "arm64"): "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    ("al2023", "x86_64"): "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
}


@pytest.mark.parametrize(
    ("instance_type", "arch"),
    [
        ("t4g.medium", "arm64"),
        ("m7g.large", "arm64"),
        ("c7g.xlarge", "arm64"),
        ("r7g.2xlarge", "arm64"),
        ("r8g.large", "arm64"),
        ("t3.medium", "x86_64"),
        ("m6i.large", "x86_64"),
        ("c5.xlarge", "x86_64"),
        ("m7a.large", "x86_64"),
    ],
)
@pytest.mark.parametrize("os_name", ["debian12", "ubuntu2404", "al2023"])
def test_ami_parameter_matches_os_and_architecture(instance_type: str, arch: str, os_name: str) -> None:
    spec = aws_spec(instance_type=instance_type, os=os_name, shared_buffers="128MB")
    assert spec.architecture == arch
    assert Module(spec).tfvars["ami_ssm_parameter"] == AMI_PARAMETERS[(os_name, arch)]


@pytest.mark.parametrize(
    ("instance_type", "nitro"),
    [("t3.medium", True), ("m7g.large", True), ("m4.xlarge", False), ("i3.metal", True)],
)
def test_the_data_device_follows_the_hypervisor(instance_type: str, nitro: bool) -> None:
    """Nitro hosts see the data volume as an NVMe device named by volume id, Xen hosts as /dev/xvdf."""
    assert Module(aws_spec(instance_type=instance_type, shared_buffers="128MB")).tfvars["nitro"] is nitro


def test_the_data_device_output_is_the_path_the_host_sees(public: Module) -> None:
    assert public.locals["nvme_devices"] == (
        "${{for name, v in aws_ebs_volume.data : name =>"
        ' "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(v.id, "-", "")}"}}'
    )
    assert public.locals["xen_device"] == '${replace(var.data_device_name, "/dev/sd", "/dev/xvd")}'


def test_the_ami_comes_from_the_ssm_parameter(public: Module) -> None:
    assert public.blocks("data")["aws_ssm_parameter.ami"]["name"] == "${var.ami_ssm_parameter}"


# --- zones and network ----------------------------------------------------------------------------------------
def test_new_vpc_has_one_public_subnet_per_zone_used(public: Module) -> None:
    assert public.locals["zone_count"] == "${min(length(var.hosts), length(local.zones))}"
    subnet = public.resources["aws_subnet.public"]
    assert subnet["count"] == "${local.zone_count}"
    assert subnet["availability_zone"] == "${local.zones[count.index]}"
    assert subnet["map_public_ip_on_launch"] is False
    assert public.resources["aws_route_table.public"]["route"][0]["gateway_id"] == "${aws_internet_gateway.cluster.id}"


def test_hosts_go_round_robin_over_the_zones_by_index(public: Module) -> None:
    assert public.resources["aws_instance.host"]["subnet_id"] == "${local.host_subnet_id[each.key]}"
    assert "aws_subnet.public[h.index % local.zone_count].id" in public.locals["host_subnet_id"]


def test_zones_are_pinned_by_name(public: Module) -> None:
    zones = public.blocks("data")["aws_availability_zones.pinned"]
    assert zones["filter"][0]["name"] == "zone-name"
    assert "state" not in zones  # an impaired zone must not drop out of the list and move hosts


def test_new_vpc_is_watched_and_its_default_group_closed(public: Module) -> None:
    resources = public.resources
    assert resources["aws_flow_log.cluster"]["vpc_id"] == "${aws_vpc.cluster.id}"
    assert resources["aws_cloudwatch_log_group.flow_logs"]["kms_key_id"] == "${aws_kms_key.cluster.arn}"
    default = resources["aws_default_security_group.default"]
    assert "ingress" not in default and "egress" not in default


def test_public_hosts_ask_for_public_addresses(public: Module) -> None:
    assert public.resources["aws_instance.host"]["associate_public_ip_address"] is True


def test_private_access_uses_the_given_network_without_public_addresses(private: Module) -> None:
    resources = private.resources
    assert resources["aws_instance.host"]["associate_public_ip_address"] is False
    assert not any(a.startswith(("aws_vpc.", "aws_subnet.", "aws_internet_gateway.")) for a in resources)
    assert private.locals["vpc_id"] == "${var.vpc_id}"
    assert "var.subnet_ids[h.index % length(var.subnet_ids)]" in private.locals["host_subnet_id"]
    assert private.tfvars["subnet_ids"] == PRIVATE["subnet_ids"]


# --- security group -------------------------------------------------------------------------------------------
def _rules(module: Module, direction: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = module.resources["aws_security_group.cluster"][direction]
    return rules


def test_every_rule_has_a_description(public: Module) -> None:
    rules = _rules(public, "ingress") + _rules(public, "egress")
    assert all(rule.get("description") for rule in rules)


def test_ssh_only_from_admin_cidrs_and_postgresql_from_clients_and_the_group(public: Module) -> None:
    sources = {
        (r["from_port"], r["to_port"], r.get("cidr_blocks"), r.get("ipv6_cidr_blocks"), r.get("self"))
        for r in _rules(public, "ingress")
    }
    assert sources == {
        (22, 22, "${var.admin_ipv4_cidrs}", "${var.admin_ipv6_cidrs}", None),
        (5432, 5432, "${var.client_ipv4_cidrs}", "${var.client_ipv6_cidrs}", None),
        (5432, 5432, None, None, True),
    }
    assert public.tfvars["admin_ipv4_cidrs"] == ["203.0.113.0/28"]
    assert (public.tfvars["client_ipv4_cidrs"], public.tfvars["client_ipv6_cidrs"]) == (
        ["198.51.100.0/24"],
        ["2001:db8:1234::/48"],
    )


def test_the_self_rule_comes_last_so_checkov_reads_every_other_rule(public: Module) -> None:
    assert _rules(public, "ingress")[-1].get("self") is True


def test_no_ingress_block_without_a_source() -> None:
    rules = _rules(Module(aws_spec(admin_cidrs=[], client_cidrs=[])), "ingress")
    assert rules == [r for r in rules if r.get("self")] and len(rules) == 1


def test_egress_is_replication_and_package_repositories_only(public: Module) -> None:
    egress = {(r["protocol"], r["from_port"], r["to_port"], bool(r.get("self"))) for r in _rules(public, "egress")}
    assert egress == {("tcp", 5432, 5432, True), ("tcp", 443, 443, False), ("tcp", 80, 80, False)}


def test_world_open_ssh_is_found_when_the_spec_allows_it(tmp_path: Path) -> None:
    spec = aws_spec(allow_world=True, admin_cidrs=["0.0.0.0/0"], client_cidrs=["::/0"])
    generate(spec, Workspace(tmp_path))
    findings = world_open_rules(tmp_path / "terraform")
    assert sorted(f.ports for f in findings) == [(22,), (5432,)]


# --- encryption, outputs, backend -----------------------------------------------------------------------------
def test_volumes_use_the_clusters_rotating_key(public: Module) -> None:
    key = public.resources["aws_kms_key.cluster"]
    assert key["enable_key_rotation"] is True
    assert public.resources["aws_ebs_volume.data"]["kms_key_id"] == "${aws_kms_key.cluster.arn}"
    assert public.resources["aws_instance.host"]["root_block_device"][0]["kms_key_id"] == "${aws_kms_key.cluster.arn}"


def test_outputs_keep_the_contract_of_the_local_target(public: Module) -> None:
    local_outputs = parse_hcl_text(
        (PROJECT_ROOT / "templates/terraform/local/outputs.tf.j2").read_text().replace("{{ header }}", "")
    )
    contract = {name for block in local_outputs["output"] for name in block}
    outputs = public.blocks("output")
    assert contract <= set(outputs)
    assert {"security_group_id", "vpc_id", "instance_ids", "data_volume_ids"} <= set(outputs)
    assert outputs["become_method"]["value"] == "sudo"
    assert outputs["ssh_user"]["value"] == "${var.ssh_user}"
    assert public.locals["host_outputs"] == (
        "${{for name, h in aws_instance.host : name => {name = name, private_ip = h.private_ip,"
        ' public_ip = h.public_ip == "" ? null : h.public_ip,'
        " data_device = var.nitro ? local.nvme_devices[name] : local.xen_device}}}"
    )
    assert public.tfvars["ssh_user"] == "admin"


def test_replicas_output_is_in_index_order(public: Module) -> None:
    assert public.blocks("output")["replicas"]["value"] == (
        "${[for name in local.replica_names : local.host_outputs[name]]}"
    )
    assert 'format("%03d %s", h.index, name)' in public.locals["replica_names"]


def test_s3_backend_is_rendered_only_for_s3_state(public: Module) -> None:
    backend = public.parsed["backend.tf"]["terraform"][0]["backend"][0]["s3"]
    assert (backend["bucket"], backend["key"], backend["encrypt"]) == (
        "example-pgpipe-state",
        "pgpipe/orders/terraform.tfstate",
        True,
    )
    assert backend["dynamodb_table"] == "pgpipe-locks"
    assert "backend.tf" not in render_terraform(aws_spec(backend="local"))


def test_an_s3_lock_file_asks_for_terraform_1_10() -> None:
    backend = {"type": "s3", "bucket": "example-pgpipe-state", "region": "eu-west-1", "use_lockfile": True}
    module = Module(aws_spec(backend=backend))
    assert module.parsed["backend.tf"]["terraform"][0]["backend"][0]["s3"]["use_lockfile"] is True
    assert module.parsed["versions.tf"]["terraform"][0]["required_version"] == ">= 1.10.0"


def test_versions_pin_terraform_and_the_aws_provider(public: Module) -> None:
    terraform = public.parsed["versions.tf"]["terraform"][0]
    assert terraform["required_version"] == ">= 1.0.0"
    aws = terraform["required_providers"][0]["aws"]
    assert (aws["source"], aws["version"]) == ("hashicorp/aws", "~> 5.8")  # 5.8: insecure_value


def test_generate_twice_writes_byte_identical_files(tmp_path: Path) -> None:
    spec = aws_spec(replica_count=15)
    first, second = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    generate(spec, first)
    generate(spec, second)
    names = sorted(p.name for p in first.terraform_dir.iterdir())
    assert names == sorted(p.name for p in second.terraform_dir.iterdir())
    assert all((first.terraform_dir / n).read_bytes() == (second.terraform_dir / n).read_bytes() for n in names)
    assert first.spec_json.read_bytes() == second.spec_json.read_bytes()


# --- pgpipe's own check: no world-open 22 or 5432 -------------------------------------------------------------
def _findings(hcl: str, values: dict[str, Any] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.address, f.ports) for f in find_world_open({"main.tf": parse_hcl_text(hcl)}, values or {})]


def _group(*rules: str) -> str:
    return 'resource "aws_security_group" "g" {\n' + "\n".join(rules) + "\n}\n"


def _ingress(port: int, cidrs: str, protocol: str = '"tcp"', direction: str = "ingress") -> str:
    return f"{direction} {{\n from_port = {port}\n to_port = {port}\n protocol = {protocol}\n cidr_blocks = {cidrs}\n}}"


@pytest.mark.parametrize(
    ("hcl", "values", "expected"),
    [
        (_group(_ingress(22, '["0.0.0.0/0"]')), {}, [("aws_security_group.g ingress[0]", (22,))]),
        (_group(_ingress(22, "var.admin")), {"admin": ["0.0.0.0/0"]}, [("aws_security_group.g ingress[0]", (22,))]),
        (_group(_ingress(5432, '["0.0.0.0/1", "128.0.0.0/1"]')), {}, [("aws_security_group.g ingress[0]", (5432,))]),
        (
            _group(
                'ingress {\n from_port = 5432\n to_port = 5432\n protocol = "tcp"\n self = true\n}',
                _ingress(5432, '["0.0.0.0/0"]'),
            ),
            {},
            [("aws_security_group.g ingress[1]", (5432,))],
        ),
        (_group(_ingress(0, '["0.0.0.0/0"]', '"-1"')), {}, [("aws_security_group.g ingress[0]", (22, 5432))]),
        (
            _group(_ingress(5432, 'concat(var.a, ["10.0.0.0/8"])')),
            {"a": []},
            [("aws_security_group.g ingress[0]", (5432,))],
        ),
        (
            _group(
                'dynamic "ingress" {\n for_each = var.rules\n content {\n from_port = ingress.value\n'
                ' to_port = ingress.value\n protocol = "tcp"\n cidr_blocks = ["0.0.0.0/0"]\n }\n}'
            ),
            {"rules": [22]},
            [("aws_security_group.g dynamic.ingress[0]", (22, 5432))],
        ),
        (
            'resource "aws_vpc_security_group_ingress_rule" "r" {\n cidr_ipv6 = "::/0"\n from_port = 5000\n'
            ' to_port = 6000\n ip_protocol = "tcp"\n}',
            {},
            [("aws_vpc_security_group_ingress_rule.r", (5432,))],
        ),
        (
            'resource "aws_security_group_rule" "r" {\n type = "ingress"\n from_port = 0\n to_port = 65535\n'
            ' protocol = "tcp"\n cidr_blocks = ["10.0.0.0/8"]\n ipv6_cidr_blocks = ["::/0"]\n}',
            {},
            [("aws_security_group_rule.r", (22, 5432))],
        ),
        # Not world-open to a guarded port: narrower sources, other ports, UDP, egress.
        (_group(_ingress(22, '["203.0.113.0/24", "2001:db8::/32"]')), {}, []),
        (_group(_ingress(443, '["0.0.0.0/0"]')), {}, []),
        (_group(_ingress(22, '["0.0.0.0/0"]', '"udp"')), {}, []),
        (_group(_ingress(0, '["0.0.0.0/0"]', '"-1"', direction="egress")), {}, []),
        (
            'resource "aws_security_group_rule" "r" {\n type = "egress"\n from_port = 22\n to_port = 22\n'
            ' protocol = "tcp"\n cidr_blocks = ["0.0.0.0/0"]\n}',
            {},
            [],
        ),
    ],
    ids=[
        "literal-ssh",
        "ssh-through-a-variable",
        "two-halves",
        "after-a-self-rule",
        "all-protocols",
        "expression",
        "dynamic-block",
        "vpc-ingress-rule-ipv6",
        "sg-rule-range",
        "narrow",
        "https",
        "udp",
        "egress",
        "egress-rule",
    ],
)
def test_world_open_check(hcl: str, values: dict[str, Any], expected: list[tuple[str, tuple[int, ...]]]) -> None:
    assert _findings(hcl, values) == expected


def test_tfvars_override_variable_defaults(tmp_path: Path) -> None:
    variable = 'variable "admin" {\n  type    = list(string)\n  default = ["0.0.0.0/0"]\n}\n'
    (tmp_path / "main.tf").write_text(variable + _group(_ingress(22, "var.admin")))
    assert [f.ports for f in world_open_rules(tmp_path)] == [(22,)]
    (tmp_path / "terraform.tfvars.json").write_text('{"admin": ["192.0.2.0/24"]}')
    assert world_open_rules(tmp_path) == []


# --- checkov waivers ------------------------------------------------------------------------------------------
def test_every_waiver_names_a_check_a_resource_and_a_reason() -> None:
    waivers = load_waivers()
    assert waivers
    for waiver in waivers:
        assert re.fullmatch(r"CKV2?_AWS_[0-9]+", waiver.check), waiver
        assert re.fullmatch(r"(data\.)?aws_[a-z0-9_]+\.[a-z0-9_]+", waiver.resource), waiver
        assert len(waiver.reason.split()) >= 10, waiver
        assert set(waiver.when) <= set(Module(aws_spec()).tfvars), waiver


def test_the_public_address_waiver_applies_to_public_access_only() -> None:
    waiver = next(w for w in load_waivers() if w.check == "CKV_AWS_88")
    assert waiver.applies({"access": "public"}) and not waiver.applies({"access": "private"})


def test_a_waiver_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - check: CKV_AWS_88\n    resource: aws_instance.host\n")
    with pytest.raises(StaticCheckFailed, match="lacks reason"):
        load_waivers(path)


def test_checkov_runs_offline() -> None:
    env = checkov_env({"BC_API_KEY": "secret-key", "PATH": "/usr/bin"})
    assert "BC_API_KEY" not in env and env["CKV_SKIP_PACKAGE_UPDATE_CHECK"] == "true"
