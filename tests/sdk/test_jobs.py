"""A job's life through the official SDK: create on simulated servers, get, finish, delete."""

import os
import stat
import uuid

from huaweicloudsdkmodelarts.v1 import (
    DeleteDevServerJobsRequest,
    GetDevServerJobRequest,
    ServerJobDeleteRequest,
)

from litejobs_support import (
    assert_job_detail,
    assert_job_list_item,
    assert_single_page,
    list_jobs,
    new_job,
    raw,
    wait_for_job,
)

#: The cloud's API alone (serve --strict) must hold these too.
MODES = ["default", "strict"]
SERVER_ARGS = ["--simulate-outcome", "sim-server-02=FAILED"]


def test_admin_profile_is_private_and_points_at_the_server(server, admin):
    mode = stat.S_IMODE(os.stat(server.admin_file).st_mode)
    assert mode == 0o600, oct(mode)
    written = server.admin_file.read_text()
    assert f'"{server.endpoint}"' in written
    assert admin.access_key and admin.secret_key and admin.project_id
    assert admin.user_name == "admin"


def test_create_answers_a_processing_job_with_one_task_per_server(client, wire, admin):
    servers = ["sim-server-01", "sim-server-02", "sim-server-03"]
    created = client.create_dev_server_job(new_job(
        "job.create-1", servers=servers, description="demo",
        spec={"cmd": "echo hi", "lang": "\u00fc"}))

    sent = wire.last.request
    assert sent.method == "POST"
    assert sent.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={admin.access_key}, ")
    assert b'"lang": "\\u00fc"' in sent.body  # the SDK's ASCII-escaped JSON is accepted
    assert wire.last.headers.get("X-Request-Id")
    assert wire.last.headers["Content-Type"].startswith("application/json")

    body = raw(created)
    assert_job_detail(body)
    assert created.status_code == 200
    assert body["status"] == "PROCESSING"
    assert body["name"] == "job.create-1"
    assert body["description"] == "demo"
    assert body["type"] == "COMMON"
    assert body["user_name"] == "admin"
    assert body["abnormal_count"] == 0
    assert body["items"] == [{"type": "COMMON", "spec": {"cmd": "echo hi", "lang": "\u00fc"}}]
    assert sorted(t["server_id"] for t in body["tasks"]) == servers
    assert all(t["status"] == "PROCESSING" for t in body["tasks"])
    assert isinstance(body["template_id"], str) and body["template_id"]
    uuid.UUID(body["id"])

    # The SDK's own model sees the same values.
    assert created.id == body["id"] and created.status == "PROCESSING"
    assert created.items[0].spec == {"cmd": "echo hi", "lang": "\u00fc"}
    assert len(created.tasks) == 3


def test_get_answers_the_created_job(client):
    created = client.create_dev_server_job(new_job("job.get-1", servers=["sim-server-01"]))
    got = client.get_dev_server_job(GetDevServerJobRequest(id=created.id))
    body = raw(got)
    assert_job_detail(body)
    assert body["id"] == created.id
    assert body["name"] == "job.get-1"
    assert body["create_at"] == raw(created)["create_at"]
    assert "description" not in body, "a job without description must omit the field"
    assert got.tasks[0].server_id == "sim-server-01"
    assert got.tasks[0].server_name
    assert got.template_id == created.template_id


def test_job_finishes_and_counts_failed_servers(client):
    created = client.create_dev_server_job(new_job(
        "job.abnormal", servers=["sim-server-01", "sim-server-02", "sim-server-03"]))
    finished = wait_for_job(client, created.id, "FINISHED")
    body = raw(finished)
    assert_job_detail(body)
    by_server = {t["server_id"]: t for t in body["tasks"]}
    assert by_server["sim-server-02"]["status"] == "FAILED"
    assert by_server["sim-server-01"]["status"] == "SUCCESS"
    assert by_server["sim-server-03"]["status"] == "SUCCESS"
    assert body["abnormal_count"] == 1
    assert finished.abnormal_count == 1
    assert body["update_at"] >= body["create_at"]
    assert body["update_at"] > raw(created)["update_at"], "update_at must move on every change"

    _, listed = list_jobs(client, id=created.id)
    assert_single_page(listed, 1)
    assert listed["data"][0]["status"] == "FINISHED"
    assert listed["data"][0]["abnormal_count"] == 1


def test_job_on_healthy_servers_finishes_without_abnormal_count(client):
    created = client.create_dev_server_job(new_job(
        "job.healthy", servers=["sim-server-01", "sim-server-04"]))
    finished = wait_for_job(client, created.id, "FINISHED")
    assert finished.abnormal_count == 0
    assert raw(finished)["abnormal_count"] == 0
    assert {t.status for t in finished.tasks} == {"SUCCESS"}


def test_job_on_a_failing_server_alone_counts_one(client):
    created = client.create_dev_server_job(new_job("job.failing", servers=["sim-server-02"]))
    finished = wait_for_job(client, created.id, "FINISHED")
    assert finished.abnormal_count == 1
    assert finished.tasks[0].status == "FAILED"
    assert finished.tasks[0].message


def test_delete_answers_the_deleted_jobs_and_keeps_them_listed(client, wire):
    first = client.create_dev_server_job(new_job("job.delete-1"))
    second = client.create_dev_server_job(new_job("job.delete-2"))
    kept = client.create_dev_server_job(new_job("job.delete-kept"))
    unknown = str(uuid.uuid4())

    deleted = client.delete_dev_server_jobs(DeleteDevServerJobsRequest(
        body=ServerJobDeleteRequest(job_ids=[first.id, second.id, unknown])))

    sent = wire.last.request
    assert sent.method == "DELETE"
    assert sent.body and b'"job_ids"' in sent.body
    body = raw(deleted)
    assert_single_page(body, 2)
    for item in body["data"]:
        assert_job_list_item(item)
    assert sorted(item["id"] for item in body["data"]) == sorted([first.id, second.id])
    assert {item["status"] for item in body["data"]} == {"DELETED"}
    assert {d.status for d in deleted.data} == {"DELETED"}

    _, listed = list_jobs(client, status="DELETED")
    deleted_ids = {item["id"] for item in listed["data"]}
    assert {first.id, second.id} <= deleted_ids
    assert kept.id not in deleted_ids
    assert {item["status"] for item in listed["data"]} == {"DELETED"}

    _, by_id = list_jobs(client, id=first.id)
    assert_single_page(by_id, 1)
    assert by_id["data"][0]["status"] == "DELETED"

    got = client.get_dev_server_job(GetDevServerJobRequest(id=second.id))
    assert got.status == "DELETED"
    assert raw(got)["status"] == "DELETED"

    still = client.get_dev_server_job(GetDevServerJobRequest(id=kept.id))
    assert still.status in ("PROCESSING", "FINISHED")


def test_delete_of_unknown_ids_only_answers_an_empty_page(client):
    deleted = client.delete_dev_server_jobs(DeleteDevServerJobsRequest(
        body=ServerJobDeleteRequest(job_ids=[str(uuid.uuid4())])))
    assert_single_page(raw(deleted), 0)
