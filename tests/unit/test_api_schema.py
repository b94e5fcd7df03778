"""Schemathesis against the API's own OpenAPI schema: whatever it is sent (valid or not by the schema), the API
answers with a documented status and a body of the documented shape, and never with a 5xx."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipeline.api import create_app
from pipeline.jobs import JobManager

TOKEN = "schemathesis-token-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# The schema is loaded when the module is collected (schemathesis needs it to make the test cases), so the
# workspaces go to a folder made then and removed when the module's tests are done.
WORKDIR = Path(tempfile.mkdtemp(prefix="pgpipe-api-schema-"))
JOBS = JobManager()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(WORKDIR, token=TOKEN, jobs=JOBS))


@pytest.fixture(scope="module", autouse=True)
def _remove_workdir() -> Iterator[None]:
    yield
    shutil.rmtree(WORKDIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_answers_as_documented(case: schemathesis.Case) -> None:
    # Every case starts from no workspace at all, so a cluster that an earlier case generated is never planned:
    # unit tests start no terraform (the integration chain runs the stages for real). An async case's job may
    # still be writing: wait for it first.
    assert JOBS.wait_all(30)
    for path in WORKDIR.iterdir():
        shutil.rmtree(path)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_without_the_token_only_health_answers(case: schemathesis.Case) -> None:
    # Schemathesis may make up a bearer token of its own (403) or send none (401); it also tries methods the
    # path does not have, which /health answers with 405 and every other path refuses before routing.
    response = case.call()
    if case.path == "/health":
        assert response.status_code == (200 if case.method == "GET" else 405)
    else:
        assert response.status_code in (401, 403), response.text
        assert response.json()["reason"] in ("unauthorized", "forbidden")


def test_the_schema_documents_every_original_endpoint(tmp_path: Path) -> None:
    paths = create_app(tmp_path, token=TOKEN).openapi()["paths"]
    assert {
        "/generate-terraform",
        "/generate-terraform-plan",
        "/generate-terraform-apply",
        "/apply_ansible_configuration",
        "/clusters/{name}",
        "/jobs/{job_id}",
        "/health",
    } <= set(paths)
