"""Users, projects and policies made with the admin commands (`litejobs iam …`,
`litejobs servers …`, run on the database while the server runs), as the official SDK sees
them: read-only users, projects without a grant, grants and keys taking effect at once."""

import json
import uuid
from dataclasses import dataclass

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    DeleteDevServerJobsRequest,
    GetDevServerJobRequest,
    GetDevServerJobTemplateRequest,
    ListDevServerJobsRequest,
    ListDevServerJobTemplatesRequest,
    ServerJobDeleteRequest,
)

from litejobs_support import (
    AUTH_FAILED,
    FORBIDDEN,
    NOT_FOUND,
    Profile,
    eventually,
    expect_error,
    list_jobs,
    new_job,
    raw,
    sdk_client,
    wait_for_job,
)

TEAM_B_ID = "0b0b0b0b0b0b4b0b8b0b0b0b0b0b0b0b"

#: The admin commands change the database behind the running server, which may keep
#: authentication lookups for a short time; a short cache keeps the waits below short (a
#: server without that setting ignores it). Tests allow for the delay with `eventually`.
SERVER_ENV = {"LITEJOBS_AUTH_CACHE_TTL": "1s"}


def expect_success(call):
    """Runs an SDK call; a 4xx answer becomes an AssertionError (for `eventually`)."""
    try:
        return call()
    except ClientRequestException as e:
        raise AssertionError(f"{e.status_code} {e.error_code}: {e.error_msg}") from e


@dataclass
class Accounts:
    admin: Profile
    reader: Profile          # ModelArts ReadOnlyAccess in the admin's project
    operator: Profile        # ModelArts FullAccess in team-b only
    admin_job_id: str


def create_key(server, user) -> dict:
    done = server.cli("iam", "key", "create", user, "--output", "json")
    key = json.loads(done.stdout)
    assert set(key) >= {"access_key", "secret_key", "user_name"}, key
    assert key["user_name"] == user
    return key


def profile_for(server, user, project_id) -> Profile:
    key = create_key(server, user)
    return Profile(endpoint=server.endpoint, project_id=project_id, access_key=key["access_key"],
                   secret_key=key["secret_key"], user_name=user)


@pytest.fixture(scope="module")
def accounts(server, admin) -> Accounts:
    server.cli("iam", "project", "create", "team-b", "--id", TEAM_B_ID)
    server.cli("iam", "user", "create", "reader", "--password", "reader-password-1")
    server.cli("iam", "user", "create", "operator", "--password", "operator-password-1")
    server.cli("iam", "grant", "reader", admin.project_id, "ModelArts ReadOnlyAccess")
    server.cli("iam", "grant", "operator", TEAM_B_ID, "ModelArts FullAccess")
    server.cli("servers", "add", "--project", TEAM_B_ID, "srv-b-01", "--simulated",
               "--outcome", "SUCCESS")
    job = sdk_client(admin).create_dev_server_job(new_job("job.of-admin"))
    return Accounts(admin=admin, reader=profile_for(server, "reader", admin.project_id),
                    operator=profile_for(server, "operator", TEAM_B_ID), admin_job_id=job.id)


def test_read_only_user_may_list_and_get(accounts):
    reader = sdk_client(accounts.reader)
    _, body = list_jobs(reader, name="job.of-admin")
    assert [item["id"] for item in body["data"]] == [accounts.admin_job_id]
    got = reader.get_dev_server_job(GetDevServerJobRequest(id=accounts.admin_job_id))
    assert got.id == accounts.admin_job_id
    templates = raw(reader.list_dev_server_job_templates(ListDevServerJobTemplatesRequest()))
    assert templates["total"] >= 1
    template_id = templates["data"][0]["id"]
    assert reader.get_dev_server_job_template(GetDevServerJobTemplateRequest(id=template_id)).id \
        == template_id


def test_read_only_user_may_not_create_or_delete(accounts, wire):
    reader = sdk_client(accounts.reader, recorder=wire)
    expect_error(lambda: reader.create_dev_server_job(new_job("job.by-reader")), 403, FORBIDDEN,
                 wire)
    expect_error(lambda: reader.delete_dev_server_jobs(DeleteDevServerJobsRequest(
        body=ServerJobDeleteRequest(job_ids=[accounts.admin_job_id]))), 403, FORBIDDEN, wire)

    admin = sdk_client(accounts.admin)
    _, created = list_jobs(admin, name="job.by-reader")
    assert created["total"] == 0
    assert admin.get_dev_server_job(GetDevServerJobRequest(id=accounts.admin_job_id)).status \
        != "DELETED"


def test_a_project_without_a_grant_is_forbidden(accounts, wire):
    reader_in_b = sdk_client(accounts.reader, project_id=TEAM_B_ID, recorder=wire)
    expect_error(lambda: reader_in_b.list_dev_server_jobs(ListDevServerJobsRequest()),
                 403, FORBIDDEN, wire)
    operator_in_admin = sdk_client(accounts.operator, project_id=accounts.admin.project_id)
    expect_error(lambda: operator_in_admin.list_dev_server_jobs(ListDevServerJobsRequest()),
                 403, FORBIDDEN)
    admin_in_b = sdk_client(accounts.admin, project_id=TEAM_B_ID)
    expect_error(lambda: admin_in_b.create_dev_server_job(new_job("job.intruder",
                                                                  servers=["srv-b-01"])),
                 403, FORBIDDEN)


def test_full_access_in_another_project_runs_jobs_there_only(accounts):
    operator = sdk_client(accounts.operator)
    created = operator.create_dev_server_job(new_job("job.team-b", servers=["srv-b-01"]))
    assert created.user_name == "operator"
    finished = wait_for_job(operator, created.id, "FINISHED")
    assert finished.abnormal_count == 0
    _, mine = list_jobs(operator)
    assert [item["id"] for item in mine["data"]] == [created.id]

    admin = sdk_client(accounts.admin)
    _, theirs = list_jobs(admin, id=created.id)
    assert theirs["total"] == 0
    expect_error(lambda: admin.get_dev_server_job(GetDevServerJobRequest(id=created.id)),
                 404, NOT_FOUND)
    # The admin's job does not exist in team-b.
    expect_error(lambda: operator.get_dev_server_job(
        GetDevServerJobRequest(id=accounts.admin_job_id)), 404, NOT_FOUND)


def test_grants_and_revocations_apply_to_the_running_server(server, accounts):
    server.cli("iam", "user", "create", "late-joiner")
    late = profile_for(server, "late-joiner", TEAM_B_ID)
    client = sdk_client(late)
    expect_error(lambda: client.list_dev_server_jobs(ListDevServerJobsRequest()), 403, FORBIDDEN)

    server.cli("iam", "grant", "late-joiner", "team-b", "ModelArts ReadOnlyAccess")
    eventually(lambda: expect_success(lambda: list_jobs(client)), what="a read-only grant")
    expect_error(lambda: client.create_dev_server_job(new_job("job.late", servers=["srv-b-01"])),
                 403, FORBIDDEN)

    server.cli("iam", "grant", "late-joiner", "team-b", "ModelArts FullAccess")
    created = eventually(
        lambda: expect_success(lambda: client.create_dev_server_job(
            new_job("job.late", servers=["srv-b-01"]))), what="a full-access grant")
    assert created.user_name == "late-joiner"

    server.cli("iam", "revoke", "late-joiner", "team-b", "ModelArts FullAccess")
    server.cli("iam", "revoke", "late-joiner", "team-b", "ModelArts ReadOnlyAccess")
    eventually(lambda: expect_error(
        lambda: client.list_dev_server_jobs(ListDevServerJobsRequest()), 403, FORBIDDEN),
        what="revoking the grants")


def test_a_deleted_access_key_is_unauthenticated(server, accounts):
    key = profile_for(server, "reader", accounts.admin.project_id)
    client = sdk_client(key)
    list_jobs(client)
    server.cli("iam", "key", "delete", key.access_key)
    eventually(lambda: expect_error(
        lambda: client.list_dev_server_jobs(ListDevServerJobsRequest()), 401, AUTH_FAILED),
        what="deleting the key")


def test_a_custom_policy_grants_exactly_its_actions(server, accounts):
    server.cli("iam", "policy", "put", "JobViewer", "--action", "modelarts:devserverJob:list")
    server.cli("iam", "user", "create", "viewer")
    server.cli("iam", "grant", "viewer", accounts.admin.project_id, "JobViewer")
    viewer = sdk_client(profile_for(server, "viewer", accounts.admin.project_id))
    list_jobs(viewer)
    expect_error(lambda: viewer.get_dev_server_job(GetDevServerJobRequest(id=str(uuid.uuid4()))),
                 403, FORBIDDEN)
    expect_error(lambda: viewer.list_dev_server_job_templates(ListDevServerJobTemplatesRequest()),
                 403, FORBIDDEN)
