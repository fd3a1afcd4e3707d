"""Pictures of every console page: starts `litejobs serve --simulate`, fills it with a few
jobs (some failing, one that keeps running), and saves a PNG of each page in headless
Chromium. Run by scripts/screenshots: `python screenshots.py OUT_DIR`."""

import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from console_support import DEMO_PASSWORD, DEMO_USER, Api, Server, chromium, which_binary

REPO = Path(__file__).resolve().parents[2]


def fill(server: Server) -> dict:
    server.cli("servers", "add", "--project", "demo", "--name", "gpu-node-07", "gpu-node-07")
    api = Api(server.endpoint)
    jobs = {}
    for name, servers in [
        ("nightly-health-check", ["sim-server-01", "sim-server-03"]),
        ("driver-version-audit", ["sim-server-01", "sim-server-02", "sim-server-03"]),
        ("npu-smoke-test", ["sim-server-03"]),
    ]:
        jobs[name] = api.create_job(name, servers, spec={"cmd": "npu-smi info"})
    jobs["collect-training-logs"] = api.create_job(
        "collect-training-logs", ["sim-server-02", "sim-server-03"], job_type="LOG_COLLECT",
        spec={"paths": "/var/log/train/*.log", "dest": "/tmp/litejobs-logs"})
    for job in jobs.values():
        api.wait(job["id"], "FINISHED")
    jobs["firmware-upgrade"] = api.create_job("firmware-upgrade", ["gpu-node-07", "sim-server-01"],
                                              spec={"cmd": "upgrade.sh --firmware"})
    time.sleep(0.5)
    return jobs


def shoot(browser, endpoint: str, path: str, out: Path, name: str, whole: bool = True,
          width: int = 1100) -> None:
    """Saves the page at `path`, `width` wide; `whole`: as tall as the page (up to 2,000 px),
    else 640 px (844 on a phone)."""
    browser.set_window_size(width, 640 if width > 600 else 844)
    browser.get(endpoint + path)
    time.sleep(0.3)
    if whole:
        height = browser.execute_script("return document.documentElement.scrollHeight;")
        browser.set_window_size(width, min(int(height) + 120, 2000))
        time.sleep(0.2)
    target = out / f"{name}.png"
    browser.save_screenshot(str(target))
    print(f"saved {target}")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="litejobs-screenshots-") as workdir:
        server = Server(which_binary(REPO), Path(workdir), "--simulate-delay", "1s",
                        "--simulate-outcome", "sim-server-02=FAILED",
                        "--simulate-outcome", "sim-server-01=SUCCESS",
                        "--simulate-outcome", "sim-server-03=SUCCESS").start()
        browser = chromium(1100, 640)
        try:
            jobs = fill(server)
            endpoint = server.endpoint
            shoot(browser, endpoint, "/console/login", out, "login")
            browser.find_element(By.ID, "user").send_keys(DEMO_USER)
            browser.find_element(By.ID, "password").send_keys(DEMO_PASSWORD)
            browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            time.sleep(0.5)
            shoot(browser, endpoint, "/console/jobs", out, "jobs", whole=False)
            failed = jobs["driver-version-audit"]
            shoot(browser, endpoint, f"/console/jobs/{failed['id']}", out, "job")
            task = next(t for t in failed["tasks"] if t["server_id"] == "sim-server-02")
            shoot(browser, endpoint, f"/console/jobs/{failed['id']}/tasks/{task['id']}", out, "task")
            shoot(browser, endpoint, f"/console/jobs/{jobs['firmware-upgrade']['id']}", out,
                  "job-running")
            shoot(browser, endpoint, "/console/jobs/new?type=COMMON", out, "new-job")
            shoot(browser, endpoint, f"/console/jobs/{failed['id']}/delete", out, "delete")
            shoot(browser, endpoint, "/console/servers", out, "servers")
            shoot(browser, endpoint, "/console/templates", out, "templates")
            shoot(browser, endpoint, "/console/jobs", out, "jobs-phone", whole=False, width=390)
        finally:
            browser.quit()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
