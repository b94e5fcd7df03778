"""Running ansible-playbook: non-interactive, with the project's ansible.cfg, a line of progress per task and
host, and a failure that names the host and the task."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import proc
from pipeline.errors import AnsibleError
from pipeline.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

TASK_RE = re.compile(r"^TASK \[(?P<task>.*)\]")
HOST_RE = re.compile(r"^(?P<status>ok|changed|failed|fatal|skipping|unreachable): \[(?P<host>[^\]]+)\]")
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)"
)


@dataclass
class PlaybookRun:
    """What a playbook did, read from its output as it ran."""

    task: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)  # (host, task)
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def feed(self, line: str) -> None:
        if match := TASK_RE.match(line):
            self.task = match["task"]
        elif match := HOST_RE.match(line):
            status, host = match["status"], match["host"]
            if status in ("failed", "fatal", "unreachable"):
                self.failures.append((host, self.task))
                log.error("%s: %s: %s", host, self.task, status)
            elif status != "skipping":
                log.info("%-24s %-8s %s", host, status, self.task)
        elif match := RECAP_RE.match(line):
            self.recap[match["host"]] = {k: int(v) for k, v in match.groupdict().items() if k != "host"}

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap.values())


def _binary() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else "ansible-playbook"


def run_playbook(
    playbook: Path,
    inventory: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    extra_vars: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> PlaybookRun:
    run = PlaybookRun()
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_ROLES_PATH": str(PROJECT_ROOT / "roles"),
        }
    )
    env.update(extra_env or {})
    args = [_binary(), "-i", str(inventory), str(playbook)]
    for key, value in (extra_vars or {}).items():
        args += ["-e", f"{key}={value}"]
    try:
        proc.run(
            args,
            timeout=timeout,
            env=env,
            cwd=PROJECT_ROOT,
            logger=log,
            on_line=run.feed,
            error=AnsibleError,
            reason="playbook-failed",
        )
    except AnsibleError as exc:
        if run.failures:
            where = "; ".join(f"{host}: {task}" for host, task in run.failures)
            raise AnsibleError(
                f"{playbook.name} failed on {where}",
                reason="playbook-failed",
                stderr=exc.stderr,
                returncode=exc.returncode,
            ) from None
        raise
    return run
