"""Fixtures of the official-SDK suite.

Each test module gets its own `litejobs serve --simulate` (fresh database in a temporary
directory, free loopback port), started from the binary in LITEJOBS_BIN; a module may add
server flags with a module-level `SERVER_ARGS` list, and environment with `SERVER_ENV`.
"""

import os
import shutil
import tempfile

# Importing the SDK writes ~/.huaweicloud/application_id: keep that out of the real home.
_HOME = tempfile.mkdtemp(prefix="litejobs-sdk-home-")
os.environ["HOME"] = _HOME

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from litejobs_support import LiteJobsServer, Profile, WireRecorder, sdk_client  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

#: Fixed account of `serve --simulate` on loopback (src/serve.rs, module `demo`).
DEMO_PROJECT_ID = "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f"
DEMO_ACCESS_KEY = "LITEJOBSDEMOACCESSKY"
DEMO_SECRET_KEY = "LiteJobsDemoSecretKey0000000000000000000"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def litejobs_bin() -> str:
    binary = os.path.abspath(os.environ.get("LITEJOBS_BIN")
                             or REPO / "target" / "debug" / "litejobs")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no litejobs binary at {binary}: build it (cargo build) or set LITEJOBS_BIN")
    return binary


def start_server(binary: str, workdir: Path, *args: str, **kwargs) -> LiteJobsServer:
    return LiteJobsServer(binary, workdir, *args, **kwargs).start()


def stop_server(server: LiteJobsServer) -> None:
    code = server.stop()
    assert code == 0, f"{server.name} exited with {code} after SIGTERM:\n{server.log_text()}"


def pytest_generate_tests(metafunc):
    """A module runs against a server in each of its `MODES` (default: `["default"]`);
    `"strict"` adds `serve --strict`, the cloud's API and nothing more."""
    if "server" in metafunc.fixturenames:
        modes = getattr(metafunc.module, "MODES", ["default"])
        metafunc.parametrize("server", modes, indirect=True, scope="module")


@pytest.fixture(scope="module")
def server(request, litejobs_bin, tmp_path_factory):
    """The module's server, stopped (SIGTERM, then wait) after the module."""
    mode = getattr(request, "param", "default")
    workdir = tmp_path_factory.mktemp(f"{request.module.__name__}-{mode}")
    args = list(getattr(request.module, "SERVER_ARGS", []))
    if mode == "strict":
        args.append("--strict")
    srv = start_server(litejobs_bin, workdir, *args,
                       extra_env=getattr(request.module, "SERVER_ENV", None))
    srv.mode = mode
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def admin(server) -> Profile:
    """The administrator's profile, as the first start wrote it."""
    return server.admin_profile()


@pytest.fixture(scope="module")
def demo(server) -> Profile:
    return Profile(endpoint=server.endpoint, project_id=DEMO_PROJECT_ID,
                   access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY,
                   user_name=DEMO_USER, password=DEMO_PASSWORD)


@pytest.fixture
def wire() -> WireRecorder:
    return WireRecorder()


@pytest.fixture
def client(admin, wire):
    """The administrator's SDK client in its own project, recording its exchanges."""
    return sdk_client(admin, recorder=wire)
