"""The job list through the official SDK: every filter alone and combined, filter values
that need escaping in the signature, page numbers, and the raw JSON types.

The data set mixes finished jobs (simulated servers) with jobs that stay PROCESSING (on a
registered Lite Server that has no agent, so its tasks never end), one deleted job, and
jobs hidden with the `visible: false` extension field.
"""

from dataclasses import replace
from urllib.parse import quote, urlsplit

import pytest
from huaweicloudsdkmodelarts.v1 import (
    DeleteDevServerJobsRequest,
    GetDevServerJobRequest,
    ServerJobDeleteRequest,
)

from conftest import start_server, stop_server
from litejobs_support import (
    assert_single_page,
    list_jobs,
    new_job,
    raw,
    sdk_client,
    wait_for_job,
)

#: A registered Lite Server without an agent: its tasks stay PROCESSING.
IDLE_SERVER = "lite-server-idle-01"

#: name -> (type, servers, visible, deleted)
JOBS = {
    "job.a": ("COMMON", ["sim-server-01"], None, False),
    "job.b": ("LOG_COLLECT", ["sim-server-01", "sim-server-02"], None, False),
    "Nightly-Backup_01": ("COMMON", ["sim-server-03"], False, False),
    "job.a-copy": ("COMMON", [IDLE_SERVER], None, True),
    "deploy-job.a": ("COMMON", [IDLE_SERVER, "sim-server-01"], True, False),
    "probe_x": ("LOG_COLLECT", [IDLE_SERVER], False, False),
}
FINISHED = ["job.a", "job.b", "Nightly-Backup_01"]
ALL = list(JOBS)


@pytest.fixture(scope="module")
def jobs(server, admin):
    """Creates the data set; answers {name: id}."""
    server.cli("servers", "add", "--project", admin.project_id, IDLE_SERVER)
    client = sdk_client(admin)
    ids = {}
    for name, (job_type, servers, visible, _) in JOBS.items():
        spec = {"paths": "/var/log/*.log", "dest": "/tmp/logs"} if job_type == "LOG_COLLECT" else None
        created = client.create_dev_server_job(
            new_job(name, servers=servers, job_type=job_type, visible=visible, spec=spec))
        ids[name] = created.id
    deleted = client.delete_dev_server_jobs(DeleteDevServerJobsRequest(
        body=ServerJobDeleteRequest(job_ids=[ids[n] for n, spec in JOBS.items() if spec[3]])))
    assert [d.name for d in deleted.data] == ["job.a-copy"]
    for name in FINISHED:
        wait_for_job(client, ids[name], "FINISHED")
    return ids


def names_of(body):
    return sorted(item["name"] for item in body["data"])


def resolve(filters, ids):
    """`id` values in the tables below are job names; they become the job's id."""
    return {k: (ids[v] if k == "id" and v in ids else v) for k, v in filters.items()}


def canonical_query(filters):
    """The query the SDK sends (api-contract.md §3): sorted, RFC 3986 unreserved kept."""
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)
    return "&".join(f"{quote(k, safe='~')}={quote(text(v), safe='~')}"
                    for k, v in sorted(filters.items()))


def test_without_filters_every_job_is_on_one_page_newest_first(client, wire, jobs):
    response, body = list_jobs(client)
    assert urlsplit(wire.last.request.url).query == ""
    assert_single_page(body, len(JOBS))
    assert names_of(body) == sorted(ALL)
    order = [(item["create_at"], item["id"]) for item in body["data"]]
    assert order == sorted(order, reverse=True), "newest first, then id descending"
    assert response.total == len(JOBS) and response.size == len(JOBS)
    assert response.pages == 1 and response.current == 1
    by_name = {item["name"]: item for item in body["data"]}
    assert by_name["job.a"]["user_name"] == "admin"
    assert by_name["job.b"]["type"] == "LOG_COLLECT"
    assert "description" not in by_name["job.a"]


SINGLE_FILTERS = [
    ({"id": "job.a"}, ["job.a"]),
    ({"id": "deploy-job.a"}, ["deploy-job.a"]),
    ({"id": "00000000-0000-4000-8000-000000000000"}, []),
    ({"name": "job.a"}, ["deploy-job.a", "job.a", "job.a-copy"]),
    ({"name": "JOB.A"}, ["deploy-job.a", "job.a", "job.a-copy"]),
    ({"name": "job.a-copy"}, ["job.a-copy"]),
    ({"name": "backup_0"}, ["Nightly-Backup_01"]),
    ({"name": "ob"}, ["deploy-job.a", "job.a", "job.a-copy", "job.b", "probe_x"]),
    ({"name": "."}, ["deploy-job.a", "job.a", "job.a-copy", "job.b"]),
    ({"name": "_"}, ["Nightly-Backup_01", "probe_x"]),
    ({"name": "-"}, ["Nightly-Backup_01", "deploy-job.a", "job.a-copy"]),
    ({"name": "job_a"}, []),
    ({"name": "nothing-like-this"}, []),
    ({"type": "COMMON"}, ["Nightly-Backup_01", "deploy-job.a", "job.a", "job.a-copy"]),
    ({"type": "LOG_COLLECT"}, ["job.b", "probe_x"]),
    ({"type": "common"}, []),
    ({"type": "DEVICE_LOG_COLLECT"}, []),
    ({"status": "FINISHED"}, ["Nightly-Backup_01", "job.a", "job.b"]),
    ({"status": "PROCESSING"}, ["deploy-job.a", "probe_x"]),
    ({"status": "DELETED"}, ["job.a-copy"]),
    ({"visible": True}, ["deploy-job.a", "job.a", "job.a-copy", "job.b"]),
    ({"visible": False}, ["Nightly-Backup_01", "probe_x"]),
]

COMBINED_FILTERS = [
    ({"name": "job", "type": "COMMON", "status": "FINISHED", "visible": True}, ["job.a"]),
    ({"name": "job.a", "status": "PROCESSING"}, ["deploy-job.a"]),
    ({"name": "job.a", "status": "DELETED", "visible": True}, ["job.a-copy"]),
    ({"type": "LOG_COLLECT", "visible": False}, ["probe_x"]),
    ({"type": "LOG_COLLECT", "status": "FINISHED"}, ["job.b"]),
    ({"type": "LOG_COLLECT", "status": "FINISHED", "visible": False}, []),
    ({"type": "COMMON", "visible": False}, ["Nightly-Backup_01"]),
    ({"status": "PROCESSING", "visible": True}, ["deploy-job.a"]),
    ({"id": "job.a", "name": "JOB", "type": "COMMON", "status": "FINISHED", "visible": True},
     ["job.a"]),
    ({"id": "deploy-job.a", "name": "deploy", "type": "COMMON", "status": "PROCESSING",
      "visible": True}, ["deploy-job.a"]),
    ({"id": "job.a", "status": "PROCESSING"}, []),
    ({"id": "job.a", "name": "job.b"}, []),
    ({"id": "job.a", "type": "LOG_COLLECT"}, []),
    ({"id": "job.a", "visible": False}, []),
    ({"id": "probe_x", "visible": False, "type": "LOG_COLLECT"}, ["probe_x"]),
]


@pytest.mark.parametrize("filters,expected", SINGLE_FILTERS + COMBINED_FILTERS,
                         ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_filters_select_the_matching_jobs(client, wire, jobs, filters, expected):
    filters = resolve(filters, jobs)
    response, body = list_jobs(client, **filters)
    assert urlsplit(wire.last.request.url).query == canonical_query(filters)
    assert names_of(body) == sorted(expected)
    assert_single_page(body, len(expected))
    assert response.total == len(expected)
    for item in body["data"]:
        if "status" in filters:
            assert item["status"] == filters["status"]
        if "type" in filters:
            assert item["type"] == filters["type"]
        if "name" in filters:
            assert filters["name"].lower() in item["name"].lower()


#: Filter values whose signature needs percent-encoding (and SQL/LIKE metacharacters).
#: Job names are ^[-_.a-zA-Z0-9]{1,64}$, so none of these can match a job.
ESCAPED_NAMES = [
    "my job \u00fc/+&=~*", " ", "job a", " job.a", "+", "job.a+", "/", "job.a/", "&",
    "job.a&type=COMMON", "=", "name=job.a", "~", "job~a", "*", "job*", "\u00fc", "j\u00f6b",
    "\u4efb\u52a1", "\u4efb\u52a1-job.a", "\u4efb" * 64, "%", "job%", "%2F", "%20", "a%b",
    "?", "#", "'", "job.a'--", '"', "\\", "job\\", "\\%", ";", ",", ":", "@", "!", "$",
    "(", ")", "[", "]", "{", "}", "<", ">", "|", "^", "`", "\t", "\U0001F600",
]


@pytest.mark.parametrize("name", ESCAPED_NAMES, ids=lambda v: repr(v)[1:-1][:24])
def test_name_filters_needing_escaping_are_signed_and_match_nothing(client, wire, jobs, name):
    response, body = list_jobs(client, name=name)
    assert wire.last.status_code == 200
    assert urlsplit(wire.last.request.url).query == canonical_query({"name": name})
    assert_single_page(body, 0)
    assert (response.total, response.size, response.pages, response.current) == (0, 0, 0, 1)


@pytest.mark.parametrize("name", ["my job \u00fc/+&=~*", "\u4efb\u52a1", "job.a&status=FINISHED"])
def test_escaped_names_combine_with_every_other_filter(client, wire, jobs, name):
    filters = {"id": jobs["deploy-job.a"], "name": name, "type": "COMMON",
               "status": "PROCESSING", "visible": True}
    _, body = list_jobs(client, **filters)
    assert urlsplit(wire.last.request.url).query == canonical_query(filters)
    assert_single_page(body, 0)


def test_deleted_job_keeps_its_detail_with_cancelled_tasks(client, jobs):
    got = client.get_dev_server_job(GetDevServerJobRequest(id=jobs["job.a-copy"]))
    body = raw(got)
    assert body["status"] == "DELETED"
    assert [t["status"] for t in body["tasks"]] == ["SKIPPED"]
    assert body["tasks"][0]["message"], "a cancelled task says why"


def test_processing_job_on_an_idle_server_stays_processing(client, jobs):
    got = raw(client.get_dev_server_job(GetDevServerJobRequest(id=jobs["deploy-job.a"])))
    assert got["status"] == "PROCESSING"
    by_server = {t["server_id"]: t["status"] for t in got["tasks"]}
    assert by_server[IDLE_SERVER] == "PROCESSING"
    assert by_server["sim-server-01"] in ("PROCESSING", "SUCCESS")


@pytest.fixture(scope="module")
def small_pages(server, jobs, litejobs_bin):
    """A second server on the same database with a page size of 4."""
    replica = start_server(litejobs_bin, server.workdir, "--max-page-size", "4",
                           name="replica-page-size-4")
    yield replica
    stop_server(replica)


def test_a_list_longer_than_the_page_size_answers_the_first_page(small_pages, admin, jobs):
    client = sdk_client(replace(admin, endpoint=small_pages.endpoint))
    response, body = list_jobs(client)
    assert (body["total"], body["size"], body["pages"], body["current"]) == (len(JOBS), 4, 2, 1)
    assert len(body["data"]) == 4
    order = [(item["create_at"], item["id"]) for item in body["data"]]
    assert order == sorted(order, reverse=True)

    _, common = list_jobs(client, type="COMMON")
    assert (common["total"], common["size"], common["pages"], common["current"]) == (4, 4, 1, 1)
    _, three = list_jobs(client, name="job.a")
    assert_single_page(three, 3)
