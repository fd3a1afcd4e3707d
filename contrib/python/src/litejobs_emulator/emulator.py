"""The emulator process and its control API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable

#: How long the emulator may take to start or to stop.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class EmulatorError(RuntimeError):
    """The emulator did not start, or a control call failed."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


def find_binary(binary: str | None = None) -> str:
    found = binary or os.environ.get("LITEJOBS_BIN") or shutil.which("litejobs")
    if not found or not os.access(found, os.X_OK):
        raise EmulatorError("no litejobs binary: set LITEJOBS_BIN or put litejobs on the PATH")
    return found


class Emulator:
    """One `litejobs serve --in-memory --simulate` on a free loopback port.

    Use as a context manager, or call `start()` and `stop()`. Extra `serve` flags go in
    `args` (e.g. `["--strict"]`, `["--fault", "op=ListDevServerJobs,status=503"]`).
    """

    def __init__(self, binary: str | None = None, args: Iterable[str] = (),
                 region: str = "cn-north-4", simulate_delay: str = "200ms"):
        self.binary = find_binary(binary)
        self.args = list(args)
        self.region = region
        self.simulate_delay = simulate_delay
        self.proc: subprocess.Popen | None = None
        self.config: dict[str, Any] = {}
        self._log: list[str] = []

    # --- what the emulator printed once it answered ---------------------------------------
    @property
    def endpoint(self) -> str:
        return self.config["endpoint"]

    @property
    def project_id(self) -> str:
        return self.config["project_id"]

    @property
    def access_key(self) -> str:
        return self.config["access_key"]

    @property
    def secret_key(self) -> str:
        return self.config["secret_key"]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the official SDKs at the emulator."""
        return dict(self.config["env"])

    @property
    def control(self) -> "Control":
        admin = self.config.get("admin")
        if not admin:
            raise EmulatorError("the emulator announced no administrator's credentials")
        return Control(self.endpoint, admin["access_key"], admin["secret_key"])

    def log_text(self) -> str:
        return "\n".join(self._log[-200:])

    def start(self) -> "Emulator":
        cmd = [self.binary, "serve", "--in-memory", "--simulate", "--addr", "127.0.0.1:0",
               "--print-config", "--region", self.region,
               "--simulate-delay", self.simulate_delay, *self.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LITEJOBS_")}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        line: list[bytes] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not line or not line[0].strip():
            self.stop()
            raise EmulatorError("litejobs did not report its configuration:\n" + self.log_text())
        self.config = json.loads(line[0])
        return self

    def _drain(self, stream) -> None:
        for raw in stream:
            self._log.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Control:
    """The emulator's control API, called as the administrator: each request is signed with
    the administrator's access key by the SDK's own signer, so the journal holds only the
    calls of the code under test."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str):
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key

    def call(self, method: str, path: str, body: Any = None,
             query: list[tuple[str, str]] | None = None) -> Any:
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.sdk_request import SdkRequest
        from huaweicloudsdkcore.signer.signer import Signer

        parsed = urllib.parse.urlparse(self.endpoint)
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = SdkRequest(method=method, schema=parsed.scheme, host=parsed.netloc,
                             resource_path="/_litejobs/" + path.lstrip("/"),
                             query_params=list(query or []), header_params=headers, body=data)
        request = Signer(BasicCredentials(self.access_key, self.secret_key)).sign(request)
        sent = urllib.request.Request(request.url, data=data if body is not None else None,
                                      method=method, headers=request.header_params)
        try:
            with urllib.request.urlopen(sent, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        answer = json.loads(payload) if payload else None
        if status >= 400:
            raise EmulatorError(f"{method} {path}: {status} {answer}", status, answer)
        return answer

    def reset(self, project_id: str | None = None) -> Any:
        return self.call("POST", "reset", {"project_id": project_id} if project_id else {})

    def seed(self, document: dict) -> Any:
        return self.call("POST", "seed", document)

    def export(self) -> dict:
        return self.call("GET", "export")

    def add_fault(self, **rule) -> dict:
        """Adds a fault rule: operation, project_id, access_key, status, error_code,
        error_msg, retry_after, delay_ms, drop, probability, times, task, server_id."""
        return self.call("POST", "faults", rule)

    def faults(self) -> list:
        return self.call("GET", "faults")["faults"]

    def clear_faults(self) -> None:
        self.call("DELETE", "faults")

    def requests(self, after: int | None = None, limit: int | None = None) -> list:
        """The journal: the requests received (control calls aside), oldest first; after
        the `seq` `after`, the first `limit` of them; without it, the newest `limit`."""
        query = [] if after is None else [("after", str(after))]
        if limit is not None:
            query.append(("limit", str(limit)))
        return self.call("GET", "requests", query=query)["requests"]

    def clear_requests(self) -> None:
        self.call("DELETE", "requests")


def sdk_client(emulator: Emulator, *, timeout=None, retries: int = 0, http_handler=None):
    """An official-SDK ModelArts client built as production code builds it:
    `BasicCredentials(ak, sk)` without a project id and `.with_region(...)`; the endpoints
    come from the environment (`emulator.env`, which must be in `os.environ`)."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient
    from huaweicloudsdkmodelarts.v1.region.modelarts_region import ModelArtsRegion

    config = HttpConfig.get_default_config()
    if timeout is not None:
        config.timeout = timeout
    # The SDK's own retry of throttled calls (429), after the answer's Retry-After.
    config.retry_times = retries
    builder = (ModelArtsClient.new_builder()
               .with_http_config(config)
               .with_credentials(BasicCredentials(os.environ["HUAWEICLOUD_SDK_AK"],
                                                  os.environ["HUAWEICLOUD_SDK_SK"]))
               .with_region(ModelArtsRegion.value_of(emulator.region)))
    if http_handler is not None:
        builder = builder.with_http_handler(http_handler)
    return builder.build()
