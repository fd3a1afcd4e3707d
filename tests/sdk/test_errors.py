"""Error answers as the official SDK reads them (ClientRequestException: status, error code,
request id), for authentication, authorisation and validation failures (design.md §5)."""

import datetime
import uuid

import pytest
from huaweicloudsdkcore.signer import signer as sdk_signer
from huaweicloudsdkmodelarts.v1 import (
    CreateDevServerJobRequest,
    DevServerJobCreateRequest,
    DevServerJobItem,
    GetDevServerJobRequest,
    GetDevServerJobServiceRequest,
    ListDevServerJobsRequest,
)

from conftest import DEMO_PROJECT_ID
from litejobs_support import (
    AUTH_FAILED,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    WireRecorder,
    expect_error,
    list_jobs,
    new_job,
    sdk_client,
)


#: The cloud's API alone (serve --strict) must hold these too.
MODES = ["default", "strict"]


def list_call(client, **filters):
    return lambda: client.list_dev_server_jobs(ListDevServerJobsRequest(**filters))


def skew_sdk_clock(monkeypatch, minutes):
    """Shifts the clock the SDK's signer reads (`datetime.utcnow()` in
    huaweicloudsdkcore/signer/signer.py) without touching the SDK's files."""
    real = datetime.datetime

    class SkewedDatetime(real):
        @classmethod
        def utcnow(cls):
            return real.utcnow() + datetime.timedelta(minutes=minutes)

    monkeypatch.setattr(sdk_signer, "datetime", SkewedDatetime)


def sent_date(wire):
    raw = wire.last.request.headers["X-Sdk-Date"]
    return datetime.datetime.strptime(raw, "%Y%m%dT%H%M%SZ")


# --- authentication: 401 APIG.0301, and every failure looks alike --------------------------

def test_wrong_secret_key_is_unauthenticated(admin, client):
    wire = WireRecorder()
    bad = sdk_client(admin, sk=admin.secret_key[:-1] + ("A" if admin.secret_key[-1] != "A" else "B"),
                     recorder=wire)
    expect_error(list_call(bad), 401, AUTH_FAILED, wire)
    list_jobs(client)  # the right key still works


def test_unknown_access_key_is_unauthenticated(admin):
    wire = WireRecorder()
    stranger = sdk_client(admin, ak="UNKNOWNACCESSKEY0001", sk="S" * 40, recorder=wire)
    expect_error(list_call(stranger), 401, AUTH_FAILED, wire)


@pytest.mark.parametrize("minutes", [-20, +20])
def test_a_date_more_than_15_minutes_off_is_unauthenticated(admin, client, wire, monkeypatch,
                                                             minutes):
    skew_sdk_clock(monkeypatch, minutes)
    expect_error(list_call(client), 401, AUTH_FAILED, wire)
    offset = sent_date(wire) - datetime.datetime.utcnow()
    assert abs(offset - datetime.timedelta(minutes=minutes)) < datetime.timedelta(minutes=1)
    monkeypatch.undo()
    list_jobs(client)


@pytest.mark.parametrize("minutes", [-10, +10])
def test_a_date_within_15_minutes_is_accepted(client, wire, monkeypatch, minutes):
    skew_sdk_clock(monkeypatch, minutes)
    list_jobs(client)
    offset = sent_date(wire) - datetime.datetime.utcnow()
    assert abs(offset - datetime.timedelta(minutes=minutes)) < datetime.timedelta(minutes=1)


def test_every_authentication_failure_looks_alike(admin, client, monkeypatch):
    wrong_sk = sdk_client(admin, sk="X" * 40)
    unknown_ak = sdk_client(admin, ak="UNKNOWNACCESSKEY0002", sk=admin.secret_key)
    answers = [expect_error(list_call(wrong_sk), 401, AUTH_FAILED),
               expect_error(list_call(unknown_ak), 401, AUTH_FAILED)]
    skew_sdk_clock(monkeypatch, -30)
    answers.append(expect_error(list_call(client), 401, AUTH_FAILED))
    monkeypatch.undo()
    assert len({a.error_msg for a in answers}) == 1, [a.error_msg for a in answers]
    assert len({a.request_id for a in answers}) == 3, "each answer has its own request id"
    list_jobs(client)


def test_a_tampered_signature_over_a_body_is_unauthenticated(admin, client):
    wire = WireRecorder()
    bad = sdk_client(admin, sk="Y" * 40, recorder=wire)
    expect_error(lambda: bad.create_dev_server_job(new_job("job.unsigned")), 401, AUTH_FAILED,
                 wire)
    _, body = list_jobs(client, name="job.unsigned")
    assert body["total"] == 0, "a rejected create must not create anything"


# --- authorisation: 403 ModelArts.0105 ---------------------------------------------------

def test_a_project_without_a_grant_is_forbidden(admin, wire):
    outsider = sdk_client(admin, project_id=DEMO_PROJECT_ID, recorder=wire)
    assert wire.responses == []
    expect_error(list_call(outsider), 403, FORBIDDEN, wire)
    assert f"/v1/{DEMO_PROJECT_ID}/" in wire.last.request.url
    expect_error(lambda: outsider.create_dev_server_job(new_job("job.elsewhere")), 403, FORBIDDEN)
    expect_error(lambda: outsider.get_dev_server_job(GetDevServerJobRequest(id=str(uuid.uuid4()))),
                 403, FORBIDDEN)


def test_projects_do_not_see_each_others_jobs(admin, demo, client):
    mine = client.create_dev_server_job(new_job("job.isolated"))
    demo_client = sdk_client(demo)
    _, body = list_jobs(demo_client, name="job.isolated")
    assert body["total"] == 0
    expect_error(lambda: demo_client.get_dev_server_job(GetDevServerJobRequest(id=mine.id)),
                 404, NOT_FOUND)
    demo_client_in_admin_project = sdk_client(demo, project_id=admin.project_id)
    expect_error(list_call(demo_client_in_admin_project), 403, FORBIDDEN)


# --- not found: 404 ModelArts.0102 -------------------------------------------------------

def test_an_unknown_job_is_not_found(client, wire):
    expect_error(lambda: client.get_dev_server_job(GetDevServerJobRequest(id=str(uuid.uuid4()))),
                 404, NOT_FOUND, wire)


def test_an_unknown_job_service_is_not_found(client, wire):
    expect_error(lambda: client.get_dev_server_job_service(
        GetDevServerJobServiceRequest(id=str(uuid.uuid4()))), 404, NOT_FOUND, wire)
    assert "/dev-servers/jobs/services/" in wire.last.request.url


def test_a_job_id_needing_escaping_is_signed_and_not_found(client, wire):
    expect_error(lambda: client.get_dev_server_job(GetDevServerJobRequest(id="x y/\u00fc+&")),
                 404, NOT_FOUND, wire)
    assert wire.last.request.url.endswith("/dev-servers/jobs/x%20y%2F%C3%BC%2B%26")


# --- invalid values: 400 ModelArts.0107 --------------------------------------------------

@pytest.mark.parametrize("filters", [
    {"status": "RUNNING"},
    {"status": "finished"},
    {"status": ""},
    {"name": ""},
    {"name": "n" * 65},
    {"id": "i" * 65},
    {"type": "a b"},
    {"type": "\u00fc"},
    {"visible": "maybe"},
    {"name": "job.a", "status": "RUNNING"},
], ids=repr)
def test_an_invalid_filter_is_rejected(client, wire, filters):
    expect_error(list_call(client, **filters), 400, INVALID, wire)


def create_call(client, **overrides):
    fields = dict(name="job.valid", server_ids=["sim-server-01"], type="COMMON",
                  items=[DevServerJobItem(type="COMMON", spec={"cmd": "true"})])
    fields.update(overrides)
    return lambda: client.create_dev_server_job(
        CreateDevServerJobRequest(body=DevServerJobCreateRequest(**fields)))


@pytest.mark.parametrize("overrides", [
    {"name": "bad name!"},
    {"name": "n" * 65},
    {"name": "j\u00f6b"},
    {"description": "has spaces"},
    {"type": "NO_SUCH_TEMPLATE"},
    {"type": "bad type"},
    {"server_ids": []},
    {"server_ids": ["no-such-server"]},
    {"server_ids": ["sim-server-01", "no-such-server"]},
    {"items": []},
    {"items": [DevServerJobItem(type="bad type", spec={})]},
], ids=lambda o: next(iter(o)) + "=" + repr(next(iter(o.values())))[:30])
def test_an_invalid_create_body_is_rejected_and_creates_nothing(client, wire, overrides):
    _, before = list_jobs(client)
    expect_error(create_call(client, **overrides), 400, INVALID, wire)
    _, after = list_jobs(client)
    assert after["total"] == before["total"]


def test_a_create_body_without_required_fields_is_rejected(client, wire):
    expect_error(lambda: client.create_dev_server_job(
        CreateDevServerJobRequest(body=DevServerJobCreateRequest(name="job.partial"))),
        400, INVALID, wire)


def test_a_malformed_project_id_is_invalid(admin, wire):
    bad = sdk_client(admin, project_id="bad_project!", recorder=wire)
    expect_error(list_call(bad), 400, INVALID, wire)
