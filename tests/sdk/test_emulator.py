"""The emulator through the official SDK: production-style clients (credentials and region
only, the endpoints from the SDK's own environment variables), injected faults surfacing as
the SDK's own exceptions, reset, seed and the request journal."""

import time

import pytest
from huaweicloudsdkcore.exceptions.exceptions import (
    ClientRequestException,
    ConnectionException,
    ServerResponseException,
)
from huaweicloudsdkmodelarts.v1 import GetDevServerJobRequest, ListDevServerJobsRequest

from conftest import DEMO_PROJECT_ID
from litejobs_emulator import Emulator, sdk_client
from litejobs_support import assert_single_page, new_job, raw, wait_for_job


@pytest.fixture(scope="module")
def emulator(litejobs_bin):
    with Emulator(litejobs_bin, args=["--log-format", "json"]) as running:
        yield running


@pytest.fixture
def control(emulator):
    control = emulator.control
    control.reset()
    yield control
    control.reset()


@pytest.fixture
def client(emulator, control, monkeypatch):
    """Production code's client: `BasicCredentials(ak, sk)` without a project id,
    `.with_region(ModelArtsRegion.value_of("cn-north-4"))`, endpoints from the environment."""
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    return sdk_client(emulator)


def operations(control):
    return [(r["operation"], r["status"], r["error_code"]) for r in control.requests()]


def test_the_print_config_line_names_the_endpoint_region_and_credentials(emulator):
    config = emulator.config
    assert config["endpoint"].startswith("http://127.0.0.1:")
    assert config["region"] == "cn-north-4"
    assert config["project_id"] == DEMO_PROJECT_ID
    assert config["env"]["HUAWEICLOUD_SDK_REGION_MODELARTS_CN_NORTH_4"] == config["endpoint"]
    assert config["env"]["HUAWEICLOUD_SDK_IAM_ENDPOINT"] == config["endpoint"]
    assert config["admin"]["user_name"] == "admin"


def test_production_style_code_lists_creates_and_gets(client, control):
    created = client.create_dev_server_job(new_job("prod-style", servers=("sim-server-01",)))
    assert created.id
    done = wait_for_job(client, created.id)
    assert done.tasks[0].status == "SUCCESS"
    listed = client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert [j.id for j in listed.data] == [created.id]
    # The SDK found its project by region through IAM, once, then called the job API there.
    journal = control.requests()
    assert journal[0]["operation"] == "KeystoneListProjects"
    assert journal[0]["query"] == "name=cn-north-4"
    assert journal[0]["access_key"] == "LITEJOBSDEMOACCESSKY"
    assert all(r["project_id"] == DEMO_PROJECT_ID for r in journal[1:])


def test_the_journal_shows_the_sdks_calls_in_order(client, control):
    created = client.create_dev_server_job(new_job("journal-1"))
    client.get_dev_server_job(GetDevServerJobRequest(id=created.id))
    client.list_dev_server_jobs(ListDevServerJobsRequest(status="PROCESSING"))
    calls = [(r["method"], r["operation"], r["status"]) for r in control.requests()]
    # The first call of a new client may ask IAM for the project (unless cached).
    calls = [c for c in calls if c[1] != "KeystoneListProjects"]
    assert calls == [("POST", "CreateDevServerJob", 200),
                     ("GET", "GetDevServerJob", 200),
                     ("GET", "ListDevServerJobs", 200)]
    last = control.requests()[-1]
    assert last["query"] == "status=PROCESSING"
    assert last["path"] == f"/v1/{DEMO_PROJECT_ID}/dev-servers/jobs"
    seqs = [r["seq"] for r in control.requests()]
    assert seqs == sorted(seqs)


def test_a_429_for_the_next_two_list_calls_raises_the_sdks_throttling_exception(client, control):
    control.add_fault(operation="ListDevServerJobs", status=429, times=2)
    for _ in range(2):
        with pytest.raises(ClientRequestException) as throttled:
            client.list_dev_server_jobs(ListDevServerJobsRequest())
        # The SDK reads a 429 through urllib3's retry (none by default): it raises its
        # throttling exception, status 429, as it does for the cloud's own throttling.
        assert throttled.value.status_code == 429
        assert "too many 429 error responses" in throttled.value.error_msg
    assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0
    assert [c for c in operations(control) if c[0] == "ListDevServerJobs"] == [
        ("ListDevServerJobs", 429, "APIG.0308"),
        ("ListDevServerJobs", 429, "APIG.0308"),
        ("ListDevServerJobs", 200, None),
    ]


def test_an_injected_429_raises_what_the_real_rate_limit_raises(litejobs_bin, client, control):
    control.add_fault(operation="ListDevServerJobs", status=429, times=1)
    with pytest.raises(ClientRequestException) as injected:
        client.list_dev_server_jobs(ListDevServerJobsRequest())
    with Emulator(litejobs_bin, args=["--rate-limit", "1", "--rate-burst", "1"]) as limited:
        limited_client = sdk_client_for(limited)
        real = None
        for _ in range(20):
            try:
                limited_client.list_dev_server_jobs(ListDevServerJobsRequest())
            except ClientRequestException as e:
                real = e
                break
        assert real is not None, "the rate limit never throttled"
    assert (injected.value.status_code, injected.value.error_code) == \
        (real.status_code, real.error_code)


def sdk_client_for(emulator):
    """A client of `emulator` with its endpoint given directly (the environment points at
    the module's emulator)."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1.modelarts_client import ModelArtsClient
    return (ModelArtsClient.new_builder()
            .with_credentials(BasicCredentials(emulator.access_key, emulator.secret_key,
                                               emulator.project_id))
            .with_endpoint(emulator.endpoint).build())


def test_a_503_on_create_raises_the_sdks_server_exception_and_creates_nothing(client, control):
    control.add_fault(operation="CreateDevServerJob", status=503)
    with pytest.raises(ServerResponseException) as unavailable:
        client.create_dev_server_job(new_job("never-made"))
    assert unavailable.value.status_code == 503
    assert unavailable.value.error_code == "ModelArts.0013"
    assert unavailable.value.request_id
    control.clear_faults()
    assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0


def test_a_delay_beyond_the_clients_timeout_times_the_call_out(emulator, client, control):
    created = client.create_dev_server_job(new_job("slow-get"))
    control.add_fault(operation="GetDevServerJob", delay_ms=1500, times=1)
    impatient = sdk_client(emulator, timeout=(5, 0.5))
    started = time.monotonic()
    # The SDK's session retries nothing (retry_times 0), so urllib3 gives up at once and
    # the SDK raises its connection exception naming the read timeout.
    with pytest.raises(ConnectionException) as timed_out:
        impatient.get_dev_server_job(GetDevServerJobRequest(id=created.id))
    assert "Read timed out" in str(timed_out.value)
    assert time.monotonic() - started < 1.4
    # The rule was for one call: the next answers at once.
    assert impatient.get_dev_server_job(GetDevServerJobRequest(id=created.id)).id == created.id


def test_a_dropped_connection_raises_the_sdks_connection_exception(client, control):
    control.add_fault(operation="ListDevServerJobs", drop=True, times=1)
    with pytest.raises(ConnectionException):
        client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0


def test_a_failing_simulated_server_fails_its_tasks(client, control):
    control.add_fault(task="fail", server_id="sim-server-02")
    created = client.create_dev_server_job(
        new_job("half-fails", servers=("sim-server-01", "sim-server-02")))
    done = wait_for_job(client, created.id)
    assert done.abnormal_count == 1
    assert {t.server_id: t.status for t in done.tasks} == {
        "sim-server-01": "SUCCESS", "sim-server-02": "FAILED"}


def test_a_hanging_server_keeps_its_task_running(client, control):
    rule = control.add_fault(task="hang", server_id="sim-server-03")
    created = client.create_dev_server_job(new_job("hangs", servers=("sim-server-03",)))
    time.sleep(0.8)  # four times the simulated delay
    assert client.get_dev_server_job(GetDevServerJobRequest(id=created.id)).status == "PROCESSING"
    control.call("DELETE", f"faults/{rule['id']}")
    wait_for_job(client, created.id)


def test_reset_between_tests_leaves_nothing_behind(client, control):
    client.create_dev_server_job(new_job("to-be-reset"))
    control.add_fault(operation="GetDevServerJob", status=500)
    control.reset()
    assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0
    assert control.faults() == []


def test_seed_then_list_with_exact_totals(client, control):
    now = int(time.time() * 1000)
    jobs = [
        {"project": DEMO_PROJECT_ID, "name": f"seeded-{n}", "type": "COMMON",
         "create_at": now - 60_000 * (n + 1), "update_at": now - 30_000 * (n + 1),
         "tasks": [{"server_id": "sim-server-01", "status": status}]}
        for n, status in enumerate(["SUCCESS", "FAILED", "SUCCESS"])
    ]
    jobs.append({"project": DEMO_PROJECT_ID, "name": "seeded-deleted", "status": "DELETED",
                 "create_at": now - 10_000, "tasks": [{"server_id": "sim-server-01",
                                                       "status": "SKIPPED"}]})
    counts = control.seed({"jobs": jobs})
    assert counts["jobs"] == 4
    every = client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert_single_page(raw(every), 4)
    finished = client.list_dev_server_jobs(ListDevServerJobsRequest(status="FINISHED"))
    assert finished.total == 3
    assert sorted(j.abnormal_count for j in finished.data) == [0, 0, 1]
    oldest = min(finished.data, key=lambda j: j.create_at)
    assert (oldest.name, oldest.create_at, oldest.update_at) == \
        ("seeded-2", now - 180_000, now - 90_000)
    assert client.list_dev_server_jobs(ListDevServerJobsRequest(status="DELETED")).total == 1
    exported = control.export()
    assert sorted(j["name"] for j in exported["jobs"]) == \
        ["seeded-0", "seeded-1", "seeded-2", "seeded-deleted"]


def test_a_slow_server_ends_its_tasks_late(client, control):
    control.add_fault(task="slow", server_id="sim-server-04", delay_ms=1500)
    created = client.create_dev_server_job(new_job("slow", servers=("sim-server-04",)))
    time.sleep(0.8)  # four times the simulated delay: a task of a normal server has ended
    assert client.get_dev_server_job(GetDevServerJobRequest(id=created.id)).status == "PROCESSING"
    done = wait_for_job(client, created.id)
    assert done.tasks[0].status == "SUCCESS"


def test_a_reset_takes_away_what_a_seed_added(client, control):
    control.seed({"projects": [{"name": "cn-east-3"}],
                  "users": [{"name": "alice", "access_keys": [
                      {"access_key": "ALICEKEY0000000000AA", "secret_key": "alice-secret-0000000"}],
                      "grants": [{"project": "cn-east-3"}]}],
                  "servers": [{"project": "cn-east-3", "id": "node-1", "simulated": False}]})
    before = control.export()
    assert "alice" in [u["name"] for u in before["users"]]
    assert any(s["id"] == "node-1" and not s["simulated"] for s in before["servers"])
    control.reset()
    after = control.export()
    assert sorted(u["name"] for u in after["users"]) == ["admin", "demo"]
    assert "cn-east-3" not in [p["name"] for p in after["projects"]]


def test_a_project_named_after_a_region_is_found_by_a_users_production_code(
        emulator, control, monkeypatch):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient
    from huaweicloudsdkmodelarts.v1.region.modelarts_region import ModelArtsRegion

    control.seed({
        "projects": [{"id": "0123456789abcdef0123456789abcdef", "name": "cn-east-3"}],
        "users": [{"name": "bob", "access_keys": [
            {"access_key": "BOBKEY00000000000000", "secret_key": "bob-secret-000000000"}],
            "grants": [{"project": "cn-east-3"}]}],
        "servers": [{"project": "cn-east-3", "id": "node-1"}],
        "jobs": [{"project": "cn-east-3", "name": "east-job",
                  "tasks": [{"server_id": "node-1", "status": "SUCCESS"}]}]})
    monkeypatch.setenv("HUAWEICLOUD_SDK_REGION_MODELARTS_CN_EAST_3", emulator.endpoint)
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", emulator.endpoint)
    client = (ModelArtsClient.new_builder()
              .with_credentials(BasicCredentials("BOBKEY00000000000000", "bob-secret-000000000"))
              .with_region(ModelArtsRegion.value_of("cn-east-3"))
              .build())
    listed = client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert [j.name for j in listed.data] == ["east-job"]
    keystone = [r for r in control.requests() if r["operation"] == "KeystoneListProjects"]
    assert keystone[-1]["access_key"] == "BOBKEY00000000000000"
    assert keystone[-1]["query"] == "name=cn-east-3"


def test_a_seed_given_at_start_is_the_state_a_reset_returns_to(litejobs_bin, tmp_path):
    import json

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"jobs": [
        {"project": DEMO_PROJECT_ID, "name": f"start-{n}", "status": "FINISHED",
         "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]} for n in range(5)]}))
    with Emulator(litejobs_bin, args=["--seed", str(seed)]) as seeded:
        client = sdk_client_for(seeded)
        assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 5
        client.create_dev_server_job(new_job("made-later"))
        assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 6
        seeded.control.reset()
        back = client.list_dev_server_jobs(ListDevServerJobsRequest())
        assert sorted(j.name for j in back.data) == [f"start-{n}" for n in range(5)]
        seeded.control.reset(DEMO_PROJECT_ID)
        assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 5
