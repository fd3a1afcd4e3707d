"""The OpenAPI document against the live server: it validates as OpenAPI 3.1, and a
property-based fuzz pass generated from it (schemathesis) runs every documented operation,
authenticated, with data that fits the document and data that does not: no answer is a 5xx,
every answer's status, content type, headers and body are the document's, and data the
document forbids is refused.

Bounded by LITEJOBS_FUZZ_EXAMPLES (examples per operation and mode, default 20);
`scripts/api-fuzz --long` runs 500.
"""

import itertools
import json
import os
import re
import urllib.request

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ANSWERS, DEMO_PROJECT_ID, REPO, session_server

EXAMPLES = int(os.environ.get("LITEJOBS_FUZZ_EXAMPLES", "20"))
#: Longest any answer may take: a lease waits at most 20 s for work.
TIMEOUT_S = 30

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def fetch_document(server):
    with urllib.request.urlopen(server.endpoint + "/openapi.json", timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_the_served_document_is_valid_openapi_3_1_and_the_committed_one(server):
    document = fetch_document(server)
    assert document["openapi"].startswith("3.1.")
    errors = [str(e) for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert document == committed


def test_the_validator_refuses_a_broken_document(server):
    """The validation above can fail: a document without `info`, or whose operation has no
    answers, does not pass."""
    document = fetch_document(server)
    del document["info"]
    assert list(OpenAPIV31SpecValidator(document).iter_errors())
    document = fetch_document(server)
    document["paths"]["/health"]["get"]["responses"] = []
    assert list(OpenAPIV31SpecValidator(document).iter_errors())


schema = schemathesis.openapi.from_url(session_server().endpoint + "/openapi.json")
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    # Credentials are the fixture's token, not generated values.
    with_security_parameters=False,
    # Unknown query parameters are ignored, as the design says; not an error to provoke.
    allow_extra_parameters=True,
)

PROJECT_ID = re.compile(r"\A[A-Za-z0-9-]{1,64}\Z")

#: Alternates generated ids with those of a real job, so both paths are exercised.
_use_real_ids = itertools.cycle([True, False])


def aim(case, job):
    """Points the case at the demo project, and every other case at a real job and task.
    A value the document forbids is left as generated: the server must refuse it."""
    params = case.path_parameters
    if params is None:
        return
    if PROJECT_ID.match(str(params.get("project_id", ""))):
        params["project_id"] = DEMO_PROJECT_ID
    if next(_use_real_ids) and "/dev-servers/jobs/{id}" in case.operation.path:
        job_id, task_id = job
        for name, real in (("id", job_id), ("task_id", task_id)):
            if name in params and 1 <= len(str(params[name])) <= 64:
                params[name] = real


def check_stream(response):
    """An event stream cannot be read to its end: its answer is checked by its first event."""
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers.get("x-request-id")
    first = next(response.iter_lines(decode_unicode=True))
    assert first in ("event: ready", "event: expired", "event: snapshot"), first


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_every_operation_answers_as_documented(case, token, job):
    aim(case, job)
    headers = {"X-Auth-Token": token}
    operation = f"{case.method.upper()} {case.operation.path}"
    if not case.operation.path.endswith("/events"):
        response = case.call(headers=headers, timeout=TIMEOUT_S)
        ANSWERS[operation][response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        return
    # A watch: its stream is read up to its first event; its error answers as any other.
    kwargs = case.as_transport_kwargs(headers=headers)
    with requests.request(**kwargs, stream=True, timeout=TIMEOUT_S) as response:
        ANSWERS[operation][response.status_code] += 1
        if response.status_code == 200:
            check_stream(response)
        else:
            case.validate_response(response, checks=CHECKS, headers=headers)


#: Operations no generated request can make succeed: no service exists, and only an agent
#: holding a lease may upload a task's output or report its result; no output was uploaded;
#: and a token is revoked only by presenting it.
NEVER_SUCCEED = {
    "GET /v1/{project_id}/dev-servers/jobs/services/{id}",
    "PUT /v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/output",
    "POST /v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/result",
    "GET /v1/{project_id}/dev-servers/jobs/{id}/tasks/{task_id}/output",
    "DELETE /v3/auth/tokens",
}


def test_the_fuzz_pass_reached_every_operation_and_its_successes():
    """Runs after the fuzz pass: every documented operation was called, and each that can
    succeed did at least once, so the pass went past authentication and validation."""
    documented = {
        f"{method.upper()} {path}"
        for path, item in fetch_document(session_server())["paths"].items()
        for method in item
    }
    # (Negative cases also call the methods a path does not document.)
    assert documented - set(ANSWERS) == set()
    failed_always = sorted(
        operation
        for operation in documented - NEVER_SUCCEED
        if not any(200 <= status < 300 for status in ANSWERS[operation])
    )
    assert failed_always == [], {op: dict(ANSWERS[op]) for op in failed_always}
