"""The artifact layout of one cluster on disk (default `.pgpipe/<cluster>/`): paths, atomic writes, hashes
and the per-cluster lock. Stages talk to each other only through these files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import logscope
from pipeline.errors import WorkspaceError
from pipeline.redact import RedactingFilter

DEFAULT_ROOT = Path(".pgpipe")
RENDERED_SUFFIXES = (".tf", ".tf.json", ".tfvars.json")


def write_atomic(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write `content` to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class Workspace:
    """One cluster's folder of artifacts."""

    def __init__(self, root: Path) -> None:
        # Absolute, because terraform and ansible-playbook run in other folders than the caller's.
        self.root = root.absolute()

    @classmethod
    def for_cluster(cls, name: str, base: Path | None = None) -> Workspace:
        base = base if base is not None else Path(os.environ.get("PGPIPE_WORKDIR", DEFAULT_ROOT))
        return cls(base / name)

    # --- layout -------------------------------------------------------------------------------------
    @property
    def spec_json(self) -> Path:
        return self.root / "spec.json"

    @property
    def terraform_dir(self) -> Path:
        return self.root / "terraform"

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def plan_file(self) -> Path:
        return self.plan_dir / "plan.tfplan"

    @property
    def plan_json(self) -> Path:
        return self.plan_dir / "plan.json"

    @property
    def summary_md(self) -> Path:
        return self.plan_dir / "summary.md"

    @property
    def manifest_json(self) -> Path:
        return self.plan_dir / "manifest.json"

    @property
    def approval_json(self) -> Path:
        return self.root / "approval.json"

    @property
    def outputs_json(self) -> Path:
        return self.root / "outputs.json"

    @property
    def inventory_ini(self) -> Path:
        return self.root / "inventory.ini"

    @property
    def verify_json(self) -> Path:
        return self.root / "reports" / "verify.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    # --- reading and writing ------------------------------------------------------------------------
    def write_text(self, path: Path, content: str, mode: int = 0o644) -> Path:
        write_atomic(path, content, mode)
        return path

    def write_json(self, path: Path, data: Any, mode: int = 0o644) -> Path:
        return self.write_text(path, dump_json(data), mode)

    def read_json(self, path: Path, produced_by: str) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise WorkspaceError(
                f"{path} is missing: run `pgpipe {produced_by}` first", reason=f"{path.stem}-missing"
            ) from None
        except json.JSONDecodeError as exc:
            raise WorkspaceError(f"{path} is not valid JSON: {exc}", reason="artifact-corrupt") from None

    def rendered_files(self) -> list[Path]:
        """The files `generate` renders into terraform/ (not providers, lock file or state)."""
        if not self.terraform_dir.is_dir():
            return []
        return sorted(p for p in self.terraform_dir.iterdir() if p.is_file() and p.name.endswith(RENDERED_SUFFIXES))

    def terraform_hash(self) -> str:
        """One sha256 over the names and contents of the rendered Terraform files."""
        digest = hashlib.sha256()
        for path in self.rendered_files():
            digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
        return digest.hexdigest()

    def write_rendered(self, files: dict[str, str]) -> None:
        """Replace the rendered Terraform files with `files`, each written atomically; rendered files no
        longer produced are removed. Providers, the lock file and local state are left alone."""
        for name, content in sorted(files.items()):
            write_atomic(self.terraform_dir / name, content)
        for path in self.rendered_files():
            if path.name not in files:
                path.unlink()

    # --- concurrency and logs -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the cluster's lock: one stage at a time per workspace, across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceError(
                    f"another pgpipe stage is running on {self.root}", reason="workspace-busy"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def stage_log(self, stage: str) -> Iterator[Path]:
        """Copy every pgpipe log record of this stage, secrets masked, into logs/<stage>.log (only this stage's:
        another stage running at the same time in this process keeps its own lines)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"{stage}.log"
        handler = logging.FileHandler(path, mode="w")
        handler.setLevel(logging.DEBUG)
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        try:
            with logscope.scoped(handler):
                yield path
        finally:
            handler.close()
