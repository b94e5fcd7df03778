"""Fixtures shared by every test: a CLI runner that invokes pgpipe in-process on a private workdir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def pgpipe(runner: CliRunner, tmp_path: Path) -> Callable[..., Result]:
    """Run `pgpipe --workdir <tmp>/ws ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def invoke(*args: str, workdir: Path | None = None, input: str | None = None) -> Result:
        base = ["--workdir", str(workdir or tmp_path / "ws")]
        return runner.invoke(cli, [*base, *args], input=input, catch_exceptions=False)

    return invoke
