"""The cluster's passwords: from the environment (CI), else generated once into `<workspace>/secrets/` with
mode 0600 (local runs). Every value is registered for masking before it is used."""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

from pipeline import redact
from pipeline.workspace import Workspace, write_atomic

# name -> environment variable
SECRETS = {
    "replication_password": "PGPIPE_REPLICATION_PASSWORD",
    "admin_password": "PGPIPE_ADMIN_PASSWORD",
}


def _from_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def get(ws: Workspace, name: str) -> str:
    env_var = SECRETS[name]
    value = os.environ.get(env_var) or _from_file(ws.secrets_dir / name)
    if value is None:
        ws.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(ws.secrets_dir, 0o700)
        value = _random.token_urlsafe(24)
        write_atomic(ws.secrets_dir / name, value + "\n", mode=0o600)
    redact.register(value)
    return value


def environment(ws: Workspace) -> dict[str, str]:
    """The secrets as the environment variables the playbooks read them from."""
    return {env_var: get(ws, name) for name, env_var in SECRETS.items()}
