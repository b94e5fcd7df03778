"""Log scopes: a handler attached here takes only the records logged inside its own scope (one stage's run, one
API job) and in the threads that scope starts, so stages running at once in one process never write into each
other's logs."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

_active: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("pgpipe_log_scopes", default=frozenset())


class _InScope(logging.Filter):
    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        return self.key in _active.get()


@contextlib.contextmanager
def scoped(handler: logging.Handler, logger_name: str = "pipeline") -> Iterator[None]:
    """Attach `handler` to the logger for the body of the `with`, fed only from this context."""
    key = id(handler)
    handler.addFilter(_InScope(key))
    token = _active.set(_active.get() | {key})
    logger = logging.getLogger(logger_name)
    # Never lowered again: another scope may be running; handlers choose their own levels.
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        _active.reset(token)


def thread(target: Callable[..., Any], *args: Any, name: str | None = None, daemon: bool = True) -> threading.Thread:
    """A thread that runs `target` in a copy of the caller's context, so its log records keep their scopes."""
    context = contextvars.copy_context()
    return threading.Thread(target=context.run, args=(target, *args), name=name, daemon=daemon)
