"""Strict cloud mode (`serve --strict`) through the official SDK: answers carry only the
fields of the SDK's response models, the list's extension parameters are ignored as unknown
parameters are, the create body's `visible` changes nothing, extension routes do not exist."""

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkmodelarts.v1 import GetDevServerJobRequest, ListDevServerJobsRequest
from huaweicloudsdkmodelarts.v1.model.dev_server_job_list_response import DevServerJobListResponse
from huaweicloudsdkmodelarts.v1.model.dev_server_task_response import DevServerTaskResponse
from huaweicloudsdkmodelarts.v1.model.get_dev_server_job_response import GetDevServerJobResponse
from huaweicloudsdkmodelarts.v1.modelarts_client import ModelArtsClient

from litejobs_emulator import Emulator
from litejobs_support import WireRecorder, http, new_job, raw, wait_for_job


@pytest.fixture(scope="module")
def strict(litejobs_bin):
    with Emulator(litejobs_bin, args=["--strict"]) as running:
        yield running


@pytest.fixture
def client(strict):
    strict.control.reset()
    wire = WireRecorder()
    client = (ModelArtsClient.new_builder()
              .with_credentials(BasicCredentials(strict.access_key, strict.secret_key,
                                                 strict.project_id))
              .with_endpoint(strict.endpoint)
              .with_http_handler(wire.handler())
              .build())
    client.wire = wire
    return client


def model_fields(model):
    return set(model.attribute_map.values())


def test_answers_carry_only_the_fields_of_the_sdks_models(client):
    created = client.create_dev_server_job(new_job("strict-1"))
    assert set(raw(created)) <= model_fields(GetDevServerJobResponse), raw(created)
    done = wait_for_job(client, created.id)
    body = raw(done)
    assert set(body) <= model_fields(GetDevServerJobResponse), body
    for task in body["tasks"]:
        assert set(task) <= model_fields(DevServerTaskResponse), task
    assert "visible" not in body and "is_reboot" not in body
    listed = raw(client.list_dev_server_jobs(ListDevServerJobsRequest()))
    for item in listed["data"]:
        assert set(item) <= model_fields(DevServerJobListResponse), item


def test_the_lists_extension_parameters_are_ignored(strict, client):
    for n in range(3):
        client.create_dev_server_job(new_job(f"strict-page-{n}"))
    request = ListDevServerJobsRequest()
    # The SDK has no paging parameters; add them as a team's hand-written call would.
    response = client.list_dev_server_jobs(request)
    assert response.total == 3
    signed = client.list_dev_server_jobs_invoker(request)
    signed._http_info["query_params"] = [("limit", "1"), ("offset", "1"), ("sort_key", "name")]
    page = raw(signed.invoke())
    assert "limit=1" in client.wire.last.request.url, "the parameters were sent"
    assert (page["total"], len(page["data"]), page["current"]) == (3, 3, 1), page


def test_visible_in_the_create_body_changes_nothing(client):
    hidden = client.create_dev_server_job(new_job("strict-hidden", visible=False))
    # Not even checked: any value is ignored, as an unknown field's is.
    odd = client.create_dev_server_job(new_job("strict-odd", visible="notabool"))
    visible = client.list_dev_server_jobs(ListDevServerJobsRequest(visible=True))
    assert {hidden.id, odd.id} <= {j.id for j in visible.data}


def test_extension_routes_do_not_exist(strict, client):
    created = client.create_dev_server_job(new_job("strict-routes"))
    job = client.get_dev_server_job(GetDevServerJobRequest(id=created.id))
    base = f"{strict.endpoint}/v1/{strict.project_id}/dev-servers/jobs"
    for path in ["/events", f"/{job.id}/events", f"/{job.id}/tasks/{job.tasks[0].id}/output"]:
        status, _, body = http("GET", base + path)
        assert (status, body["error_code"]) == (404, "APIG.0101"), (path, body)
