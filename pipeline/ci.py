"""What the GitHub Actions workflows need beyond the stages: which clusters a change touches, step outputs
and summaries, masks, and the few GitHub REST calls (find a merged pull request's plan artifact)."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import proc, redact
from pipeline.errors import PgpipeError
from pipeline.spec import NAME_RE

log = logging.getLogger(__name__)

CLUSTERS_DIR = "clusters"
# A change here can change every cluster's rendered Terraform or configuration.
GLOBAL_PREFIXES = ("pipeline/", "roles/", "playbooks/", "templates/", "setup.cfg")
TARGET_TEMPLATES = re.compile(r"^templates/terraform/(?P<target>[a-z]+)/")
STEP_SUMMARY_LIMIT = 1024 * 1024  # GitHub refuses a step summary above 1 MiB
API_TIMEOUT = 30


class GitHubError(PgpipeError):
    reason = "github-api"


# --- which clusters a change touches ---------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterFile:
    name: str
    spec: str  # the spec file's path relative to the checkout, as the Makefile's SPEC takes it
    target: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "spec": self.spec, "target": self.target}


def cluster_files(root: Path) -> list[ClusterFile]:
    """Every clusters/*.json of the checkout with the cluster name it holds (names must be unique)."""
    found: dict[str, ClusterFile] = {}
    for path in sorted((root / CLUSTERS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PgpipeError(f"{path} is not readable JSON: {exc}", reason="invalid-spec") from None
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PgpipeError(f"{path} has no valid cluster name", reason="invalid-spec")
        if name in found:
            raise PgpipeError(f"{path} and {found[name].spec} both hold cluster {name!r}", reason="invalid-spec")
        found[name] = ClusterFile(name, f"{CLUSTERS_DIR}/{path.name}", str(data.get("target", "aws")))
    return list(found.values())


def changed_files(root: Path, base: str, head: str) -> list[str]:
    """Paths changed between the merge base of `base` and `head`, and `head` (what a pull request changes)."""
    result = proc.run(
        ["git", "-C", str(root), "diff", "--name-only", "--no-renames", f"{base}...{head}", "--"],
        timeout=60,
        logger=log,
        reason="git-diff",
    )
    return [line for line in result.stdout.splitlines() if line]


def affected(files: Iterable[str], clusters: list[ClusterFile]) -> tuple[list[ClusterFile], list[str]]:
    """(clusters a change to `files` touches, cluster spec files it deleted)."""
    by_spec = {c.spec: c for c in clusters}
    hit: dict[str, ClusterFile] = {}
    deleted: list[str] = []
    for path in files:
        if path.startswith(f"{CLUSTERS_DIR}/") and path.endswith(".json") and path.count("/") == 1:
            if path in by_spec:
                hit[path] = by_spec[path]
            else:
                deleted.append(path)
        elif match := TARGET_TEMPLATES.match(path):  # one target's templates touch only its clusters
            hit.update((c.spec, c) for c in clusters if c.target == match["target"])
        elif path.startswith(GLOBAL_PREFIXES):
            hit.update((c.spec, c) for c in clusters)
    return sorted(hit.values(), key=lambda c: c.name), sorted(deleted)


def select(
    root: Path,
    *,
    base: str | None = None,
    head: str | None = None,
    only: Iterable[str] = (),
    target: str | None = None,
) -> list[ClusterFile]:
    """The clusters a workflow acts on: named ones (checked to exist), those a diff touches, or all."""
    every = cluster_files(root)
    clusters = [c for c in every if target is None or c.target == target]
    wanted = sorted(set(only))
    if wanted:
        known = {c.name: c for c in clusters}
        missing = [name for name in wanted if name not in known]
        if missing:
            where = f" with target {target!r}" if target else ""
            raise PgpipeError(f"no cluster {', '.join(map(repr, missing))}{where} in {CLUSTERS_DIR}/*.json",
                              reason="invalid-spec")
        return [known[name] for name in wanted]
    if base and head and set(base) != {"0"}:  # an all-zero base: a new branch, nothing to diff against
        hit, deleted = affected(changed_files(root, base, head), every)
        hit = [c for c in hit if c in clusters]
        for path in deleted:
            log.warning("%s was deleted: pgpipe does not destroy a cluster whose spec is gone; destroy it first"
                        " (dispatch action destroy), then delete its spec", path)
        return hit
    return clusters


# --- the runner's files and commands ------------------------------------------------------------------
def set_output(name: str, value: str, path: str | None = None) -> None:
    """Append a step output to $GITHUB_OUTPUT, with a random heredoc delimiter so no value can end it early."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        raise PgpipeError("GITHUB_OUTPUT is not set: step outputs exist only inside GitHub Actions",
                          reason="not-in-actions")
    delimiter = f"pgpipe_{secrets.token_hex(16)}"
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def append_step_summary(markdown: str, path: str | None = None) -> int:
    """Append markdown to $GITHUB_STEP_SUMMARY, cut under GitHub's 1 MiB; returns the characters written."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        raise PgpipeError("GITHUB_STEP_SUMMARY is not set: give --file", reason="not-in-actions")
    data = markdown.encode()
    if len(data) > STEP_SUMMARY_LIMIT - 256:
        cut = data[: STEP_SUMMARY_LIMIT - 256].decode(errors="ignore")
        markdown = cut[: cut.rfind("\n") + 1] + "\n\n_(cut: the full text is in the run's artifact)_\n"
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return len(markdown)


def add_mask(value: str) -> None:
    """Ask the runner to mask `value` in the job log (no effect outside GitHub Actions)."""
    redact.register(value)
    if value and os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands are read from stdout and stderr alike; stderr keeps stdout machine-readable.
        print(f"::add-mask::{value}", file=sys.stderr, flush=True)


def run_url() -> str | None:
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def plan_artifact_name(cluster: str, head_sha: str) -> str:
    """The PR plan artifact's name: one per cluster and head commit, so apply finds exactly that plan."""
    return f"plan-{cluster}-{head_sha}"


# --- GitHub REST --------------------------------------------------------------------------------------
class GitHubClient:
    """The handful of REST calls the workflows need, with the job's token (never on a command line)."""

    def __init__(self, repo: str, token: str, api_url: str = "https://api.github.com") -> None:
        if not re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", repo):
            raise GitHubError(f"{repo!r} is not OWNER/NAME")
        if not token:
            raise GitHubError("no token: set GITHUB_TOKEN (in a workflow: env GITHUB_TOKEN: github.token)")
        redact.register(token)
        self.repo = repo
        self.token = token
        self.api_url = api_url.rstrip("/")

    @classmethod
    def from_env(cls, repo: str | None = None) -> GitHubClient:
        return cls(
            repo or os.environ.get("GITHUB_REPOSITORY", ""),
            os.environ.get("GITHUB_TOKEN", ""),
            os.environ.get("GITHUB_API_URL", "https://api.github.com"),
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = path if path.startswith("https://") else f"{self.api_url}/repos/{self.repo}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - https API URL
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/vnd.github+json")
        req.add_header("X-GitHub-Api-Version", "2022-11-28")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=API_TIMEOUT) as response:  # noqa: S310
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise GitHubError(f"GitHub {method} {path}: {exc.code} {detail}") from None
        except OSError as exc:
            raise GitHubError(f"GitHub {method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def paginate(self, path: str, key: str | None = None) -> Iterator[Any]:
        sep = "&" if "?" in path else "?"
        for page in range(1, 101):
            items = self.request("GET", f"{path}{sep}per_page=100&page={page}")
            batch = items[key] if key else items
            yield from batch
            if len(batch) < 100:
                return

    def merged_pull_request(self, sha: str) -> dict[str, Any] | None:
        """The pull request whose merge made commit `sha` (None for a direct push)."""
        pulls = self.request("GET", f"/commits/{sha}/pulls")
        merged = [p for p in pulls if p.get("merged_at") and p.get("merge_commit_sha") == sha]
        return merged[0] if merged else None

    def latest_artifact(self, name: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"name": name})
        found = [a for a in self.paginate(f"/actions/artifacts?{query}", "artifacts") if not a.get("expired")]
        return max(found, key=lambda a: str(a.get("created_at")), default=None)


def find_pr_plan(client: GitHubClient, cluster: str, sha: str) -> dict[str, str]:
    """Where the plan artifact of the pull request merged as `sha` is: {found, name, run_id, pr, head_sha}."""
    pr = client.merged_pull_request(sha)
    if pr is None:
        log.info("%s is not the merge of a pull request: no PR plan to reuse", sha)
        return {"found": "false"}
    head = str(pr["head"]["sha"])
    name = plan_artifact_name(cluster, head)
    artifact = client.latest_artifact(name)
    if artifact is None:
        log.info("pull request #%s has no live artifact %s: a new plan is needed", pr["number"], name)
        return {"found": "false", "pr": str(pr["number"]), "head_sha": head}
    return {
        "found": "true",
        "name": name,
        "run_id": str(artifact["workflow_run"]["id"]),
        "pr": str(pr["number"]),
        "head_sha": head,
    }


# --- the job summary ----------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def summary_markdown(cluster: str, ws: Any) -> str:
    """What a reviewer needs on the run's page: preflight problems, the plan summary, the verify result."""
    parts = []
    preflight = _read_json(ws.root / "reports" / "preflight.json")
    if isinstance(preflight, dict):
        issues = [f for f in preflight.get("findings", []) if f.get("level") != "ok"]
        lines = [f"- **{f['level']}** {f['check']}: {f['message']}" for f in issues] or ["- all checks passed"]
        parts.append(f"### Preflight: `{cluster}`\n\n" + "\n".join(lines) + "\n")
    if ws.summary_md.is_file():
        parts.append(ws.summary_md.read_text())
    else:
        parts.append(f"### Plan: `{cluster}`\n\nNo plan was made (see the failed step).\n")
    verify = _read_json(ws.verify_json)
    if isinstance(verify, dict):
        failed = [c for c in verify.get("checks", []) if not c.get("ok")]
        head = "passed" if verify.get("ok") else "FAILED"
        lines = [f"- {c.get('name')} on {c.get('host')}: {c.get('detail', '')}" for c in failed]
        parts.append(f"### Verify: `{cluster}` {head} ({verify.get('passed', 0)} checks passed)\n\n"
                     + "\n".join(lines) + "\n")
    return "\n".join(parts)
