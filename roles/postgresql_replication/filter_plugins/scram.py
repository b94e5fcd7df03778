"""SCRAM-SHA-256 password verifiers as PostgreSQL stores them, computed on the controller.

The role sends PostgreSQL a finished verifier instead of the password, so the plain password never reaches the
server, its logs or a command line; and it can tell whether the stored verifier already matches the wanted
password (same salt and iteration count) without logging in, which keeps a re-run at changed=0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SALT_BYTES = 16
PREFIX = "SCRAM-SHA-256"


def _prohibited(char: str) -> bool:
    return any(
        table(char)
        for table in (
            stringprep.in_table_a1,
            stringprep.in_table_c12,
            stringprep.in_table_c21_c22,
            stringprep.in_table_c3,
            stringprep.in_table_c4,
            stringprep.in_table_c5,
            stringprep.in_table_c6,
            stringprep.in_table_c7,
            stringprep.in_table_c8,
            stringprep.in_table_c9,
        )
    )


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes: SASLprep (RFC 4013) of the password, or the password unchanged where
    SASLprep rejects it, as PostgreSQL's pg_saslprep() does."""
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if any(_prohibited(c) for c in normalized):
        return raw
    if any(stringprep.in_table_d1(c) for c in normalized):
        if any(stringprep.in_table_d2(c) for c in normalized):
            return raw
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return raw
    return normalized.encode("utf-8")


def _verifier(password: str, salt: bytes, iterations: int) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"{PREFIX}${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _parse(verifier: str) -> tuple[bytes, int] | None:
    """Salt and iteration count of a stored SCRAM verifier; None for anything else (md5, empty)."""
    try:
        prefix, params, _keys = verifier.split("$")
        iterations, salt = params.split(":")
        if prefix != PREFIX:
            return None
        return base64.b64decode(salt, validate=True), int(iterations)
    except (ValueError, TypeError):
        return None


def postgresql_replication_scram(password: str, current: str | None = "") -> str:
    """The verifier to store for `password`: `current` itself when it already verifies that password,
    else a new verifier with a random salt."""
    parsed = _parse(current or "")
    if parsed is not None:
        salt, iterations = parsed
        if hmac.compare_digest(_verifier(password, salt, iterations), current or ""):
            return current or ""
    return _verifier(password, secrets.token_bytes(SALT_BYTES), ITERATIONS)


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, object]:
        return {"postgresql_replication_scram": postgresql_replication_scram}
