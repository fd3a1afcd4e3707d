"""Helpers of the browser tests and of scripts/screenshots: a `litejobs serve --simulate`
process, a few API calls to fill it (with an IAM token of the demo account), and headless
Chromium driven over WebDriver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

#: The demo account of `serve --simulate` on loopback (src/iam/demo.rs).
DEMO_PROJECT_ID = "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"

START_TIMEOUT_S = 60.0

#: Where the distribution puts Chromium and its driver (Debian: chromium, chromium-driver).
CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
DRIVER_CANDIDATES = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]


def find_browser() -> tuple[str, str] | None:
    """Chromium and chromedriver, when both are installed."""
    browser = os.environ.get("LITEJOBS_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    driver = os.environ.get("LITEJOBS_CHROMEDRIVER") or next(
        (p for p in DRIVER_CANDIDATES if os.access(p, os.X_OK)), None)
    if browser and driver:
        return browser, driver
    return None


class Server:
    """`litejobs serve --simulate` on a free loopback port, its database in `workdir`."""

    def __init__(self, binary: str, workdir: Path, *extra: str):
        self.binary = binary
        self.workdir = Path(workdir)
        self.database = self.workdir / "litejobs.db"
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.log: list[str] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LITEJOBS_")}
        env["RUST_LOG"] = "info"
        return env

    def start(self) -> "Server":
        args = [self.binary, "serve", "--addr", "127.0.0.1:0",
                "--database-url", str(self.database),
                "--admin-credentials", str(self.workdir / "litejobs-admin.json"),
                "--simulate", "--rate-limit", "0", "--log-format", "json", *self.extra]
        self.proc = subprocess.Popen(args, cwd=self.workdir, env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        found = threading.Event()

        def read() -> None:
            assert self.proc and self.proc.stderr
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.log.append(line)
                try:
                    fields = json.loads(line).get("fields", {})
                except (ValueError, AttributeError):
                    continue
                if str(fields.get("message", "")).startswith("litejobs listening on"):
                    self.endpoint = f"http://{fields['addr']}"
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.log[-50:]))
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cli(self, *args: str) -> str:
        """An admin command of the binary on this server's database."""
        done = subprocess.run([self.binary, *args, "--database-url", str(self.database)],
                              cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"litejobs {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout


class Api:
    """The job API with an IAM token of the demo user."""

    def __init__(self, endpoint: str, user: str = DEMO_USER, password: str = DEMO_PASSWORD,
                 project: str = DEMO_PROJECT_ID):
        self.endpoint = endpoint
        self.project = project
        body = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": user, "password": password}}},
            "scope": {"project": {"id": project}}}}
        request = urllib.request.Request(f"{endpoint}/v3/auth/tokens",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            self.token = response.headers["X-Subject-Token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.endpoint}/v1/{self.project}/dev-servers/{path}", data=data, method=method,
            headers={"Content-Type": "application/json", "X-Auth-Token": self.token})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def create_job(self, name: str, servers: list[str], job_type: str = "COMMON",
                   spec: dict | None = None, visible: bool = True) -> dict:
        return self.call("POST", "jobs", {
            "name": name, "type": job_type, "server_ids": servers, "visible": visible,
            "items": [{"type": job_type, "spec": spec or {"cmd": f"echo {name}"}}]})

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"jobs/{job_id}")

    def wait(self, job_id: str, status: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] == status:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']}")
            time.sleep(0.1)


def chromium(width: int = 1280, height: int = 900):
    """Headless Chromium from the distribution, driven by its own chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if not found:
        raise RuntimeError("Chromium and chromedriver are not installed")
    browser, driver = found
    # Selenium must not look for drivers on the internet.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 f"--window-size={width},{height}", "--lang=en-US"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def which_binary(repo: Path) -> str:
    binary = os.environ.get("LITEJOBS_BIN") or str(repo / "target" / "debug" / "litejobs")
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no litejobs binary at {binary}: build it (cargo build)")
    return binary


def words(text: str) -> str:
    """Whitespace folded, for comparing what a page shows."""
    return re.sub(r"\s+", " ", text).strip()


__all__ = ["Api", "Server", "chromium", "find_browser", "which_binary", "words"]
