//! The node agent end to end: it registers its server, runs the tasks of real jobs with a
//! shell, and the jobs finish with the commands' outcomes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litejobs::agent::{self, AgentConfig, Tail};
use litejobs::wire::{AgentResult, JobCreateRequest, JobItem};
use reqwest::Method;
use tokio_util::sync::CancellationToken;

use crate::backend_tests;
use crate::helpers::{user_with_policy, TestApp};
use litejobs::client::ClientError;

fn shell_job(name: &str, servers: &[&str], cmd: &str) -> JobCreateRequest {
    JobCreateRequest {
        name: name.into(),
        description: None,
        server_ids: servers.iter().map(|s| s.to_string()).collect(),
        job_type: "COMMON".into(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: "COMMON".into(),
            spec: Some(BTreeMap::from([("cmd".to_string(), cmd.to_string())])),
        }],
        visible: None,
    }
}

fn start_agent(
    app: &TestApp,
    server_id: &str,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let config = AgentConfig {
        server_id: server_id.into(),
        name: format!("{server_id}-host"),
        concurrency: 2,
        poll_wait_secs: 1,
        heartbeat: Duration::from_millis(500),
        output_tail: 64 * 1024,
        kill_grace: Duration::from_secs(1),
    };
    tokio::spawn(agent::run(app.admin.clone(), config, stop.clone()))
}

async fn wait_registered(app: &TestApp, ids: &[&str]) {
    let project = litejobs::domain::ProjectId::parse(&app.project_id).expect("project");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let servers = app.store.list_servers(&project).await.expect("servers");
        if ids
            .iter()
            .all(|id| servers.iter().any(|s| s.id == *id && s.kind == "agent"))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_commands_and_report_outcomes() {
    let app = TestApp::sqlite().await;
    let stop = CancellationToken::new();
    let a = start_agent(&app, "node-1", &stop);
    let b = start_agent(&app, "node-2", &stop);
    wait_registered(&app, &["node-1", "node-2"]).await;

    let ok = app
        .admin
        .create_job(
            &shell_job(
                "greet",
                &["node-1", "node-2"],
                "echo hello-from-agent; echo $((6*7))",
            ),
            None,
        )
        .await
        .expect("create");
    let done = app
        .wait_for_status(&ok.id, "FINISHED", Duration::from_secs(20))
        .await;
    assert_eq!(done.abnormal_count, 0);
    for task in &done.tasks {
        assert_eq!(task.status, "SUCCESS", "{task:?}");
        assert!(
            task.message.contains("hello-from-agent") && task.message.contains("42"),
            "{task:?}"
        );
    }
    assert_eq!(
        done.tasks
            .iter()
            .find(|t| t.server_id == "node-1")
            .map(|t| t.server_name.as_str()),
        Some("node-1-host")
    );

    let bad = app
        .admin
        .create_job(
            &shell_job("fail", &["node-1"], "echo oops >&2; exit 3"),
            None,
        )
        .await
        .expect("create");
    let done = app
        .wait_for_status(&bad.id, "FINISHED", Duration::from_secs(20))
        .await;
    assert_eq!(done.abnormal_count, 1);
    assert_eq!(done.tasks[0].status, "FAILED");
    assert!(
        done.tasks[0].message.contains("oops"),
        "{:?}",
        done.tasks[0]
    );

    stop.cancel();
    a.await.expect("agent a").expect("agent a ran");
    b.await.expect("agent b").expect("agent b ran");
}

/// A stopped command has the agent's grace (one second here) to clean up, though the
/// template runs it in a shell of its own that ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_jobs_command_has_its_grace_to_clean_up() {
    let app = TestApp::sqlite().await;
    let stop = CancellationToken::new();
    let agent = start_agent(&app, "node-1", &stop);
    wait_registered(&app, &["node-1"]).await;
    let trail = app.dir.path().join("trail.txt");
    let file = trail.display();
    let cmd = format!(
        "trap 'echo got-term >> {file}; sleep 0.3; echo cleanup-done >> {file}; exit 0' TERM; \
         echo started >> {file}; sleep 1000 & wait"
    );
    let job = app
        .admin
        .create_job(&shell_job("graceful", &["node-1"], &cmd), None)
        .await
        .expect("create");
    let read = || std::fs::read_to_string(&trail).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !read().contains("started") {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.admin
        .delete_jobs(std::slice::from_ref(&job.id))
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !read().contains("cleanup-done") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command was cut off: {:?}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    agent.await.expect("agent").expect("agent ran");
}

fn result(status: &str, message: &str, lease_epoch: Option<i64>) -> AgentResult {
    AgentResult {
        status: status.into(),
        message: message.into(),
        lease_epoch,
    }
}

fn api_status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(ClientError::Api { status, .. }) => status,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

async fn results_must_come_from_the_lease_holder(app: TestApp) {
    let r = app
        .admin_send(Method::POST, "/agent/servers/node-9/lease", &[], None)
        .await;
    assert_eq!(r.status, 404, "unregistered servers lease nothing");
    for server in ["node-9", "node-10"] {
        let r = app
            .admin_send(
                Method::PUT,
                &format!("/agent/servers/{server}"),
                &[],
                Some(serde_json::json!({"name": server})),
            )
            .await;
        assert_eq!(r.status, 204);
    }
    let job = app
        .admin
        .create_job(&shell_job("x", &["node-9"], "true"), None)
        .await
        .expect("create");
    let unleased = app
        .admin
        .create_job(&shell_job("y", &["node-10"], "true"), None)
        .await
        .expect("create");
    let lease = app.admin.lease_tasks("node-9", 0, 4).await.expect("lease");
    assert_eq!(lease.tasks.len(), 1);
    assert_eq!(lease.tasks[0].job_id, job.id);
    // Leased tasks are not handed out twice.
    assert!(app
        .admin
        .lease_tasks("node-9", 0, 4)
        .await
        .expect("lease")
        .tasks
        .is_empty());
    let task = &lease.tasks[0];
    let held = Some(task.lease_epoch);
    let report =
        |client: &litejobs::client::Client, server: &str, task_id: &str, r: AgentResult| {
            let (client, server, task_id) =
                (client.clone(), server.to_string(), task_id.to_string());
            async move { client.report_result(&server, &task_id, &r).await }
        };
    let status = api_status(
        report(
            &app.admin,
            "node-9",
            &task.task_id,
            result("PROCESSING", "", held),
        )
        .await,
    );
    assert_eq!(status, 400, "only SUCCESS or FAILED end a task");
    // Another server, another user, or an earlier lease of the task cannot end it.
    let status = api_status(
        report(
            &app.admin,
            "node-10",
            &task.task_id,
            result("FAILED", "", held),
        )
        .await,
    );
    assert_eq!(status, 409, "a report from another server");
    let other =
        user_with_policy(&app, "other-agent", &app.project_id, "ModelArts FullAccess").await;
    let status =
        api_status(report(&other, "node-9", &task.task_id, result("FAILED", "", held)).await);
    assert_eq!(
        status, 409,
        "a report from a user who does not hold the lease"
    );
    let earlier = Some(task.lease_epoch - 1);
    let status = api_status(
        report(
            &app.admin,
            "node-9",
            &task.task_id,
            result("FAILED", "", earlier),
        )
        .await,
    );
    assert_eq!(status, 409, "a report of another lease");
    // A task never leased is ended by no report.
    let detail = app.admin.get_job(&unleased.id).await.expect("job");
    let status = api_status(
        report(
            &app.admin,
            "node-10",
            &detail.tasks[0].id,
            result("SUCCESS", "", None),
        )
        .await,
    );
    assert_eq!(status, 409, "a report of a task nobody leased");
    let detail = app.admin.get_job(&job.id).await.expect("job");
    assert_eq!(
        (detail.status.as_str(), detail.tasks[0].status.as_str()),
        ("PROCESSING", "PROCESSING")
    );

    // The holder's report ends it; output holding NUL bytes is kept (PostgreSQL's text
    // cannot hold them: each becomes U+FFFD).
    report(
        &app.admin,
        "node-9",
        &task.task_id,
        result("SUCCESS", "done\0and\0more", held),
    )
    .await
    .expect("reported");
    let status = api_status(
        report(
            &app.admin,
            "node-9",
            &task.task_id,
            result("FAILED", "", held),
        )
        .await,
    );
    assert_eq!(status, 409, "a task reports once");
    let detail = app.admin.get_job(&job.id).await.expect("job");
    assert_eq!(
        (detail.status.as_str(), detail.abnormal_count),
        ("FINISHED", 0)
    );
    assert_eq!(detail.tasks[0].message, "done\u{FFFD}and\u{FFFD}more");
}

/// `wait` and `max` of a lease request are checked as the OpenAPI document states them:
/// `wait` a whole number of seconds within int64 (of which at most 20 are waited), `max`
/// 1 to 64. They are checked before the server is looked up: an unregistered server
/// answers 404 to a valid request at once.
#[tokio::test]
async fn a_lease_request_refuses_waits_and_sizes_out_of_range() {
    let app = TestApp::sqlite().await;
    for (wait, max, status) in [
        ("0", "4", 404),
        ("9223372036854775807", "64", 404),
        ("9223372036854775808", "4", 400),
        ("-1", "4", 400),
        ("soon", "4", 400),
        ("0", "0", 400),
        ("0", "65", 400),
    ] {
        let r = app
            .admin_send(
                Method::POST,
                "/agent/servers/node-unknown/lease",
                &[("wait", wait), ("max", max)],
                None,
            )
            .await;
        assert_eq!(r.status, status, "wait={wait} max={max}: {}", r.json());
    }
    for (renews, status) in [("true", 404), ("FALSE", 404), ("maybe", 400), ("", 400)] {
        let r = app
            .admin_send(
                Method::POST,
                "/agent/servers/node-unknown/lease",
                &[("renews", renews)],
                None,
            )
            .await;
        assert_eq!(r.status, status, "renews={renews}: {}", r.json());
    }
    app.stop().await;
}

backend_tests!(
    results_must_come_from_the_lease_holder,
    a_waiting_lease_of_a_key_deleted_meanwhile_leases_nothing,
);

/// A waiting lease whose agent went away (restarted, say) leases nothing: the task goes to
/// the agent's next request, not to the gone one's until its lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_whose_agent_went_away_leases_nothing() {
    let app = TestApp::sqlite().await;
    let r = app
        .admin_send(
            Method::PUT,
            "/agent/servers/node-gone",
            &[],
            Some(serde_json::json!({"name": "node-gone"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let gone = app.admin.clone();
    let waiting = tokio::spawn(async move { gone.lease_tasks("node-gone", 20, 4).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    waiting.abort();
    let _ = waiting.await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let job = app
        .admin
        .create_job(&shell_job("after", &["node-gone"], "true"), None)
        .await
        .expect("create");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let lease = app
        .admin
        .lease_tasks("node-gone", 0, 4)
        .await
        .expect("lease");
    assert_eq!(
        lease
            .tasks
            .iter()
            .map(|t| t.job_id.as_str())
            .collect::<Vec<_>>(),
        [job.id.as_str()],
        "the task goes to the agent that asks now"
    );
}

/// A registration's `cloud_server`, copied into every task of its server, holds a few
/// facts of bounded length; a larger one is a 400 and registers nothing.
#[tokio::test]
async fn a_registration_s_facts_are_bounded() {
    let app = TestApp::sqlite().await;
    let many: serde_json::Map<String, serde_json::Value> = (0..33)
        .map(|n| (format!("k{n}"), serde_json::json!("v")))
        .collect();
    for (facts, status) in [
        (
            serde_json::json!({"hostname": "h".repeat(256), "os": "linux"}),
            204,
        ),
        (serde_json::Value::Object(many), 400),
        (serde_json::json!({"hostname": "h".repeat(257)}), 400),
        (serde_json::json!({"k".repeat(65): "v"}), 400),
        (serde_json::json!({"note": "a\nb"}), 400),
    ] {
        let body = serde_json::json!({"name": "node-facts", "cloud_server": facts});
        let r = app
            .admin_send(Method::PUT, "/agent/servers/node-facts", &[], Some(body))
            .await;
        assert_eq!(r.status, status, "{}", r.json());
    }
    let job = app.create_job("on-node-facts", &["node-facts"]).await;
    assert_eq!(job.tasks[0].cloud_server["hostname"], "h".repeat(256));
    app.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_take_over_a_simulated_server() {
    let app = TestApp::sqlite().await;
    let body = serde_json::json!({"name": "taken", "cloud_server": {}});
    let r = app
        .admin_send(Method::PUT, "/agent/servers/sim-server-01", &[], Some(body))
        .await;
    assert_eq!(r.status, 409, "{}", r.json());
    assert_eq!(r.json()["error_code"], "ModelArts.0103");
    // The server is still the simulated one: its tasks run and finish without an agent.
    let job = app.create_job("still-simulated", &["sim-server-01"]).await;
    let done = app
        .wait_for_status(&job.id, "FINISHED", Duration::from_secs(10))
        .await;
    assert_eq!(done.tasks[0].server_name, "sim-server-01");
    app.stop().await;
}

#[tokio::test]
async fn the_agent_executes_items_in_order_and_stops_at_a_failure() {
    let task = litejobs::wire::AgentTask {
        task_id: "t".into(),
        job_id: "j".into(),
        job_type: "COMMON".into(),
        command: "/bin/sh -c \"${cmd}\"".into(),
        params: BTreeMap::from([("cmd".to_string(), "echo default".to_string())]),
        items: vec![
            JobItem {
                item_type: "COMMON".into(),
                spec: None,
            },
            JobItem {
                item_type: "COMMON".into(),
                spec: Some(BTreeMap::from([("cmd".to_string(), "exit 1".to_string())])),
            },
            JobItem {
                item_type: "COMMON".into(),
                spec: Some(BTreeMap::from([(
                    "cmd".to_string(),
                    "echo never".to_string(),
                )])),
            },
        ],
        timeout_secs: 10,
        lease_until: 0,
        lease_epoch: 1,
    };
    let run = |task: litejobs::wire::AgentTask| async move {
        let tail = Arc::new(Mutex::new(Tail::new(4096)));
        let never = CancellationToken::new();
        let outcome = agent::execute(&task, tail.clone(), &never, Duration::from_secs(1)).await;
        let printed = tail.lock().expect("tail").text();
        (outcome.expect("reported"), printed)
    };
    let (result, printed) = run(task.clone()).await;
    assert_eq!(result.status, "FAILED");
    assert_eq!(result.lease_epoch, Some(1));
    assert!(printed.contains("default") && !printed.contains("never"));
    assert!(result.message.contains("default"));
    assert!(!result.message.contains("never"));
    let slow = litejobs::wire::AgentTask {
        items: vec![JobItem {
            item_type: "COMMON".into(),
            spec: Some(BTreeMap::from([("cmd".to_string(), "sleep 5".to_string())])),
        }],
        timeout_secs: 1,
        ..task
    };
    let (result, _) = run(slow.clone()).await;
    assert_eq!(result.status, "FAILED");
    assert!(result.message.contains("timed out"));
    // stdout and stderr keep the order they were written in.
    let mixed = litejobs::wire::AgentTask {
        items: vec![JobItem {
            item_type: "COMMON".into(),
            spec: Some(BTreeMap::from([(
                "cmd".to_string(),
                "for i in 1 2 3; do echo out-$i; echo err-$i >&2; done".to_string(),
            )])),
        }],
        timeout_secs: 10,
        ..slow
    };
    let (result, printed) = run(mixed).await;
    assert_eq!(result.status, "SUCCESS");
    let lines: Vec<&str> = printed.lines().skip(1).collect();
    assert_eq!(
        lines,
        ["out-1", "err-1", "out-2", "err-2", "out-3", "err-3"],
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_serves_a_server_and_stops_on_sigterm() {
    let app = TestApp::sqlite().await;
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args(["agent", "--server-id", "node-bin", "--poll-wait", "1"])
        .args(["--endpoint", &app.endpoint, "--project-id", &app.project_id])
        .env("LITEJOBS_ACCESS_KEY", &app.credentials.access_key)
        .env("LITEJOBS_SECRET_KEY", &app.credentials.secret_key)
        .env("HOME", app.dir.path())
        .current_dir(app.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    wait_registered(&app, &["node-bin"]).await;
    let job = app
        .admin
        .create_job(
            &shell_job("via-binary", &["node-bin"], "echo ran-by-the-binary"),
            None,
        )
        .await
        .expect("create");
    let done = app
        .wait_for_status(&job.id, "FINISHED", Duration::from_secs(20))
        .await;
    assert_eq!(done.tasks[0].status, "SUCCESS");
    assert!(done.tasks[0].message.contains("ran-by-the-binary"));
    crate::helpers::terminate_cleanly(&mut agent).await;
}

/// A long poll is asked for its credentials again when it wakes: an agent whose key was
/// deleted, or grant removed, while it waited is refused, and the task waits for an agent
/// that may run it.
async fn a_waiting_lease_of_a_key_deleted_meanwhile_leases_nothing(app: TestApp) {
    let r = app
        .admin_send(
            Method::PUT,
            "/agent/servers/node-7",
            &[],
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(r.status, 204, "a server's name defaults to its id");
    let project = litejobs::domain::ProjectId::parse(&app.project_id).expect("project");
    let servers = app.store.list_servers(&project).await.expect("servers");
    assert!(
        servers
            .iter()
            .any(|s| s.id == "node-7" && s.name == "node-7"),
        "{servers:?}"
    );
    // A key deleted meanwhile is a 401, a grant taken away a 403, as a new request's would
    // be; the task is still there for an agent that may run it.
    for (name, status) in [("agent-7", 401), ("agent-8", 403)] {
        let agent = user_with_policy(&app, name, &app.project_id, "ModelArts FullAccess").await;
        let poll = tokio::spawn(async move { agent.lease_tasks("node-7", 20, 4).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let user = app
            .store
            .find_user(name)
            .await
            .expect("find")
            .expect("user");
        if status == 401 {
            for key in app.store.list_access_keys(&user.id).await.expect("keys") {
                app.store
                    .delete_access_key(&key.access_key)
                    .await
                    .expect("delete");
            }
        } else {
            app.store
                .revoke(&user.id, &app.project_id, "ModelArts FullAccess")
                .await
                .expect("revoke");
        }
        let job = app
            .admin
            .create_job(
                &shell_job(&format!("after-{name}"), &["node-7"], "true"),
                None,
            )
            .await
            .expect("create");
        let answer = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("the poll answers once woken")
            .expect("joined");
        assert!(
            matches!(answer, Err(ClientError::Api { status: s, .. }) if s == status),
            "{name}: {answer:?}"
        );
        let lease = app.admin.lease_tasks("node-7", 0, 4).await.expect("lease");
        let leased: Vec<&str> = lease.tasks.iter().map(|t| t.job_id.as_str()).collect();
        assert_eq!(leased, [job.id.as_str()], "{name}");
    }
}

/// An agent whose lease requests wait no time asks once a second while idle, not in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_wait_for_work_asks_once_a_second() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let server = crate::helpers::serve_process(dir.path(), &db, &[]).await;
    let profile = dir.path().join("litejobs-admin.json");
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args(["agent", "--server-id", "node-0", "--poll-wait", "0"])
        .arg("--profile")
        .arg(&profile)
        .args(["--endpoint", &server.endpoint])
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let leases = || async {
        let text = reqwest::get(format!("{}/metrics", server.endpoint))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with("litejobs_http_requests_total{") && l.contains("/lease\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leases().await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never asked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = leases().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = leases().await - before;
    assert!(
        (1.0..=5.0).contains(&asked),
        "{asked} lease requests in 3 s"
    );
    crate::helpers::terminate_cleanly(&mut agent).await;
}
