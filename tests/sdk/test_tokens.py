"""IAM token authentication (`X-Auth-Token`). The SDK signs with AK/SK only, so these use
plain HTTP: a token from `POST /v3/auth/tokens` (the IAM password identity request, project
scope, answered in `X-Subject-Token`), used on the job API, then revoked."""

import pytest

from conftest import DEMO_PROJECT_ID
from litejobs_support import (
    AUTH_FAILED,
    FORBIDDEN,
    assert_job_detail,
    assert_job_list_item,
    assert_single_page,
    eventually,
    http,
)


def token_request(user, password, project=None, *, by="id"):
    scope = {"project": {by: project}} if project is not None else None
    body = {"auth": {"identity": {"methods": ["password"],
                                  "password": {"user": {"name": user, "password": password,
                                                        "domain": {"name": user}}}}}}
    if scope:
        body["auth"]["scope"] = scope
    return body


def issue(server, user, password, project, *, by="id"):
    status, headers, body = http("POST", f"{server.endpoint}/v3/auth/tokens",
                                 body=token_request(user, password, project, by=by))
    return status, headers, body


def assert_error(status, headers, body, want_status, want_code):
    assert (status, (body or {}).get("error_code")) == (want_status, want_code), (status, body)
    assert headers.get("x-request-id")
    assert body.get("error_msg")
    assert body.get("request_id") == headers["x-request-id"]


@pytest.fixture
def token(server, admin):
    status, headers, body = issue(server, admin.user_name, admin.password, admin.project_id)
    assert status == 201, body
    assert headers.get("x-subject-token")
    return headers["x-subject-token"]


def jobs_url(server, project_id):
    return f"{server.endpoint}/v1/{project_id}/dev-servers/jobs"


def test_a_password_identity_gets_a_project_scoped_token(server, admin):
    status, headers, body = issue(server, admin.user_name, admin.password, admin.project_id)
    assert status == 201, body
    assert headers.get("x-subject-token")
    assert headers.get("content-type", "").startswith("application/json")
    token = body["token"]
    assert token["project"]["id"] == admin.project_id
    assert token["user"]["name"] == admin.user_name
    assert "password" in token["methods"]
    assert token["expires_at"] > token["issued_at"]


def test_a_project_can_be_named_in_the_scope(server, admin, token):
    _, _, body = http("POST", f"{server.endpoint}/v3/auth/tokens",
                      body=token_request(admin.user_name, admin.password, admin.project_id))
    name = body["token"]["project"]["name"]
    status, headers, by_name = issue(server, admin.user_name, admin.password, name, by="name")
    assert status == 201, by_name
    assert by_name["token"]["project"]["id"] == admin.project_id


def test_a_token_lists_and_creates_jobs(server, admin, token):
    status, headers, body = http("GET", jobs_url(server, admin.project_id),
                                 headers={"X-Auth-Token": token})
    assert status == 200, body
    assert headers.get("x-request-id")
    assert headers.get("content-type", "").startswith("application/json")
    assert_single_page(body, len(body["data"]))

    status, _, created = http("POST", jobs_url(server, admin.project_id),
                              headers={"X-Auth-Token": token},
                              body={"name": "job.by-token", "server_ids": ["sim-server-01"],
                                    "type": "COMMON",
                                    "items": [{"type": "COMMON", "spec": {"cmd": "true"}}]})
    assert status == 200, created
    assert_job_detail(created)
    assert created["user_name"] == admin.user_name

    status, _, listed = http("GET", jobs_url(server, admin.project_id) + "?name=job.by-token",
                             headers={"X-Auth-Token": token})
    assert status == 200
    assert_single_page(listed, 1)
    assert_job_list_item(listed["data"][0])


def test_a_token_is_only_good_for_its_project(server, token):
    assert_error(*http("GET", jobs_url(server, DEMO_PROJECT_ID),
                       headers={"X-Auth-Token": token}), 403, FORBIDDEN)


def revoke(server, token):
    status, _, body = http("DELETE", f"{server.endpoint}/v3/auth/tokens",
                           headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert status in (200, 204), body


def test_a_revoked_token_is_refused_at_once(server, admin, token):
    url = jobs_url(server, admin.project_id)
    status, _, _ = http("GET", url, headers={"X-Auth-Token": token})
    assert status == 200
    revoke(server, token)
    assert_error(*http("GET", url, headers={"X-Auth-Token": token}), 401, AUTH_FAILED)


def test_a_revoked_token_is_refused_within_the_auth_cache_time(server, admin, token):
    url = jobs_url(server, admin.project_id)
    status, _, _ = http("GET", url, headers={"X-Auth-Token": token})
    assert status == 200
    revoke(server, token)
    eventually(lambda: assert_error(*http("GET", url, headers={"X-Auth-Token": token}),
                                    401, AUTH_FAILED),
               timeout_s=10.0, what="revoking the token")
    assert_error(*http("DELETE", f"{server.endpoint}/v3/auth/tokens",
                       headers={"X-Auth-Token": token, "X-Subject-Token": token}),
                 401, AUTH_FAILED)


def test_revoking_one_token_keeps_the_others(server, admin, token):
    _, headers, _ = issue(server, admin.user_name, admin.password, admin.project_id)
    other = headers["x-subject-token"]
    assert other != token
    revoke(server, other)
    status, _, _ = http("GET", jobs_url(server, admin.project_id), headers={"X-Auth-Token": token})
    assert status == 200


def test_a_made_up_token_is_unauthenticated(server, admin):
    assert_error(*http("GET", jobs_url(server, admin.project_id),
                       headers={"X-Auth-Token": "MIIlj-not-a-real-token"}), 401, AUTH_FAILED)


def test_a_wrong_password_gets_no_token(server, admin):
    status, headers, body = issue(server, admin.user_name, admin.password + "x", admin.project_id)
    assert_error(status, headers, body, 401, AUTH_FAILED)
    assert "x-subject-token" not in headers
    status, _, _ = issue(server, admin.user_name, admin.password, admin.project_id)
    assert status == 201


def test_no_token_for_a_project_without_a_grant(server, admin):
    assert_error(*issue(server, admin.user_name, admin.password, DEMO_PROJECT_ID), 403, FORBIDDEN)


def test_the_demo_account_gets_a_token_for_the_demo_project(server, demo):
    status, headers, body = issue(server, demo.user_name, demo.password, demo.project_id)
    assert status == 201, body
    status, _, page = http("GET", jobs_url(server, demo.project_id),
                           headers={"X-Auth-Token": headers["x-subject-token"]})
    assert status == 200, page
