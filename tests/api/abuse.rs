//! Abuse and bad days: slow and idle connections, too many of them, bodies beyond the memory
//! budget, guessed keys, lock-outs that must not lock the owner out, too many headers, and
//! the log under a flood. Every answer the service makes is in the API's error format.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use litejobs::client::{Client, ClientAuth};
use litejobs::sign::Credentials;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Backend, TestApp};

/// A loopback address other than 127.0.0.1: Linux routes all of 127/8 to the loopback
/// interface, so a client bound to it is "another address" to the server.
fn other_address(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `app` from `from`.
async fn connect_from(app: &TestApp, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind((from, 0).into()).expect("bind");
    socket.connect(app.addr).await.expect("connect")
}

/// Reads until the server closes the connection (or `limit` passes); answers what was read
/// and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, started.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// Asks for `/health` on `stream`, kept alive, and checks the answer is 200.
async fn served_health(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// The status, headers (lower-cased) and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, String, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

/// Checks an answer is the API's error: the status, the code, and a request id in the
/// header and the body alike.
fn assert_api_error(raw: &[u8], status: u16, code: &str) {
    let (got, head, json) = parse_answer(raw);
    assert_eq!(got, status, "{}", String::from_utf8_lossy(raw));
    assert_eq!(json["error_code"], code, "{json}");
    let id = json["request_id"].as_str().expect("request_id");
    assert!(head.contains(&format!("x-request-id: {id}")), "{head}");
}

async fn app_with(adjust: impl FnOnce(&mut litejobs::config::ServeConfig)) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, adjust)
        .await
        .expect("sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_after_the_header_timeout() {
    let app = app_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let mut stream = connect_from(&app, other_address(1)).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, took) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A connection that sends nothing at all goes the same way.
    let mut silent = connect_from(&app, other_address(1)).await;
    let (_, took) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed() {
    let app = app_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let mut stream = connect_from(&app, other_address(1)).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_answered_408_and_their_connection_closed() {
    let app = app_with(|c| c.body_timeout = Duration::from_secs(1)).await;
    let mut stream = connect_from(&app, other_address(1)).await;
    stream
        .write_all(
            b"POST /v3/auth/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"auth\":",
        )
        .await
        .expect("write");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert_api_error(&answer, 408, "APIG.0201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_answered_503_in_the_error_format() {
    let app = app_with(|c| c.max_connections = Some(4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(&app, other_address(1)).await;
        served_health(&mut stream).await;
        held.push(stream);
    }
    let mut extra = connect_from(&app, other_address(1)).await;
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut extra, Duration::from_secs(10)).await;
    assert_api_error(&answer, 503, "ModelArts.0013");
    assert!(parse_answer(&answer).1.contains("retry-after: 1"));
    // Once a connection closes, there is room again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = reqwest::get(format!("{}/health", app.endpoint)).await;
        if response.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_memory_budget_are_answered_503() {
    let app = app_with(|c| {
        c.max_body_memory = 12 * 1024 * 1024;
        c.body_timeout = Duration::from_secs(2);
    })
    .await;
    // A request holding a 12 MB body for ten seconds (an agent's long poll, whose body the
    // service reads, as every signed body, and ignores) holds the whole budget meanwhile.
    let holder = app.admin.clone();
    let lease = holder.project_path("/agent/servers/sim-server-01/lease");
    let held = tokio::spawn(async move {
        let body = vec![b' '; 12 * 1024 * 1024 - 16];
        let query = [("wait", "10".to_string())];
        holder
            .send(Method::POST, &lease, &query, Some(body), &[])
            .await
            .expect("the long poll answers")
            .status
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another body cannot get its share within its time: 503, in the error format.
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .body(r#"{"auth":{}}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 503);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error_code"], "ModelArts.0013");
    // Once the long poll answers, its share is free again.
    assert_eq!(held.await.expect("holder"), 200);
    let after = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .body(r#"{"auth":{}}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(after.status().as_u16(), 400, "the body was read and judged");
}

/// The administrator's client, sending from `from`, with `secret` as its secret key.
fn admin_from(app: &TestApp, from: IpAddr, secret: &str) -> Client {
    let auth = ClientAuth::AkSk(Credentials {
        access_key: app.credentials.access_key.clone(),
        secret_key: secret.to_string(),
    });
    Client::new(&app.endpoint, &app.project_id, auth)
        .expect("client")
        .bound_to(from)
        .expect("bound")
}

async fn list_status(client: &Client) -> u16 {
    let path = client.project_path("/dev-servers/jobs");
    client
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("answer")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_at_one_address_lock_the_key_there_only() {
    let app = TestApp::sqlite().await;
    let attacker = admin_from(&app, other_address(2), "wrong-secret-key-0000000000000");
    for _ in 0..6 {
        assert_eq!(list_status(&attacker).await, 401);
    }
    // Locked at the attacker's address, even with the right secret...
    let right_there = admin_from(&app, other_address(2), &app.credentials.secret_key);
    assert_eq!(list_status(&right_there).await, 401);
    // ...but not for its owner elsewhere.
    let owner = admin_from(&app, other_address(1), &app.credentials.secret_key);
    assert_eq!(list_status(&owner).await, 200);
}

/// Asks for a token as `user` (an IAM user object: by name or by id) with `password`;
/// answers the status and body.
async fn sign_in(app: &TestApp, user: serde_json::Value) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": user}},
        "scope": {"project": {"id": app.project_id}},
    }});
    let r = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_locked_out_by_name_is_locked_out_by_id() {
    let app = TestApp::sqlite().await;
    let profile =
        litejobs::serve::read_profile(&app.dir.path().join("admin.json")).expect("profile");
    let password = profile.password.expect("admin password");
    let (status, body) = sign_in(
        &app,
        serde_json::json!({"name": "admin", "password": password}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["token"]["user"]["id"]
        .as_str()
        .expect("user id")
        .to_string();
    for n in 0..5 {
        let wrong = serde_json::json!({"name": "admin", "password": format!("wrong-{n}")});
        assert_eq!(sign_in(&app, wrong).await.0, 401);
    }
    for user in [
        serde_json::json!({"id": id, "password": password}),
        serde_json::json!({"name": "admin", "password": password}),
    ] {
        assert_eq!(sign_in(&app, user.clone()).await.0, 401, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_failing_too_often_is_refused_and_no_other() {
    let app = app_with(|c| c.auth_failures_per_address = Some(20)).await;
    let profile =
        litejobs::serve::read_profile(&app.dir.path().join("admin.json")).expect("profile");
    let password = profile.password.expect("admin password");
    let token = litejobs::client::issue_token(&app.endpoint, "admin", &password, &app.project_id)
        .await
        .expect("token");
    for n in 0..20 {
        let guess = ClientAuth::AkSk(Credentials {
            access_key: format!("GUESS{n:015}"),
            secret_key: "whatever-secret-key-000000000000".into(),
        });
        let client = Client::new(&app.endpoint, &app.project_id, guess)
            .expect("client")
            .bound_to(other_address(3))
            .expect("bound");
        assert_eq!(list_status(&client).await, 401);
    }
    let secret = app.credentials.secret_key.clone();
    assert_eq!(
        list_status(&admin_from(&app, other_address(3), &secret)).await,
        401
    );
    assert_eq!(
        list_status(&admin_from(&app, other_address(1), &secret)).await,
        200
    );
    // Nor may the refused address try (and revoke) tokens at the revocation.
    let revoke_from = |from: IpAddr| {
        let token = token.clone();
        let url = format!("{}/v3/auth/tokens", app.endpoint);
        async move {
            let http = reqwest::Client::builder()
                .local_address(from)
                .build()
                .expect("client");
            let answer = http
                .delete(url)
                .header("X-Auth-Token", &token)
                .header("X-Subject-Token", &token)
                .send()
                .await
                .expect("answer");
            answer.status().as_u16()
        }
    };
    assert_eq!(revoke_from(other_address(3)).await, 401);
    let with_token = Client::new(
        &app.endpoint,
        &app.project_id,
        ClientAuth::Token(token.clone()),
    )
    .expect("client")
    .bound_to(other_address(1))
    .expect("bound");
    assert_eq!(
        list_status(&with_token).await,
        200,
        "the token was not revoked"
    );
    assert_eq!(revoke_from(other_address(1)).await, 204);
}

/// The 99th percentile of `n` list requests' latencies, four at a time.
async fn p99_of_lists(client: &Client, n: usize) -> Duration {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n / 4 {
        let started = Instant::now();
        let answers = futures::future::join_all((0..4).map(|_| list_status(client))).await;
        assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
        latencies.extend([started.elapsed(); 4]);
    }
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

/// Sends `n` requests signed with distinct unknown access keys (`tag` tells the batches
/// apart), `at_once` at a time, from another address; every one is refused.
async fn bad_keys(app: &TestApp, tag: &str, n: usize, at_once: usize) {
    let http = reqwest::Client::builder()
        .local_address(other_address(9))
        .build()
        .expect("client");
    let url = format!("{}/v1/{}/dev-servers/jobs", app.endpoint, app.project_id);
    for start in (0..n).step_by(at_once) {
        let sends = (start..(start + at_once).min(n)).map(|k| {
            let auth = format!(
                "SDK-HMAC-SHA256 Access={tag}{k:016}, SignedHeaders=host;x-sdk-date, \
                 Signature={}",
                "0".repeat(64)
            );
            http.get(&url)
                .header("Authorization", auth)
                .header("X-Sdk-Date", chrono_now())
                .send()
        });
        for answer in futures::future::join_all(sends).await {
            assert_eq!(answer.expect("answer").status().as_u16(), 401);
        }
    }
}

/// Failed-authentication tracking costs the same whatever the number of distinct keys it
/// has seen: a good key's p99 with a trickle of bad keys is no worse after many thousands
/// of them than before. (`LITEJOBS_LONG_TESTS=1`: 120,000 keys, past the tables' capacity.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_bad_keys_do_not_slow_a_good_one() {
    let app = app_with(|c| c.auth_failures_per_address = Some(0)).await;
    let good = admin_from(&app, other_address(1), &app.credentials.secret_key);
    let trickle = |tag: &'static str| {
        let app_endpoint = app.endpoint.clone();
        let (project, addr) = (app.project_id.clone(), app.addr);
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .local_address(other_address(8))
                .build()
                .expect("client");
            let _ = addr;
            for k in 0u64.. {
                if token.is_cancelled() {
                    break;
                }
                let auth = format!(
                    "SDK-HMAC-SHA256 Access={tag}{k:016}, SignedHeaders=host;x-sdk-date, \
                     Signature={}",
                    "0".repeat(64)
                );
                let _ = http
                    .get(format!("{app_endpoint}/v1/{project}/dev-servers/jobs"))
                    .header("Authorization", auth)
                    .header("X-Sdk-Date", chrono_now())
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        (stop, task)
    };
    let (stop, task) = trickle("EARLY");
    let before = p99_of_lists(&good, 200).await;
    stop.cancel();
    task.await.expect("trickle");
    let keys = if std::env::var_os("LITEJOBS_LONG_TESTS").is_some() {
        120_000
    } else {
        5_000
    };
    bad_keys(&app, "FILL", keys, 32).await;
    let (stop, task) = trickle("LATE");
    let after = p99_of_lists(&good, 200).await;
    stop.cancel();
    task.await.expect("trickle");
    // Ratio, with room for a debug build sharing two cores with its load generator.
    let allowed = before * 2 + Duration::from_millis(10);
    assert!(
        after <= allowed,
        "good key p99 {after:?} after {keys} bad keys, {before:?} before"
    );
}

fn chrono_now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_are_refused_in_the_error_format() {
    let app = TestApp::sqlite().await;
    let mut request = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for n in 0..120 {
        request.push_str(&format!("X-Extra-{n}: {n}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut stream = connect_from(&app, other_address(1)).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_api_error(&answer, 431, "APIG.0201");
    // A head over 64 KiB is refused (by the parser when it stopped reading it, else in the
    // error format); one just under it is served.
    for (size, status) in [(60_000, 200), (70_000, 431), (100_000, 431)] {
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        );
        let mut stream = connect_from(&app, other_address(1)).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(parse_answer(&answer).0, status, "{size}");
        if status == 431 && !parse_answer(&answer).2.is_null() {
            assert_api_error(&answer, 431, "APIG.0201");
        }
    }
    // What the HTTP parser itself refuses (a space in the target) gets its bare 400: the
    // HTTP library has no hook for those answers (see docs/api.md).
    let mut stream = connect_from(&app, other_address(1)).await;
    stream
        .write_all(b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(parse_answer(&answer).0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failures_is_summed_up_in_the_log_without_colours() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("flood.db").display());
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_litejobs"));
    let server = litejobs::testkit::ServerProcess::serve(exe, dir.path(), &db, &[])
        .await
        .expect("the server starts");
    let http = reqwest::Client::new();
    let path = format!("{}/v1/p1/dev-servers/jobs", server.endpoint);
    for _ in 0..200 {
        let answer = http.get(&path).send().await.expect("answer");
        assert_eq!(answer.status().as_u16(), 401);
    }
    // The summary comes within its period (10 s); wait out a second one, in case the
    // failures straddled two.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let log = server.log_tail();
    assert!(
        log.contains("authentication failures and throttled requests"),
        "no summary line:\n{log}"
    );
    // (The 200 failures may straddle two summaries.)
    let failed: u64 = log
        .lines()
        .filter_map(|l| l.split("failed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(failed, 200, "{log}");
    let per_request = log.lines().filter(|l| l.contains("status=401")).count();
    assert_eq!(per_request, 0, "401s are not logged one by one:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes into a pipe:\n{log}"
    );
    server.kill_hard().await.expect("kill");
}

/// Lists and creates in a loop until `stop`, counting the answers by status.
async fn keep_calling(
    client: Client,
    stop: tokio_util::sync::CancellationToken,
) -> std::collections::BTreeMap<u16, u64> {
    let mut statuses = std::collections::BTreeMap::new();
    let path = client.project_path("/dev-servers/jobs");
    let body = serde_json::to_vec(&crate::helpers::job_request("during", &["sim-server-01"]))
        .expect("json");
    for i in 0u64.. {
        if stop.is_cancelled() {
            break;
        }
        let (method, body) = if i % 3 == 0 {
            (Method::POST, Some(body.clone()))
        } else {
            (Method::GET, None)
        };
        let status = match client.send(method, &path, &[], body, &[]).await {
            Ok(answer) => answer.status,
            Err(e) => panic!("no answer from the server: {e}"),
        };
        *statuses.entry(status).or_default() += 1;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gone_mid_load_answers_503_and_the_service_recovers() {
    use sqlx::Connection;
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let name = app
        .database
        .as_ref()
        .map(|db| db.name().to_string())
        .expect("a PostgreSQL database");
    let mut admin = sqlx::PgConnection::connect(&litejobs::testkit::pg_admin_url())
        .await
        .expect("admin connection");
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|_| tokio::spawn(keep_calling(app.admin.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The database stops accepting connections, and its sessions are ended under load.
    for statement in [
        format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&statement)
            .execute(&mut admin)
            .await
            .expect("admin statement");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .expect("allow connections");
    // The service recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while list_status(&app.admin).await != 200 {
        assert!(Instant::now() < deadline, "the service did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for worker in load {
        for (status, n) in worker.await.expect("load") {
            *statuses.entry(status).or_default() += n;
        }
    }
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 and 503: {statuses:?}"
    );
}

/// A large answer holds its share of the memory budget until it is sent (a read that finds
/// none free is a 503); a client that stops reading it loses its connection after the body
/// timeout, which lets the share go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_large_answer_holds_its_share_until_its_connection_is_cut() {
    let app = app_with(|c| {
        c.max_body_memory = 12 * 1024 * 1024;
        c.body_timeout = Duration::from_secs(3);
    })
    .await;
    // 100 items of 100 KB each: the job's detail is about 10 MB.
    let mut request = crate::helpers::job_request("large", &["sim-server-01"]);
    request.items = (0..100)
        .map(|_| litejobs::wire::JobItem {
            item_type: "COMMON".into(),
            spec: Some(
                [
                    ("cmd".to_string(), "true".to_string()),
                    ("pad".to_string(), "x".repeat(100_000)),
                ]
                .into(),
            ),
        })
        .collect();
    let job = app.admin.create_job(&request, None).await.expect("create");
    let profile =
        litejobs::serve::read_profile(&app.dir.path().join("admin.json")).expect("profile");
    let password = profile.password.expect("admin password");
    let token = litejobs::client::issue_token(&app.endpoint, "admin", &password, &app.project_id)
        .await
        .expect("token");
    // A client that reads the first bytes of the answer, then nothing.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer");
    let mut unread = socket.connect(app.addr).await.expect("connect");
    let head = format!(
        "GET /v1/{}/dev-servers/jobs/{} HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {token}\r\n\r\n",
        app.project_id, job.id, app.addr
    );
    unread.write_all(head.as_bytes()).await.expect("sent");
    let mut first = [0u8; 12];
    unread.read_exact(&mut first).await.expect("read");
    assert_eq!(&first, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Another reader of the same answer finds the budget taken: 503 at once, in the error
    // format (waiting, it would hold its built answer all the same).
    let path = app
        .admin
        .project_path(&format!("/dev-servers/jobs/{}", job.id));
    let busy = app
        .admin
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("sent");
    assert_eq!(busy.status, 503);
    assert_eq!(busy.json()["error_code"], "ModelArts.0013");
    // Once the first's connection is cut (three seconds without reading), the share is
    // free again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let read = loop {
        match app.admin.get_job(&job.id).await {
            Ok(read) => break read,
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(read.items.len(), 100);
    let (rest, _) = read_until_closed(&mut unread, Duration::from_secs(10)).await;
    assert!(
        first.len() + rest.len() < 10_000_000,
        "the unread answer was cut short ({} bytes)",
        first.len() + rest.len()
    );
}

/// Connections turned away are closed within about a second, whatever their clients do: a
/// flood of them that never finish their requests holds no descriptors beyond that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_turned_away_do_not_hold_descriptors() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let server = crate::helpers::serve_process(dir.path(), &db, &["--max-connections", "8"]).await;
    let addr = server.endpoint.trim_start_matches("http://").to_string();
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("fds")
            .count()
    };
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        served_health(&mut stream).await;
        held.push(stream);
    }
    let before = descriptors();
    let mut flood = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        // A head that never ends.
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await;
        flood.push(stream);
    }
    let mut answered = 0;
    for stream in &mut flood {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(5)).await;
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503") {
            answered += 1;
        }
    }
    let after = descriptors();
    assert!(after <= before + 2, "{before} descriptors, then {after}");
    // Those not kept to be read from are answered too, as far as their sockets take it.
    assert!(answered >= 30, "{answered} of 40 answered 503");
    drop(held);
}
