"""Keeps secrets out of logs: values registered here are replaced by `***` in every log record."""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"


def register(value: str) -> None:
    """Mask `value` in every log line from now on (values shorter than 6 characters are not secrets)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks every registered secret in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
        return True
