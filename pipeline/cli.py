"""The `pgpipe` command line: a chainable Click group with one command per stage. It parses options, calls
the stage functions and turns pgpipe errors into exit codes (1 for a failed stage, 2 for bad input)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline import __version__
from pipeline.errors import PgpipeError, SpecError
from pipeline.redact import RedactingFilter

log = logging.getLogger("pipeline.cli")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """What chained commands share: where workspaces live, which cluster, the exit code to end with."""

    workdir: Path
    cluster: str | None
    exit_code: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    def workspace(self) -> Any:
        from pipeline.workspace import Workspace

        if not self.cluster:
            raise click.UsageError("no cluster: give --cluster NAME (or PGPIPE_CLUSTER), or run generate --spec first")
        return Workspace.for_cluster(self.cluster, self.workdir)


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    root.setLevel(logging.DEBUG)
    root.propagate = False


def stage(name: str) -> Callable[[F], F]:
    """Run a command body under the cluster's lock with its log in logs/<name>.log; map errors to exits."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state: State = click.get_current_context().find_object(State)  # type: ignore[assignment]
            try:
                ws = state.workspace()
                with ws.lock(), ws.stage_log(name):
                    return func(state, ws, *args, **kwargs)
            except SpecError as exc:
                raise click.BadParameter(str(exc).removeprefix("invalid cluster spec:\n  ")) from None
            except PgpipeError as exc:
                raise StageFailed(name, exc) from None

        return wrapper  # type: ignore[return-value]

    return decorate


class StageFailed(click.ClickException):
    """A stage failed: the message names the stage and the machine-readable reason."""

    def __init__(self, stage_name: str, exc: PgpipeError) -> None:
        super().__init__(f"{stage_name} failed [{exc.reason}]: {exc}")
        self.reason = exc.reason


def emit(value: Any) -> None:
    """stdout carries machine output only: a path or a JSON document."""
    click.echo(value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True))


@click.group(chain=True, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PGPIPE"})
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".pgpipe"),
    show_default=True,
    help="Folder holding one workspace per cluster.",
)
@click.option("--cluster", help="Cluster to act on (default: the one generate loaded).")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: every line of every tool).")
@click.version_option(__version__, prog_name="pgpipe")
@click.pass_context
def cli(ctx: click.Context, workdir: Path, cluster: str | None, verbose: int) -> None:
    """Render, plan, apply (approved), configure and verify a PostgreSQL primary with streaming replicas.

    Stages chain: pgpipe generate --spec clusters/demo.json plan apply --approve --approver NAME configure verify
    """
    _setup_logging(verbose)
    ctx.obj = State(workdir=workdir, cluster=cluster)


@cli.result_callback()
@click.pass_obj
def _finish(state: State, *_: Any, **__: Any) -> None:
    if state.exit_code:
        sys.exit(state.exit_code)


# --- generate -------------------------------------------------------------------------------------------
SPEC_FLAGS: list[tuple[str, str, Any]] = [
    ("--name", "Cluster name (a DNS label).", str),
    ("--target", "aws or local.", click.Choice(["aws", "local"])),
    ("--region", "AWS region.", str),
    ("--instance-type", "EC2 instance type.", str),
    ("--os", "debian12, ubuntu2404 or al2023.", click.Choice(["debian12", "ubuntu2404", "al2023"])),
    ("--replica-count", "Number of replicas (0..15).", str),
    ("--postgres-version", "PostgreSQL major version (13..17).", str),
    ("--image-tag", "Original API's image tag, e.g. 14-alpine (sets the version).", str),
    ("--max-connections", "PostgreSQL max_connections.", str),
    ("--shared-buffers", "PostgreSQL shared_buffers, e.g. 256MB.", str),
    ("--replication-mode", "async or sync.", click.Choice(["async", "sync"])),
    ("--ssh-public-key", "OpenSSH public key or a path to one.", str),
]


def spec_options(func: F) -> F:
    for flag, help_text, kind in reversed(SPEC_FLAGS):
        func = click.option(flag, type=kind, default=None, help=help_text)(func)
    return click.option(
        "--spec",
        "spec_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Cluster spec file (JSON or YAML); flags override it.",
    )(func)


def load_spec_from_flags(spec_path: Path | None, flags: dict[str, Any]) -> Any:
    from pipeline.spec import load_spec

    try:
        return load_spec(spec_path, flags)
    except SpecError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid cluster spec:\n  "), param_hint="spec") from None


@cli.command()
@spec_options
@click.pass_obj
def generate(state: State, spec_path: Path | None, **flags: Any) -> None:
    """Validate the spec and render the Terraform root module into the workspace."""
    from pipeline.stages.generate import generate as run_generate
    from pipeline.workspace import Workspace

    spec = load_spec_from_flags(spec_path, flags)
    state.cluster = spec.name
    ws = Workspace.for_cluster(spec.name, state.workdir)
    try:
        with ws.lock(), ws.stage_log("generate"):
            run_generate(spec, ws)
    except PgpipeError as exc:
        raise StageFailed("generate", exc) from None
    emit(str(ws.terraform_dir))


def main() -> None:
    cli(prog_name="pgpipe")


if __name__ == "__main__":
    main()
