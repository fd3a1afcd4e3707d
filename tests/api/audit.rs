//! The audit trail, on both backends: each changing request and each failed authentication
//! leaves exactly one record with the right fields; administration commands record
//! themselves; `audit list` filters; secrets appear nowhere.

use std::time::{Duration, Instant};

use litejobs::store::{AuditFilter, AuditRecord};
use litejobs::wire::{AgentRegistration, AgentResult};
use reqwest::Method;

use crate::backend_tests;
use crate::helpers::{job_request, user_with_policy, TestApp};

/// The records of `action` once there are `n` of them (within 10 s), newest first.
async fn records(app: &TestApp, action: &str, n: usize) -> Vec<AuditRecord> {
    let filter = AuditFilter {
        action: Some(action.to_string()),
        limit: 1000,
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

fn request_id(answer: &litejobs::client::RawResponse) -> String {
    answer
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_string()
}

async fn every_change_and_failed_authentication_is_recorded_once(app: TestApp) {
    let admin_key = app.credentials.access_key.clone();
    // A create and a delete.
    let created = app
        .admin_send(
            Method::POST,
            "/dev-servers/jobs",
            &[],
            Some(serde_json::to_value(job_request("audited", &["sim-server-01"])).expect("json")),
        )
        .await;
    assert_eq!(created.status, 200);
    let job_id = created.json()["id"].as_str().expect("id").to_string();
    let deleted = app
        .admin_send(
            Method::DELETE,
            "/dev-servers/jobs",
            &[],
            Some(serde_json::json!({"job_ids": [job_id]})),
        )
        .await;
    assert_eq!(deleted.status, 200);
    let [create] = records(&app, "job.create", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(create.resources, std::slice::from_ref(&job_id));
    assert_eq!(create.user_name, "admin");
    assert_eq!(create.access_key.as_deref(), Some(admin_key.as_str()));
    assert_eq!(create.project_id.as_deref(), Some(app.project_id.as_str()));
    assert_eq!((create.outcome.as_str(), create.status), ("success", 200));
    assert_eq!(create.source, "127.0.0.1");
    assert_eq!(create.request_id, request_id(&created));
    let [delete] = records(&app, "job.delete", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(delete.resources, std::slice::from_ref(&job_id));
    assert_eq!(delete.request_id, request_id(&deleted));

    // A denied create: a read-only user.
    let reader =
        user_with_policy(&app, "reader", &app.project_id, "ModelArts ReadOnlyAccess").await;
    let denied = reader
        .create_job(&job_request("nope", &["sim-server-01"]), None)
        .await;
    assert!(denied.is_err());
    let both = records(&app, "job.create", 2).await;
    let refused = &both[0];
    assert_eq!(
        (
            refused.user_name.as_str(),
            refused.outcome.as_str(),
            refused.status
        ),
        ("reader", "denied", 403)
    );
    assert_eq!(refused.error_code.as_deref(), Some("ModelArts.0105"));

    // A failed authentication: the key it named, and no user.
    let forged = litejobs::client::Client::new(
        &app.endpoint,
        &app.project_id,
        litejobs::client::ClientAuth::AkSk(litejobs::sign::Credentials {
            access_key: admin_key.clone(),
            secret_key: "not-the-secret".to_string(),
        }),
    )
    .expect("client");
    assert!(forged.list_jobs(&[]).await.is_err());
    let [failed] = records(&app, "authenticate", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(
        (failed.user_id.as_str(), failed.user_name.as_str()),
        ("unknown", "unknown")
    );
    assert_eq!(failed.access_key.as_deref(), Some(admin_key.as_str()));
    assert_eq!((failed.outcome.as_str(), failed.status), ("denied", 401));
    assert_eq!(failed.error_code.as_deref(), Some("APIG.0301"));

    // Tokens: issued with a password, revoked by presenting them.
    let issued = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .json(&serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "reader", "password": "pw-of-the-user", "domain": {"name": "reader"}}}},
            "scope": {"project": {"id": app.project_id}}}}))
        .send()
        .await
        .expect("token");
    assert_eq!(issued.status(), 201);
    let token = issued
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .expect("token")
        .to_string();
    let revoked = reqwest::Client::new()
        .delete(format!("{}/v3/auth/tokens", app.endpoint))
        .header("X-Auth-Token", &token)
        .header("X-Subject-Token", &token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 204);
    let [issue] = records(&app, "token.issue", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(
        (issue.user_name.as_str(), issue.project_id.as_deref()),
        ("reader", Some(app.project_id.as_str()))
    );
    let [revoke] = records(&app, "token.revoke", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(revoke.user_name, "reader");

    // The agent: its server's registration and a task's report.
    app.admin
        .register_server("node-a", &AgentRegistration::default())
        .await
        .expect("register");
    let job = app.create_job("for-the-agent", &["node-a"]).await;
    let lease = app.admin.lease_tasks("node-a", 0, 1).await.expect("lease");
    let task = &lease.tasks[0];
    let result = AgentResult {
        status: "SUCCESS".to_string(),
        message: "done".to_string(),
        lease_epoch: Some(task.lease_epoch),
    };
    app.admin
        .report_result("node-a", &task.task_id, &result)
        .await
        .expect("report");
    let [register] = records(&app, "agent.register", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(register.resources, ["node-a"]);
    let [report] = records(&app, "agent.report", 1)
        .await
        .try_into()
        .expect("one");
    assert_eq!(
        report.resources,
        ["node-a".to_string(), task.task_id.clone()]
    );
    // Reads and the agent's leases and heartbeats are not changes worth a record.
    assert_eq!(job.tasks.len(), 1);
    let all = app
        .store
        .list_audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .expect("all");
    let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
    assert!(
        !actions
            .iter()
            .any(|a| a.contains("lease") || a.contains("list")),
        "{actions:?}"
    );

    // No secret anywhere in the trail.
    let text = serde_json::to_string(&all).expect("json");
    for secret in [
        app.credentials.secret_key.as_str(),
        token.as_str(),
        "pw-of-the-user",
    ] {
        assert!(!text.contains(secret), "a secret in the audit trail");
    }
    // Nor in the database's files (SQLite): keys are sealed, tokens and passwords hashed.
    if let Some(path) = litejobs::store::sqlite_file(&app.database_url) {
        let mut bytes = std::fs::read(&path).expect("database file");
        bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
        let haystack = String::from_utf8_lossy(&bytes);
        for secret in [
            app.credentials.secret_key.as_str(),
            token.as_str(),
            "pw-of-the-user",
        ] {
            assert!(!haystack.contains(secret), "a secret in the database file");
        }
    }
    // The trail is no API: a reader (or anyone) finds no route to it.
    let r = app.admin_send(Method::GET, "/audit", &[], None).await;
    assert_eq!(r.status, 404);
}

/// What a refused client sent is kept to a bounded length: an access key id of 30,000
/// characters and a path id of 10,000 cost a record no more than a few hundred bytes.
async fn a_refused_request_s_text_is_kept_clipped(app: TestApp) {
    let (key, id) = ("K".repeat(30_000), "j".repeat(10_000));
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/v1/{}/dev-servers/jobs/{id}",
            app.endpoint, app.project_id
        ))
        .header(
            "Authorization",
            format!(
                "SDK-HMAC-SHA256 Access={key}, SignedHeaders=host;x-sdk-date, Signature={}",
                "0".repeat(64)
            ),
        )
        .header("X-Sdk-Date", "20261207T000000Z")
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 401);
    let [failed] = records(&app, "authenticate", 1)
        .await
        .try_into()
        .expect("one");
    let clipped = |text: &str, of: &str| {
        assert_eq!(text.chars().count(), litejobs::audit::MAX_FIELD_CHARS + 1);
        assert!(text.ends_with('…') && of.starts_with(text.trim_end_matches('…')));
    };
    clipped(failed.access_key.as_deref().expect("the key named"), &key);
    clipped(&failed.resources[0], &id);
}

backend_tests!(
    every_change_and_failed_authentication_is_recorded_once,
    a_refused_request_s_text_is_kept_clipped,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_record_themselves_and_audit_list_filters() {
    let app = TestApp::sqlite().await;
    let exe = env!("CARGO_BIN_EXE_litejobs");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(exe)
            .args(args)
            .args(["--database-url", &app.database_url])
            .env("USER", "operator-jane")
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&[
        "iam",
        "user",
        "create",
        "bob",
        "--password",
        "secret-of-bob-1",
    ]);
    run(&[
        "iam",
        "grant",
        "bob",
        &app.project_id,
        "ModelArts ReadOnlyAccess",
    ]);
    run(&["iam", "user", "list"]);
    // A failed authentication through the API.
    let anonymous = reqwest::get(format!(
        "{}/v1/{}/dev-servers/jobs",
        app.endpoint, app.project_id
    ))
    .await
    .expect("answer");
    assert_eq!(anonymous.status(), 401);
    records(&app, "authenticate", 1).await;

    let listed: Vec<AuditRecord> =
        serde_json::from_str(&run(&["audit", "list", "--since", "1h", "-o", "json"]))
            .expect("json");
    let actions: Vec<&str> = listed.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["authenticate", "iam.grant", "iam.user.create"]);
    let create = &listed[2];
    assert_eq!(
        (
            create.user_name.as_str(),
            create.source.as_str(),
            create.outcome.as_str()
        ),
        ("operator-jane", "cli", "success")
    );
    assert_eq!(create.resources, ["bob"]);
    let denied: Vec<AuditRecord> = serde_json::from_str(&run(&[
        "audit",
        "list",
        "--outcome",
        "denied",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].user_id, "unknown");
    let by_user = run(&["audit", "list", "--user", "operator-jane"]);
    assert!(by_user.contains("iam.user.create") && !by_user.contains("authenticate"));
    // A project by its name, as by its id.
    let by_id = run(&["audit", "list", "--project", &app.project_id, "-o", "json"]);
    assert!(by_id.contains("authenticate"), "{by_id}");
    assert_eq!(
        run(&["audit", "list", "--project", "default", "-o", "json"]),
        by_id
    );
    // A project or user that is none is a mistake said as one, not an empty trail.
    for (flag, value) in [("--project", "no-such-team"), ("--user", "no-such-user")] {
        let refused = std::process::Command::new(exe)
            .args([
                "audit",
                "list",
                flag,
                value,
                "--database-url",
                &app.database_url,
            ])
            .output()
            .expect("runs");
        assert_eq!(refused.status.code(), Some(1), "{flag}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains(&format!("unknown {} {value}", &flag[2..])),
            "{said}"
        );
    }
    // Without $USER or $LOGNAME (cron, systemd), the name of the process's uid.
    let quiet = std::process::Command::new(exe)
        .args([
            "iam",
            "user",
            "create",
            "carl",
            "--database-url",
            &app.database_url,
        ])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("runs");
    assert!(quiet.status.success());
    let uid = nix::unistd::Uid::current();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    let listed: Vec<AuditRecord> = serde_json::from_str(&run(&[
        "audit",
        "list",
        "--action",
        "iam.user.create",
        "-o",
        "json",
    ]))
    .expect("json");
    let carl = listed
        .iter()
        .find(|r| r.resources == ["carl"])
        .expect("carl's record");
    assert_eq!(carl.user_name, name);
    // The password given on the command line is in no record.
    let everything = run(&["audit", "list", "-o", "json"]);
    assert!(!everything.contains("secret-of-bob-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_audit_nothing_is_recorded() {
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| c.no_audit = true)
        .await
        .expect("sqlite");
    app.create_job("unrecorded", &["sim-server-01"]).await;
    let anonymous = app
        .raw(
            Method::GET,
            &format!("/v1/{}/dev-servers/jobs", app.project_id),
        )
        .await;
    assert_eq!(anonymous.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = app
        .store
        .list_audit(&AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert!(all.is_empty(), "{all:?}");
}

/// While the database cannot be reached the trail's records wait for it, longer than the
/// few tries a batch the database refuses gets (PostgreSQL: connections refused for a while).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_wait_out_an_unreachable_database() {
    use sqlx::Connection;
    let Some(database) = litejobs::testkit::test_database().await else {
        return;
    };
    let store = litejobs::store::open(&database.url).await.expect("open");
    let (log, writer) = litejobs::audit::AuditLog::start(store.clone());
    let mut admin = sqlx::PgConnection::connect(&litejobs::testkit::pg_admin_url())
        .await
        .expect("admin connection");
    let name = database.name().to_string();
    let allow = |yes: bool| format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {yes}");
    sqlx::query(&allow(false))
        .execute(&mut admin)
        .await
        .expect("refuse");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .expect("end its sessions");
    log.record(AuditRecord {
        at: litejobs::domain::now_ms(),
        project_id: None,
        user_id: "cli".into(),
        user_name: "during-the-outage".into(),
        access_key: None,
        action: "iam.user.create".into(),
        resources: vec!["x".into()],
        source: "cli".into(),
        request_id: "r1".into(),
        outcome: "success".into(),
        status: 0,
        error_code: None,
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    sqlx::query(&allow(true))
        .execute(&mut admin)
        .await
        .expect("allow");
    let filter = AuditFilter {
        user: Some("during-the-outage".into()),
        limit: 10,
        ..AuditFilter::default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if store
            .list_audit(&filter)
            .await
            .is_ok_and(|found| found.len() == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the record was lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(log);
    writer.await.expect("the writer ends");
}
