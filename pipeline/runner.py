"""Running stages on a cluster's workspace: the cluster's lock held for the whole run and each stage's log in
`logs/<stage>.log`. The CLI and the HTTP API both run stages through here, so they lock and log alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pipeline.workspace import Workspace

Step = tuple[str, Callable[[], Any]]


def run_steps(ws: Workspace, steps: Sequence[Step], *, locked: bool = False) -> list[Any]:
    """Run `steps` (stage name, function) in order under one hold of the cluster's lock, so no other stage can
    slip in between them (configure then verify must see the same cluster). `locked=True` when the caller
    already holds the lock (the lock is not re-entrant: a second hold from the same process is refused)."""
    with contextlib.ExitStack() as stack:
        if not locked:
            stack.enter_context(ws.lock())
        results = []
        for name, func in steps:
            with ws.stage_log(name):
                results.append(func())
        return results


@contextlib.contextmanager
def stage(ws: Workspace, name: str) -> Iterator[None]:
    """Run one stage (the body of the `with`) under the cluster's lock with its log in logs/<name>.log."""
    with ws.lock(), ws.stage_log(name):
        yield
