"""Helpers of the official-SDK suite: the real `litejobs serve` process, SDK clients pointed
at it as api-contract.md §3 prescribes, a recorder of what went over the wire, and checks
of the raw JSON the SDK would otherwise coerce silently."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_handler import HttpHandler
from huaweicloudsdkmodelarts.v1 import (
    CreateDevServerJobRequest,
    DevServerJobCreateRequest,
    DevServerJobItem,
    GetDevServerJobRequest,
    ListDevServerJobsRequest,
)
from huaweicloudsdkmodelarts.v1.modelarts_client import ModelArtsClient

#: How long the server may take to start or to stop.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

#: Codes of design.md §5.
AUTH_FAILED = "APIG.0301"
FORBIDDEN = "ModelArts.0105"
NOT_FOUND = "ModelArts.0102"
INVALID = "ModelArts.0107"


@dataclass(frozen=True)
class Profile:
    """An account's credentials: the admin profile file's fields (password optional)."""

    endpoint: str
    project_id: str
    access_key: str
    secret_key: str
    user_name: str
    password: str | None = None


class ServerError(RuntimeError):
    pass


class LiteJobsServer:
    """One `litejobs serve --simulate` process on a free loopback port, with its database and
    admin profile in `workdir`. Several may run against one database (replicas)."""

    def __init__(self, binary: str, workdir: Path, *extra_args: str, simulate_delay: str = "200ms",
                 name: str = "server", extra_env: dict[str, str] | None = None):
        self.binary = binary
        self.extra_env = dict(extra_env or {})
        self.workdir = Path(workdir)
        self.extra_args = list(extra_args)
        self.simulate_delay = simulate_delay
        self.name = name
        self.database = self.workdir / "litejobs.db"
        self.admin_file = self.workdir / "litejobs-admin.json"
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.addr: str | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self.addr, "server not started"
        return f"http://{self.addr}"

    def env(self) -> dict[str, str]:
        """The environment of the server and admin commands: none of the caller's LITEJOBS_*
        settings leak in, and logs are at info level so the listening line shows."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LITEJOBS_")}
        env["RUST_LOG"] = "info"
        env.update(self.extra_env)
        return env

    def start(self) -> "LiteJobsServer":
        args = [
            self.binary, "serve",
            "--addr", "127.0.0.1:0",
            "--database-url", str(self.database),
            "--admin-credentials", str(self.admin_file),
            "--simulate", "--simulate-delay", self.simulate_delay,
            "--rate-limit", "0",
            "--log-format", "json",
            *self.extra_args,
        ]
        self._lines = []
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        events: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc, events),
                                        daemon=True)
        self._reader.start()
        try:
            kind, value = events.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self._terminate()
            raise ServerError(f"{self.name} did not report listening within {START_TIMEOUT_S}s:\n"
                              + self.log_text())
        if kind != "listening":
            self._terminate()
            raise ServerError(f"{self.name} exited before listening (code {self.proc.returncode}):\n"
                              + self.log_text())
        self.addr = value
        return self

    def _read_stderr(self, proc: subprocess.Popen, events: queue.Queue) -> None:
        assert proc.stderr is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._lines.append(line)
                log.write(line + "\n")
                log.flush()
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                fields = record.get("fields", {}) if isinstance(record, dict) else {}
                message = str(fields.get("message", ""))
                if message.startswith("litejobs listening on") and fields.get("addr"):
                    events.put(("listening", fields["addr"]))
        proc.wait()
        events.put(("exited", proc.returncode))

    def log_text(self) -> str:
        return "\n".join(self._lines[-200:])

    def _terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM, then wait for a graceful exit; answers the exit code. A server that does
        not stop in time is killed and reported."""
        proc = self.proc
        if proc is None:
            return 0
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ServerError(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S}s:\n"
                                  + self.log_text())
        if self._reader:
            self._reader.join(timeout=STOP_TIMEOUT_S)
        return proc.returncode

    def admin_profile(self) -> Profile:
        raw = json.loads(self.admin_file.read_text(encoding="utf-8"))
        return Profile(endpoint=self.endpoint, project_id=raw["project_id"],
                       access_key=raw["access_key"], secret_key=raw["secret_key"],
                       user_name=raw["user_name"], password=raw.get("password"))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs an admin command of the binary on this server's database."""
        env = self.env()
        env["LITEJOBS_DATABASE_URL"] = str(self.database)
        done = subprocess.run([self.binary, *args, "--database-url", str(self.database)],
                              cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise ServerError(f"litejobs {' '.join(args)} failed ({done.returncode}):\n"
                              f"{done.stdout}\n{done.stderr}")
        return done


class WireRecorder:
    """Keeps the HTTP exchanges an SDK client made (requests' Response objects, with the
    request that was sent), through the SDK's own HttpHandler hook."""

    def __init__(self) -> None:
        self.responses: list = []

    def handler(self) -> HttpHandler:
        return HttpHandler().add_response_handler(
            lambda **kw: self.responses.append(kw["response"]))

    @property
    def last(self):
        assert self.responses, "no exchange recorded"
        return self.responses[-1]


def sdk_client(profile: Profile, *, ak: str | None = None, sk: str | None = None,
               project_id: str | None = None, recorder: WireRecorder | None = None
               ) -> ModelArtsClient:
    """A ModelArts client exactly as api-contract.md §3: BasicCredentials with a project id,
    `with_endpoint` (scheme kept), never `with_region`."""
    builder = (ModelArtsClient.new_builder()
               .with_credentials(BasicCredentials(ak or profile.access_key,
                                                  sk or profile.secret_key,
                                                  project_id or profile.project_id))
               .with_endpoint(profile.endpoint))
    if recorder is not None:
        builder = builder.with_http_handler(recorder.handler())
    return builder.build()


def raw(response) -> Any:
    """The JSON body exactly as the server sent it (the SDK model coerces types)."""
    assert response.raw_content, "the SDK response carries no raw body"
    return json.loads(response.raw_content.decode("utf-8"))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def assert_page(body: dict, *, total: int | None = None) -> None:
    """The page wrapper invariants of api-contract.md §2 and design.md §2 (no paging asked)."""
    for key in ("current", "data", "pages", "size", "total"):
        assert key in body, f"page lacks {key}: {body}"
    for key in ("current", "pages", "size", "total"):
        assert is_int(body[key]), f"{key} is {type(body[key]).__name__}, not an integer: {body}"
    data = body["data"]
    assert isinstance(data, list)
    if total is not None:
        assert body["total"] == total, body
    assert len(data) <= body["total"]
    if body["size"] > 0:
        assert len(data) <= body["size"]
        assert body["pages"] == -(-body["total"] // body["size"])
    if body["total"] > 0:
        assert 1 <= body["current"] <= body["pages"]
    ids = [item.get("id") for item in data]
    assert len(ids) == len(set(ids)), f"duplicate ids in a page: {ids}"


def assert_single_page(body: dict, count: int) -> None:
    """A whole answer on one page, as the SDK (which cannot ask for paging) expects."""
    assert_page(body, total=count)
    assert len(body["data"]) == count
    assert body["size"] == count
    assert body["current"] == 1
    assert body["pages"] == (1 if count else 0)


def assert_job_list_item(item: dict) -> None:
    """Raw JSON types of a JobListItem (api-contract.md §2)."""
    for key in ("id", "name", "user_name", "type", "status"):
        assert isinstance(item.get(key), str) and item[key], f"{key} of {item}"
    for key in ("abnormal_count", "create_at", "update_at"):
        assert is_int(item.get(key)), f"{key} is not a JSON integer in {item}"
    assert item["status"] in ("PROCESSING", "FINISHED", "DELETED"), item
    assert item["abnormal_count"] >= 0
    assert item["update_at"] >= item["create_at"] > 1_500_000_000_000, item
    if "description" in item:
        assert isinstance(item["description"], str), item


def assert_job_detail(body: dict) -> None:
    """Raw JSON types of a JobDetail with its items and tasks (api-contract.md §2)."""
    assert_job_list_item(body)
    assert isinstance(body.get("template_id"), (str, type(None))), body
    assert isinstance(body.get("items"), list) and body["items"], body
    for item in body["items"]:
        assert isinstance(item["type"], str)
        if item.get("spec") is not None:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in item["spec"].items())
    assert isinstance(body.get("tasks"), list) and body["tasks"], body
    for task in body["tasks"]:
        for key in ("id", "server_id", "server_name", "status"):
            assert isinstance(task.get(key), str) and task[key], f"{key} of task {task}"
        assert task["status"] in ("PROCESSING", "SUCCESS", "FAILED", "SKIPPED"), task
        for key in ("create_at", "update_at"):
            # The SDK models task times as strings: decimal epoch milliseconds.
            assert isinstance(task.get(key), str) and task[key].isdigit(), f"{key} of {task}"
        assert int(task["update_at"]) >= int(task["create_at"])
        if task.get("cloud_server") is not None:
            assert all(isinstance(v, str) for v in task["cloud_server"].values()), task
        if task.get("message") is not None:
            assert isinstance(task["message"], str)


def expect_error(call: Callable[[], Any], status: int, code: str,
                 recorder: WireRecorder | None = None) -> ClientRequestException:
    """Runs an SDK call that must fail with `status` and `code`, with a request id; when a
    recorder is given, also checks the raw error body of design.md §5."""
    try:
        result = call()
    except ClientRequestException as e:
        assert (e.status_code, e.error_code) == (status, code), \
            f"expected {status} {code}, got {e.status_code} {e.error_code}: {e.error_msg}"
        assert e.request_id, f"no X-Request-Id on the {status} answer"
        assert e.error_msg and e.error_msg != str(status), e
        if recorder is not None:
            response = recorder.last
            assert response.status_code == status
            assert response.headers.get("Content-Type", "").startswith("application/json")
            body = response.json()
            assert body.get("error_code") == code, body
            assert isinstance(body.get("error_msg"), str) and body["error_msg"], body
            assert body.get("request_id") == e.request_id, (body, e.request_id)
        return e
    raise AssertionError(f"expected {status} {code}, but the call succeeded: {result}")


def new_job(name: str, *, servers=("sim-server-01",), job_type: str = "COMMON",
            description: str | None = None, visible: bool | None = None,
            spec: dict | None = None) -> CreateDevServerJobRequest:
    """A create request built from the SDK's own models; `visible` (design.md §3 extension
    field, unknown to the SDK) goes through a subclass that declares it."""
    fields = dict(name=name, description=description, server_ids=list(servers), type=job_type,
                  items=[DevServerJobItem(type=job_type, spec=spec or {"cmd": "echo hi"})])
    if visible is None:
        body = DevServerJobCreateRequest(**fields)
    else:
        body = JobCreateRequestWithVisible(visible=visible, **fields)
    return CreateDevServerJobRequest(body=body)


class JobCreateRequestWithVisible(DevServerJobCreateRequest):
    """DevServerJobCreateRequest plus litejobs' optional `visible` field. The SDK serialises
    bodies from `openapi_types`/`attribute_map`, so declaring the field is all it takes."""

    openapi_types = {**DevServerJobCreateRequest.openapi_types, "visible": "bool"}
    attribute_map = {**DevServerJobCreateRequest.attribute_map, "visible": "visible"}

    def __init__(self, visible: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.visible = visible


def eventually(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "the change"):
    """Retries `check` (which raises AssertionError until it holds) until it passes or
    `timeout_s` has passed; answers its result. For effects that may lag by a bounded time,
    such as admin changes behind the server's authentication lookup cache."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not take effect within {timeout_s}s")
            time.sleep(0.1)


def wait_for_job(client: ModelArtsClient, job_id: str, status: str = "FINISHED",
                 timeout_s: float = 30.0):
    """Polls GET job until it has `status`; answers the SDK response."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_dev_server_job(GetDevServerJobRequest(id=job_id))
        if job.status == status:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is still {job.status} after {timeout_s}s, "
                                 f"expected {status}: {job}")
        time.sleep(0.05)


def list_jobs(client: ModelArtsClient, **filters) -> tuple[Any, dict]:
    """Lists with the SDK; answers the SDK response and its raw JSON (checked as a page)."""
    response = client.list_dev_server_jobs(ListDevServerJobsRequest(**filters))
    body = raw(response)
    assert_page(body)
    for item in body["data"]:
        assert_job_list_item(item)
    return response, body


def http(method: str, url: str, *, headers: dict | None = None, body: Any = None
         ) -> tuple[int, dict, Any]:
    """A plain, unsigned HTTP call (for token auth, which the SDK does not use); answers the
    status, the headers (lower-case names) and the JSON body (None when empty)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json;charset=utf-8")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, got_headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, got_headers, payload = e.code, e.headers, e.read()
    lowered = {k.lower(): v for k, v in got_headers.items()}
    return status, lowered, (json.loads(payload) if payload else None)
