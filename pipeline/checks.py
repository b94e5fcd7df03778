"""Static checks on a rendered Terraform root module: pgpipe's own rule that no security-group rule opens SSH (22)
or PostgreSQL (5432) to the whole internet, and checkov run offline with the waivers of `checkov/waivers.yaml`.
checkov misses world-open sources inside `dynamic` blocks, has no rule for 5432 and stops looking at a group's
ingress rules after the first `self = true` rule; our own rule covers those and fails closed: a source it cannot
resolve counts as open."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PgpipeError, WorkspaceError
from pipeline.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

GUARDED_PORTS = (22, 5432)
WAIVERS_FILE = PROJECT_ROOT / "checkov" / "waivers.yaml"
CHECKOV_TIMEOUT = 600.0
VAR_REF = re.compile(r"^\$\{var\.([A-Za-z_][A-Za-z0-9_-]*)\}$")
ALL_PROTOCOLS = ("-1", "all")
TCP = ("tcp", "6")


class StaticCheckFailed(PgpipeError):
    """The rendered module failed pgpipe's own rule or checkov."""

    reason = "static-checks-failed"


class Unresolvable(Exception):
    """An expression the check cannot evaluate statically (it then assumes the worst)."""


# --- our own rule: no world-open 22 or 5432 ------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A rule that opens a guarded port to the whole internet, or whose ports or sources cannot be resolved."""

    file: str
    address: str
    ports: tuple[int, ...]
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.address} opens {', '.join(map(str, self.ports))}: {self.problem}"


def _hcl_files(terraform_dir: Path) -> list[Path]:
    return sorted(terraform_dir.glob("*.tf"))


def parse_hcl_text(text: str) -> dict[str, Any]:
    """Terraform source as python-hcl2 8 data, string quotes stripped (expressions stay `${...}`)."""
    import hcl2  # lazy: lark takes a noticeable share of the CLI's start-up

    options = hcl2.SerializationOptions(strip_string_quotes=True)
    data: dict[str, Any] = hcl2.loads(text, serialization_options=options)
    return data


def parse_hcl(path: Path) -> dict[str, Any]:
    return parse_hcl_text(path.read_text())


def variable_values(terraform_dir: Path, parsed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Each variable's value as terraform would see it: terraform.tfvars.json over the declared defaults."""
    parsed = parsed if parsed is not None else {p.name: parse_hcl(p) for p in _hcl_files(terraform_dir)}
    values: dict[str, Any] = {}
    for data in parsed.values():
        for block in data.get("variable", []):
            for name, body in block.items():
                values[name] = body.get("default")
    tfvars = terraform_dir / "terraform.tfvars.json"
    if tfvars.is_file():
        values.update(json.loads(tfvars.read_text()))
    return values


def _resolve(value: Any, values: Mapping[str, Any]) -> Any:
    """A literal, or a bare `var.NAME` reference; anything else is Unresolvable."""
    if isinstance(value, str) and "${" in value:
        match = VAR_REF.match(value)
        if not match or match[1] not in values:
            raise Unresolvable(value)
        return values[match[1]]
    return value


def _resolve_list(value: Any, values: Mapping[str, Any]) -> list[str]:
    resolved = _resolve(value, values)
    if resolved is None:
        return []
    items = resolved if isinstance(resolved, list) else [resolved]
    out: list[str] = []
    for item in items:
        item = _resolve(item, values)
        out.extend(str(i) for i in (item if isinstance(item, list) else [item]) if i is not None)
    return out


def covers_world(cidrs: Sequence[str]) -> bool:
    """True when the blocks together cover every IPv4 or every IPv6 address (0.0.0.0/1 + 128.0.0.0/1 too)."""
    nets: list[Any] = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise Unresolvable(cidr) from None
    for version in (4, 6):
        family = [n for n in nets if n.version == version]
        if any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(family)):
            return True
    return False


def _guarded_ports(rule: Mapping[str, Any], values: Mapping[str, Any], protocol_key: str) -> tuple[int, ...]:
    """The guarded ports a rule admits; unresolvable protocol or ports count as all ports."""
    try:
        protocol = str(_resolve(rule.get(protocol_key, "tcp"), values)).lower()
    except Unresolvable:
        return GUARDED_PORTS
    if protocol in ALL_PROTOCOLS:
        return GUARDED_PORTS
    if protocol not in TCP:
        return ()  # SSH and PostgreSQL are TCP only
    try:
        low = int(_resolve(rule.get("from_port", 0), values))
        high = int(_resolve(rule.get("to_port", 65535), values))
    except (Unresolvable, TypeError, ValueError):
        return GUARDED_PORTS
    return tuple(p for p in GUARDED_PORTS if low <= p <= high)


def check_rule(
    rule: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    cidr_keys: tuple[str, ...] = ("cidr_blocks", "ipv6_cidr_blocks"),
    protocol_key: str = "protocol",
) -> tuple[tuple[int, ...], str] | None:
    """(ports, problem) when the ingress rule admits the world (or may) to a guarded port, else None."""
    ports = _guarded_ports(rule, values, protocol_key)
    if not ports:
        return None
    try:
        cidrs = [c for key in cidr_keys for c in _resolve_list(rule.get(key), values)]
        if covers_world(cidrs):
            return ports, f"sources ({', '.join(cidrs)}) cover the whole internet"
    except Unresolvable as exc:
        return ports, f"source {exc} cannot be checked statically"
    return None


def _ingress_rules(kind: str, body: Mapping[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(label, rule, check_rule keyword arguments) for every ingress rule of a resource."""
    if kind == "aws_security_group":
        ingress = body.get("ingress", [])
        for i, rule in enumerate(ingress if isinstance(ingress, list) else [ingress]):
            yield f"ingress[{i}]", rule, {}
        for i, dyn in enumerate(body.get("dynamic", [])):
            if "ingress" in dyn:
                for content in dyn["ingress"].get("content", [{}]):
                    yield f"dynamic.ingress[{i}]", content, {}
    elif kind == "aws_security_group_rule" and body.get("type") == "ingress":
        yield "", body, {}
    elif kind == "aws_vpc_security_group_ingress_rule":
        yield "", body, {"cidr_keys": ("cidr_ipv4", "cidr_ipv6"), "protocol_key": "ip_protocol"}


def world_open_rules(terraform_dir: Path) -> list[Finding]:
    """Every security-group ingress rule in the module that opens 22 or 5432 to 0.0.0.0/0 or ::/0 (or that
    cannot be shown not to), with variables as terraform.tfvars.json sets them."""
    parsed = {p.name: parse_hcl(p) for p in _hcl_files(terraform_dir)}
    return find_world_open(parsed, variable_values(terraform_dir, parsed))


def find_world_open(parsed: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]) -> list[Finding]:
    """world_open_rules over parsed files (name -> python-hcl2 data) and variable values."""
    findings: list[Finding] = []
    for file, data in parsed.items():
        for block in data.get("resource", []):
            for kind, resources in block.items():
                for name, body in resources.items():
                    for label, rule, kwargs in _ingress_rules(kind, body):
                        address = f"{kind}.{name}" + (f" {label}" if label else "")
                        if not isinstance(rule, dict):
                            findings.append(Finding(file, address, GUARDED_PORTS, f"rules {rule} are not static"))
                            continue
                        hit = check_rule(rule, values, **kwargs)
                        if hit is not None:
                            findings.append(Finding(file, address, *hit))
    return findings


# --- checkov with waivers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Waiver:
    """A checkov check that fails on purpose for one Terraform address, with the reason."""

    check: str
    resource: str
    reason: str
    when: Mapping[str, Any] = field(default_factory=dict)

    def applies(self, tfvars: Mapping[str, Any]) -> bool:
        return all(tfvars.get(key) == value for key, value in self.when.items())


def load_waivers(path: Path = WAIVERS_FILE) -> list[Waiver]:
    """The waivers file; an entry without a check, a resource or a reason is an error, not a silent skip."""
    data = yaml.safe_load(path.read_text()) or {}
    waivers = []
    for i, entry in enumerate(data.get("waivers", [])):
        missing = [k for k in ("check", "resource", "reason") if not str(entry.get(k, "")).strip()]
        if missing:
            raise StaticCheckFailed(f"{path}: waiver {i + 1} lacks {', '.join(missing)}", reason="bad-waiver")
        reason = " ".join(str(entry["reason"]).split())
        waivers.append(Waiver(str(entry["check"]), str(entry["resource"]), reason, entry.get("when") or {}))
    return waivers


@dataclass(frozen=True)
class CheckovFailure:
    check: str
    address: str
    resource: str
    file: str
    name: str

    def __str__(self) -> str:
        return f"{self.check} {self.resource} ({self.file}): {self.name}"


@dataclass
class CheckovReport:
    passed: list[tuple[str, str]]  # (check, address) of every check that passed
    failed: list[CheckovFailure]
    waived: list[tuple[CheckovFailure, Waiver]]
    unused_waivers: list[Waiver]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": len(self.passed),
            "failed": [str(f) for f in self.failed],
            "waived": [f"{f} -- {w.reason}" for f, w in self.waived],
            "unused_waivers": [f"{w.check} {w.resource}" for w in self.unused_waivers],
        }


def find_checkov() -> str | None:
    """checkov lives in its own venv: PGPIPE_CHECKOV, then the project's .venv-checkov, then PATH."""
    candidates = [os.environ.get("PGPIPE_CHECKOV"), str(PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("checkov")


def checkov_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Offline: no platform key (it would upload results), no update check."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k != "BC_API_KEY"}
    env["CKV_SKIP_PACKAGE_UPDATE_CHECK"] = "true"
    return env


def _address(result: Mapping[str, Any]) -> str:
    """checkov's resource name without instance keys, with `data.` for data sources."""
    resource = re.sub(r"\[[^\]]*\]$", "", str(result["resource"]))
    is_data = ".checks.data." in str(result.get("check_class", ""))
    return f"data.{resource}" if is_data else resource


def run_checkov(terraform_dir: Path, checkov: str | None = None, waivers: list[Waiver] | None = None) -> CheckovReport:
    """Run checkov on the module and sort its failures into waived and not waived."""
    from pipeline.proc import run

    binary = checkov or find_checkov()
    if binary is None:
        raise StaticCheckFailed(
            "checkov not found: run `make setup` (it installs checkov into .venv-checkov) or set PGPIPE_CHECKOV",
            reason="tool-missing",
        )
    args = [binary, "-d", str(terraform_dir), "--framework", "terraform", "--skip-download", "-o", "json"]
    result = run(args, timeout=CHECKOV_TIMEOUT, ok_codes=(0, 1), env=checkov_env(), logger=log)
    report = json.loads(result.stdout)
    results = report.get("results", {}) if isinstance(report, dict) else {}
    tfvars_path = terraform_dir / "terraform.tfvars.json"
    tfvars = json.loads(tfvars_path.read_text()) if tfvars_path.is_file() else {}
    active = [w for w in (load_waivers() if waivers is None else waivers) if w.applies(tfvars)]
    failed: list[CheckovFailure] = []
    waived: list[tuple[CheckovFailure, Waiver]] = []
    for item in results.get("failed_checks", []):
        failure = CheckovFailure(
            item["check_id"], _address(item), item["resource"], item["file_path"], item["check_name"]
        )
        waiver = next((w for w in active if (w.check, w.resource) == (failure.check, failure.address)), None)
        if waiver is None:
            failed.append(failure)
        else:
            waived.append((failure, waiver))
    used = {id(w) for _, w in waived}
    return CheckovReport(
        passed=[(item["check_id"], _address(item)) for item in results.get("passed_checks", [])],
        failed=failed,
        waived=waived,
        unused_waivers=[w for w in active if id(w) not in used],
    )


def run_checks(terraform_dir: Path, *, with_checkov: bool | None = None) -> dict[str, Any]:
    """Both checks on a rendered module (checkov when asked, or when installed and not declined); raises
    StaticCheckFailed naming every problem."""
    if not _hcl_files(terraform_dir):
        raise WorkspaceError(
            f"{terraform_dir} holds no Terraform: run `pgpipe generate` first", reason="terraform-missing"
        )
    findings = world_open_rules(terraform_dir)
    outcome: dict[str, Any] = {"world_open": [str(f) for f in findings], "checkov": None}
    problems = [str(f) for f in findings]
    binary = find_checkov()
    if with_checkov or (with_checkov is None and binary is not None):
        report = run_checkov(terraform_dir, binary)
        outcome["checkov"] = report.as_dict()
        problems += [f"checkov: {f}" for f in report.failed]
    if problems:
        raise StaticCheckFailed("static checks failed:\n  " + "\n  ".join(problems))
    return outcome
