"""Fixtures of the OpenAPI checks: one `litejobs serve --simulate` for the session (fresh
database in a temporary directory, free loopback port), a token of its demo account, and a
job to look at.

The server is started by the SDK suite's helper (tests/sdk/litejobs_support.py), which
imports the vendor's SDK: its import writes ~/.huaweicloud/application_id, so HOME is a
temporary directory here too.
"""

import collections
import json
import os
import shutil
import sys
import tempfile
import urllib.request

_HOME = tempfile.mkdtemp(prefix="litejobs-openapi-home-")
os.environ["HOME"] = _HOME

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sdk"))

from litejobs_support import LiteJobsServer  # noqa: E402

#: The documented demo account of `serve --simulate` on loopback.
DEMO_PROJECT_ID = "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"


_server = None

#: Statuses answered per operation during the fuzz pass, for its summary and checks.
ANSWERS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def pytest_terminal_summary(terminalreporter):
    if ANSWERS:
        terminalreporter.section("statuses answered per operation")
        for operation, statuses in sorted(ANSWERS.items(), key=lambda a: a[0].split(" ")[::-1]):
            counts = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
            terminalreporter.write_line(f"{operation:<75} {counts}")


def session_server():
    """The session's server, started on first use (the fuzz test's schema is loaded from
    it when its module is collected) and stopped at the session's end."""
    global _server
    if _server is None:
        binary = os.path.abspath(os.environ.get("LITEJOBS_BIN")
                                 or REPO / "target" / "debug" / "litejobs")
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"no litejobs binary at {binary}: build it (cargo build) or "
                               "set LITEJOBS_BIN")
        workdir = Path(tempfile.mkdtemp(prefix="litejobs-openapi-"))
        # Many failed password attempts from loopback are part of the run: no address
        # lock-out.
        _server = LiteJobsServer(binary, workdir, "--auth-failures-per-address", "0").start()
    return _server


def pytest_sessionfinish(session, exitstatus):
    if _server is not None:
        code = _server.stop()
        shutil.rmtree(_server.workdir, ignore_errors=True)
        if code != 0:
            print(f"the server exited with {code} after SIGTERM:\n{_server.log_text()}")
            session.exitstatus = 1
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    return session_server()


def call(server, method, path, body=None, headers=None):
    """One request; answers (status, headers, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.endpoint + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


@pytest.fixture(scope="session")
def token(server):
    status, headers, _ = call(server, "POST", "/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": DEMO_USER, "password": DEMO_PASSWORD, "domain": {"name": DEMO_USER}}}},
        "scope": {"project": {"id": DEMO_PROJECT_ID}}}})
    assert status == 201, status
    return headers["X-Subject-Token"]


@pytest.fixture(scope="session")
def job(server, token):
    """A job of the demo project, with its first task's id."""
    status, _, detail = call(
        server, "POST", f"/v1/{DEMO_PROJECT_ID}/dev-servers/jobs",
        {"name": "fuzz-target", "type": "COMMON", "server_ids": ["sim-server-01"],
         "items": [{"type": "COMMON", "spec": {"cmd": "echo hi"}}]},
        {"X-Auth-Token": token})
    assert status == 200, detail
    return detail["id"], detail["tasks"][0]["id"]
