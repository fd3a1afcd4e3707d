"""Fixtures of the browser tests: one `litejobs serve --simulate` filled with jobs (some
failing, one that never ends), a read-only user, and a fresh headless Chromium per test."""

import json
import tempfile
from pathlib import Path

import pytest

from console_support import Api, Server, chromium, find_browser, which_binary

REPO = Path(__file__).resolve().parents[2]
READER = "reader"
READER_PASSWORD = "reader-password-1"
#: A user of two projects, one with a long name, who may list jobs in it but not open them.
TRAVELLER = "traveller"
TRAVELLER_PASSWORD = "traveller-password-1"
LONG_PROJECT = "ml-training-cluster-shanghai-production"
LONG_TYPE = "LONG_TEMPLATE_TYPE_NAME_THAT_KEEPS_GOING_WITHOUT_ANY_BREAK_ABCDE"
#: Jobs whose names start with "batch-": more than one page of ten.
BATCH = 12


def pytest_collection_modifyitems(config, items):
    if find_browser() is None:
        pytest.exit("Chromium or chromedriver is missing (scripts/browser-tests installs them)",
                    returncode=3)


@pytest.fixture(scope="session")
def server():
    with tempfile.TemporaryDirectory(prefix="litejobs-browser-") as workdir:
        # A template whose type is as long as a type may be, for the pages on a phone.
        templates = Path(workdir) / "templates"
        templates.mkdir()
        common = json.loads((REPO / "templates" / "common.json").read_text())
        common.update(id="6f1d0c5e-4a1b-4c55-9a0e-0000000000ff", name="long", type=LONG_TYPE)
        (templates / "long.json").write_text(json.dumps(common))
        srv = Server(which_binary(REPO), Path(workdir), "--templates-dir", str(templates),
                     "--simulate-delay", "1500ms",
                     "--simulate-outcome", "sim-server-02=FAILED",
                     "--simulate-outcome", "sim-server-01=SUCCESS").start()
        try:
            srv.cli("servers", "add", "--project", "demo", "--name", "node-07", "node-07")
            srv.cli("iam", "user", "create", READER, "--password", READER_PASSWORD)
            srv.cli("iam", "grant", READER, "demo", "ModelArts ReadOnlyAccess")
            srv.cli("iam", "project", "create", LONG_PROJECT)
            srv.cli("iam", "policy", "put", "job-listers",
                    "--action", "modelarts:devserverJob:list",
                    "--action", "modelarts:devserverJob:create")
            srv.cli("iam", "user", "create", TRAVELLER, "--password", TRAVELLER_PASSWORD)
            srv.cli("iam", "grant", TRAVELLER, "demo", "ModelArts FullAccess")
            srv.cli("iam", "grant", TRAVELLER, LONG_PROJECT, "job-listers")
            srv.cli("servers", "add", "--project", "demo", "--name",
                    "node-with-a-rather-long-host-name-0123456789", "node-long")
            srv.cli("servers", "add", "--project", LONG_PROJECT, "--name", "node-far", "node-far")
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="session")
def jobs(server):
    """The jobs every test finds: by name, their API answers."""
    api = Api(server.endpoint)
    made = {}
    for n in range(1, BATCH + 1):
        made[f"batch-{n:02d}"] = api.create_job(f"batch-{n:02d}", ["sim-server-01"])
    made["logs-hidden"] = api.create_job("logs-hidden", ["sim-server-01"], job_type="LOG_COLLECT",
                                         spec={"paths": "/var/log/*.log", "dest": "/tmp/x"},
                                         visible=False)
    made["mixed-result"] = api.create_job("mixed-result", ["sim-server-01", "sim-server-02"])
    made["stuck-on-node"] = api.create_job("stuck-on-node", ["node-07"])
    for name, job in made.items():
        if name != "stuck-on-node":
            made[name] = api.wait(job["id"], "FINISHED")
    return made


@pytest.fixture()
def browser():
    driver = chromium()
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
