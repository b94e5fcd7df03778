"""Sandbox hosts for integration tests: `make_sandbox` (session-scoped) makes a sandbox and takes every
sandbox it made down at the end of the session, also when tests fail or `up` itself failed half-way."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import proc, sandbox


@dataclass(frozen=True)
class Sandbox:
    """A sandbox made for a test: its name, its hosts' addresses and a real SSH client for them."""

    name: str
    ips: dict[str, str]

    @property
    def key(self) -> Path:
        return sandbox.client_key(self.name)

    @property
    def subnet(self) -> str:
        return str(sandbox.status(self.name)["subnet"])

    def ssh_args(self, host: str) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={sandbox.known_hosts(self.name)}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=5", f"root@{self.ips[host]}"]

    def ssh(self, host: str, command: str, timeout: float = 30) -> proc.Result:
        """`command` run over SSH as root; the exit code is returned, not judged."""
        return proc.run([*self.ssh_args(host), command], timeout=timeout, ok_codes=range(256))

    def exec(self, host: str, *argv: str, timeout: float = 30) -> proc.Result:
        return sandbox.exec_in(self.name, host, list(argv), timeout=timeout)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "sandbox hosts need root"
    for tool in ("ip", "ss", "nsenter", "unshare", "ssh", "ssh-keygen", "/usr/sbin/sshd"):
        if not shutil.which(tool) and not os.access(tool, os.X_OK):
            return f"sandbox hosts need {tool}"
    return None


@pytest.fixture(scope="session")
def claim_sandbox() -> Iterator[Callable[[str], None]]:
    """claim_sandbox(name): take down what a killed earlier run left of `name` now, and `name` itself at the
    end of the session, whatever happened in between (for tests that make hosts their own way, e.g. the CLI)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    claimed: list[str] = []

    def claim(name: str) -> None:
        if name not in claimed:
            sandbox.down(name)
            claimed.append(name)

    yield claim
    failures = []
    for name in reversed(claimed):
        try:
            sandbox.down(name)
        except Exception as exc:  # every other sandbox goes down before the failure is reported
            failures.append(f"{name}: {exc}")
    assert not failures, f"sandboxes not taken down: {failures}"


@pytest.fixture(scope="session")
def make_sandbox(claim_sandbox: Callable[[str], None]) -> Callable[..., Sandbox]:
    """make_sandbox(name, hosts, subnet=None) -> Sandbox; `hosts` is a list of names or a name -> ip mapping.
    Every sandbox made is taken down at the end of the session."""

    def make(name: str, hosts: Sequence[str] | Mapping[str, str | None], subnet: str | None = None) -> Sandbox:
        claim_sandbox(name)
        wanted = dict(hosts) if isinstance(hosts, Mapping) else dict.fromkeys(hosts)
        return Sandbox(name, sandbox.up(name, wanted, subnet))

    return make
