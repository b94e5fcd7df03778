"""The HTTP API: the original endpoints (`/generate-terraform`, `-plan`, `-apply`, `/apply_ansible_configuration`)
over the same stage functions the CLI runs, with bearer-token auth, one running job per cluster, and pgpipe's
error reasons mapped once to status codes. Only `pgpipe serve` and the tests import it (it needs FastAPI)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import __version__, redact
from pipeline.errors import (
    AwsError,
    CommandFailed,
    GateRefused,
    PgpipeError,
    SandboxError,
    SpecError,
    ToolMissing,
    VerifyFailed,
    WorkspaceError,
)
from pipeline.jobs import Job, JobManager
from pipeline.runner import Step, run_steps
from pipeline.spec import MAX_PG, MIN_PG, NAME_RE, SSH_KEY_RE, ClusterSpec, env_overrides, parse_spec
from pipeline.stages.apply import Approval, read_outputs
from pipeline.stages.apply import apply as run_apply
from pipeline.stages.configure import configure as run_configure
from pipeline.stages.generate import generate as run_generate
from pipeline.stages.generate import render_terraform
from pipeline.stages.plan import load_workspace_spec
from pipeline.stages.plan import plan as run_plan
from pipeline.stages.verify import verify as run_verify
from pipeline.workspace import Workspace, sha256_file

log = logging.getLogger(__name__)

TOKEN_ENV = "PGPIPE_API_TOKEN"  # noqa: S105 (the variable's name, not a token)
MIN_TOKEN_LENGTH = 16
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
SHUTDOWN_WAIT_S = 1800.0
MAX_ECHO = 200
# Settings the configure endpoint may change on a running cluster; everything else needs plan and apply.
POSTGRES_FIELDS = ("max_connections", "shared_buffers", "image_tag")
INFRA_FIELDS = ("replica_count", "region")
CONFLICT_REASONS = frozenset({"infrastructure-change", "version-change"})

ClusterName = Annotated[
    str,
    Query(pattern=NAME_RE.pattern, max_length=32, description="cluster name: a DNS label of at most 32 characters"),
]
AsyncFlag = Annotated[
    bool, Query(alias="async", description="answer 202 with a job id at once instead of waiting for the stage")
]

HINTS = {
    "cluster": "a DNS label: 1-32 of a-z, 0-9 and '-', starting with a letter, not ending with '-'",
    "name": "a DNS label: 1-32 of a-z, 0-9 and '-', starting with a letter, not ending with '-'",
    "region": "an AWS region such as us-east-1",
    "instance_type": "an EC2 instance type such as t3.medium or m7g.large",
    "shared_buffers": "a memory value of at least 128kB: digits then kB, MB or GB, e.g. 256MB",
    "image_tag": f"a PostgreSQL image tag of version {MIN_PG}..{MAX_PG}, such as '15' or '15-alpine'",
    "ssh_public_key": "an OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa-sha2-*), given as text",
    "admin_cidrs": "a list of CIDR blocks such as 203.0.113.0/24 (not 0.0.0.0/0 unless allow_world)",
    "client_cidrs": "a list of CIDR blocks such as 203.0.113.0/24 (not 0.0.0.0/0 unless allow_world)",
    "local_subnet": "a /24 inside 198.18.0.0/15",
    "vpc_id": "a VPC id such as vpc-0123456789abcdef0",
    "subnet_ids": "a list of subnet ids such as subnet-0123456789abcdef0",
    "manifest_sha256": "the manifest_sha256 of the plan response: 64 hex digits",
    "approver": "who approves: 1-128 printable characters",
    "body": "a JSON object",
}


# --- response bodies --------------------------------------------------------------------------------------
class FieldProblem(BaseModel):
    field: str
    value: Any = None
    allowed: str
    message: str


class ErrorBody(BaseModel):
    reason: str = Field(description="machine-readable reason, e.g. plan-changed, workspace-busy, invalid-input")
    message: str
    errors: list[FieldProblem] | None = Field(default=None, description="one entry per bad field (422)")
    report: dict[str, Any] | None = Field(default=None, description="the verify report, when verify failed")


class Health(BaseModel):
    status: str
    version: str


class GenerateResult(BaseModel):
    cluster: str
    spec: dict[str, Any]
    terraform_sha256: str
    files: dict[str, str] = Field(description="the rendered Terraform root module: file name -> content")


class PlanResult(BaseModel):
    cluster: str
    has_changes: bool
    manifest_sha256: str = Field(description="give it to /generate-terraform-apply to approve this very plan")
    summary: str = Field(description="markdown")
    manifest: dict[str, Any]
    plan: dict[str, Any] = Field(description="`terraform show -json` of the saved plan")


class ApplyResult(BaseModel):
    cluster: str
    applied: bool
    manifest_sha256: str
    outputs: dict[str, Any]


class ConfigureResult(BaseModel):
    cluster: str
    updated: list[str] = Field(description="spec fields changed by this request (spec.json regenerated)")
    changed: int = Field(description="tasks the role changed")
    report: dict[str, Any] = Field(description="the verify report (reports/verify.json)")


class JobAccepted(BaseModel):
    job_id: str
    cluster: str
    kind: str
    status: str
    url: str


class JobView(BaseModel):
    id: str
    cluster: str
    kind: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    log: list[str] = Field(description="log lines from `offset` on, secrets masked")
    next_offset: int
    status_code: int | None = Field(description="the status the request would have answered with, once done")
    result: dict[str, Any] | None
    error: ErrorBody | None


class ClusterView(BaseModel):
    name: str
    spec: dict[str, Any] | None
    stages: dict[str, dict[str, Any]]
    reports: dict[str, Any]
    job: str | None = Field(description="id of the job running on the cluster, if any")


# --- request bodies ---------------------------------------------------------------------------------------
class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="from the plan response")
    approver: str = Field(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
    )
    allow_destroy: bool = Field(default=False, description="allow replacing or destroying the primary or data")


class ConfigureRequest(BaseModel):
    """PostgreSQL settings may change here; replica_count and region must be the applied ones."""

    model_config = ConfigDict(extra="forbid")
    replica_count: int | None = None
    max_connections: int | None = None
    shared_buffers: str | None = None
    region: str | None = None
    image_tag: str | None = None


# --- errors -----------------------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer other than 2xx: status, body, headers."""

    def __init__(self, status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers or {}


class MaskedJSONResponse(JSONResponse):
    """JSON whose text never holds a registered secret (tokens, passwords), whatever a handler put in it."""

    def render(self, content: Any) -> bytes:
        return redact.scrub(super().render(content).decode()).encode()


TRACE_LINE = re.compile(r'^\s*(Traceback \(most recent call last\)|File "[^"]*", line \d+)')


def without_traces(text: str) -> str:
    """Drop Python traceback lines that a tool's stderr tail may carry into an error message."""
    kept: list[str] = []
    skip_next = False
    for line in text.splitlines():
        if TRACE_LINE.match(line):
            skip_next = line.lstrip().startswith("File ")
            continue
        if skip_next and line.startswith("    "):
            skip_next = False
            continue
        skip_next = False
        kept.append(line)
    return "\n".join(kept)


def status_for(exc: PgpipeError) -> int:
    if isinstance(exc, SpecError):
        return 422
    if isinstance(exc, GateRefused | WorkspaceError) or exc.reason in CONFLICT_REASONS:
        return 409  # the cluster is not in the state this request needs: a refused gate, busy, a stage missing
    if isinstance(exc, ToolMissing):
        return 503
    if isinstance(exc, CommandFailed | VerifyFailed | SandboxError | AwsError):
        return 502  # terraform, ansible, AWS or the hosts failed: the request itself was fine
    return 500


def error_answer(exc: Exception, ws: Workspace | None, body: dict[str, Any] | None = None) -> ApiError:
    """The one mapping from an exception raised by a stage to an HTTP answer."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SpecError):
        return ApiError(422, invalid_input(exc.problems, body or {}, spec_schema()))
    if isinstance(exc, PgpipeError):
        report = None
        if isinstance(exc, VerifyFailed) and ws is not None:
            report = _read(ws.verify_json)
        message = without_traces(str(exc))
        if ws is not None:  # the server's folders are none of the client's business
            message = message.replace(f"{ws.root.parent}/", "")
        return ApiError(status_for(exc), ErrorBody(reason=exc.reason, message=message, report=report))
    incident = uuid.uuid4().hex[:12]
    # One line and never a traceback: frames can hold secrets. The incident id ties the answer to the line.
    log.error("incident %s: unexpected %s: %s", incident, type(exc).__name__, exc)
    return ApiError(500, ErrorBody(reason="internal-error", message=f"internal error (incident {incident})"))


# --- 422: one entry per bad field ---------------------------------------------------------------------------
def describe(prop: dict[str, Any]) -> str:
    """What a JSON schema property allows, in words."""
    if "anyOf" in prop:
        parts = [describe(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(parts) + (" or null" if len(parts) < len(prop["anyOf"]) else "")
    if "enum" in prop:
        return "one of: " + ", ".join(str(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    kind = prop.get("type")
    if kind == "integer" and ("minimum" in prop or "maximum" in prop):
        return f"an integer from {prop.get('minimum', '-inf')} to {prop.get('maximum', 'inf')}"
    if kind == "string" and "pattern" in prop:
        return f"a string matching {prop['pattern']}"
    return {"integer": "an integer", "string": "a string", "boolean": "true or false", "object": "an object",
            "array": "a list", "number": "a number"}.get(str(kind), "see the message")


def echo(value: Any) -> Any:
    """A bad value as the 422 shows it: never key material, never long."""
    if isinstance(value, bytes | bytearray):  # a body that is not JSON
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        if "PRIVATE KEY" in value:
            return "***"
        return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return "(too long to show)" if len(text) > MAX_ECHO else json.loads(text)
    return value if value is None or isinstance(value, bool | int | float) else echo(str(value))


def lookup(body: Any, field: str) -> Any:
    for part in field.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def split_problem(field: str, message: str, known: set[str]) -> tuple[str, str]:
    """A model-level problem comes without a field; its message starts with the field's name."""
    if field:
        return field, message
    head = re.match(r"^([a-z_]+)(: | )", message)
    if head and head[1] in known:
        return head[1], message.removeprefix(head[1] + ": ")
    return "body", message


def invalid_input(problems: list[tuple[str, str]], body: dict[str, Any], schema: dict[str, Any]) -> ErrorBody:
    props: dict[str, Any] = schema.get("properties", {})
    errors = []
    for raw_field, message in problems:
        field, message = split_problem(raw_field, message, set(props) | set(HINTS))
        top = field.split(".")[0]
        allowed = HINTS.get(top) or (describe(props[top]) if top in props else "see the message")
        errors.append(FieldProblem(field=field, value=echo(lookup(body, field)), allowed=allowed, message=message))
    fields = ", ".join(dict.fromkeys(e.field for e in errors))
    return ErrorBody(reason="invalid-input", message=f"invalid input: {fields}", errors=errors)


def spec_schema() -> dict[str, Any]:
    return ClusterSpec.model_json_schema()


def request_problems(exc: RequestValidationError) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """FastAPI's own validation errors (query, path, typed bodies) as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where, rest = (loc[0], loc[1:]) if loc else ("body", [])
        field = ".".join(rest) or where
        if err.get("type") == "json_invalid":
            field = "body"
        problems.append((field, str(err.get("msg", "invalid")).removeprefix("Value error, ")))
        if "input" in err and err.get("type") not in ("missing", "json_invalid"):
            body[field.split(".")[0]] = err["input"] if "." not in field else None
    return problems, body


# --- the app ----------------------------------------------------------------------------------------------
class Guard:
    """Outermost layer: bearer-token auth before anything reads the body, and a generic 500 for any
    exception that escapes (with a one-line log, never a traceback in the answer or the log)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denied = self._denied(scope)
        if denied is not None:
            await error_response(denied)(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the last line of defence: a generic answer, never a traceback
            if started:
                log.error("unexpected %s after the answer started: %s", type(exc).__name__, exc)
                return
            await error_response(error_answer(exc, None))(scope, receive, send)

    def _denied(self, scope: Scope) -> ApiError | None:
        if self.token is None or scope["path"] in OPEN_PATHS:
            return None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return ApiError(
                401,
                ErrorBody(reason="unauthorized", message="give the API token as `Authorization: Bearer <token>`"),
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.strip(), self.token):
            return ApiError(403, ErrorBody(reason="forbidden", message="the token is not valid"))
        return None


def error_response(err: ApiError) -> MaskedJSONResponse:
    return MaskedJSONResponse(err.body.model_dump(exclude_none=True), status_code=err.status, headers=err.headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "no bearer token",
        403: "wrong token",
        404: "no such cluster or job (GET)",
        409: "refused: the gate (with its reason), a busy cluster, or a stage that must run first",
        422: "invalid input: one entry per bad field",
        500: "internal error",
        502: "terraform, ansible or the hosts failed",
        503: "a tool pgpipe needs is missing",
    }.items()
}
ASYNC: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "accepted (?async=true): poll /jobs/{id}"}
}


def create_app(workdir: Path, token: str | None = None, *, jobs: JobManager | None = None) -> FastAPI:
    """The API over the workspaces in `workdir`. With a token, every endpoint but /health and the API's own
    documentation (/openapi.json, /docs, /redoc) needs it."""
    if token:
        redact.register(token)
    manager = jobs or JobManager()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        manager.wait_all(SHUTDOWN_WAIT_S)

    app = FastAPI(
        title="pgpipe",
        version=__version__,
        description="Render, plan, apply (approved), configure and verify a PostgreSQL primary with streaming"
        " replicas. Bearer token from PGPIPE_API_TOKEN.",
        default_response_class=MaskedJSONResponse,
        lifespan=lifespan,
    )
    app.add_middleware(Guard, token=token)
    _install_error_handlers(app)
    _install_routes(app, workdir, manager)
    app.openapi = lambda: _openapi(app, secured=token is not None)  # type: ignore[method-assign]
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> MaskedJSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> MaskedJSONResponse:
        problems, body = request_problems(exc)
        schema = {
            "properties": {
                **spec_schema()["properties"],
                **ApplyRequest.model_json_schema()["properties"],
            }
        }
        return error_response(ApiError(422, invalid_input(problems, body, schema)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> MaskedJSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not even parse (not UTF-8): bad input like any other
            return error_response(ApiError(422, invalid_input([("body", str(exc.detail))], {}, {})))
        reason = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return error_response(ApiError(exc.status_code, ErrorBody(reason=reason, message=str(exc.detail))))


def _workspace(workdir: Path, cluster: str, *, generated: bool = False) -> Workspace:
    """The cluster's workspace; with `generated`, a 409 unless generate-terraform made it (checked before the
    lock is taken, so that a request for an unknown cluster leaves no folder behind)."""
    if not NAME_RE.fullmatch(cluster):  # also guards the path: the name becomes a folder under workdir
        raise ApiError(422, invalid_input([("cluster", "not a DNS label")], {"cluster": cluster}, {}))
    ws = Workspace.for_cluster(cluster, workdir)
    if generated and not ws.spec_json.is_file():
        message = f"no cluster {cluster}: POST /generate-terraform first"
        raise ApiError(409, ErrorBody(reason="spec-missing", message=message))
    return ws


def _outcome(job: Job, ws: Workspace, body: dict[str, Any] | None = None) -> tuple[int, Any, ErrorBody | None]:
    """A finished job as (status code, result, error)."""
    if job.error is None:
        return 200, job.result, None
    err = error_answer(job.error, ws, body)
    return err.status, None, err.body


def _answer(manager: JobManager, job: Job, ws: Workspace, run_async: bool, body: dict[str, Any] | None = None) -> Any:
    if run_async:
        accepted = JobAccepted(job_id=job.id, cluster=job.cluster, kind=job.kind, status=job.status,
                               url=f"/jobs/{job.id}")
        return MaskedJSONResponse(accepted.model_dump(), status_code=202, headers={"Location": accepted.url})
    job.wait()
    status, result, error = _outcome(job, ws, body)
    if error is not None:
        raise ApiError(status, error)
    return result


def _install_routes(app: FastAPI, workdir: Path, manager: JobManager) -> None:
    def submit(ws: Workspace, cluster: str, kind: str, work: Callable[[], Any]) -> Job:
        try:
            return manager.submit(ws, cluster, kind, work)
        except PgpipeError as exc:
            raise error_answer(exc, ws) from None

    @app.get("/health", response_model=Health, tags=["server"])
    def health() -> Health:
        """Liveness; needs no token."""
        return Health(status="ok", version=__version__)

    @app.post("/generate-terraform", response_model=GenerateResult, responses={**ASYNC, **ERRORS},
              tags=["stages"])
    def generate_terraform(
        body: Annotated[dict[str, Any], Body(description="the cluster spec (see GenerateRequest)")],
        cluster: Annotated[
            str | None, Query(max_length=32, description="cluster name (default: the body's name, else default)")
        ] = None,
        run_async: AsyncFlag = False,
    ) -> Any:
        """Validate the spec and render the Terraform root module (`instance_type`, `replica_count`, `region`
        and any optional spec field such as `target`, `postgres_version` or `image_tag`)."""
        spec = spec_from_body(body, cluster)
        ws = _workspace(workdir, spec.name)

        def work() -> GenerateResult:
            run_steps(ws, [("generate", lambda: run_generate(spec, ws))], locked=True)
            files = {p.name: p.read_text() for p in ws.rendered_files()}
            return GenerateResult(cluster=spec.name, spec=spec.model_dump(mode="json"),
                                  terraform_sha256=ws.terraform_hash(), files=files)

        return _answer(manager, submit(ws, spec.name, "generate", work), ws, run_async, body)

    @app.post("/generate-terraform-plan", response_model=PlanResult, responses={**ASYNC, **ERRORS}, tags=["stages"])
    def generate_terraform_plan(cluster: ClusterName = "default", run_async: AsyncFlag = False) -> Any:
        """Plan; answers with the plan JSON, the summary (markdown) and the manifest hash to approve."""
        ws = _workspace(workdir, cluster, generated=True)

        def work() -> PlanResult:
            result = run_steps(ws, [("plan", lambda: run_plan(ws))], locked=True)[0]
            return PlanResult(cluster=cluster, has_changes=result.has_changes,
                              manifest_sha256=result.manifest_sha256, summary=result.summary,
                              manifest=result.manifest, plan=json.loads(result.plan_json.read_text()))

        return _answer(manager, submit(ws, cluster, "plan", work), ws, run_async)

    @app.post("/generate-terraform-apply", response_model=ApplyResult, responses={**ASYNC, **ERRORS},
              tags=["stages"])
    def generate_terraform_apply(body: ApplyRequest, cluster: ClusterName = "default",
                                 run_async: AsyncFlag = False) -> Any:
        """Apply the saved plan, only when `manifest_sha256` is the plan's and an approver is named; a refused
        gate is 409 with its reason (plan-missing, plan-changed, config-changed, state-changed, not-approved,
        destroy-not-allowed)."""
        ws = _workspace(workdir, cluster, generated=True)
        approval = Approval(approver=body.approver.strip(), method="api", manifest_sha256=body.manifest_sha256)

        def work() -> ApplyResult:
            result = run_steps(
                ws, [("apply", lambda: run_apply(ws, approval, allow_destroy=body.allow_destroy))], locked=True
            )[0]
            return ApplyResult(cluster=cluster, applied=result.applied, manifest_sha256=result.manifest_sha256,
                               outputs=result.outputs)

        return _answer(manager, submit(ws, cluster, "apply", work), ws, run_async)

    @app.post("/apply_ansible_configuration", response_model=ConfigureResult, responses={**ASYNC, **ERRORS},
              tags=["stages"])
    def apply_ansible_configuration(body: ConfigureRequest, cluster: ClusterName = "default",
                                    run_async: AsyncFlag = False) -> Any:
        """Configure PostgreSQL with the role, then verify replication; answers with the verify report.
        max_connections, shared_buffers and image_tag may change (spec.json is updated); replica_count and
        region must be the applied ones (409: plan and apply first)."""
        ws = _workspace(workdir, cluster, generated=True)
        given = body.model_dump(exclude_none=True)
        _try(lambda: settings_update(load_workspace_spec(ws), read_outputs(ws), given), ws, given)

        def work() -> ConfigureResult:
            # Checked again under the lock: another stage may have changed the workspace meanwhile.
            spec, updated = settings_update(load_workspace_spec(ws), read_outputs(ws), given)
            steps: list[Step] = [("generate", lambda: run_generate(spec, ws))] if updated else []
            steps += [("configure", lambda: run_configure(ws)), ("verify", lambda: run_verify(ws))]
            results = run_steps(ws, steps, locked=True)
            return ConfigureResult(cluster=cluster, updated=updated, changed=results[-2].changed,
                                   report=results[-1])

        return _answer(manager, submit(ws, cluster, "configure", work), ws, run_async, given)

    @app.get("/clusters/{name}", response_model=ClusterView, responses=ERRORS, tags=["status"])
    def cluster_status(
        name: Annotated[str, PathParam(pattern=NAME_RE.pattern, max_length=32, description="cluster name")],
    ) -> ClusterView:
        """The cluster's spec, each stage's state as its artifacts tell, and the last reports."""
        ws = _workspace(workdir, name)
        if not ws.root.is_dir():
            raise ApiError(404, ErrorBody(reason="not-found", message=f"no cluster {name}: generate it first"))
        running = manager.active(name)
        return ClusterView(name=name, job=running.id if running else None, **cluster_state(ws))

    @app.get("/jobs/{job_id}", response_model=JobView, responses=ERRORS, tags=["status"])
    def job_status(
        job_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="job id from a 202 answer")],
        offset: Annotated[int, Query(ge=0, le=10**9, description="first log line to return")] = 0,
    ) -> JobView:
        """A job's status, its log lines so far (masked) and, once done, its result or error."""
        job = manager.get(job_id)
        if job is None:
            raise ApiError(404, ErrorBody(reason="not-found", message=f"no job {job_id} (jobs live in memory)"))
        lines, next_offset = job.lines(offset)
        status_code, result, error = _outcome(job, _workspace(workdir, job.cluster)) if job.done else (None, None, None)
        dumped = result.model_dump(mode="json") if isinstance(result, BaseModel) else None
        return JobView(id=job.id, cluster=job.cluster, kind=job.kind, status=job.status, created_at=job.created_at,
                       started_at=job.started_at, finished_at=job.finished_at, log=lines, next_offset=next_offset,
                       status_code=status_code, result=dumped, error=error)


def _try(check: Callable[[], Any], ws: Workspace, body: dict[str, Any]) -> None:
    try:
        check()
    except PgpipeError as exc:
        raise error_answer(exc, ws, body) from None


# --- spec handling ------------------------------------------------------------------------------------------
def spec_from_body(body: dict[str, Any], cluster: str | None) -> ClusterSpec:
    """The generate body through the same spec model as every other input; 422 naming each bad field.
    The server's `PGPIPE_SPEC_<FIELD>` environment gives defaults (an operator's SSH key and admin networks),
    so the original three-field body works; the body wins."""
    data = {**env_overrides(os.environ), **body}
    problems: list[tuple[str, str]] = []
    for required in ("instance_type", "replica_count", "region"):
        if required not in data:
            problems.append((required, "Field required"))
    key = body.get("ssh_public_key")
    if isinstance(key, str) and not SSH_KEY_RE.match(key.strip()):
        # The spec model also reads a key from a path; over HTTP that would read files on the server.
        problems.append(("ssh_public_key", "give the OpenSSH public key itself (a path is not read over HTTP)"))
    name = data.get("name")
    if cluster is not None and name is not None and name != cluster:
        problems.append(("name", f"{name!r} differs from ?cluster={cluster}"))
    data["name"] = cluster if cluster is not None else (name if name is not None else "default")
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        problems += exc.problems
    if problems:
        raise ApiError(422, invalid_input(problems, {**body, "name": data["name"]}, spec_schema()))
    return spec


def settings_update(
    current: ClusterSpec, outputs: dict[str, Any], given: dict[str, Any]
) -> tuple[ClusterSpec, list[str]]:
    """The spec with the configure request's PostgreSQL settings, and the fields that changed. Raises a 409
    (reason infrastructure-change) when the request or spec.json asks for other hosts than those applied."""
    applied_replicas = len(outputs.get("replicas") or [])
    for field in INFRA_FIELDS:
        if field in given and given[field] != getattr(current, field):
            raise PgpipeError(
                f"{field} {given[field]!r} differs from the applied {getattr(current, field)!r}: change it with"
                " /generate-terraform, /generate-terraform-plan and /generate-terraform-apply first",
                reason="infrastructure-change",
            )
    if current.replica_count != applied_replicas:
        raise PgpipeError(
            f"spec.json asks for {current.replica_count} replica(s) but {applied_replicas} are applied: plan and"
            " apply first",
            reason="infrastructure-change",
        )
    data = current.model_dump(mode="json")
    settings = {k: v for k, v in given.items() if k in POSTGRES_FIELDS}
    if "image_tag" in settings:
        data.pop("postgres_version")  # the tag sets it
    spec = parse_spec({**data, **settings})
    if render_terraform(spec) != render_terraform(current):
        raise PgpipeError(
            "these settings would change the rendered Terraform: plan and apply first", reason="infrastructure-change"
        )
    if spec.postgres_version != current.postgres_version:
        # A new major version needs a dump/restore or pg_upgrade of every host: never as a side effect.
        raise PgpipeError(
            f"image_tag asks for PostgreSQL {spec.postgres_version}, but the cluster runs {current.postgres_version}:"
            " a major version upgrade is not done in place; build a new cluster and move the data",
            reason="version-change",
        )
    before, after = current.model_dump(mode="json"), spec.model_dump(mode="json")
    return spec, [f for f in after if after[f] != before.get(f)]


# --- cluster state from artifacts ---------------------------------------------------------------------------
def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {"corrupt": True}


def _mtime(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except OSError:
        return None


def cluster_state(ws: Workspace) -> dict[str, Any]:
    spec = _read(ws.spec_json)
    manifest = _read(ws.manifest_json)
    approval = _read(ws.approval_json)
    verify = _read(ws.verify_json)
    configure = _read(ws.root / "reports" / "configure.json")
    stages: dict[str, dict[str, Any]] = {
        "generate": {"state": "done" if spec else "missing", "at": _mtime(ws.spec_json)},
        "plan": _plan_state(ws, manifest),
        "apply": _apply_state(ws, approval),
        "configure": {"state": "done" if configure else "missing", "at": _mtime(ws.root / "reports/configure.json")},
        "verify": {
            "state": "missing" if not verify else ("passed" if verify.get("ok") else "failed"),
            "at": _mtime(ws.verify_json),
        },
    }
    return {"spec": spec, "stages": stages, "reports": {"verify": verify, "configure": configure}}


def _plan_state(ws: Workspace, manifest: dict[str, Any] | None) -> dict[str, Any]:
    if not manifest:
        return {"state": "missing"}
    try:
        current = (
            ws.terraform_hash() == manifest.get("terraform_sha256")
            and ws.spec_json.is_file()
            and sha256_file(ws.spec_json) == manifest.get("spec_sha256")
        )
        manifest_sha256: str | None = sha256_file(ws.manifest_json)
    except OSError:
        current, manifest_sha256 = False, None
    return {
        "state": "current" if current else "stale",
        "manifest_sha256": manifest_sha256,
        "has_changes": manifest.get("has_changes"),
        "destroy": manifest.get("destroy"),
        "counts": manifest.get("counts"),
        "at": manifest.get("created_at"),
    }


def _apply_state(ws: Workspace, approval: dict[str, Any] | None) -> dict[str, Any]:
    if not approval:
        return {"state": "missing"}
    state = "destroyed" if approval.get("destroy") else "done"
    if not approval.get("applied_at"):
        state = "incomplete"  # approval.json is written before terraform runs, completed after it
    return {
        "state": state,
        "approver": approval.get("approver"),
        "manifest_sha256": approval.get("manifest_sha256"),
        "at": approval.get("applied_at"),
        "outputs": ws.outputs_json.is_file(),
    }


# --- OpenAPI ------------------------------------------------------------------------------------------------
def _openapi(app: FastAPI, *, secured: bool) -> dict[str, Any]:
    """FastAPI's schema, plus the generate body documented from the spec model (validated by it, too) and the
    bearer scheme (enforced by Guard, before any body is read)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    spec = ClusterSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(spec.pop("$defs", {}))
    spec["properties"]["name"]["description"] += "; default: ?cluster=, else 'default'"
    spec["required"] = ["instance_type", "replica_count", "region"]
    spec["title"] = "GenerateRequest"
    spec["examples"] = [{"instance_type": "t3.medium", "replica_count": 2, "region": "us-east-1", "target": "local"}]
    components["GenerateRequest"] = spec
    body = schema["paths"]["/generate-terraform"]["post"]["requestBody"]
    body["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/GenerateRequest"}
    if secured:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema["paths"].items():
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


# --- serving ------------------------------------------------------------------------------------------------
def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and a token too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise PgpipeError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_LENGTH} random characters",
                          reason="token-weak")
    if token is not None or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise PgpipeError(
            f"refusing to serve on {host} without a token: set {TOKEN_ENV}, or bind 127.0.0.1",
            reason="token-required",
        )


def serve(workdir: Path, host: str, port: int, token: str | None) -> None:
    """Run the API with uvicorn until interrupted (the caller configures logging)."""
    import uvicorn

    check_bind(host, token)
    if token is None:
        log.warning("no %s: every local user can call the API on %s", TOKEN_ENV, host)
    log.info("serving the pgpipe API on http://%s:%d (workspaces in %s)", host, port, workdir)
    uvicorn.run(create_app(workdir, token), host=host, port=port, log_config=None, server_header=False)
