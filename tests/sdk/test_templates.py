"""Job templates through the official SDK: list (with filters) and get."""

import pytest
from huaweicloudsdkmodelarts.v1 import (
    GetDevServerJobTemplateRequest,
    ListDevServerJobTemplatesRequest,
)

from litejobs_support import NOT_FOUND, assert_single_page, expect_error, new_job, raw, sdk_client

#: Built-in templates (design.md §3).
BUILTIN_TYPES = {"COMMON", "LOG_COLLECT", "DEVICE_LOG_COLLECT", "ASCEND_DIAGNOSIS",
                 "ASCEND_SOFTWARE_UPGRADE"}
FLAVOR_TYPES = {"ASCEND_SNT9B", "ASCEND_SNT9C", "ASCEND_GENERIC"}


#: The cloud's API alone (serve --strict) must hold these too.
MODES = ["default", "strict"]


def list_templates(client, **filters):
    response = client.list_dev_server_job_templates(ListDevServerJobTemplatesRequest(**filters))
    body = raw(response)
    assert_single_page(body, len(body["data"]))
    for item in body["data"]:
        assert_template_list_item(item)
    return response, body


def assert_param(param):
    for key in ("name", "description", "value", "visible", "regex"):
        assert isinstance(param.get(key), str), f"{key} of {param}"
    assert param["visible"] in ("true", "false"), "visible is a string, not a JSON boolean"


def assert_template_list_item(item):
    for key in ("id", "name", "description", "type", "flavor_type"):
        assert isinstance(item.get(key), str) and item[key], f"{key} of {item}"
    assert item["flavor_type"] in FLAVOR_TYPES, item
    assert isinstance(item.get("params"), list), item
    for param in item["params"]:
        assert_param(param)


@pytest.fixture(scope="module")
def templates(admin):
    _, body = list_templates(sdk_client(admin))
    return {item["type"]: item for item in body["data"]}


def test_list_answers_every_builtin_template_on_one_page(client, templates):
    response, body = list_templates(client)
    assert {item["type"] for item in body["data"]} >= BUILTIN_TYPES
    assert response.total == len(body["data"]) >= len(BUILTIN_TYPES)
    assert response.data[0].params is not None


@pytest.mark.parametrize("template_type", sorted(BUILTIN_TYPES))
def test_type_filter_answers_only_that_type(client, templates, template_type):
    _, body = list_templates(client, type=template_type)
    assert_single_page(body, 1)
    assert body["data"][0]["type"] == template_type
    assert body["data"][0]["id"] == templates[template_type]["id"]


def test_type_filter_for_an_unknown_type_answers_an_empty_page(client, templates):
    _, body = list_templates(client, type="NO_SUCH_TYPE")
    assert_single_page(body, 0)


def test_id_and_name_filters(client, templates):
    common = templates["COMMON"]
    _, by_id = list_templates(client, id=common["id"])
    assert [t["id"] for t in by_id["data"]] == [common["id"]]
    _, by_name = list_templates(client, name=common["name"].upper())
    assert common["id"] in [t["id"] for t in by_name["data"]]
    _, both = list_templates(client, id=common["id"], type="LOG_COLLECT")
    assert_single_page(both, 0)
    _, escaped = list_templates(client, name="log collect/\u00fc+&=~*")
    assert_single_page(escaped, 0)


@pytest.mark.parametrize("template_type", ["COMMON", "LOG_COLLECT"])
def test_get_answers_the_template_detail_with_string_fields(client, templates, template_type):
    listed = templates[template_type]
    response = client.get_dev_server_job_template(GetDevServerJobTemplateRequest(id=listed["id"]))
    body = raw(response)
    for key in ("id", "name", "description", "cmd", "swr_path", "resources", "volumes",
                "volumes_mount", "flavor_type", "timeout", "check_interval", "type", "status"):
        assert isinstance(body.get(key), str), f"{key} must be a JSON string: {body}"
    assert body["timeout"].isdigit() and body["check_interval"].isdigit()
    assert body["status"] == "ACTIVE"
    assert body["id"] == listed["id"] and body["type"] == template_type
    assert body["name"] == listed["name"]
    assert body["params"] == listed["params"]
    for param in body["params"]:
        assert_param(param)
    assert response.type == template_type


def test_get_of_an_unknown_template_is_not_found(client, wire):
    expect_error(lambda: client.get_dev_server_job_template(
        GetDevServerJobTemplateRequest(id="00000000-0000-4000-8000-00000000dead")),
        404, NOT_FOUND, wire)


def test_a_job_names_the_template_of_its_type(client, templates):
    created = client.create_dev_server_job(new_job("job.template-link", job_type="LOG_COLLECT",
                                                   spec={"paths": "/var/log/syslog"}))
    assert created.template_id == templates["LOG_COLLECT"]["id"]
