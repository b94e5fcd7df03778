"""The `pgpipe` command line: a chainable Click group with one command per stage. It parses options, calls
the stage functions and turns pgpipe errors into exit codes (1 for a failed stage, 2 for bad input)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline import __version__, runner
from pipeline.errors import PgpipeError, SpecError
from pipeline.redact import RedactingFilter

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

log = logging.getLogger("pipeline.cli")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """What chained commands share: where workspaces live, which cluster, the exit code to end with."""

    workdir: Path
    cluster: str | None
    exit_code: int = 0

    def workspace(self) -> Workspace:
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
                with runner.stage(ws, name):
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
def generate(state: State, /, spec_path: Path | None, **flags: Any) -> None:
    """Validate the spec and render the Terraform root module into the workspace."""
    from pipeline.stages.generate import generate as run_generate
    from pipeline.workspace import Workspace

    spec = load_spec_from_flags(spec_path, flags)
    state.cluster = spec.name
    ws = Workspace.for_cluster(spec.name, state.workdir)
    try:
        with runner.stage(ws, "generate"):
            run_generate(spec, ws)
    except PgpipeError as exc:
        raise StageFailed("generate", exc) from None
    emit(str(ws.terraform_dir))


@cli.command("check")
@click.option("--checkov/--no-checkov", "with_checkov", default=None,
              help="Also run checkov, offline (default: when installed; PGPIPE_CHECKOV names the binary).")
@stage("check")
def check_command(state: State, ws: Workspace, with_checkov: bool | None) -> None:
    """Static checks of the rendered Terraform: no rule opens 22 or 5432 to the world; checkov with its waivers."""
    from pipeline.checks import run_checks

    emit(run_checks(ws.terraform_dir, with_checkov=with_checkov))


# --- plan, apply, configure, verify, destroy ----------------------------------------------------------------
def interactive() -> bool:
    """Whether a person can be asked (tests replace this)."""
    return sys.stdin.isatty()


def _approval(state: State, ws: Workspace, approve: bool, approver: str | None, manifest: str | None) -> Any:
    """An explicit non-interactive approval, or an interactive one after showing the summary, or None."""
    from pipeline.stages.apply import Approval

    if approve:
        if not approver:
            raise click.BadParameter("--approve needs --approver NAME (or PGPIPE_APPROVED_BY)", param_hint="--approver")
        return Approval(approver=approver, method="flag", manifest_sha256=manifest)
    if not interactive():
        return None
    if ws.summary_md.is_file():
        click.echo(ws.summary_md.read_text(), err=True)
    typed = click.prompt(f"Type the cluster's name ({state.cluster}) to apply this plan", err=True, default="")
    if typed != state.cluster:
        return None
    return Approval(approver=approver or os.environ.get("USER") or "interactive", method="interactive",
                    manifest_sha256=manifest)


def approval_options(func: F) -> F:
    func = click.option("--manifest", "manifest", help="Approve only this manifest sha256 (as printed by plan).")(func)
    func = click.option("--approver", envvar="PGPIPE_APPROVED_BY", help="Who approves (recorded in approval.json).")(
        func
    )
    return click.option("--approve", is_flag=True, help="Approve non-interactively (needs --approver).")(func)


@cli.command()
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes, 0 when none.")
@click.option("--destroy", "destroy_plan", is_flag=True, help="Plan the destruction of the cluster.")
@stage("plan")
def plan(state: State, ws: Workspace, detailed_exitcode: bool, destroy_plan: bool) -> None:
    """Plan; keep plan.tfplan, plan.json, summary.md and manifest.json. Prints the path of plan.json."""
    from pipeline.stages.plan import plan as run_plan

    result = run_plan(ws, destroy=destroy_plan)
    if detailed_exitcode and result.has_changes:
        state.exit_code = 2
    emit(str(result.plan_json))


@cli.command()
@approval_options
@click.option(
    "--allow-destroy", is_flag=True, help="Allow a plan that replaces or destroys the primary or a data volume."
)
@stage("apply")
def apply(
    state: State, ws: Workspace, approve: bool, approver: str | None, manifest: str | None, allow_destroy: bool
) -> None:
    """Apply the saved plan, only if it is unchanged, current and approved. Prints the path of outputs.json."""
    from pipeline.stages.apply import apply as run_apply

    run_apply(ws, _approval(state, ws, approve, approver, manifest), allow_destroy=allow_destroy)
    emit(str(ws.outputs_json))


@cli.command()
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False), envvar="PGPIPE_SSH_PRIVATE_KEY_FILE",
              help="Private key for the hosts (local target: the sandbox's key).")
@click.option("--keep-stale-slots", is_flag=True, help="Report, but do not drop, slots of replicas that are gone.")
@stage("configure")
def configure(state: State, ws: Workspace, ssh_key: str | None, keep_stale_slots: bool) -> None:
    """Build inventory.ini from the outputs and apply the postgresql_replication role."""
    from pipeline.stages.configure import configure as run_configure

    result = run_configure(ws, ssh_key=ssh_key, drop_stale_slots=not keep_stale_slots)
    emit(str(result.inventory))


@cli.command()
@stage("verify")
def verify(state: State, ws: Workspace) -> None:
    """Prove replication works; write reports/verify.json. Non-zero exit when a check fails."""
    from pipeline.stages.verify import verify as run_verify

    try:
        run_verify(ws)
    finally:
        if ws.verify_json.is_file():
            emit(str(ws.verify_json))


@cli.command()
@approval_options
@stage("destroy")
def destroy(state: State, ws: Workspace, approve: bool, approver: str | None, manifest: str | None) -> None:
    """Plan the destruction of the cluster and apply it through the same gate."""
    from pipeline.stages.apply import apply as run_apply
    from pipeline.stages.plan import plan as run_plan

    result = run_plan(ws, destroy=True)
    if not result.has_changes:
        log.info("nothing to destroy")
        return
    run_apply(ws, _approval(state, ws, approve, approver, manifest))


# --- sandbox hosts --------------------------------------------------------------------------------------
SANDBOX_ACTIONS = ("up", "down", "status", "exec", "partition", "heal", "crash")


def _sandbox_hosts(hosts: tuple[str, ...], host_list: str | None, ip: str | None) -> dict[str, str | None]:
    names = [*hosts, *(h.strip() for h in (host_list or "").split(",") if h.strip())]
    if ip is not None and len(names) != 1:
        raise click.BadParameter("--ip needs exactly one --host", param_hint="--ip")
    return {name: ip for name in dict.fromkeys(names)}


def _one_host(action: str, hosts: dict[str, str | None]) -> str:
    if len(hosts) != 1:
        raise click.BadParameter(f"{action} needs exactly one --host", param_hint="--host")
    return next(iter(hosts))


def _run_sandbox_action(state: State, action: str, name: str, subnet: str | None, hosts: dict[str, str | None],
                        args: tuple[str, ...], timeout: float) -> None:
    from pipeline import sandbox

    if action == "up":
        if not hosts:
            raise click.BadParameter("up needs at least one --host or --hosts", param_hint="--host")
        emit(sandbox.up(name, hosts, subnet))
    elif action == "down":
        for host in hosts or [None]:
            sandbox.down(name, host)
    elif action == "status":
        emit(sandbox.status(name))
    elif action == "exec":
        if not args:
            raise click.BadParameter("give the command after --, e.g. exec --host h -- hostname", param_hint="ARGS")
        result = sandbox.exec_in(name, _one_host(action, hosts), list(args), timeout=timeout)
        click.echo(result.stdout, nl=False)
        click.echo(result.stderr, nl=False, err=True)
        state.exit_code = result.returncode if result.returncode >= 0 else 128 - result.returncode
    elif action == "crash":
        if not args:
            raise click.BadParameter("give the pattern of the processes to kill, e.g. crash --host h postgres",
                                     param_hint="ARGS")
        emit(sandbox.crash(name, _one_host(action, hosts), " ".join(args)))
    else:
        getattr(sandbox, action)(name, _one_host(action, hosts))


class ActionCommand(click.Command):
    """A command whose options may follow its ACTION argument (`sandbox up --sandbox x`): a chained group
    parses its commands with interspersed options off, which would read every option after ACTION as an ARG."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.allow_interspersed_args = True
        return super().parse_args(ctx, args)


@cli.command("sandbox", cls=ActionCommand)
@click.argument("action", type=click.Choice(SANDBOX_ACTIONS))
@click.option("--sandbox", "name", required=True, help="Sandbox name (a DNS label).")
@click.option("--subnet", help="The sandbox's /24 inside 198.18.0.0/15 (default: derived from the name).")
@click.option("--host", "hosts", multiple=True, help="A host to act on (repeatable).")
@click.option("--hosts", "host_list", help="Hosts to act on, comma-separated.")
@click.option("--ip", help="The address of the one host given (default: the next free .10+).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="exec: seconds before it is killed.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def sandbox_command(state: State, action: str, name: str, subnet: str | None, hosts: tuple[str, ...],
                    host_list: str | None, ip: str | None, timeout: float, args: tuple[str, ...]) -> None:
    """Local test hosts: ACTION is up, down, status, exec, partition, heal or crash.

    \b
    pgpipe sandbox up --sandbox demo --hosts demo-primary,demo-replica-1
    pgpipe sandbox exec --sandbox demo --host demo-primary -- pg_lsclusters
    pgpipe sandbox crash --sandbox demo --host demo-primary postgres
    pgpipe sandbox down --sandbox demo
    """
    from pipeline.sandbox import BAD_INPUT

    selected = _sandbox_hosts(hosts, host_list, ip)
    try:
        _run_sandbox_action(state, action, name, subnet, selected, args, timeout)
    except PgpipeError as exc:
        if exc.reason == BAD_INPUT:
            raise click.BadParameter(str(exc)) from None
        raise StageFailed(f"sandbox {action}", exc) from None


# --- AWS and GitHub Actions: preflight, remote state, temporary SSH rule, workflow glue -------------------
@cli.command()
@click.option("--require-remote-state", is_flag=True, envvar="PGPIPE_REQUIRE_REMOTE_STATE",
              help="Fail unless the spec keeps state in S3 (CI runners lose local state).")
@stage("preflight")
def preflight(state: State, ws: Workspace, require_remote_state: bool) -> None:
    """Check AWS before a plan: credentials, region, instance type in the region and zones, image, key, CIDRs."""
    from pipeline import aws, ci
    from pipeline.stages.plan import load_workspace_spec

    report = aws.preflight(load_workspace_spec(ws), require_remote_state=require_remote_state)
    if report.account:
        ci.add_mask(report.account)
    for finding in report.findings:
        level = {"ok": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[finding.level]
        log.log(level, "preflight %s: %s", finding.check, finding.message)
    ws.write_json(ws.root / "reports" / "preflight.json", report.as_dict())
    emit(report.as_dict())
    report.raise_for_errors()


@cli.command("backend", cls=ActionCommand)
@click.argument("action", type=click.Choice(["bootstrap", "check"]))
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Take bucket, lock table and region from this spec's s3 backend.")
@click.option("--bucket", envvar="PGPIPE_STATE_BUCKET", help="State bucket.")
@click.option("--table", envvar="PGPIPE_LOCK_TABLE", help="DynamoDB lock table (none: S3 lock file, terraform 1.10+).")
@click.option("--region", envvar="PGPIPE_STATE_REGION", help="Region of the bucket and table.")
@click.option("--kms-key-id", help="Encrypt with this KMS key instead of S3-managed keys.")
def backend_command(action: str, spec_path: Path | None, bucket: str | None, table: str | None,
                    region: str | None, kms_key_id: str | None) -> None:
    """Remote state: ACTION bootstrap creates (idempotently) the bucket and lock table; check reports them."""
    from pipeline import aws
    from pipeline.spec import S3Backend

    if spec_path is not None:
        spec = load_spec_from_flags(spec_path, {})
        if not isinstance(spec.backend, S3Backend):
            raise click.BadParameter(f"{spec_path} keeps state locally: give it an s3 backend", param_hint="--spec")
        bucket, region = bucket or spec.backend.bucket, region or spec.backend.region
        table = table or spec.backend.dynamodb_table
    if not bucket or not region:
        raise click.UsageError("give --spec with an s3 backend, or --bucket and --region")
    try:
        if action == "bootstrap":
            emit(aws.bootstrap_backend(bucket, table, region, kms_key_id=kms_key_id).as_dict())
            return
        status = aws.backend_status(aws.session(region), bucket, table, region)
    except PgpipeError as exc:
        raise StageFailed(f"backend {action}", exc) from None
    emit(status)
    if not all(status.values()):
        raise click.ClickException(f"remote state incomplete: {', '.join(k for k, ok in status.items() if not ok)}")


@cli.command("ssh-rule", cls=ActionCommand)
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.option("--cidr", envvar="PGPIPE_RUNNER_CIDR",
              help="add: the address to admit (default: this machine's public address, from checkip.amazonaws.com).")
@click.option("--security-group-id", help="Default: outputs.json's security_group_id, else the cluster's group.")
@click.option("--until-exit", is_flag=True,
              help="add: remove the rule when this pgpipe run ends, also when a chained command fails.")
@stage("ssh-rule")
def ssh_rule(state: State, ws: Workspace, action: str, cidr: str | None, security_group_id: str | None,
             until_exit: bool) -> None:
    """Temporary SSH access for this machine (a CI runner) to a public cluster: ACTION add or remove."""
    from pipeline import aws, ci
    from pipeline.stages.plan import load_workspace_spec

    spec = load_workspace_spec(ws)
    skipped = aws.ssh_rule_needed(spec)
    if skipped:
        log.info("no temporary SSH rule: %s", skipped)
        emit({"action": action, "skipped": skipped})
        return
    ec2 = aws.session(spec.region).client("ec2", region_name=spec.region)
    outputs = ws.read_json(ws.outputs_json, "apply") if ws.outputs_json.is_file() else None
    group = security_group_id or aws.find_security_group(ec2, spec, outputs)
    if group is None:
        if action == "add":
            raise StageFailed("ssh-rule", PgpipeError(f"cluster {spec.name} has no security group: apply first",
                                                      reason="ssh-rule"))
        emit({"action": action, "removed": [], "skipped": "no security group"})
        return
    if action == "remove":
        emit({"action": action, "security_group_id": group, "removed": aws.remove_ssh_rules(ec2, group)})
        return
    address = aws.runner_cidr(cidr) if cidr else aws.discover_address()
    ci.add_mask(address.split("/")[0])
    rule = aws.add_ssh_rule(ec2, group, address, cluster=spec.name, run=aws.run_id())
    if until_exit:
        click.get_current_context().find_root().call_on_close(functools.partial(_remove_ssh_rules, ec2, group))
    emit({"action": action, "security_group_id": group, "rule_id": rule, "cidr": address})


def _remove_ssh_rules(ec2: Any, group: str) -> None:
    """Runs when the pgpipe run ends (`ssh-rule add --until-exit`), whatever the chained commands did."""
    from pipeline import aws

    try:
        aws.remove_ssh_rules(ec2, group)
    except PgpipeError as exc:
        pending = sys.exc_info()[1]
        if isinstance(pending, click.ClickException):  # keep the first failure visible too
            click.echo(f"Error: {pending.format_message()}", err=True)
        raise StageFailed("ssh-rule remove", exc) from None


@cli.command("pr-comment")
@click.option("--pr", "pr_number", type=int, required=True, envvar="PGPIPE_PR_NUMBER", help="Pull request number.")
@click.option("--repo", envvar="GITHUB_REPOSITORY", help="OWNER/NAME (default: GITHUB_REPOSITORY).")
@click.option("--artifact", help="Name of the artifact that holds the whole plan.")
@click.option("--sha", help="Commit the plan was made for.")
@click.option("--dry-run", is_flag=True, help="Print the body instead of posting it.")
@stage("pr-comment")
def pr_comment(state: State, ws: Workspace, pr_number: int, repo: str | None, artifact: str | None, sha: str | None,
               dry_run: bool) -> None:
    """Create or update (in place) the cluster's plan comment on a pull request; token from GITHUB_TOKEN."""
    from pipeline import ci, prcomment

    cluster = ws.root.name  # the workspace folder is named after its cluster
    summary = ws.summary_md.read_text() if ws.summary_md.is_file() else None
    body = prcomment.render(cluster, summary, prcomment.Source(artifact, ci.run_url(), sha))
    if dry_run:
        emit(body)
        return
    posted = prcomment.upsert(ci.GitHubClient.from_env(repo), pr_number, cluster, body)
    emit({"action": posted.action, "id": posted.comment_id, "url": posted.url})


@cli.command("affected-clusters")
@click.option("--base", help="Base commit: clusters are those the diff base...head touches.")
@click.option("--head", help="Head commit (with --base).")
@click.option("--only", multiple=True, help="Exactly this cluster (repeatable); checked to exist.")
@click.option("--target", type=click.Choice(["aws", "local"]), help="Only clusters of this target.")
@click.option("--github-output", "output_name", metavar="NAME", help="Also set the list as step output NAME.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="The checkout holding clusters/.")
def affected_clusters(base: str | None, head: str | None, only: tuple[str, ...], target: str | None,
                      output_name: str | None, root: Path) -> None:
    """Print the clusters a change touches (all without --base/--head) as JSON: name, spec, target."""
    from pipeline import ci

    try:
        found = [c.as_dict() for c in ci.select(root, base=base, head=head, only=only, target=target)]
        if output_name:
            ci.set_output(output_name, json.dumps(found))
    except PgpipeError as exc:
        raise StageFailed("affected-clusters", exc) from None
    emit(found)


@cli.command("pr-plan-artifact")
@click.option("--sha", envvar="GITHUB_SHA", required=True, help="The merge commit (default: GITHUB_SHA).")
@click.option("--repo", envvar="GITHUB_REPOSITORY", help="OWNER/NAME (default: GITHUB_REPOSITORY).")
@click.option("--github-output", "to_output", is_flag=True, help="Also set found, name, run_id as step outputs.")
@stage("pr-plan-artifact")
def pr_plan_artifact(state: State, ws: Workspace, sha: str, repo: str | None, to_output: bool) -> None:
    """Find the plan artifact of the pull request merged as --sha (token from GITHUB_TOKEN)."""
    from pipeline import ci

    found = ci.find_pr_plan(ci.GitHubClient.from_env(repo), ws.root.name, sha)
    if to_output:
        for key, value in found.items():
            ci.set_output(key, value)
    emit(found)


@cli.command("plan-check")
@stage("plan-check")
def plan_check(state: State, ws: Workspace) -> None:
    """Exit 0 when the saved plan could be applied now: plan, config, spec and state as planned. The approval
    is not checked (apply does that)."""
    from pipeline.stages.apply import Approval, check_gate, check_state, load_manifest
    from pipeline.stages.plan import load_workspace_spec, terraform_for

    manifest, manifest_sha256 = load_manifest(ws)
    load_workspace_spec(ws)
    check_gate(ws, manifest, manifest_sha256, Approval("plan-check", "check"), allow_destroy=True)
    tf = terraform_for(ws)
    tf.init()
    check_state(tf.state_identity(), manifest)
    log.info("the saved plan (manifest %s) still matches", manifest_sha256)
    emit({"matches": True, "manifest_sha256": manifest_sha256})


@cli.command("step-summary")
@click.option("--file", "path", envvar="GITHUB_STEP_SUMMARY", required=True,
              help="Markdown file to append to (default: GITHUB_STEP_SUMMARY).")
@stage("step-summary")
def step_summary(state: State, ws: Workspace, path: str) -> None:
    """Append the cluster's preflight problems, plan summary and verify result to the job's summary."""
    from pipeline import ci

    emit(str(ci.append_step_summary(ci.summary_markdown(ws.root.name, ws), path)))


# --- serve ------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any but loopback needs PGPIPE_API_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port to bind.")
@click.pass_obj
def serve(state: State, host: str, port: int) -> None:
    """Serve the HTTP API (the original endpoints) over the same stages; bearer token from PGPIPE_API_TOKEN."""
    from pipeline.api import TOKEN_ENV
    from pipeline.api import serve as run_server

    server_log = logging.getLogger("uvicorn")  # uvicorn.error and uvicorn.access pass their lines up to it
    server_log.handlers[:] = logging.getLogger("pipeline").handlers  # to stderr, secrets masked
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
    try:
        run_server(state.workdir, host, port, os.environ.get(TOKEN_ENV) or None)
    except PgpipeError as exc:
        raise click.UsageError(str(exc)) from None


def main() -> None:
    cli(prog_name="pgpipe")


if __name__ == "__main__":
    main()
