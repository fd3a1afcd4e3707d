"""The package's own tests: its fixtures, used as a team would use them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    CreateDevServerJobRequest,
    DevServerJobCreateRequest,
    DevServerJobItem,
    GetDevServerJobRequest,
    ListDevServerJobsRequest,
)

from litejobs_emulator import EmulatorError, sdk_client


def create_request(name):
    return CreateDevServerJobRequest(body=DevServerJobCreateRequest(
        name=name, server_ids=["sim-server-01"], type="COMMON",
        items=[DevServerJobItem(type="COMMON", spec={"cmd": "echo hi"})]))


def test_the_client_runs_list_create_and_get_with_environment_variables_only(
        modelarts_client, litejobs_env):
    assert set(litejobs_env) >= {"HUAWEICLOUD_SDK_IAM_ENDPOINT",
                                 "HUAWEICLOUD_SDK_REGION_MODELARTS_CN_NORTH_4"}
    assert os.environ["HUAWEICLOUD_SDK_IAM_ENDPOINT"] == litejobs_env["HUAWEICLOUD_SDK_IAM_ENDPOINT"]
    created = modelarts_client.create_dev_server_job(create_request("fixture-job"))
    got = modelarts_client.get_dev_server_job(GetDevServerJobRequest(id=created.id))
    assert got.name == "fixture-job"
    listed = modelarts_client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert listed.total == 1 and listed.data[0].id == created.id


def test_each_test_starts_from_the_start_state(modelarts_client):
    # The job of the test before is gone: the control fixture reset the emulator.
    assert modelarts_client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0


def test_throttling_is_retried_by_the_client(litejobs_emulator, litejobs_env, litejobs_control):
    # The next two list calls are throttled as the cloud throttles: 429, APIG.0308,
    # Retry-After (0 s here, to keep the test fast).
    litejobs_control.add_fault(operation="ListDevServerJobs", status=429, retry_after=0, times=2)
    client = sdk_client(litejobs_emulator, retries=2)
    assert client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0
    calls = [(r["operation"], r["status"], r["error_code"]) for r in litejobs_control.requests()]
    assert calls[-3:] == [("ListDevServerJobs", 429, "APIG.0308"),
                          ("ListDevServerJobs", 429, "APIG.0308"),
                          ("ListDevServerJobs", 200, None)]
    # Without a cursor, a limit keeps the newest; after one, the next.
    assert [r["status"] for r in litejobs_control.requests(limit=1)] == [200]
    journal = litejobs_control.requests()
    after = litejobs_control.requests(after=journal[-3]["seq"], limit=1)
    assert [r["seq"] for r in after] == [journal[-2]["seq"]]


def test_without_retries_throttling_surfaces_as_the_sdks_exception(
        modelarts_client, litejobs_control):
    litejobs_control.add_fault(operation="ListDevServerJobs", status=429, times=1)
    with pytest.raises(ClientRequestException) as throttled:
        modelarts_client.list_dev_server_jobs(ListDevServerJobsRequest())
    assert throttled.value.status_code == 429
    assert modelarts_client.list_dev_server_jobs(ListDevServerJobsRequest()).total == 0


def test_control_errors_are_raised(litejobs_control):
    with pytest.raises(EmulatorError) as failure:
        litejobs_control.add_fault(operation="ListDevServerJobs", status=200)
    assert failure.value.status == 400


README = Path(__file__).resolve().parents[3] / "README.md"


def python_block(after_heading: str) -> str:
    """The first python block of the README after `after_heading`."""
    section = README.read_text(encoding="utf-8").split(after_heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_pytest_example_passes(tmp_path):
    example = tmp_path / "test_retry.py"
    example.write_text(python_block("## The emulator in a test suite"), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(example)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_readmes_production_style_code_runs_with_the_environment_alone(
        litejobs_emulator, litejobs_control, tmp_path):
    script = python_block("## Using the official Python SDK")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    env.update(litejobs_emulator.env)
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    journal = [r["operation"] for r in litejobs_control.requests()]
    assert journal[-2:] == ["KeystoneListProjects", "ListDevServerJobs"]
