"""The error hierarchy of pgpipe. Every error carries a machine-readable `reason`; only the CLI and the
HTTP API turn them into exit codes and status codes."""

from __future__ import annotations

from typing import Any


class PgpipeError(Exception):
    """Base of every error pgpipe raises on purpose."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message


class SpecError(PgpipeError):
    """The cluster spec is invalid. `problems` holds one (field, message) pair per bad field."""

    reason = "invalid-spec"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{field}: {msg}" if field else msg for field, msg in problems]
        super().__init__("invalid cluster spec:\n  " + "\n  ".join(lines))


class ToolMissing(PgpipeError):
    """A program pgpipe needs is not installed."""

    reason = "tool-missing"


class CommandFailed(PgpipeError):
    """An external command exited with a status that is not in its list of successes."""

    reason = "command-failed"

    def __init__(self, message: str, *, reason: str | None = None, stderr: str = "", returncode: int = -1) -> None:
        super().__init__(message, reason=reason, stderr=stderr)
        self.returncode = returncode


class TerraformError(CommandFailed):
    reason = "terraform-failed"


class AnsibleError(CommandFailed):
    reason = "ansible-failed"


class WorkspaceError(PgpipeError):
    """An artifact a stage needs is missing or unreadable."""

    reason = "workspace"


class GateRefused(PgpipeError):
    """The apply gate refused: plan-missing, plan-changed, config-changed, state-changed, not-approved,
    destroy-not-allowed."""

    reason = "not-approved"


class VerifyFailed(PgpipeError):
    """Replication checks failed; `report` is the verify report."""

    reason = "verify-failed"

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class SandboxError(PgpipeError):
    reason = "sandbox"


class AwsError(PgpipeError):
    reason = "aws"
