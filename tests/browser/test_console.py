"""The console in headless Chromium, used as a person uses it: sign in, filter by each of
the five filters, page, sort, create a job and watch it finish without reloading (also when
its tasks end together), open a failed task, delete, sign out; the read-only user's view; a
wrong password; keyboard, labels and a phone-sized window. Each test asserts what the page
shows."""

from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from conftest import (BATCH, LONG_PROJECT, READER, READER_PASSWORD, TRAVELLER,
                      TRAVELLER_PASSWORD)
from console_support import DEMO_PASSWORD, DEMO_USER, Api, words


def sign_in(browser, server, user=DEMO_USER, password=DEMO_PASSWORD, path="/console/jobs"):
    browser.get(server.endpoint + path)
    assert "/console/login" in browser.current_url, "a stranger is sent to sign in"
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def follow(browser, element):
    """Clicks what leads to another page, and waits until that page is there."""
    browser.execute_script("window.leaving = true;")
    element.click()
    # A new page has a new window object, without the mark.
    wait_for(browser, lambda b: b.execute_script(
        "return window.leaving !== true && document.readyState === 'complete';"))


def text(browser, css):
    return words(browser.find_element(By.CSS_SELECTOR, css).text)


def names_listed(browser):
    return [words(a.text) for a in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody td:first-child a")]


def wait_for(browser, condition, timeout=20):
    return WebDriverWait(browser, timeout, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition)


def apply_filters(browser, **fields):
    for name, value in fields.items():
        element = browser.find_element(By.ID, f"f-{name}")
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    follow(browser, browser.find_element(By.ID, "apply-filters"))


def query_of(browser):
    return {k: v[0] for k, v in parse_qs(urlparse(browser.current_url).query).items()}


def test_a_wrong_password_keeps_the_person_out(browser, server):
    sign_in(browser, server, password="not-the-password")
    assert text(browser, "#login-error").startswith("The user name or password is wrong")
    assert browser.find_element(By.ID, "user").get_attribute("value") == DEMO_USER
    browser.get(server.endpoint + "/console/jobs")
    assert "/console/login" in browser.current_url, "no session was made"


def test_sign_in_and_filter_by_each_of_the_five_filters(browser, server, jobs):
    sign_in(browser, server)
    assert urlparse(browser.current_url).path == "/console/jobs"
    total = Api(server.endpoint).call("GET", "jobs")["total"]
    assert text(browser, "#total").startswith(f"{total} jobs")
    assert text(browser, "#project") == "Project demo"

    apply_filters(browser, name="BATCH-0")
    assert query_of(browser)["name"] == "BATCH-0", "the URL holds the filter"
    assert text(browser, "#total").startswith("9 jobs")
    assert all(n.startswith("batch-0") for n in names_listed(browser))

    browser.get(server.endpoint + "/console/jobs")
    mixed = jobs["mixed-result"]
    apply_filters(browser, id=mixed["id"])
    assert names_listed(browser) == ["mixed-result"]
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{mixed['id']}']")
    assert words(row.find_element(By.CSS_SELECTOR, "td.abnormal").text) == "1"
    badge = row.find_element(By.CSS_SELECTOR, ".st")
    assert badge.get_attribute("data-status") == "FINISHED"
    assert "st-warn" in badge.get_attribute("class"), \
        "finished with a failed task"
    assert words(badge.get_attribute("textContent")) == "FINISHED, with failed tasks"

    browser.get(server.endpoint + "/console/jobs")
    apply_filters(browser, type="LOG_COLLECT")
    assert names_listed(browser) == ["logs-hidden"]

    browser.get(server.endpoint + "/console/jobs")
    apply_filters(browser, status="PROCESSING")
    assert names_listed(browser) == ["stuck-on-node"]
    badge = browser.find_element(By.CSS_SELECTOR, "#jobs tbody .st")
    assert "st-running" in badge.get_attribute("class")
    # Colours differ by status.
    running = badge.value_of_css_property("background-color")
    apply_filters(browser, status="FINISHED")
    assert "stuck-on-node" not in names_listed(browser)
    finished = browser.find_element(By.CSS_SELECTOR, "#jobs tbody .st")
    assert finished.value_of_css_property("background-color") != running

    browser.get(server.endpoint + "/console/jobs")
    apply_filters(browser, visible="false")
    assert names_listed(browser) == ["logs-hidden"]
    apply_filters(browser, visible="true")
    assert "logs-hidden" not in names_listed(browser)
    assert text(browser, "#total").startswith(f"{total - 1} jobs")

    # A shared link shows the same view.
    shared = browser.current_url
    browser.get(server.endpoint + "/console/jobs")
    browser.get(shared)
    assert Select(browser.find_element(By.ID, "f-visible")).first_selected_option.text == "Visible"


def test_pages_and_sorts(browser, server, jobs):
    sign_in(browser, server)
    apply_filters(browser, name="batch", limit="10")
    assert text(browser, "#total") == f"{BATCH} jobs, showing 1–10"
    assert text(browser, "#page-of") == "Page 1 of 2"
    first_page = names_listed(browser)
    assert first_page[0] == f"batch-{BATCH:02d}", "newest first"
    follow(browser, browser.find_element(By.ID, "next-page"))
    assert text(browser, "#page-of") == "Page 2 of 2"
    assert names_listed(browser) == ["batch-02", "batch-01"]
    assert query_of(browser)["offset"] == "10"
    follow(browser, browser.find_element(By.ID, "prev-page"))
    assert names_listed(browser) == first_page

    follow(browser, browser.find_element(By.CSS_SELECTOR, "a[data-sort=name]"))
    assert names_listed(browser)[:3] == ["batch-01", "batch-02", "batch-03"]
    heading = browser.find_element(By.CSS_SELECTOR, "th[aria-sort=ascending]")
    assert "Name" in heading.text
    follow(browser, browser.find_element(By.CSS_SELECTOR, "a[data-sort=name]"))
    assert names_listed(browser)[0] == f"batch-{BATCH:02d}"


def test_create_a_job_and_watch_it_finish_without_reloading(browser, server, jobs):
    sign_in(browser, server)
    follow(browser, browser.find_element(By.ID, "new-job"))
    Select(browser.find_element(By.ID, "template")).select_by_value("COMMON")
    follow(browser, browser.find_element(By.ID, "choose-template"))
    assert browser.find_element(By.ID, "spec-cmd").is_displayed()

    # The API's message is shown next to the field it is about.
    browser.find_element(By.ID, "name").send_keys("not a valid name")
    browser.find_element(By.ID, "server-sim-server-01").click()
    browser.find_element(By.ID, "spec-cmd").send_keys("echo hello")
    follow(browser, browser.find_element(By.ID, "create-job"))
    error = browser.find_element(By.ID, "err-name")
    assert "name must match" in error.text
    name = browser.find_element(By.ID, "name")
    assert name.get_attribute("aria-invalid") == "true"
    assert name.get_attribute("aria-describedby") == "err-name"
    assert browser.find_element(By.ID, "server-sim-server-01").is_selected(), "the draft is kept"

    name.clear()
    name.send_keys("watched-job")
    browser.find_element(By.ID, "server-sim-server-03").click()
    follow(browser, browser.find_element(By.ID, "create-job"))
    wait_for(browser, EC.presence_of_element_located((By.ID, "live")))
    assert text(browser, "h1") == "watched-job"
    assert browser.find_element(By.CSS_SELECTOR, "#live .state .st").text == "PROCESSING"
    rows = browser.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    assert [r.get_attribute("data-server") for r in rows] == ["sim-server-01", "sim-server-03"]

    # A mark the page would lose if it were loaded again.
    browser.execute_script("window.notReloaded = true;")
    # The script marks the region once it holds the final state (the region itself stays).
    live = browser.find_element(By.ID, "live")
    wait_for(browser, lambda b: live.get_attribute("data-status") == "FINISHED")
    assert browser.find_element(By.CSS_SELECTOR, "#live .state .st").text == "FINISHED"
    assert browser.execute_script("return window.notReloaded === true;"), "no reload happened"
    assert live.get_attribute("data-via") == "events", "kept live by the job's event stream"
    statuses = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#tasks tbody .st")]
    assert statuses == ["SUCCESS", "SUCCESS"]
    assert text(browser, "#abnormal-count") == "0"
    messages = [words(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#tasks td.message")]
    assert messages == ["simulated success on sim-server-01", "simulated success on sim-server-03"]


def test_open_a_failed_task(browser, server, jobs):
    mixed = jobs["mixed-result"]
    sign_in(browser, server, path=f"/console/jobs/{mixed['id']}")
    assert text(browser, "#job-id") == mixed["id"], "back where the person was going"
    assert text(browser, "#abnormal-count") == "1"
    assert "st-warn" in browser.find_element(By.CSS_SELECTOR, "#live .state .st").get_attribute("class")
    row = browser.find_element(By.CSS_SELECTOR, "#tasks tr[data-server='sim-server-02']")
    assert row.find_element(By.CSS_SELECTOR, ".st").text == "FAILED"
    assert "st-failed" in row.find_element(By.CSS_SELECTOR, ".st").get_attribute("class")
    link = row.find_element(By.CSS_SELECTOR, "a[href*='/tasks/']")
    assert words(link.get_attribute("textContent")) == "Open the task on sim-server-02"
    follow(browser, link)
    assert text(browser, "h1") == "Task on sim-server-02"
    assert text(browser, "#task-status") == "FAILED"
    assert text(browser, "#task-message") == "simulated failure on sim-server-02"
    assert text(browser, "#task-output") == "The agent sent no output for this task."


def test_delete_with_a_confirmation(browser, server, jobs):
    victim = jobs["batch-05"]
    sign_in(browser, server, path=f"/console/jobs/{victim['id']}")
    follow(browser, browser.find_element(By.ID, "delete-job"))
    assert text(browser, "h1") == "Delete job batch-05?"
    follow(browser, browser.find_element(By.LINK_TEXT, "Cancel"))
    assert browser.find_element(By.CSS_SELECTOR, "#live .st").text == "FINISHED", "cancel keeps it"
    follow(browser, browser.find_element(By.ID, "delete-job"))
    follow(browser, browser.find_element(By.ID, "confirm-delete"))
    assert browser.find_element(By.CSS_SELECTOR, "#live .state .st").text == "DELETED"
    assert not browser.find_elements(By.ID, "delete-job"), "nothing left to delete"
    browser.get(server.endpoint + "/console/jobs?status=DELETED")
    assert names_listed(browser) == ["batch-05"]


def test_a_job_deleted_elsewhere_loses_its_delete_button(browser, server, jobs):
    """The page follows the job: deleted in another tab (here through the API), it shows
    DELETED and offers no Delete any more, without a reload."""
    api = Api(server.endpoint)
    # node-07 has no agent: the job stays PROCESSING, and its page followed, until deleted.
    job = api.create_job("deleted-elsewhere", ["node-07"])
    sign_in(browser, server, path=f"/console/jobs/{job['id']}")
    assert browser.find_elements(By.ID, "delete-job")
    browser.execute_script("window.notReloaded = true;")
    api.call("DELETE", "jobs", {"job_ids": [job["id"]]})
    live = browser.find_element(By.ID, "live")
    wait_for(browser, lambda b: live.get_attribute("data-status") == "DELETED")
    assert not browser.find_elements(By.ID, "delete-job"), "nothing left to delete"
    assert browser.execute_script("return window.notReloaded === true;"), "no reload happened"


def test_a_long_job_name_folds_on_a_phone(browser, server, jobs):
    job = Api(server.endpoint).create_job("long-" + "N" * 59, ["sim-server-01"])
    browser.set_window_size(390, 844)
    sign_in(browser, server, path=f"/console/jobs/{job['id']}")
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    assert overflow <= 1, f"the job's page scrolls sideways by {overflow}px"


def test_sign_out(browser, server):
    sign_in(browser, server)
    follow(browser, browser.find_element(By.ID, "sign-out"))
    assert text(browser, ".notice") == "You are signed out."
    browser.get(server.endpoint + "/console/servers")
    assert "/console/login" in browser.current_url


def test_the_read_only_user_sees_no_controls(browser, server, jobs):
    sign_in(browser, server, user=READER, password=READER_PASSWORD)
    assert text(browser, "#sign-out") == f"Sign out {READER}"
    assert names_listed(browser), "the reader sees the jobs"
    assert not browser.find_elements(By.ID, "new-job")
    browser.get(f"{server.endpoint}/console/jobs/{jobs['mixed-result']['id']}")
    assert text(browser, "h1") == "mixed-result"
    assert not browser.find_elements(By.ID, "delete-job")
    browser.get(server.endpoint + "/console/templates")
    assert browser.find_element(By.ID, "template-COMMON")
    assert not browser.find_elements(By.PARTIAL_LINK_TEXT, "New COMMON job")
    browser.get(server.endpoint + "/console/jobs/new")
    assert text(browser, "h1") == "Not allowed"
    assert "modelarts:devserverJob:create" in text(browser, "p.error")


def test_servers_and_templates(browser, server, jobs):
    sign_in(browser, server, path="/console/servers")
    node = browser.find_element(By.CSS_SELECTOR, "tr[data-server='node-07']")
    assert "offline" in node.text and "never" in node.text
    assert words(node.find_element(By.CSS_SELECTOR, "td.running").text) == "1"
    sim = browser.find_element(By.CSS_SELECTOR, "tr[data-server='sim-server-01']")
    assert "online" in sim.text
    follow(browser, browser.find_element(By.LINK_TEXT, "Templates"))
    section = browser.find_element(By.ID, "template-LOG_COLLECT")
    assert "paths" in section.text and "dest" in section.text


def test_keyboard_and_screen_reader_labels(browser, server, jobs):
    browser.get(server.endpoint + "/console/login")
    # Sign in with the keyboard alone: the name field has the focus, Tab moves on.
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "user"
    active.send_keys(DEMO_USER, Keys.TAB)
    browser.switch_to.active_element.send_keys(DEMO_PASSWORD, Keys.ENTER)
    wait_for(browser, EC.presence_of_element_located((By.ID, "jobs")))
    # The first Tab reaches the skip link.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    for path in ["/console/jobs", "/console/jobs/new", "/console/servers",
                 f"/console/jobs/{jobs['mixed-result']['id']}"]:
        browser.get(server.endpoint + path)
        unlabelled = browser.execute_script("""
            return Array.from(document.querySelectorAll('input:not([type=hidden]), select'))
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.id || e.name);""")
        assert unlabelled == [], f"{path}: {unlabelled}"
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        assert browser.find_elements(By.CSS_SELECTOR, "main h1"), path


@pytest.mark.parametrize("path", ["/console/jobs", "/console/servers", "/console/jobs/new"])
def test_readable_on_a_phone(browser, server, jobs, path):
    browser.set_window_size(390, 844)
    sign_in(browser, server, path=path)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    assert overflow <= 1, f"{path} scrolls sideways by {overflow}px"
    size = browser.execute_script(
        "return parseFloat(getComputedStyle(document.body).fontSize);")
    assert size >= 15


def test_a_job_whose_tasks_end_together_is_shown_finished(browser, server, jobs):
    """Changes that arrive while the page fetches an earlier one are not lost: each of these
    jobs' four tasks end within moments of each other, and the page must end FINISHED."""
    api = Api(server.endpoint)
    sign_in(browser, server)
    servers = ["sim-server-01", "sim-server-02", "sim-server-03", "sim-server-04"]
    for n in range(6):
        job = api.create_job(f"together-{n}", servers)
        browser.get(f"{server.endpoint}/console/jobs/{job['id']}")
        live = browser.find_element(By.ID, "live")
        wait_for(browser, lambda b: live.get_attribute("data-status") == "FINISHED", timeout=15)
        statuses = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#tasks tbody .st")]
        assert "PROCESSING" not in statuses, (n, statuses)


def switch_project(browser, name):
    Select(browser.find_element(By.ID, "project-select")).select_by_visible_text(name)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form.project button[type=submit]"))


def test_many_running_jobs_open_in_tabs_leave_the_console_working(browser, server, jobs):
    """A browser keeps six connections to a server: job pages open in many tabs must not
    hold them all with their streams."""
    stuck = jobs["stuck-on-node"]
    sign_in(browser, server, path=f"/console/jobs/{stuck['id']}")
    browser.set_page_load_timeout(15)
    for _ in range(6):
        browser.switch_to.new_window("tab")
        browser.get(f"{server.endpoint}/console/jobs/{stuck['id']}")
        assert text(browser, "h1") == "stuck-on-node"
    browser.switch_to.new_window("tab")
    browser.get(server.endpoint + "/console/servers")
    assert text(browser, "h1") == "Servers"
    via = []
    for handle in browser.window_handles[:-1]:
        browser.switch_to.window(handle)
        via.append(wait_for(browser, lambda b: b.find_element(By.ID, "live").get_attribute("data-via")))
    assert via.count("events") == 3 and via.count("polling") == 4, via


def test_a_job_page_that_no_longer_reaches_its_job_says_so(browser, server, jobs):
    """Another project chosen in another tab: the job's page is reloaded and says the job is
    out of reach there, rather than showing its last state for ever."""
    stuck = jobs["stuck-on-node"]
    sign_in(browser, server, user=TRAVELLER, password=TRAVELLER_PASSWORD)
    switch_project(browser, "demo")
    browser.get(f"{server.endpoint}/console/jobs/{stuck['id']}")
    first = browser.current_window_handle
    assert browser.find_element(By.ID, "live")
    browser.switch_to.new_window("tab")
    browser.get(server.endpoint + "/console/jobs")
    switch_project(browser, LONG_PROJECT)
    browser.switch_to.window(first)
    # (In that project the user may list jobs but not open them.)
    wait_for(browser, lambda b: words(b.find_element(By.TAG_NAME, "h1").text) == "Not allowed")
    assert not browser.find_elements(By.ID, "live")


def test_a_user_who_may_not_open_jobs_is_not_sent_to_them(browser, server, jobs):
    sign_in(browser, server, user=TRAVELLER, password=TRAVELLER_PASSWORD)
    switch_project(browser, LONG_PROJECT)
    follow(browser, browser.find_element(By.ID, "new-job"))
    Select(browser.find_element(By.ID, "template")).select_by_value("COMMON")
    follow(browser, browser.find_element(By.ID, "choose-template"))
    browser.find_element(By.ID, "name").send_keys("listed-not-opened")
    browser.find_element(By.ID, "spec-cmd").send_keys("true")
    servers = browser.find_elements(By.CSS_SELECTOR, "#servers input[type=checkbox]")
    servers[0].click()
    follow(browser, browser.find_element(By.ID, "create-job"))
    assert urlparse(browser.current_url).path == "/console/jobs"
    assert "id" in query_of(browser), "the list shows the new job"
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    assert [words(r.find_element(By.CSS_SELECTOR, "td:first-child").text).split(" ")[0]
            for r in rows] == ["listed-not-opened"]
    assert not browser.find_elements(By.CSS_SELECTOR, "#jobs tbody a"), "no link to a 403"


def test_keyboard_focus_stays_on_its_link_through_live_updates(browser, server, jobs):
    sign_in(browser, server)
    job = Api(server.endpoint).create_job("focus-kept", ["sim-server-01", "node-07"])
    browser.get(f"{server.endpoint}/console/jobs/{job['id']}")
    # (The page may be refreshing its tasks meanwhile: the link is found and focused at once.)
    sim = "#tasks tr[data-server='sim-server-01'] .st"
    href, status = browser.execute_script(
        "var link = document.querySelector(\"#tasks tr[data-server='node-07'] a\");"
        "link.focus(); return [link.href, document.querySelector(arguments[0]).textContent];",
        sim)
    assert words(status) == "PROCESSING", "the page changes after the focus is set"
    wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, sim).text == "SUCCESS")
    assert browser.switch_to.active_element.get_attribute("href") == href


def test_going_back_shows_the_filters_of_the_listed_view(browser, server, jobs):
    sign_in(browser, server)
    apply_filters(browser, name="batch")
    apply_filters(browser, name="BATCH-0", status="DELETED")
    browser.back()
    wait_for(browser, lambda b: query_of(b).get("name") == "batch")
    assert browser.find_element(By.ID, "f-name").get_attribute("value") == "batch"
    assert Select(browser.find_element(By.ID, "f-status")).first_selected_option \
        .get_attribute("value") == ""


def test_a_deleted_job_is_not_offered_for_deletion_again(browser, server, jobs):
    api = Api(server.endpoint)
    job = api.create_job("deleted-once", ["sim-server-01"])
    api.call("DELETE", "jobs", {"job_ids": [job["id"]]})
    sign_in(browser, server, path=f"/console/jobs/{job['id']}/delete")
    assert text(browser, "h1") == "Job deleted-once is deleted"
    assert not browser.find_elements(By.ID, "confirm-delete")


@pytest.mark.parametrize("path", ["/console/jobs", "/console/jobs/new?type=COMMON",
                                  "/console/templates", "/console/servers"])
def test_a_long_project_and_server_name_fold_on_a_small_phone(browser, server, jobs, path):
    browser.set_window_size(320, 700)
    sign_in(browser, server, user=TRAVELLER, password=TRAVELLER_PASSWORD, path=path)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    assert overflow <= 1, f"{path} scrolls sideways by {overflow}px"
