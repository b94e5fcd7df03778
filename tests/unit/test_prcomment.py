"""The pull-request comment: its hidden marker, the body, the cut below GitHub's limit, and update-in-place
against a small GitHub comments API served on loopback (the REST client and pagination run for real)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline import prcomment
from pipeline.ci import GitHubClient
from pipeline.workspace import Workspace

SOURCE = prcomment.Source("plan-orders-0123456789abcdef", "https://github.com/o/r/actions/runs/42", "0123456789abcdef0")
SUMMARY = "## pgpipe plan: `orders`\n\n**1 to add, 0 to change, 0 to destroy.**\n"


def test_the_marker_is_the_hidden_first_line() -> None:
    body = prcomment.render("orders", SUMMARY, SOURCE)
    assert body.splitlines()[0] == "<!-- pgpipe:plan cluster=orders -->"
    assert SUMMARY in body
    assert "`0123456789ab`" in body and "plan-orders-0123456789abcdef" in body and "runs/42" in body


def test_a_failed_plan_still_gets_a_comment_pointing_to_the_run() -> None:
    body = prcomment.render("orders", None, SOURCE)
    assert body.startswith(prcomment.marker("orders")) and "failed" in body and "runs/42" in body


def test_a_summary_that_fits_is_not_cut() -> None:
    room = prcomment.MAX_CHARS - len(prcomment.render("orders", "", SOURCE))
    summary = ("x" * 99 + "\n") * (room // 100)
    body = prcomment.render("orders", summary, SOURCE)
    assert summary in body and "Cut here" not in body


def long_summary(lines: int, line: str = "| orders-replica-1 | replica | t3.medium | eu-west-1b | create |") -> str:
    return SUMMARY + "\n| host | role | type | zone | action |\n|---|---|---|---|---|\n" + (line + "\n") * lines


def test_a_long_summary_is_cut_at_a_line_end_below_the_limit() -> None:
    summary = long_summary(5000)
    body = prcomment.render("orders", summary, SOURCE)
    assert prcomment.github_length(body) <= prcomment.MAX_CHARS
    assert body.startswith(prcomment.marker("orders") + "\n")
    kept = body.split("\n> **Cut here:**")[0].removeprefix(prcomment.marker("orders") + "\n")
    assert summary.startswith(kept) and kept.endswith("\n")
    assert "the artifact `plan-orders-0123456789abcdef` of [this run](https://github.com/o/r/actions/runs/42)" in body


def test_the_cut_closes_an_open_code_block_and_details() -> None:
    summary = SUMMARY + "<details><summary>plan</summary>\n\n```hcl\n" + "  + resource\n" * 20000 + "```\n</details>\n"
    body = prcomment.render("orders", summary, SOURCE)
    assert prcomment.github_length(body) <= prcomment.MAX_CHARS
    fences = [line for line in body.splitlines() if line.startswith("```")]
    assert len(fences) == 2
    assert body.count("<details>") == body.count("</details>") == 1


def test_characters_outside_the_bmp_count_twice() -> None:
    summary = long_summary(3000, "| \N{ELEPHANT} " * 20 + "|")
    body = prcomment.render("orders", summary, SOURCE)
    assert len(body) < prcomment.github_length(body) <= prcomment.MAX_CHARS


@pytest.mark.parametrize("limit", [2000, 5000, 65535])
def test_the_cut_holds_for_any_limit(limit: int) -> None:
    body = prcomment.render("orders", long_summary(5000), SOURCE, limit=limit)
    assert limit - 200 < prcomment.github_length(body) <= limit


def test_find_comment_takes_only_a_marker_on_the_first_line() -> None:
    comments = [
        {"id": 1, "body": "quoting: <!-- pgpipe:plan cluster=orders -->"},
        {"id": 2, "body": prcomment.marker("orders-2") + "\nother cluster"},
        {"id": 3, "body": prcomment.marker("orders") + "\nplan"},
        {"id": 4, "body": prcomment.marker("orders") + "\nnewer duplicate"},
    ]
    found = prcomment.find_comment(comments, "orders")
    assert found is not None and found["id"] == 3
    assert prcomment.find_comment(comments[:2], "orders") is None


# --- update in place, over HTTP --------------------------------------------------------------------------
class FakeGitHub(BaseHTTPRequestHandler):
    """Issue comments of one pull request, as GitHub's REST API serves them (paged by 100)."""

    comments: list[dict[str, Any]]
    calls: list[str]

    def _reply(self, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != "Bearer ghs_test_token_123":
            self._reply(401, {"message": "Bad credentials"})
            return False
        return True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.calls.append(f"GET {url.path}")
        if not self._authorised():
            return
        query = parse_qs(url.query)
        size, page = int(query["per_page"][0]), int(query["page"][0])
        self._reply(200, self.comments[(page - 1) * size : page * size])

    def _body(self) -> str:
        return str(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"])

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        if self._authorised():
            comment = {"id": 1000 + len(self.comments), "body": self._body(), "html_url": "https://x/c"}
            self.comments.append(comment)
            self._reply(201, comment)

    def do_PATCH(self) -> None:
        self.calls.append(f"PATCH {self.path}")
        if self._authorised():
            wanted = int(self.path.rsplit("/", 1)[1])
            comment = next(c for c in self.comments if c["id"] == wanted)
            comment["body"] = self._body()
            self._reply(200, comment)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def github() -> Iterator[tuple[GitHubClient, type[FakeGitHub]]]:
    handler = type("Handler", (FakeGitHub,), {"comments": [], "calls": []})
    # Other people's comments fill the first page, so the marker must be found on the second.
    handler.comments.extend({"id": i, "body": f"looks good {i}", "html_url": ""} for i in range(150))
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = GitHubClient("o/r", "ghs_test_token_123", f"http://127.0.0.1:{server.server_port}")
    try:
        yield client, handler
    finally:
        server.shutdown()
        server.server_close()


def ours(handler: type[FakeGitHub], cluster: str) -> list[dict[str, Any]]:
    return [c for c in handler.comments if c["body"].startswith(prcomment.marker(cluster))]


def test_the_first_plan_creates_the_comment_and_later_plans_edit_it(github: Any) -> None:
    client, handler = github
    first = prcomment.upsert(client, 7, "orders", prcomment.render("orders", SUMMARY, SOURCE))
    second = prcomment.upsert(client, 7, "orders", prcomment.render("orders", SUMMARY + "changed\n", SOURCE))
    assert (first.action, second.action) == ("created", "updated") and first.comment_id == second.comment_id
    assert [c["body"].endswith("</sub>\n") and "changed" in c["body"] for c in ours(handler, "orders")] == [True]
    assert "PATCH /repos/o/r/issues/comments/1150" in handler.calls


def test_an_unchanged_plan_is_not_posted_again(github: Any) -> None:
    client, handler = github
    body = prcomment.render("orders", SUMMARY, SOURCE)
    prcomment.upsert(client, 7, "orders", body)
    assert prcomment.upsert(client, 7, "orders", body).action == "unchanged"
    assert [c for c in handler.calls if not c.startswith("GET")] == ["POST /repos/o/r/issues/7/comments"]


def test_each_cluster_has_its_own_comment(github: Any) -> None:
    client, handler = github
    for cluster in ("orders", "orders-2", "orders"):
        prcomment.upsert(client, 7, cluster, prcomment.render(cluster, SUMMARY, SOURCE))
    assert len(ours(handler, "orders")) == len(ours(handler, "orders-2")) == 1


def test_a_rejected_token_is_an_error_that_does_not_show_the_token(github: Any) -> None:
    client, _ = github
    client.token = "ghs_wrong_token_456"
    with pytest.raises(Exception, match="401") as caught:
        prcomment.upsert(client, 7, "orders", "body")
    assert "ghs_wrong" not in str(caught.value)


def test_the_cli_prints_the_body_in_a_dry_run(pgpipe: Any, tmp_path: Path) -> None:
    ws = Workspace.for_cluster("orders", tmp_path / "ws")
    ws.write_text(ws.summary_md, SUMMARY)
    result = pgpipe("--cluster", "orders", "pr-comment", "--pr", "7", "--artifact", "plan-orders-abc", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.startswith(prcomment.marker("orders")) and "plan-orders-abc" in result.stdout
    assert re.search(r"\*\*1 to add", result.stdout)
