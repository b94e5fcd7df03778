"""Background jobs of the HTTP API: each job runs stages on one cluster in its own thread, holding that cluster's
workspace lock from submission to the end, so a cluster has at most one running job (in this process or any
other). A job keeps its status, its result or error, and its log lines (secrets masked) for `GET /jobs/{id}`."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline import logscope, redact
from pipeline.errors import PgpipeError, WorkspaceError
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "succeeded", "failed"]
KEEP_FINISHED = 200
MAX_LINES = 20000
# The server's own request and job bookkeeping is not part of any job's log.
OWN_LOGGERS = ("pipeline.api", "pipeline.jobs")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Job:
    """One run of one or more stages on one cluster."""

    id: str
    cluster: str
    kind: str
    status: Status = "queued"
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    result: Any = None
    error: Exception | None = None
    _outcome: Status = "failed"
    _lines: list[str] = field(default_factory=list, repr=False)
    _dropped: int = 0
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def add_line(self, line: str) -> None:
        self._lines.append(line)
        excess = len(self._lines) - MAX_LINES
        if excess > 0:
            # Keep the newest lines; offsets stay stable because dropped lines are counted.
            del self._lines[:excess]
            self._dropped += excess

    def lines(self, offset: int = 0) -> tuple[list[str], int]:
        """Log lines from `offset` on (offsets count every line ever logged) and the next offset."""
        kept = list(self._lines)
        first = self._dropped
        start = max(offset - first, 0)
        return [redact.scrub(line) for line in kept[start:]], first + len(kept)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class _JobLogHandler(logging.Handler):
    """Copies the pipeline's log records into the running job, masked like every other log."""

    def __init__(self, job: Job) -> None:
        super().__init__(logging.DEBUG)
        self.job = job
        self.addFilter(redact.RedactingFilter())
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(OWN_LOGGERS):
            return
        try:
            self.job.add_line(self.format(record))
        except Exception:  # a log line must never fail a stage
            self.handleError(record)


class JobManager:
    """Runs jobs, at most one per cluster, and remembers the last finished ones."""

    def __init__(self, keep: int = KEEP_FINISHED) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._active: dict[str, Job] = {}

    def submit(self, ws: Workspace, cluster: str, kind: str, work: Callable[[], Any]) -> Job:
        """Take the cluster's workspace lock now (WorkspaceError `workspace-busy` if a job here or a stage in
        another process holds it) and run `work` in a thread; the lock is released when `work` ends."""
        hold = contextlib.ExitStack()
        with self._lock:
            running = self._active.get(cluster)
            if running is not None:
                raise WorkspaceError(
                    f"job {running.id} ({running.kind}) is still running on cluster {cluster}: wait for it"
                    f" (GET /jobs/{running.id})",
                    reason="workspace-busy",
                )
            hold.enter_context(ws.lock())
            job = Job(id=uuid.uuid4().hex, cluster=cluster, kind=kind)
            self._active[cluster] = job
            self._jobs[job.id] = job
            self._prune()
        try:
            threading.Thread(target=self._run, args=(job, hold, work), name=f"job-{job.id[:8]}", daemon=True).start()
        except BaseException:
            self._finish(job, hold)
            raise
        log.info("job %s: %s on cluster %s submitted", job.id, kind, cluster)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def active(self, cluster: str) -> Job | None:
        with self._lock:
            return self._active.get(cluster)

    def wait_all(self, timeout: float) -> bool:
        """Wait for the running jobs (a server stopping must not cut terraform off mid-apply)."""
        with self._lock:
            running = list(self._active.values())
        if running:
            log.info("waiting for %d running job(s) to finish", len(running))
        return all(job.wait(timeout) for job in running)

    def _run(self, job: Job, hold: contextlib.ExitStack, work: Callable[[], Any]) -> None:
        try:
            job.status = "running"
            job.started_at = _now()
            self._run_captured(job, work)
        finally:
            self._finish(job, hold)

    def _run_captured(self, job: Job, work: Callable[[], Any]) -> None:
        try:
            with logscope.scoped(_JobLogHandler(job)):
                job.result = work()
            job._outcome = "succeeded"
        except Exception as exc:  # every failure becomes the job's error; the API maps it to a status
            job.error = exc
            if not isinstance(exc, PgpipeError):
                # One line, never a traceback: it may carry values from the stack.
                log.error("job %s: unexpected %s: %s", job.id, type(exc).__name__, exc)
        log.info("job %s: %s on cluster %s %s", job.id, job.kind, job.cluster, job._outcome)

    def _finish(self, job: Job, hold: contextlib.ExitStack) -> None:
        # The status turns final only once the lock is released, so that a client who sees "succeeded" can
        # start the next stage at once without meeting a 409.
        try:
            hold.close()
        finally:
            with self._lock:
                if self._active.get(job.cluster) is job:
                    del self._active[job.cluster]
            job.finished_at = _now()
            job.status = job._outcome
            job._done.set()

    def _prune(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.done]
        for job_id in finished[: max(len(finished) - self._keep, 0)]:
            del self._jobs[job_id]
