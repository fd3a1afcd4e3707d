//! Seeing inside a running server: `/metrics` scraped before and after known traffic (exact
//! increments, route templates as labels, never raw paths), `/metrics` on an address of its
//! own, `/ready` flipping with the database and with its migrations, and the request id in
//! the log lines a request causes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use litejobs::client::{Client, ClientAuth};
use litejobs::sign::Credentials;
use litejobs::testkit::ServerProcess;
use reqwest::Method;

use crate::helpers::{job_request, serve_process, Backend, TestApp};

/// The samples of a Prometheus text answer, by series (`name{labels}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The `X-Request-Id` of an answer.
fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_string()
}

async fn scrape(endpoint: &str) -> BTreeMap<String, f64> {
    let answer = reqwest::get(format!("{endpoint}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(answer.status(), 200);
    samples(&answer.text().await.expect("text"))
}

/// How much the series grew between two scrapes (0 when absent from both).
fn grew(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

fn admin_of(server: &ServerProcess, dir: &Path) -> Client {
    let profile = litejobs::serve::read_profile(&dir.join("litejobs-admin.json")).expect("profile");
    Client::new(
        &server.endpoint,
        &profile.project_id,
        ClientAuth::AkSk(Credentials {
            access_key: profile.access_key,
            secret_key: profile.secret_key,
        }),
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly_by_route_template() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    // One request a second per key, a burst of 3: the fourth quick call is throttled.
    let args: Vec<std::ffi::OsString> = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--log-format",
        "json",
        "--simulate",
        "--rate-limit",
        "1",
        "--rate-burst",
        "3",
        "--simulate-delay",
        "100ms",
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .collect();
    let exe = Path::new(env!("CARGO_BIN_EXE_litejobs"));
    let server = ServerProcess::spawn(exe, &args, dir.path())
        .await
        .expect("the server starts");
    let admin = admin_of(&server, dir.path());
    let before = scrape(&server.endpoint).await;

    let list = admin.list_jobs(&[]).await;
    assert!(list.is_ok());
    let job = admin
        .create_job(&job_request("counted", &["sim-server-01"]), None)
        .await
        .expect("create");
    let unknown_job = admin.project_path("/dev-servers/jobs/0000aaaa-0000-4000-8000-000000000000");
    let missing = admin.send(Method::GET, &unknown_job, &[], None, &[]).await;
    assert_eq!(missing.expect("answer").status, 404);
    // The fourth call within the second: 429.
    let throttled = admin.list_jobs(&[]).await;
    assert!(
        matches!(
            throttled,
            Err(litejobs::client::ClientError::Api { status: 429, .. })
        ),
        "{throttled:?}"
    );
    // An unknown path, twice, under two different names: one label value.
    for path in ["/v1/no/such/api-one", "/v1/no/such/api-two"] {
        let answer = reqwest::get(format!("{}{path}", server.endpoint))
            .await
            .expect("answer");
        assert_eq!(answer.status(), 404);
    }
    // Methods of a client's own invention, under two names: one label value.
    for method in ["BREW", "WHEN"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let answer = reqwest::Client::new()
            .request(method, format!("{}/v1/no/such/api-three", server.endpoint))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 404);
    }
    // A bad signature: 401.
    let forged = Client::new(
        &server.endpoint,
        admin.project_id(),
        ClientAuth::AkSk(Credentials {
            access_key: "NOSUCHKEY0000000000".to_string(),
            secret_key: "wrong".to_string(),
        }),
    )
    .expect("client");
    let refused = forged.list_jobs(&[]).await;
    assert!(matches!(
        refused,
        Err(litejobs::client::ClientError::Api { status: 401, .. })
    ));
    // The job's task ends (simulated, 100 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        if let Ok(j) = admin.get_job(&job.id).await {
            if j.status == "FINISHED" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the job never finished");
    }

    let after = scrape(&server.endpoint).await;
    let requests = |route: &str, method: &str, status: u16| {
        format!(
            "litejobs_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        )
    };
    let jobs = "/v1/{project_id}/dev-servers/jobs";
    let one = "/v1/{project_id}/dev-servers/jobs/{id}";
    assert_eq!(grew(&before, &after, &requests(jobs, "GET", 200)), 1.0);
    assert_eq!(grew(&before, &after, &requests(jobs, "GET", 429)), 1.0);
    assert_eq!(grew(&before, &after, &requests(jobs, "GET", 401)), 1.0);
    assert_eq!(grew(&before, &after, &requests(jobs, "POST", 200)), 1.0);
    assert_eq!(grew(&before, &after, &requests(one, "GET", 404)), 1.0);
    assert!(grew(&before, &after, &requests(one, "GET", 200)) >= 1.0);
    assert_eq!(
        grew(&before, &after, &requests("unmatched", "GET", 404)),
        2.0,
        "unknown paths share one label value"
    );
    assert_eq!(
        grew(&before, &after, &requests("unmatched", "other", 404)),
        2.0,
        "unknown methods share one label value"
    );
    let text: Vec<&String> = after.keys().collect();
    assert!(
        !text
            .iter()
            .any(|s| s.contains("api-one") || s.contains("/no/such") || s.contains("BREW")),
        "no raw path is a label: {text:?}"
    );
    assert_eq!(
        grew(
            &before,
            &after,
            "litejobs_auth_failures_total{kind=\"signature\"}"
        ),
        1.0
    );
    assert_eq!(grew(&before, &after, "litejobs_rate_limited_total"), 1.0);
    assert_eq!(grew(&before, &after, "litejobs_jobs_created_total"), 1.0);
    assert_eq!(grew(&before, &after, "litejobs_jobs_finished_total"), 1.0);
    assert_eq!(
        grew(
            &before,
            &after,
            "litejobs_tasks_ended_total{status=\"SUCCESS\"}"
        ),
        1.0
    );
    let histogram =
        format!("litejobs_http_request_duration_seconds_count{{route=\"{jobs}\",method=\"POST\"}}");
    assert_eq!(grew(&before, &after, &histogram), 1.0);
    assert!(after
        .keys()
        .any(|s| s.starts_with("litejobs_db_statements_total")));
    assert!(after
        .keys()
        .any(|s| s.starts_with("process_resident_memory_bytes")));
    // The process's CPU time to the clock tick, as the kernel counts it (not whole seconds).
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15, in ticks of 1/100 s.
        let ticks: f64 = fields[11..13]
            .iter()
            .map(|f| f.parse::<f64>().expect("ticks"))
            .sum();
        ticks / 100.0
    };
    let (low, scraped, high) = (cpu(), scrape(&server.endpoint).await, cpu());
    let reported = scraped["process_cpu_seconds_total"];
    assert!(
        low - 0.011 <= reported && reported <= high + 0.011,
        "{low} <= {reported} <= {high}"
    );
    assert!(after
        .keys()
        .any(|s| s.starts_with("litejobs_db_connections{")));
    // The dashboard in deploy/ graphs only metrics the server exports.
    let exported: std::collections::BTreeSet<String> = after
        .keys()
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .map(|name| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name, |n, suffix| {
                    n.strip_suffix(suffix).map_or(n.clone(), str::to_string)
                })
        })
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana-dashboard.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard json");
    let mut graphed = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("litejobs_") || word.starts_with("process_") {
                    let name = ["_bucket", "_count", "_sum"]
                        .iter()
                        .fold(word.to_string(), |n, s| {
                            n.strip_suffix(s).map_or(n.clone(), str::to_string)
                        });
                    // (Agents online per project appear with the first agent heard from.)
                    assert!(
                        exported.contains(&name) || name == "litejobs_agents_online",
                        "{name} is graphed but not exported"
                    );
                    graphed += 1;
                }
            }
        }
    }
    assert!(graphed >= 15, "{graphed}");
    // The API's key never appears in the metrics.
    let raw = reqwest::get(format!("{}/metrics", server.endpoint))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(!raw.contains("NOSUCHKEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_leave_the_api_port() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = serve_process(dir.path(), &db, &["--metrics-addr", &metrics_addr]).await;
    let on_api = reqwest::get(format!("{}/metrics", server.endpoint))
        .await
        .expect("answer");
    assert_eq!(on_api.status(), 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = reqwest::get(format!("http://{metrics_addr}/metrics")).await {
            assert_eq!(answer.status(), 200);
            let text = answer.text().await.expect("text");
            assert!(text.contains("litejobs_http_requests_total"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no metrics on {metrics_addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(endpoint: &str) -> (u16, serde_json::Value) {
    let answer = reqwest::get(format!("{endpoint}/ready"))
        .await
        .expect("answer");
    let status = answer.status().as_u16();
    (
        status,
        answer.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A database that stops answering (here: a lock that holds the readiness query) is
/// reported within a few seconds, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_when_the_database_stops_answering() {
    use sqlx::Connection;
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    assert_eq!(ready(&app.endpoint).await.0, 200);
    let mut holder = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let started = Instant::now();
    let (status, body) = ready(&app.endpoint).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer within")),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("unlock");
    assert_eq!(ready(&app.endpoint).await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_to_503_while_the_database_is_gone_and_back() {
    use sqlx::Connection;
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    assert_eq!(ready(&app.endpoint).await.0, 200);
    let name = app
        .database
        .as_ref()
        .map(|db| db.name().to_string())
        .expect("a PostgreSQL database");
    let mut admin = sqlx::PgConnection::connect(&litejobs::testkit::pg_admin_url())
        .await
        .expect("admin connection");
    for statement in [
        format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&statement)
            .execute(&mut admin)
            .await
            .expect("admin statement");
    }
    let (status, body) = ready(&app.endpoint).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_code"], "ModelArts.0013");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("database")),
        "{body}"
    );
    // Liveness stays a separate question: the process is alive.
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .expect("allow connections");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(&app.endpoint).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_which_migrations_the_database_lacks() {
    let app = TestApp::sqlite().await;
    let (status, body) = ready(&app.endpoint).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    // As if the database had been restored from before a migration of this server.
    let url = app.database_url.clone();
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 11")
        .execute(&pool)
        .await
        .expect("delete");
    let (status, body) = ready(&app.endpoint).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error_msg"].as_str().unwrap_or_default();
    assert!(message.contains("11 (job events and audit)"), "{message}");
    assert_eq!(
        reqwest::get(format!("{}/health", app.endpoint))
            .await
            .expect("health")
            .status(),
        200,
        "liveness is another question"
    );
}

/// A PostgreSQL database emptied under the server (dropped and made again, say): `/ready`
/// says it holds none of the service's tables, and requests are 503, not the server's
/// fault (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_emptied_under_the_server_is_not_ready_and_answers_503() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    assert_eq!(ready(&app.endpoint).await.0, 200);
    let pool = sqlx::PgPool::connect(&app.database_url)
        .await
        .expect("pool");
    sqlx::query("DROP SCHEMA public CASCADE")
        .execute(&pool)
        .await
        .expect("drop");
    sqlx::query("CREATE SCHEMA public")
        .execute(&pool)
        .await
        .expect("create");
    let (status, body) = ready(&app.endpoint).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error_msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("none of the service's tables"),
        "{message}"
    );
    let listed = app.admin.list_jobs(&[]).await;
    let Err(litejobs::client::ClientError::Api { status, .. }) = &listed else {
        panic!("{listed:?}");
    };
    assert_eq!(*status, 503, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id_route_status_and_latency() {
    let dir = tempfile::tempdir().expect("dir");
    // A template whose rule cannot be compiled: creating a job of it fails inside the
    // handler, which logs the cause.
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).expect("dir");
    let broken = serde_json::json!({
        "id": "broken-template", "name": "broken", "description": "a rule too big",
        "cmd": "/bin/sh -c \"${cmd}\"", "swr_path": "", "resources": "", "volumes": "",
        "volumes_mount": "", "flavor_type": "ASCEND_GENERIC", "timeout": "60",
        "check_interval": "1", "type": "BROKEN", "status": "ACTIVE",
        "params": [{"name": "cmd", "description": "", "value": "", "visible": "true",
                    "regex": "^(\\w{1,1000}){1,1000}$"}]
    });
    std::fs::write(templates.join("broken.json"), broken.to_string()).expect("template");
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let templates_dir = templates.display().to_string();
    // A failure's cause is logged as its chain of messages, without the backtrace that
    // RUST_BACKTRACE asks errors to capture.
    let server = ServerProcess::serve_with_env(
        Path::new(env!("CARGO_BIN_EXE_litejobs")),
        dir.path(),
        &db,
        &[
            "--log-format",
            "json",
            "--simulate",
            "--templates-dir",
            &templates_dir,
        ],
        &[("RUST_BACKTRACE", "1")],
    )
    .await
    .expect("the server starts");
    let admin = admin_of(&server, dir.path());
    let mut request = job_request("broken", &["sim-server-01"]);
    request.job_type = "BROKEN".to_string();
    request.items[0].item_type = "BROKEN".to_string();
    let answer = admin
        .send(
            Method::POST,
            &admin.project_path("/dev-servers/jobs"),
            &[],
            Some(serde_json::to_vec(&request).expect("json")),
            &[],
        )
        .await
        .expect("answer");
    assert_eq!(answer.status, 500);
    let id = request_id(&answer.headers);
    // The log is read as it is written.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<serde_json::Value> = server
            .log_tail()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l.to_string().contains(&id))
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        lines.len() >= 2,
        "the cause and the request line: {lines:?}"
    );
    let cause = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request failed")
        .expect("the cause, logged inside the request");
    assert_eq!(cause["span"]["request_id"], id.as_str(), "{cause}");
    let error = cause["fields"]["error"].as_str().expect("the cause");
    assert!(
        error.contains("regex") && !error.contains('\n') && !error.contains("backtrace"),
        "{error}"
    );
    let line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .expect("the request line");
    assert_eq!(line["fields"]["route"], "/v1/{project_id}/dev-servers/jobs");
    assert_eq!(line["fields"]["status"], 500);
    assert!(line["fields"]["elapsed_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");

    // An unknown route's long path is cut in its log line.
    let long = format!("/{}", "a".repeat(20_000));
    let answer = reqwest::get(format!("{}{long}", server.endpoint))
        .await
        .expect("answer");
    assert_eq!(answer.status(), 404);
    let id = request_id(answer.headers());
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = server
            .log_tail()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["span"]["request_id"] == id.as_str());
        match found {
            Some(line) => break line,
            None if Instant::now() > deadline => panic!("no line of {id}"),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let path = line["fields"]["path"].as_str().expect("path");
    assert!(
        path.ends_with("… (20001 bytes)") && path.len() < 300,
        "{path}"
    );
}

/// What a stand-in OpenTelemetry collector received: each POST's path, content type and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A stand-in collector on a loopback port, answering every export with 200.
async fn collector() -> (String, Received) {
    let received: Received = Default::default();
    let kept = received.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let kept = kept.clone();
        async move {
            let path = request.uri().path().to_string();
            let kind = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = axum::body::to_bytes(request.into_body(), 1 << 24)
                .await
                .expect("body");
            kept.lock().expect("lock").push((path, kind, body.to_vec()));
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector_only_when_one_is_given() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = serve_process(
        dir.path(),
        &db,
        &["--simulate", "--otlp-endpoint", &endpoint],
    )
    .await;
    let admin = admin_of(&server, dir.path());
    let answer = admin
        .send(
            Method::GET,
            &admin.project_path("/dev-servers/jobs"),
            &[],
            None,
            &[],
        )
        .await
        .expect("answer");
    assert_eq!(answer.status, 200);
    let id = request_id(&answer.headers);
    // Spans are batched; stopping the server sends what is left.
    let exit = server.terminate().await.expect("stops");
    assert!(exit.success(), "{exit:?}");
    let received = received.lock().expect("lock").clone();
    let span = received
        .iter()
        .find(|(_, _, body)| contains(body, &id))
        .unwrap_or_else(|| {
            panic!(
                "a span with the request id among {} exports",
                received.len()
            )
        });
    assert_eq!(span.0, "/v1/traces");
    assert_eq!(span.1, "application/x-protobuf");
    for expected in [
        "GET /v1/{project_id}/dev-servers/jobs",
        "http.route",
        "http.response.status_code",
        "litejobs",
    ] {
        assert!(contains(&span.2, expected), "the span holds {expected:?}");
    }

    // Without the flag nothing is sent anywhere.
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = serve_process(dir.path(), &db, &["--simulate"]).await;
    let admin = admin_of(&server, dir.path());
    admin
        .send(
            Method::GET,
            &admin.project_path("/dev-servers/jobs"),
            &[],
            None,
            &[],
        )
        .await
        .expect("answer");
    server.terminate().await.expect("stops");
    assert!(
        received.lock().expect("lock").is_empty(),
        "{endpoint} got nothing"
    );
}

#[test]
fn a_bad_otlp_endpoint_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args(["serve", "--otlp-endpoint", "ftp://collector:4318"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--otlp-endpoint"), "{err}");
}
