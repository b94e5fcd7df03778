"""The pull-request comment that shows a cluster's plan: one comment per cluster, found again through a hidden
marker and updated in place, and cut safely below GitHub's 65,535-character limit with a pointer to the
artifact that holds the whole plan."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.ci import GitHubClient

log = logging.getLogger(__name__)

MAX_CHARS = 65535  # GitHub refuses a comment body longer than this
FENCE = "```"


def marker(cluster: str) -> str:
    """The hidden first line that identifies the comment of `cluster` (the ' -->' keeps 'demo' from
    matching 'demo-2')."""
    return f"<!-- pgpipe:plan cluster={cluster} -->"


def github_length(text: str) -> int:
    """Length as GitHub may count it: UTF-16 code units, never fewer than Python's characters."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Source:
    """Where the full plan is: the artifact's name, the run that made it, the commit it was planned for."""

    artifact: str | None = None
    run_url: str | None = None
    sha: str | None = None

    def pointer(self) -> str:
        where = f"the artifact `{self.artifact}`" if self.artifact else "the plan artifact"
        return f"{where} of [this run]({self.run_url})" if self.run_url else where

    def footer(self) -> str:
        parts = ["pgpipe"]
        if self.sha:
            parts.append(f"commit `{self.sha[:12]}`")
        if self.artifact:
            parts.append(f"plan artifact `{self.artifact}`")
        if self.run_url:
            parts.append(f"[run]({self.run_url})")
        return "\n\n---\n<sub>" + " · ".join(parts) + "</sub>\n"


def failure_text(cluster: str, source: Source) -> str:
    where = f"[the run's log]({source.run_url})" if source.run_url else "the run's log"
    return f"## pgpipe plan: `{cluster}` failed\n\nNo plan was made; see {where} for the step that failed.\n"


def render(cluster: str, summary: str | None, source: Source, *, limit: int = MAX_CHARS) -> str:
    """The comment body: marker, the plan summary (or a failure note when there is none), footer; never
    longer than `limit`."""
    head = marker(cluster) + "\n"
    footer = source.footer()
    text = summary if summary is not None else failure_text(cluster, source)
    room = limit - github_length(head) - github_length(footer)
    if github_length(text) > room:
        note = (
            f"\n> **Cut here:** the summary has {len(text):,} characters, more than a comment holds. The whole"
            f" plan (summary.md, plan.json) is in {source.pointer()}.\n"
        )
        text = truncate(text, room, note)
    return head + text + footer


def truncate(text: str, limit: int, note: str) -> str:
    """Cut `text` at a line end so that, with fences and <details> closed and `note` appended, it fits in
    `limit`. Never splits a line or a character, never leaves a code block open."""
    closers_room = github_length(f"\n{FENCE}\n") + text.count("<details") * github_length("</details>\n")
    room = max(0, limit - github_length(note) - closers_room)
    prefix = text[:room]
    excess = github_length(prefix) - room
    while excess > 0:  # characters outside the BMP count twice: drop at least one per unit over
        prefix = prefix[: len(prefix) - excess]
        excess = github_length(prefix) - room
    if "\n" in prefix:
        prefix = prefix[: prefix.rfind("\n") + 1]
    elif prefix:
        prefix += "\n"
    return prefix + closers(prefix) + note


def closers(prefix: str) -> str:
    """What closes the blocks a cut left open: a code fence, then any <details>."""
    out = ""
    fences = sum(1 for line in prefix.splitlines() if line.lstrip().startswith(FENCE))
    if fences % 2:
        out += FENCE + "\n"
    open_details = prefix.count("<details") - prefix.count("</details>")
    out += "</details>\n" * max(0, open_details)
    return out


def find_comment(comments: Iterable[Mapping[str, Any]], cluster: str) -> Mapping[str, Any] | None:
    """The earliest comment whose first line is the cluster's marker."""
    wanted = marker(cluster)
    for comment in comments:
        body = str(comment.get("body") or "")
        if body.split("\n", 1)[0].strip() == wanted:
            return comment
    return None


@dataclass(frozen=True)
class Posted:
    action: str  # created, updated, unchanged
    comment_id: int
    url: str


def upsert(client: GitHubClient, pr: int, cluster: str, body: str) -> Posted:
    """Update the cluster's comment on pull request `pr` in place, or create it."""
    existing = find_comment(client.paginate(f"/issues/{pr}/comments"), cluster)
    if existing is None:
        made = client.request("POST", f"/issues/{pr}/comments", {"body": body})
        posted = Posted("created", int(made["id"]), str(made.get("html_url", "")))
    elif existing.get("body") == body:
        posted = Posted("unchanged", int(existing["id"]), str(existing.get("html_url", "")))
    else:
        made = client.request("PATCH", f"/issues/comments/{existing['id']}", {"body": body})
        posted = Posted("updated", int(made["id"]), str(made.get("html_url", "")))
    log.info("plan comment for %s on #%d %s: %s", cluster, pr, posted.action, posted.url)
    return posted
