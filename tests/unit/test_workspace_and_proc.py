"""The workspace's atomic writes, hashes and lock; the subprocess helper's exit-code rules; log masking."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pipeline import proc, redact
from pipeline.errors import CommandFailed, ToolMissing, WorkspaceError
from pipeline.workspace import Workspace, write_atomic


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "spec.json"
    write_atomic(target, "old\n")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_rendered_files_are_replaced_and_stale_ones_removed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write_rendered({"main.tf": "a\n", "backend.tf": "b\n"})
    (ws.terraform_dir / "terraform.tfstate").write_text("{}")
    first = ws.terraform_hash()
    ws.write_rendered({"main.tf": "a\n"})
    assert sorted(p.name for p in ws.terraform_dir.iterdir()) == ["main.tf", "terraform.tfstate"]
    assert ws.terraform_hash() != first


def test_the_terraform_hash_ignores_state_and_sees_any_new_tf_file(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.write_rendered({"main.tf": "a\n"})
    before = ws.terraform_hash()
    (ws.terraform_dir / "terraform.tfstate").write_text("{}")
    assert ws.terraform_hash() == before
    (ws.terraform_dir / "extra.tf").write_text("# sneaky\n")
    assert ws.terraform_hash() != before


def test_one_stage_at_a_time_per_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    with ws.lock(), pytest.raises(WorkspaceError) as err, Workspace(tmp_path).lock():
        pass
    assert err.value.reason == "workspace-busy"


def test_a_missing_artifact_names_the_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="run `pgpipe apply` first"):
        Workspace(tmp_path).read_json(tmp_path / "outputs.json", "apply")


def test_exit_codes_outside_the_success_list_raise_with_stderr() -> None:
    assert proc.run(["sh", "-c", "exit 2"], timeout=10, ok_codes=(0, 2)).returncode == 2
    with pytest.raises(CommandFailed) as err:
        proc.run(["sh", "-c", "echo bad >&2; exit 3"], timeout=10)
    assert err.value.returncode == 3 and "bad" in err.value.stderr


def test_a_command_that_hangs_is_killed_at_its_timeout() -> None:
    with pytest.raises(CommandFailed) as err:
        proc.run(["sleep", "30"], timeout=0.5)
    assert err.value.reason == "timeout"


def test_a_missing_binary_is_one_line_naming_it_and_the_fix() -> None:
    with pytest.raises(ToolMissing, match=r"^ansible-playbook not found: run `make setup`"):
        proc.which("/nonexistent/ansible-playbook")


def test_output_lines_are_streamed_while_captured() -> None:
    seen: list[str] = []
    result = proc.run(["sh", "-c", "echo one; echo two >&2"], timeout=10, on_line=seen.append)
    assert sorted(seen) == ["one", "two"] and result.stdout == "one\n"


def test_registered_secrets_are_masked_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    redact.register("s3cr3t-value-123")
    logger = logging.getLogger("pipeline.test")
    logger.addFilter(redact.RedactingFilter())
    with caplog.at_level(logging.INFO, logger="pipeline.test"):
        logger.info("password is %s", "s3cr3t-value-123")
    assert "s3cr3t" not in caplog.text and "***" in caplog.text


def test_stages_running_at_once_keep_their_own_log_lines(tmp_path: Path) -> None:
    """Two stages in two threads of one process (as the HTTP API runs them): each log holds only its own
    lines, including the output of the commands it ran."""
    import threading

    barrier = threading.Barrier(2)

    def stage(name: str) -> None:
        ws = Workspace(tmp_path / name)
        with ws.stage_log("plan"):
            barrier.wait()
            for i in range(20):
                logging.getLogger("pipeline.test").info("%s line %d", name, i)
                proc.run(["echo", f"{name} output {i}"], timeout=10)

    threads = [threading.Thread(target=stage, args=(name,)) for name in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alpha = (tmp_path / "alpha" / "logs" / "plan.log").read_text()
    beta = (tmp_path / "beta" / "logs" / "plan.log").read_text()
    assert alpha.count("alpha line") == 20 and alpha.count("pipeline.proc:   alpha output") == 20
    assert "beta" not in alpha and "alpha" not in beta
