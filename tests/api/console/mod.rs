//! The web console over plain HTTP, as a browser talks to it: its headers (CSP, cookies),
//! sign-in and sign-out, CSRF tokens on every change (forged posts answer 403 and change
//! nothing), the read-only user's pages, and the API's messages on the create form. The
//! browser tests (tests/browser) drive the same pages in Chromium.

use std::time::{Duration, Instant};

use litejobs::iam;
use litejobs::store::{AuditFilter, AuditRecord};
use reqwest::header::{CONTENT_SECURITY_POLICY, SET_COOKIE};
use reqwest::StatusCode;

use crate::backend_tests;
use crate::helpers::{user_with_policy, TestApp};

mod client;

use client::{hidden, location, signed_in, Browser, PASSWORD};

#[tokio::test]
async fn every_console_answer_carries_a_strict_content_security_policy() {
    let app = TestApp::sqlite().await;
    let mut browser = Browser::new(&app);
    for path in [
        "/console/login",
        "/console/jobs",
        "/console/static/console.js",
        "/console/static/console.css",
        "/console/no-such-page",
    ] {
        let response = browser.get(path).await;
        let csp = response
            .headers()
            .get(CONTENT_SECURITY_POLICY)
            .unwrap_or_else(|| panic!("{path} has a CSP"))
            .to_str()
            .expect("ascii");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let (_, login) = browser.page("/console/login").await;
    assert!(!login.contains("<script>"), "no inline script");
    assert!(!login.contains("style="), "no inline style");
}

#[tokio::test]
async fn pages_send_a_stranger_to_sign_in_and_refuse_their_posts() {
    let app = TestApp::sqlite().await;
    let mut browser = Browser::new(&app);
    let response = browser.get("/console/jobs?status=FINISHED").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3DFINISHED"
    );
    let response = browser
        .post("/console/jobs", &[("name", "x"), ("type", "COMMON")])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, page) = browser.page("/console/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is no such page."), "{page}");
}

async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_revokes_the_token(app: TestApp) {
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/jobs");
    let session = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("litejobs_session="))
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP: the browser would drop it"
    );
    let token = browser.cookie("litejobs_session").expect("kept");
    assert_eq!(
        browser.cookie("litejobs_login"),
        None,
        "the sign-in cookie is spent"
    );

    // The session's token is an API token of alice in the project.
    let api = format!("{}/v1/{}/dev-servers/jobs", app.endpoint, app.project_id);
    let with_token = || {
        reqwest::Client::new()
            .get(&api)
            .header("x-auth-token", &token)
    };
    assert_eq!(with_token().send().await.expect("api").status(), 200);
    let (status, page) = browser.page("/console/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Sign out <span class=\"user\">alice</span>"),
        "{page}"
    );

    let csrf = hidden(&page, "csrf");
    let response = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/login?signed_out=1");
    assert_eq!(
        browser.cookie("litejobs_session"),
        None,
        "the cookie is cleared"
    );
    assert_eq!(with_token().send().await.expect("api").status(), 401);
    // Even a browser that kept the cookie is signed out.
    browser
        .cookies
        .push(("litejobs_session".to_string(), token.clone()));
    assert_eq!(browser.get("/console/jobs").await.status(), 303);
}

async fn forged_posts_answer_403_and_change_nothing(app: TestApp) {
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let mut other = signed_in(&app, "bob", iam::FULL_ACCESS).await;
    let job = app.create_job("kept", &["sim-server-01"]).await;
    let theirs = other.csrf().await;
    let ours = browser.csrf().await;
    assert_ne!(ours, theirs, "each session has its own token");
    let delete = format!("/console/jobs/{}/delete", job.id);
    for forged in [None, Some("0000".to_string()), Some(theirs)] {
        let mut form = vec![
            ("type", "COMMON"),
            ("name", "forged"),
            ("server", "sim-server-01"),
            ("spec.cmd", "rm -rf /"),
        ];
        if let Some(csrf) = &forged {
            form.push(("csrf", csrf));
        }
        let response = browser.post("/console/jobs", &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{forged:?}");
        let page = response.text().await.expect("body");
        assert!(page.contains("security token"), "{page}");
        let csrf = forged.as_deref().unwrap_or("");
        let response = browser.post(&delete, &[("csrf", csrf)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = browser.post("/console/logout", &[("csrf", csrf)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = browser.post("/console/project", &[("csrf", csrf)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let jobs = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(jobs.total, 1, "no job was created");
    let kept = app.admin.get_job(&job.id).await.expect("job");
    assert_ne!(kept.status, "DELETED", "the job was not deleted");
    assert_eq!(
        browser.page("/console/jobs").await.0,
        200,
        "still signed in"
    );

    // With the session's own token the same posts work.
    let response = browser
        .post(
            "/console/jobs",
            &[
                ("csrf", &ours),
                ("type", "COMMON"),
                ("name", "made"),
                ("server", "sim-server-01"),
                ("spec.cmd", "echo hi"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(location(&response).starts_with("/console/jobs/"));
    let response = browser.post(&delete, &[("csrf", &ours)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let deleted = app.admin.get_job(&job.id).await.expect("job");
    assert_eq!(deleted.status, "DELETED");
}

#[tokio::test]
async fn a_sign_in_post_without_its_form_token_is_refused() {
    let app = TestApp::sqlite().await;
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    let mut browser = Browser::new(&app);
    let fields = [("user", "alice"), ("password", PASSWORD), ("csrf", "guess")];
    let response = browser.post("/console/login", &fields).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    browser.page("/console/login").await;
    assert!(browser.cookie("litejobs_login").is_some());
    let response = browser.post("/console/login", &fields).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(browser.cookie("litejobs_session"), None);
}

#[tokio::test]
async fn a_wrong_password_is_answered_401_on_the_form_without_saying_which_part() {
    let app = TestApp::sqlite().await;
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    let mut browser = Browser::new(&app);
    let response = browser.sign_in("alice", "not-the-password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let wrong_password = response.text().await.expect("body");
    assert!(wrong_password.contains("The user name or password is wrong"));
    assert!(
        wrong_password.contains("value=\"alice\""),
        "the name is kept"
    );
    let response = browser.sign_in("nobody", "not-the-password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .text()
        .await
        .expect("body")
        .contains("The user name or password is wrong"));
    assert_eq!(browser.cookie("litejobs_session"), None);
}

/// A session whose project the user lost its grant in is over: its pages lead to the
/// sign-in form (not to a 403 with no way out), and its token is ended.
#[tokio::test]
async fn a_session_whose_grant_is_taken_away_leads_to_sign_in() {
    let app = TestApp::sqlite().await;
    let mut browser = signed_in(&app, "dora", iam::READ_ONLY).await;
    let token = browser.cookie("litejobs_session").expect("session");
    let user = app
        .store
        .find_user("dora")
        .await
        .expect("store")
        .expect("user");
    assert!(app
        .store
        .revoke(&user.id, &app.project_id, iam::READ_ONLY)
        .await
        .expect("revoke"));
    let response = browser.get("/console/jobs").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&response).starts_with("/console/login"),
        "{}",
        location(&response)
    );
    let hash = litejobs::http::auth::token_hash(&token);
    let now = litejobs::domain::now_ms();
    assert!(
        app.store
            .find_token(&hash, now)
            .await
            .expect("store")
            .is_none(),
        "the session's token is ended"
    );
}

#[tokio::test]
async fn sign_in_goes_back_only_to_console_pages() {
    let app = TestApp::sqlite().await;
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    for (next, lands) in [
        ("/console/servers", "/console/servers"),
        ("//evil.example/console/", "/console/jobs"),
        ("https://evil.example/", "/console/jobs"),
        ("/console/../openapi.json", "/console/jobs"),
        // A value no `Location` header can carry.
        ("/console/jobs\u{1}", "/console/jobs"),
        ("/console/jobs\r\nX-Evil: 1", "/console/jobs"),
    ] {
        let mut browser = Browser::new(&app);
        let (_, form) = browser.page("/console/login").await;
        let csrf = hidden(&form, "csrf");
        let fields = [
            ("csrf", csrf.as_str()),
            ("user", "alice"),
            ("password", PASSWORD),
            ("next", next),
        ];
        let response = browser.post("/console/login", &fields).await;
        assert_eq!(response.status(), 303, "{next:?}");
        assert_eq!(location(&response), lands, "{next:?}");
    }
}

async fn a_read_only_user_sees_no_controls_and_its_posts_answer_403(app: TestApp) {
    let job = app.create_job("seen", &["sim-server-01"]).await;
    let mut reader = signed_in(&app, "reader", iam::READ_ONLY).await;
    let (status, list) = reader.page("/console/jobs").await;
    assert_eq!(status, 200);
    assert!(list.contains(&job.id), "the reader sees the job");
    assert!(!list.contains("id=\"new-job\""), "no create control");
    let (status, page) = reader.page(&format!("/console/jobs/{}", job.id)).await;
    assert_eq!(status, 200);
    assert!(!page.contains("id=\"delete-job\""), "no delete control");
    let (status, templates) = reader.page("/console/templates").await;
    assert_eq!(status, 200);
    assert!(!templates.contains("/console/jobs/new"), "no create links");
    assert_eq!(reader.page("/console/jobs/new").await.0, 403);
    let delete = format!("/console/jobs/{}/delete", job.id);
    assert_eq!(reader.page(&delete).await.0, 403);

    let csrf = reader.csrf().await;
    let response = reader
        .post(
            "/console/jobs",
            &[
                ("csrf", &csrf),
                ("type", "COMMON"),
                ("name", "sneaky"),
                ("server", "sim-server-01"),
                ("spec.cmd", "echo"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let said = response.text().await.expect("body");
    assert!(said.contains("modelarts:devserverJob:create"), "{said}");
    let response = reader.post(&delete, &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 1);
    let kept = app.admin.get_job(&job.id).await.expect("job");
    assert_ne!(kept.status, "DELETED");
}

/// The create form carries a token of its own: the same form sent twice (a second click,
/// the answer reloaded) makes one job; sent again with other values, it says so.
#[tokio::test]
async fn a_create_form_sent_twice_makes_one_job() {
    let app = TestApp::sqlite().await;
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let (_, page) = browser.page("/console/jobs/new?type=COMMON").await;
    let csrf = hidden(&page, "csrf");
    let token = hidden(&page, "client_token");
    assert_eq!(token.len(), 32, "{page}");
    let form = |name: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.clone()),
            ("client_token", token.clone()),
            ("type", "COMMON".to_string()),
            ("name", name.to_string()),
            ("server", "sim-server-01".to_string()),
            ("spec.cmd", "echo once".to_string()),
        ]
    };
    let mut answers = Vec::new();
    for name in ["twice", "twice", "other"] {
        let fields = form(name);
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        answers.push(browser.post("/console/jobs", &pairs).await);
    }
    let [first, second, other] = <[reqwest::Response; 3]>::try_from(answers).expect("three");
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER)
    );
    assert_eq!(location(&first), location(&second), "the same job");
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let page = other.text().await.expect("body");
    assert!(page.contains("open New job for another one"), "{page}");
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 1);
}

#[tokio::test]
async fn the_create_form_shows_the_api_messages_next_to_their_fields() {
    let app = TestApp::sqlite().await;
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let csrf = browser.csrf().await;
    let cases = [
        (
            "bad name",
            "sim-server-01",
            "echo",
            "err-name",
            "name must match",
        ),
        (
            "ok",
            "sim-server-01",
            "",
            "err-spec-cmd",
            "items[0].spec.cmd",
        ),
        (
            "ok",
            "no-such-server",
            "echo",
            "err-servers",
            "unknown servers",
        ),
        ("ok", "", "echo", "err-servers", "server_ids must name"),
    ];
    for (name, server, cmd, field, message) in cases {
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("type", "COMMON"),
            ("name", name),
            ("spec.cmd", cmd),
        ];
        if !server.is_empty() {
            form.push(("server", server));
        }
        let response = browser.post("/console/jobs", &form).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name} {server}"
        );
        let page = response.text().await.expect("body");
        let at = page
            .find(&format!("id=\"{field}\""))
            .unwrap_or_else(|| panic!("{field} shown: {page}"));
        assert!(page[at..].contains(message), "{field}: {page}");
        assert!(
            page.contains(&format!("aria-describedby=\"{field}\"")),
            "the field points at its message"
        );
        assert!(
            page.contains(&format!("value=\"{name}\"")),
            "the draft is kept"
        );
    }
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 0);
}

#[tokio::test]
async fn the_list_answers_a_bad_filter_with_its_message_and_filters_by_each() {
    let app = TestApp::sqlite().await;
    let one = app.create_job("alpha-one", &["sim-server-01"]).await;
    app.create_job("beta-two", &["sim-server-01"]).await;
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let (status, page) = browser.page("/console/jobs?status=DONE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("id=\"filter-error\""), "{page}");
    let (status, page) = browser.page("/console/jobs?name=ALPHA&status=").await;
    assert_eq!(status, 200, "empty fields of the form are no filter");
    assert!(page.contains("1 job, showing 1–1"), "{page}");
    let (_, page) = browser.page(&format!("/console/jobs?id={}", one.id)).await;
    assert!(page.contains("1 job,"), "{page}");
    let (_, page) = browser.page("/console/jobs?visible=false").await;
    assert!(page.contains("0 jobs"), "{page}");
    let (_, page) = browser
        .page("/console/jobs?limit=1&sort_key=name&sort_dir=asc")
        .await;
    assert!(page.contains("2 jobs, showing 1–1"), "{page}");
    assert!(
        page.contains("alpha-one") && !page.contains("beta-two"),
        "{page}"
    );
    assert!(page.contains("Page 1 of 2"), "{page}");
    assert!(page.contains("id=\"next-page\""), "{page}");
}

#[tokio::test]
async fn a_job_of_another_project_is_not_found() {
    let app = TestApp::sqlite().await;
    let other = iam::create_project(app.store.as_ref(), "other", None)
        .await
        .expect("project");
    let outsider = user_with_policy(&app, "outsider", &other.id, iam::FULL_ACCESS).await;
    drop(outsider);
    let job = app.create_job("private", &["sim-server-01"]).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in("outsider", PASSWORD).await.status(), 303);
    let (status, _) = browser.page(&format!("/console/jobs/{}", job.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = browser.page("/console/jobs").await;
    assert!(!list.contains(&job.id));
    assert!(
        list.contains("<strong>other</strong>"),
        "the project is named"
    );
}

#[tokio::test]
async fn a_page_past_the_last_shows_the_total_alone() {
    let app = TestApp::sqlite().await;
    app.create_job("only", &["sim-server-01"]).await;
    let mut browser = signed_in(&app, "alice", iam::READ_ONLY).await;
    let (_, page) = browser.page("/console/jobs?offset=100").await;
    assert!(page.contains("1 job</p>"), "{page}");
    let (_, page) = browser.page("/console/jobs").await;
    assert!(page.contains("1 job, showing 1–1</p>"), "{page}");
}

/// The list's page sizes are the server's: with `--max-page-size 10` the list opens (10 a
/// page) and offers no larger size; a size the URL asks for is shown as chosen.
#[tokio::test]
async fn the_list_pages_within_the_servers_largest_page() {
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| c.max_page_size = 10)
        .await
        .expect("sqlite");
    for n in 0..12 {
        app.create_job(&format!("j{n}"), &["sim-server-01"]).await;
    }
    let mut browser = signed_in(&app, "alice", iam::READ_ONLY).await;
    let (status, page) = browser.page("/console/jobs").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("12 jobs, showing 1–10</p>"), "{page}");
    assert!(
        page.contains(r#"<option value="10" selected>10</option>"#),
        "{page}"
    );
    assert!(!page.contains(r#"<option value="20""#), "{page}");
    let (status, page) = browser.page("/console/jobs?limit=7").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"<option value="7" selected>7</option>"#),
        "{page}"
    );
}

/// The navigation offers only the pages the user may see; times say their zone.
#[tokio::test]
async fn the_navigation_offers_the_pages_the_user_may_see() {
    let app = TestApp::sqlite().await;
    app.create_job("timed", &["sim-server-01"]).await;
    let list_only = litejobs::store::PolicyRecord {
        name: "list-only".into(),
        actions: vec!["modelarts:devserverJob:list".into()],
        builtin: false,
    };
    app.store.upsert_policy(&list_only).await.expect("policy");
    let mut browser = signed_in(&app, "lister", "list-only").await;
    let (status, page) = browser.page("/console/jobs").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"href="/console/servers""#), "{page}");
    assert!(!page.contains(r#"href="/console/templates""#), "{page}");
    assert!(page.contains(" UTC</time>"), "{page}");
    let mut reader = signed_in(&app, "reader", iam::READ_ONLY).await;
    let (_, page) = reader.page("/console/jobs").await;
    assert!(page.contains(r#"href="/console/templates""#), "{page}");
}

/// In strict mode a create's `visible` is ignored: the form offers no such choice.
#[tokio::test]
async fn the_strict_create_form_offers_no_visibility() {
    for strict in [false, true] {
        let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| c.strict = strict)
            .await
            .expect("sqlite");
        let mut browser = signed_in(&app, "maker", iam::FULL_ACCESS).await;
        let (status, page) = browser.page("/console/jobs/new?type=COMMON").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page.contains(r#"name="visible""#),
            !strict,
            "strict {strict}: {page}"
        );
    }
}

#[tokio::test]
async fn a_user_of_two_projects_switches_between_them() {
    let app = TestApp::sqlite().await;
    let other = iam::create_project(app.store.as_ref(), "zeta", None)
        .await
        .expect("project");
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    let alice = app
        .store
        .find_user("alice")
        .await
        .expect("find")
        .expect("alice");
    app.store
        .grant(&alice.id, &other.id, iam::READ_ONLY)
        .await
        .expect("grant");
    let job = app.create_job("in-default", &["sim-server-01"]).await;
    let mut browser = Browser::new(&app);
    browser.sign_in("alice", PASSWORD).await;
    let (_, page) = browser.page("/console/jobs").await;
    assert!(page.contains(&job.id), "the first project by name: default");
    assert!(page.contains("id=\"project-select\""), "{page}");
    let old = browser.cookie("litejobs_session").expect("session");
    let csrf = hidden(&page, "csrf");
    let response = browser
        .post(
            "/console/project",
            &[("csrf", &csrf), ("project", &other.id)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, page) = browser.page("/console/jobs").await;
    assert!(!page.contains(&job.id), "{page}");
    assert!(!page.contains("id=\"new-job\""), "read-only there");
    assert_ne!(browser.cookie("litejobs_session"), Some(old));
    // The old session's end is in the audit trail, beside the new one's start.
    let revoked = audited(&app, "token.revoke", "alice", 1).await.remove(0);
    assert_eq!(revoked.project_id.as_deref(), Some(app.project_id.as_str()));
    assert_eq!(revoked.outcome, "success");
    audited(&app, "token.issue", "alice", 2).await;
    // A project without a grant is refused.
    let csrf = hidden(&page, "csrf");
    let response = browser
        .post("/console/project", &[("csrf", &csrf), ("project", "nope")])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_servers_page_counts_running_tasks_and_a_task_page_shows_its_state() {
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |config| {
        config.simulate_delay = std::time::Duration::from_secs(3600);
    })
    .await
    .expect("sqlite");
    let job = app
        .create_job("long", &["sim-server-01", "sim-server-02"])
        .await;
    app.create_job("longer", &["sim-server-01"]).await;
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let (status, page) = browser.page("/console/servers").await;
    assert_eq!(status, 200);
    let row = |server: &str| {
        let at = page
            .find(&format!("data-server=\"{server}\""))
            .expect("row");
        page[at..].split("</tr>").next().unwrap_or("").to_string()
    };
    assert!(
        row("sim-server-01").contains("class=\"num running\">2<"),
        "{page}"
    );
    assert!(
        row("sim-server-02").contains("class=\"num running\">1<"),
        "{page}"
    );
    assert!(row("sim-server-01").contains("online"));
    let task = &job.tasks[0];
    let (status, page) = browser
        .page(&format!("/console/jobs/{}/tasks/{}", job.id, task.id))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("data-status=\"PROCESSING\""), "{page}");
    assert!(page.contains("The agent sent no output for this task."));
}

backend_tests!(
    sign_in_sets_a_strict_http_only_cookie_and_sign_out_revokes_the_token,
    forged_posts_answer_403_and_change_nothing,
    a_read_only_user_sees_no_controls_and_its_posts_answer_403,
);

/// The records of `action` by `user` once there are `n` of them (within 10 s), newest first.
async fn audited(app: &TestApp, action: &str, user: &str, n: usize) -> Vec<AuditRecord> {
    let filter = AuditFilter {
        action: Some(action.to_string()),
        user: Some(user.to_string()),
        limit: 100,
        ..AuditFilter::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = app.store.list_audit(&filter).await.expect("audit");
        if found.len() >= n || Instant::now() > deadline {
            assert_eq!(found.len(), n, "{action}: {found:?}");
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn changes_made_in_the_console_are_in_the_audit_trail() {
    let app = TestApp::sqlite().await;
    let mut browser = signed_in(&app, "alice", iam::FULL_ACCESS).await;
    let csrf = browser.csrf().await;
    let create = [
        ("csrf", csrf.as_str()),
        ("type", "COMMON"),
        ("name", "audited"),
        ("server", "sim-server-01"),
        ("spec.cmd", "echo"),
    ];
    let response = browser.post("/console/jobs", &create).await;
    let job_id = location(&response)
        .trim_start_matches("/console/jobs/")
        .to_string();
    let forged = browser.post("/console/jobs", &create[1..]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let delete = format!("/console/jobs/{job_id}/delete");
    browser.post(&delete, &[("csrf", &csrf)]).await;
    browser.post("/console/logout", &[("csrf", &csrf)]).await;

    let issued = audited(&app, "token.issue", "alice", 1).await;
    assert_eq!(issued[0].outcome, "success");
    assert_eq!(
        issued[0].project_id.as_deref(),
        Some(app.project_id.as_str())
    );
    let creates = audited(&app, "job.create", "alice", 2).await;
    let outcomes: Vec<(&str, u16)> = creates
        .iter()
        .map(|r| (r.outcome.as_str(), r.status))
        .collect();
    assert!(outcomes.contains(&("success", 303)), "{creates:?}");
    assert!(outcomes.contains(&("denied", 403)), "{creates:?}");
    let made = creates.iter().find(|r| r.status == 303).expect("made");
    assert_eq!(made.resources, vec![job_id.clone()]);
    let deletes = audited(&app, "job.delete", "alice", 1).await;
    assert_eq!(deletes[0].resources, vec![job_id]);
    assert_eq!(
        audited(&app, "token.revoke", "alice", 1).await[0].outcome,
        "success"
    );
}

#[tokio::test]
async fn two_open_sign_in_pages_both_sign_in() {
    let app = TestApp::sqlite().await;
    user_with_policy(&app, "alice", &app.project_id, iam::FULL_ACCESS).await;
    let mut browser = Browser::new(&app);
    let (_, first) = browser.page("/console/login").await;
    let (_, second) = browser.page("/console/login").await;
    let token = hidden(&first, "csrf");
    assert_eq!(
        token,
        hidden(&second, "csrf"),
        "the browser's sign-in token is kept"
    );
    let fields = [
        ("csrf", token.as_str()),
        ("user", "alice"),
        ("password", PASSWORD),
    ];
    let response = browser.post("/console/login", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // The second page's form, sent after the first signed in, has a spent token: it is
    // given again, fresh, saying why, and that one signs in.
    let response = browser.post("/console/login", &fields).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let again = response.text().await.expect("page");
    assert!(again.contains("no longer valid"), "{again}");
    let fresh = hidden(&again, "csrf");
    assert_ne!(fresh, token);
    let fields = [
        ("csrf", fresh.as_str()),
        ("user", "alice"),
        ("password", PASSWORD),
    ];
    let response = browser.post("/console/login", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // Another browser's token is no good here.
    let mut other = Browser::new(&app);
    let (_, theirs) = other.page("/console/login").await;
    assert_ne!(hidden(&theirs, "csrf"), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_page_shows_the_output_its_agent_sent_escaped() {
    let app = TestApp::sqlite().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let config = litejobs::agent::AgentConfig {
        server_id: "node-1".into(),
        name: "node-1-host".into(),
        concurrency: 1,
        poll_wait_secs: 1,
        heartbeat: Duration::from_millis(500),
        output_tail: 64 * 1024,
        kill_grace: Duration::from_secs(1),
    };
    let agent = tokio::spawn(litejobs::agent::run(
        app.admin.clone(),
        config,
        stop.clone(),
    ));
    let mut request = crate::helpers::job_request("shows-output", &["node-1"]);
    let cmd = "echo '<script>alert(1)</script>'; echo line-two";
    request.items[0].spec = Some([("cmd".to_string(), cmd.to_string())].into());
    let deadline = Instant::now() + Duration::from_secs(10);
    let job = loop {
        // The agent registers its server when it first connects.
        match app.admin.create_job(&request, None).await {
            Ok(job) => break job,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the agent's server never registered: {e}"),
        }
    };
    let done = app
        .wait_for_status(&job.id, "FINISHED", Duration::from_secs(20))
        .await;
    stop.cancel();
    agent.await.expect("agent").expect("agent ran");

    let mut browser = signed_in(&app, "alice", iam::READ_ONLY).await;
    let task = &done.tasks[0];
    let (status, page) = browser
        .page(&format!("/console/jobs/{}/tasks/{}", job.id, task.id))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("data-status=\"SUCCESS\""), "{page}");
    let output = page.find("id=\"task-output\"").expect("the output");
    let shown = &page[output..];
    assert!(
        shown.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{shown}"
    );
    assert!(shown.contains("line-two"), "{shown}");
    assert!(!page.contains("<script>alert"), "escaped everywhere");
}

/// An error page in a session has the navigation, the project switch and the sign-out of
/// every page: a project whose jobs the user may not list is no dead end.
#[tokio::test]
async fn an_error_page_in_a_session_leads_elsewhere() {
    let app = TestApp::sqlite().await;
    // "alpha" comes first by name: the project signing in lands in.
    let alpha = iam::create_project(app.store.as_ref(), "alpha", None)
        .await
        .expect("project");
    app.store
        .upsert_policy(&litejobs::store::PolicyRecord {
            name: "getonly".into(),
            actions: vec!["modelarts:devserverJob:get".into()],
            builtin: false,
        })
        .await
        .expect("policy");
    user_with_policy(&app, "gina", &app.project_id, iam::FULL_ACCESS).await;
    let gina = app
        .store
        .find_user("gina")
        .await
        .expect("find")
        .expect("gina");
    app.store
        .grant(&gina.id, &alpha.id, "getonly")
        .await
        .expect("grant");
    let mut browser = Browser::new(&app);
    browser.sign_in("gina", PASSWORD).await;
    let (status, page) = browser.page("/console/jobs").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    for way_out in ["id=\"project-select\"", "id=\"sign-out\""] {
        assert!(page.contains(way_out), "{way_out}: {page}");
    }
    // (No link to a page this project's grant does not let her see.)
    assert!(!page.contains("href=\"/console/servers\""), "{page}");
    let (status, page) = browser.page("/console/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("id=\"sign-out\""), "{page}");
    // A stranger's error page has none of it.
    let (status, page) = Browser::new(&app).page("/console/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.contains("id=\"sign-out\""), "{page}");
}
