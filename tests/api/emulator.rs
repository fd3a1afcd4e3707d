//! The emulator: start-up of simulating replicas together, the control API's reach and
//! refusals, faults, the journal, strict mode and the IAM calls the SDKs make on their own.

use std::path::Path;

use litejobs::client::{Client, ClientAuth};
use litejobs::iam::demo;
use litejobs::sign::Credentials;

use crate::helpers::{test_database, ServerProcess};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_litejobs"))
}

pub(crate) fn demo_client(endpoint: &str) -> Client {
    let auth = ClientAuth::AkSk(Credentials {
        access_key: demo::ACCESS_KEY.to_string(),
        secret_key: demo::SECRET_KEY.to_string(),
    });
    Client::new(endpoint, demo::PROJECT_ID, auth).expect("client")
}

/// Three `serve --simulate` processes started at the same moment on one fresh PostgreSQL
/// database, several times: every one comes up (the administrator, the demo account and the
/// simulated fleet are made once, whoever comes first) and answers the demo account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_simulating_replicas_start_together_on_a_fresh_database() {
    for round in 0..4 {
        let Some(database) = test_database().await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let start = |n: usize| {
            let admin = dir.path().join(format!("admin-{n}.json"));
            let url = database.url.clone();
            let dir = dir.path().to_path_buf();
            async move {
                let admin = admin.display().to_string();
                let args = [
                    "--simulate",
                    "--db-max-connections",
                    "3",
                    "--admin-credentials",
                    &admin,
                ];
                ServerProcess::serve(exe(), &dir, &url, &args).await
            }
        };
        let (a, b, c) = tokio::join!(start(1), start(2), start(3));
        let replicas: Vec<ServerProcess> = [a, b, c]
            .into_iter()
            .enumerate()
            .map(|(n, r)| {
                r.unwrap_or_else(|e| {
                    panic!("round {round}: replica {} did not start: {e:#}", n + 1)
                })
            })
            .collect();
        let admins = (1..=3)
            .filter(|n| dir.path().join(format!("admin-{n}.json")).exists())
            .count();
        assert_eq!(
            admins, 1,
            "round {round}: one administrator, made by one replica"
        );
        for replica in &replicas {
            let page = demo_client(&replica.endpoint)
                .list_jobs(&[])
                .await
                .unwrap_or_else(|e| panic!("round {round}: the demo account on a replica: {e}"));
            assert_eq!(page.total, 0);
        }
        for replica in replicas {
            let status = replica.terminate().await.expect("stops");
            assert!(
                status.success(),
                "round {round}: a replica exited with {status}"
            );
        }
    }
}

/// A `serve` with `args` (on `127.0.0.1:0` unless they say otherwise) in `dir`.
async fn spawn(dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut all: Vec<std::ffi::OsString> = vec!["serve".into()];
    if !args.contains(&"--addr") {
        all.extend(["--addr".into(), "127.0.0.1:0".into()]);
    }
    all.extend(args.iter().map(std::ffi::OsString::from));
    ServerProcess::spawn(exe(), &all, dir).await
}

/// An emulator in memory that wrote its ready file; answers it too.
pub(crate) async fn emulator(dir: &Path, args: &[&str]) -> (ServerProcess, serde_json::Value) {
    let ready = dir.join("ready.json");
    let ready_arg = ready.display().to_string();
    let mut all = vec![
        "--in-memory",
        "--simulate",
        "--simulate-delay",
        "200ms",
        "--ready-file",
        &ready_arg,
    ];
    all.extend(args);
    let server = spawn(dir, &all).await.expect("the emulator starts");
    let info = serde_json::from_str(&std::fs::read_to_string(&ready).expect("ready file"))
        .expect("the ready file is JSON");
    (server, info)
}

pub(crate) fn admin_client(info: &serde_json::Value) -> Client {
    let admin = &info["admin"];
    let auth = ClientAuth::AkSk(Credentials {
        access_key: admin["access_key"].as_str().expect("ak").to_string(),
        secret_key: admin["secret_key"].as_str().expect("sk").to_string(),
    });
    let endpoint = info["endpoint"].as_str().expect("endpoint");
    Client::new(
        endpoint,
        admin["project_id"].as_str().expect("project"),
        auth,
    )
    .expect("client")
}

/// A call of `client` with no query or headers: its status and JSON answer.
pub(crate) async fn call(
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    json_of(
        client
            .send(method, path, &[], body, &[])
            .await
            .expect("send"),
    )
    .await
}

async fn json_of(response: litejobs::client::RawResponse) -> (u16, serde_json::Value) {
    let body = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_simulate_every_control_route_is_unknown_and_no_fault_can_be_set() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("plain.db").display().to_string();
    let admin_file = dir.path().join("admin.json").display().to_string();
    let server = spawn(
        dir.path(),
        &["--database-url", &db, "--admin-credentials", &admin_file],
    )
    .await
    .expect("starts");
    let profile = litejobs::serve::read_profile(Path::new(&admin_file)).expect("profile");
    let admin = Client::new(
        &server.endpoint,
        &profile.project_id,
        ClientAuth::AkSk(Credentials {
            access_key: profile.access_key.clone(),
            secret_key: profile.secret_key.clone(),
        }),
    )
    .expect("client");
    let rule = br#"{"operation":"ListDevServerJobs","status":500}"#.to_vec();
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/_litejobs/faults",
            Some(rule.clone()),
        ),
        (reqwest::Method::GET, "/_litejobs/faults", None),
        (reqwest::Method::POST, "/_litejobs/reset", None),
        (
            reqwest::Method::POST,
            "/_litejobs/seed",
            Some(b"{}".to_vec()),
        ),
        (reqwest::Method::GET, "/_litejobs/export", None),
        (reqwest::Method::GET, "/_litejobs/requests", None),
        (reqwest::Method::DELETE, "/_litejobs/faults/1", None),
    ] {
        let (status, body) = json_of(
            admin
                .send(method.clone(), path, &[], body, &[])
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (404, Some("APIG.0101")),
            "{method} {path}"
        );
    }
    // The list was not broken by a rule.
    assert_eq!(admin.list_jobs(&[]).await.expect("list").total, 0);
    // The emulator's commands say what is missing.
    let cli = std::process::Command::new(exe())
        .args(["emulator", "requests", "--profile", &admin_file])
        .env_remove("LITEJOBS_ENDPOINT")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("without `litejobs serve --simulate`"),
        "{stderr}"
    );
    server.kill_hard().await.expect("kill");

    // Nor at start.
    let refused = std::process::Command::new(exe())
        .args(["serve", "--addr", "127.0.0.1:0", "--database-url", &db])
        .args(["--fault", "op=ListDevServerJobs,status=500"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--fault and --seed need --simulate"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_refuses_a_non_loopback_address_unless_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = std::process::Command::new(exe())
        .args(["serve", "--simulate", "--in-memory", "--addr", "0.0.0.0:0"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(
        !refused.status.success(),
        "a simulating server on 0.0.0.0 must not start"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--control-on-any-address"), "{stderr}");

    let allowed = spawn(
        dir.path(),
        &[
            "--simulate",
            "--in-memory",
            "--addr",
            "0.0.0.0:0",
            "--control-on-any-address",
        ],
    )
    .await
    .expect("starts when asked");
    allowed.terminate().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keystone_listing_answers_the_callers_project_of_a_region() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &["--region", "ap-southeast-1"]).await;
    assert_eq!(info["region"], "ap-southeast-1");
    let demo = demo_client(&server.endpoint);
    let list = |name: &'static str| {
        let demo = demo.clone();
        async move {
            json_of(
                demo.send(
                    reqwest::Method::GET,
                    "/v3/projects",
                    &[("name", name.to_string())],
                    None,
                    &[],
                )
                .await
                .expect("send"),
            )
            .await
        }
    };
    let (status, body) = list("ap-southeast-1").await;
    assert_eq!(status, 200, "{body}");
    let projects = body["projects"].as_array().expect("projects");
    assert_eq!(projects.len(), 1, "{body}");
    assert_eq!(projects[0]["id"], demo::PROJECT_ID);
    assert_eq!(projects[0]["name"], "ap-southeast-1");
    assert_eq!(projects[0]["enabled"], true);
    assert!(projects[0]["domain_id"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert!(body["links"]["self"]
        .as_str()
        .is_some_and(|l| l.contains("/v3/projects")));

    let (status, body) = list("cn-north-4").await;
    assert_eq!(
        (status, body["projects"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // The name the listing gives is a token's scope too, and the token's project says it.
    for scope in ["ap-southeast-1", "demo", demo::PROJECT_ID] {
        let field = if scope == demo::PROJECT_ID {
            "id"
        } else {
            "name"
        };
        let answer = reqwest::Client::new()
            .post(format!("{}/v3/auth/tokens", server.endpoint))
            .json(&serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": demo::USER, "password": demo::PASSWORD,
                    "domain": {"name": demo::USER}}}},
                "scope": {"project": {field: scope}}}}))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status().as_u16(), 201, "{scope}");
        let body: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(body["token"]["project"]["id"], demo::PROJECT_ID, "{scope}");
        assert_eq!(
            body["token"]["project"]["name"], "ap-southeast-1",
            "{scope}"
        );
    }

    // `enabled` is a boolean filter: every project is enabled, and another value is refused.
    for (enabled, status, found) in [("true", 200, Some(1)), ("FALSE", 200, Some(0))] {
        let (got, body) = json_of(
            demo.send(
                reqwest::Method::GET,
                "/v3/projects",
                &[
                    ("name", "ap-southeast-1".into()),
                    ("enabled", enabled.into()),
                ],
                None,
                &[],
            )
            .await
            .expect("send"),
        )
        .await;
        assert_eq!(
            (got, body["projects"].as_array().map(Vec::len)),
            (status, found),
            "{body}"
        );
    }
    let (status, body) = json_of(
        demo.send(
            reqwest::Method::GET,
            "/v3/projects",
            &[("enabled", "null".into())],
            None,
            &[],
        )
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("ModelArts.0107")),
        "{body}"
    );

    // The administrator sees its own project, not the demo account's.
    let (status, body) = json_of(
        admin_client(&info)
            .send(reqwest::Method::GET, "/v3/projects", &[], None, &[])
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["default"]);

    // Unsigned: the gateway's 401, as on every API.
    let unsigned = reqwest::get(format!(
        "{}/v3/projects?name=ap-southeast-1",
        server.endpoint
    ))
    .await
    .expect("get");
    assert_eq!(unsigned.status().as_u16(), 401);
    server.terminate().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_is_for_the_administrator_and_checks_what_it_is_given() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let demo = demo_client(&server.endpoint);
    let (status, body) = call(&demo, reqwest::Method::GET, "/_litejobs/requests", None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("ModelArts.0105"))
    );
    let admin = admin_client(&info);
    for bad in [
        r#"{"operation":"ListDevServerJobs","status":200}"#,
        r#"{"operation":"ListDevServerJobs"}"#,
        r#"{"status":500,"probability":3}"#,
        r#"{"status":500,"colour":"blue"}"#,
        r#"not json"#,
    ] {
        let (status, body) = call(
            &admin,
            reqwest::Method::POST,
            "/_litejobs/faults",
            Some(bad.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("ModelArts.0107")),
            "{bad}"
        );
    }
    let (status, body) = call(&admin, reqwest::Method::GET, "/_litejobs/faults", None).await;
    assert_eq!(
        (status, body["faults"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let bad_seed =
        br#"{"jobs":[{"project":"nope","name":"x","tasks":[{"server_id":"s","status":"DONE"}]}]}"#;
    let (status, _) = call(
        &admin,
        reqwest::Method::POST,
        "/_litejobs/seed",
        Some(bad_seed.to_vec()),
    )
    .await;
    assert_eq!(status, 400);
    // A project or policy that does not exist, or text no database can hold, stops the
    // whole seed before anything is written.
    let job = |field: &str, value: &str| {
        let mut job = serde_json::json!({"project": "demo", "name": "x",
            "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]});
        match field {
            "message" => job["tasks"][0]["message"] = value.into(),
            _ => job[field] = value.into(),
        }
        job
    };
    for bad in [
        serde_json::json!({"users": [{"name": "bob"}],
            "jobs": [{"project": "nope", "name": "x",
                      "tasks": [{"server_id": "s", "status": "SUCCESS"}]}]}),
        serde_json::json!({"projects": [{"name": "made"}],
            "users": [{"name": "bob", "grants": [{"project": "made", "policy": "No such"}]}]}),
        serde_json::json!({"users": [{"name": "bob"}], "projects": [{"name": "a\u{0}b"}]}),
        serde_json::json!({"users": [{"name": "bob"}], "projects": [{"name": "a\tb"}]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("name", "n\u{0}")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("name", "n\u{1}")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("user_name", "\u{0}")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("description", "\u{0}")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("message", "a\u{0}")]}),
        // What no create could make: names and descriptions off the API's pattern, ids the
        // API's routes take, a type no template has.
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("name", "Über")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("name", "a b")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("description", "")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("id", "templates")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("id", "services")]}),
        serde_json::json!({"users": [{"name": "bob"}], "jobs": [job("type", "NO_SUCH")]}),
    ] {
        let (status, body) = call(
            &admin,
            reqwest::Method::POST,
            "/_litejobs/seed",
            Some(bad.to_string().into_bytes()),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("ModelArts.0107")),
            "{bad}: {body}"
        );
    }
    let (_, exported) = call(&admin, reqwest::Method::GET, "/_litejobs/export", None).await;
    let users: Vec<&str> = exported["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(users, vec!["admin", "demo"]);
    let projects: Vec<&str> = exported["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(!projects.contains(&"made"), "{projects:?}");
    // A seeded job has its type's template, as a created one has.
    let good = serde_json::json!({"jobs": [{"project": "demo", "id": "seeded-1",
        "name": "x", "type": "LOG_COLLECT",
        "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]}]});
    let (status, body) = call(
        &admin,
        reqwest::Method::POST,
        "/_litejobs/seed",
        Some(good.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jobs = format!("/v1/{}/dev-servers/jobs", demo::PROJECT_ID);
    let (_, templates) = json_of(
        demo.send(
            reqwest::Method::GET,
            &format!("{jobs}/templates"),
            &[],
            None,
            &[],
        )
        .await
        .expect("templates"),
    )
    .await;
    let log_collect = templates["data"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["type"] == "LOG_COLLECT")
        .expect("the LOG_COLLECT template")["id"]
        .clone();
    let (_, seeded) = json_of(
        demo.send(
            reqwest::Method::GET,
            &format!("{jobs}/seeded-1"),
            &[],
            None,
            &[],
        )
        .await
        .expect("job"),
    )
    .await;
    assert_eq!(seeded["template_id"], log_collect, "{seeded}");
    server.terminate().await.expect("stops");
}

/// `jobs wait` waits out a service that fails for a moment (503, 429) as it waits out a job
/// still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_wait_rides_through_failures_that_pass() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(
        dir.path(),
        &[
            "--fault",
            "op=GetDevServerJob,status=503,times=2",
            "--fault",
            "op=GetDevServerJob,status=429,times=2",
        ],
    )
    .await;
    let admin = admin_client(&info);
    let created = admin
        .create_job(
            &litejobs::wire::JobCreateRequest {
                name: "waited".into(),
                description: None,
                server_ids: vec!["sim-server-01".into()],
                job_type: "COMMON".into(),
                is_reboot: None,
                items: vec![litejobs::wire::JobItem {
                    item_type: "COMMON".into(),
                    spec: Some([("cmd".to_string(), "true".to_string())].into()),
                }],
                visible: None,
            },
            None,
        )
        .await
        .expect("create");
    let out = tokio::process::Command::new(exe())
        .args(["jobs", "wait", &created.id, "--timeout", "30s"])
        .env(
            "LITEJOBS_ENDPOINT",
            info["endpoint"].as_str().expect("endpoint"),
        )
        .env(
            "LITEJOBS_PROJECT_ID",
            info["admin"]["project_id"].as_str().expect("project"),
        )
        .env(
            "LITEJOBS_ACCESS_KEY",
            info["admin"]["access_key"].as_str().expect("ak"),
        )
        .env(
            "LITEJOBS_SECRET_KEY",
            info["admin"]["secret_key"].as_str().expect("sk"),
        )
        .env_remove("LITEJOBS_PROFILE")
        .current_dir(dir.path())
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FINISHED"));
    let (_, journal) = json_of(
        admin
            .send(reqwest::Method::GET, "/_litejobs/requests", &[], None, &[])
            .await
            .expect("journal"),
    )
    .await;
    let failed: Vec<u64> = journal["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["operation"] == "GetDevServerJob")
        .filter_map(|r| r["status"].as_u64())
        .filter(|s| *s >= 400)
        .collect();
    assert_eq!(failed, [503, 503, 429, 429]);
    // An injected 503 is the rule's answer, not a failure of the service.
    let log = server.log_tail();
    assert!(log.contains("a fault rule answered the request"), "{log}");
    assert!(!log.contains("request failed"), "{log}");
    server.terminate().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_429_looks_like_the_rate_limits_own() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(
        dir.path(),
        &[
            "--fault",
            "op=ListDevServerJobs,status=429,key=LITEJOBSDEMOACCESSKY",
        ],
    )
    .await;
    let injected = demo_client(&server.endpoint)
        .send(
            reqwest::Method::GET,
            &format!("/v1/{}/dev-servers/jobs", demo::PROJECT_ID),
            &[],
            None,
            &[],
        )
        .await
        .expect("send");
    // The administrator's key is not named by the rule.
    assert_eq!(
        admin_client(&info)
            .list_jobs(&[])
            .await
            .expect("list")
            .total,
        0
    );

    let other = tempfile::tempdir().expect("dir");
    let (limited, _) = emulator(other.path(), &["--rate-limit", "1", "--rate-burst", "1"]).await;
    let client = demo_client(&limited.endpoint);
    let mut real = None;
    for _ in 0..20 {
        let r = client
            .send(
                reqwest::Method::GET,
                &format!("/v1/{}/dev-servers/jobs", demo::PROJECT_ID),
                &[],
                None,
                &[],
            )
            .await
            .expect("send");
        if r.status == 429 {
            real = Some(r);
            break;
        }
    }
    let real = real.expect("the rate limit throttles");
    assert_eq!(injected.status, real.status);
    for header in ["content-type", "retry-after"] {
        assert_eq!(
            injected.headers.get(header),
            real.headers.get(header),
            "{header}"
        );
    }
    assert!(injected.headers.get("x-request-id").is_some());
    let (i, r): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&injected.body).expect("json"),
        serde_json::from_slice(&real.body).expect("json"),
    );
    assert_eq!(i["error_code"], r["error_code"]);
    assert_eq!(i["error_msg"], r["error_msg"]);
    assert_eq!(
        i["request_id"].as_str(),
        injected
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    );
    server.terminate().await.expect("stops");
    limited.terminate().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_writes_nothing_and_the_cli_reads_the_journal_and_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    // What an in-memory server killed with SIGKILL left (no process has this pid).
    let stale = Path::new("/dev/shm").join("litejobs-999999999-stale");
    let shm = Path::new("/dev/shm").is_dir();
    if shm {
        std::fs::create_dir_all(&stale).expect("stale dir");
        // Its lock file, which no process holds any more.
        std::fs::write(stale.join("alive.lock"), "").expect("lock file");
    }
    let (server, _) = emulator(dir.path(), &[]).await;
    assert!(
        !stale.exists(),
        "a start removes what dead in-memory servers left"
    );
    let demo = demo_client(&server.endpoint);
    demo.list_jobs(&[("status", "FINISHED".to_string())])
        .await
        .expect("list");
    let missing = demo.get_job("no-such-job").await;
    assert!(missing.is_err());

    let ready = dir.path().join("ready.json").display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe())
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let journal: serde_json::Value = serde_json::from_str(&run(&[
        "emulator",
        "requests",
        "--ready-file",
        &ready,
        "-o",
        "json",
    ]))
    .expect("json");
    let seen: Vec<(String, u64, Option<String>)> = journal["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or("").to_string(),
                r["status"].as_u64().unwrap_or(0),
                r["error_code"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("ListDevServerJobs".to_string(), 200, None),
            (
                "GetDevServerJob".to_string(),
                404,
                Some("ModelArts.0102".to_string())
            ),
        ]
    );
    let table = run(&["emulator", "requests", "--ready-file", &ready]);
    assert!(
        table.contains("status=FINISHED") && table.contains("ModelArts.0102"),
        "{table}"
    );

    let env = run(&["env", "--ready-file", &ready]);
    assert!(
        env.contains(&format!(
            "export HUAWEICLOUD_SDK_REGION_MODELARTS_CN_NORTH_4='{}'",
            server.endpoint
        )),
        "{env}"
    );
    assert!(
        env.contains("export HUAWEICLOUD_SDK_AK='LITEJOBSDEMOACCESSKY'"),
        "{env}"
    );
    let defaults = run(&[
        "env",
        "--endpoint",
        "http://127.0.0.1:9",
        "--region",
        "cn-east-3",
    ]);
    assert!(defaults.contains("HUAWEICLOUD_SDK_REGION_MODELARTS_CN_EAST_3='http://127.0.0.1:9'"));

    server.terminate().await.expect("stops");
    let both = std::process::Command::new(exe())
        .args(["serve", "--in-memory", "--database-url", "other.db"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(
        !both.status.success(),
        "--in-memory with a database is refused"
    );
    assert!(String::from_utf8_lossy(&both.stderr).contains("--in-memory keeps its own database"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["ready.json".to_string()],
        "an in-memory server writes no database or profile"
    );
}

/// The example for Rust test suites (`examples/emulator_test.rs`), run as a test.
#[allow(dead_code)]
#[path = "../../examples/emulator_test.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_passes() {
    example::run(exe())
        .await
        .expect("the example's test passes");
}

/// A seed fills a fresh database once: a second start on the same database (a restart, or
/// another replica) does not load it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_at_start_fills_a_fresh_database_once() {
    let dir = tempfile::tempdir().expect("dir");
    let seed = dir.path().join("seed.json");
    let jobs: Vec<serde_json::Value> = (0..3)
        .map(|n| {
            serde_json::json!({"project": demo::PROJECT_ID, "name": format!("seeded-{n}"),
                "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]})
        })
        .collect();
    std::fs::write(&seed, serde_json::json!({ "jobs": jobs }).to_string()).expect("seed");
    let db = dir.path().join("seeded.db").display().to_string();
    let seed_arg = seed.display().to_string();
    let args = ["--simulate", "--database-url", &db, "--seed", &seed_arg];
    for start in 0..2 {
        let server = spawn(dir.path(), &args).await.expect("starts");
        let total = demo_client(&server.endpoint)
            .list_jobs(&[])
            .await
            .expect("list")
            .total;
        assert_eq!(total, 3, "start {start}");
        server.terminate().await.expect("stops");
    }
}

/// The switches read from the environment take the usual spellings of yes and no.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_in_the_environment_take_1_yes_and_on() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = tokio::process::Command::new(exe())
        .args(["serve", "--addr", "127.0.0.1:0", "--print-config"])
        .env("LITEJOBS_IN_MEMORY", "1")
        .env("LITEJOBS_SIMULATE", "yes")
        .env("LITEJOBS_STRICT", "ON")
        .env("LITEJOBS_NO_AUDIT", "0")
        .env_remove("LITEJOBS_DATABASE_URL")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("in time")
    .expect("reads")
    .expect("the configuration line");
    let info: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    // In memory: nothing written where it runs. Simulating: the demo account answers.
    // Strict: the live watch, an extension, is no route.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    let client = demo_client(info["endpoint"].as_str().expect("endpoint"));
    let jobs = format!("/v1/{}/dev-servers/jobs", demo::PROJECT_ID);
    let (status, _) = json_of(
        client
            .send(reqwest::Method::GET, &jobs, &[], None, &[])
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_of(
        client
            .send(
                reqwest::Method::GET,
                &format!("{jobs}/events"),
                &[],
                None,
                &[],
            )
            .await
            .expect("watch"),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("APIG.0101"))
    );
    child.kill().await.expect("stops");
}

/// A seed is checked at every start, loaded or not (every reset loads it again): one whose
/// job's type has no template stops a start on a database made before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_whose_job_type_has_no_template_stops_every_start() {
    let dir = tempfile::tempdir().expect("dir");
    let seed = dir.path().join("seed.json");
    let job = serde_json::json!({"project": "demo", "name": "x", "type": "NO_SUCH",
        "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]});
    std::fs::write(&seed, serde_json::json!({ "jobs": [job] }).to_string()).expect("seed");
    let db = dir.path().join("made-before.db").display().to_string();
    let first = spawn(dir.path(), &["--simulate", "--database-url", &db])
        .await
        .expect("starts");
    first.terminate().await.expect("stops");
    let seed_arg = seed.display().to_string();
    let args = ["--simulate", "--database-url", &db, "--seed", &seed_arg];
    let refused = spawn(dir.path(), &args).await.err().expect("refused");
    let said = format!("{refused:#}");
    assert!(said.contains("names no job template"), "{said}");
}

/// A seed refused at a first start leaves the database unmade: the start with the seed
/// mended is the first, and loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_refused_at_the_first_start_is_loaded_once_mended() {
    let dir = tempfile::tempdir().expect("dir");
    let seed = dir.path().join("seed.json");
    let with_user = |name: &str| {
        serde_json::json!({"users": [{"name": name, "password": "pw123456",
            "grants": [{"project": demo::PROJECT_ID, "policy": "ModelArts FullAccess"}]}]})
        .to_string()
    };
    std::fs::write(&seed, with_user("unknown")).expect("seed");
    let db = dir.path().join("first.db").display().to_string();
    let seed_arg = seed.display().to_string();
    let args = ["--simulate", "--database-url", &db, "--seed", &seed_arg];
    let refused = spawn(dir.path(), &args).await.err().expect("refused");
    assert!(
        format!("{refused:#}").contains("audit trail"),
        "{refused:#}"
    );
    assert!(
        !dir.path().join("litejobs-admin.json").exists(),
        "nothing was made"
    );
    // A job on a server that is registered nowhere: found against the database, before
    // the start makes anything in it.
    let ghost = serde_json::json!({"jobs": [{"project": demo::PROJECT_ID, "name": "j",
        "type": "COMMON", "tasks": [{"server_id": "ghost-9", "status": "SUCCESS"}]}]});
    std::fs::write(&seed, ghost.to_string()).expect("seed");
    let refused = spawn(dir.path(), &args).await.err().expect("refused");
    assert!(
        format!("{refused:#}").contains("ghost-9 is not registered"),
        "{refused:#}"
    );
    assert!(
        !dir.path().join("litejobs-admin.json").exists(),
        "nothing was made"
    );
    std::fs::write(&seed, with_user("okfirst")).expect("seed");
    let server = spawn(dir.path(), &args).await.expect("starts");
    let token =
        litejobs::client::issue_token(&server.endpoint, "okfirst", "pw123456", demo::PROJECT_ID)
            .await;
    assert!(token.is_ok(), "the mended seed's user: {token:?}");
    server.terminate().await.expect("stops");
}

/// A seeded task of a simulated server ends as simulated tasks do, in a project the seed
/// makes too (its fleet is there before its jobs), at start and through the control API;
/// and an export keeps each simulated server's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_task_in_a_seeded_project_runs_and_an_export_keeps_outcomes() {
    let dir = tempfile::tempdir().expect("dir");
    let project = |n: u32| format!("{n:032x}");
    let seed_of = |p: &str, region: &str, job: &str| {
        serde_json::json!({
            "projects": [{"id": p, "name": region}],
            "users": [{"name": format!("user-{region}"),
                "access_keys": [{"access_key": format!("AK{}", region.replace('-', "")).to_uppercase(),
                    "secret_key": "SeededSecretKey000000000000"}],
                "grants": [{"project": region, "policy": "ModelArts FullAccess"}]}],
            "servers": [{"project": region, "id": "node-x", "simulated": true, "outcome": "FAILED"}],
            "jobs": [{"project": region, "id": job, "name": job, "type": "COMMON",
                "tasks": [{"server_id": "sim-server-01", "status": "PROCESSING"}]}]
        })
    };
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        seed_of(&project(1), "cn-east-3", "seeded-at-start").to_string(),
    )
    .expect("seed");
    let seed_arg = seed.display().to_string();
    let (server, info) = emulator(dir.path(), &["--seed", &seed_arg]).await;
    let admin = admin_client(&info);
    let (status, loaded) = json_of(
        admin
            .send(
                reqwest::Method::POST,
                "/_litejobs/seed",
                &[],
                Some(
                    seed_of(&project(2), "cn-east-4", "seeded-later")
                        .to_string()
                        .into_bytes(),
                ),
                &[],
            )
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{loaded}");
    for (p, region, job) in [
        (project(1), "cneast3", "seeded-at-start"),
        (project(2), "cneast4", "seeded-later"),
    ] {
        let auth = ClientAuth::AkSk(Credentials {
            access_key: format!("AK{region}").to_uppercase(),
            secret_key: "SeededSecretKey000000000000".to_string(),
        });
        let client = Client::new(&server.endpoint, &p, auth).expect("client");
        let started = std::time::Instant::now();
        loop {
            let detail = client.get_job(job).await.expect("get");
            if detail.status == "FINISHED" {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "{job} is still {}",
                detail.status
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let (_, exported) = call(&admin, reqwest::Method::GET, "/_litejobs/export", None).await;
    let outcomes: Vec<&serde_json::Value> = exported["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter(|s| s["id"] == "node-x")
        .map(|s| &s["outcome"])
        .collect();
    assert_eq!(outcomes, [&serde_json::json!("FAILED"); 2], "{exported}");
    server.terminate().await.expect("stops");
}

/// A seed is checked whole before anything is written: a user the service could not make,
/// or a project or user standing for another one, is a 400 that changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_standing_for_another_project_or_user_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let fresh = serde_json::json!({"id": "newproj1", "name": "np1"});
    for bad in [
        serde_json::json!({"projects": [fresh], "users": [{"name": "cli", "password": "pw123456"}]}),
        serde_json::json!({"projects": [fresh], "users": [{"name": "carol", "password": ""}]}),
        serde_json::json!({"projects": [fresh, {"id": "x1", "name": demo::PROJECT_ID}]}),
        serde_json::json!({"projects": [fresh, {"id": "demo", "name": "other"}]}),
        serde_json::json!({"projects": [fresh, {"id": "p-a", "name": "x"}, {"id": "x", "name": "y"}]}),
        serde_json::json!({"projects": [fresh, {"id": "p-b", "name": "np1"}]}),
    ] {
        let (status, body) = call(
            &admin,
            reqwest::Method::POST,
            "/_litejobs/seed",
            Some(bad.to_string().into_bytes()),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("ModelArts.0107")),
            "{bad}: {body}"
        );
    }
    let (_, exported) = call(&admin, reqwest::Method::GET, "/_litejobs/export", None).await;
    assert!(
        exported["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .all(|p| p["name"] != "np1"),
        "{exported}"
    );
    server.terminate().await.expect("stops");
}

/// A project or user an administrator named like the demo account's leaves the emulator
/// without a demo account (the public key is given to no one's user), and starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_or_user_in_the_demo_accounts_way_leaves_no_demo_account() {
    let dir = tempfile::tempdir().expect("dir");
    for (n, made) in [
        vec!["iam", "project", "create", demo::PROJECT_ID],
        vec![
            "iam",
            "user",
            "create",
            demo::USER,
            "--password",
            "a-person's-own",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let db = dir
            .path()
            .join(format!("taken-{n}.db"))
            .display()
            .to_string();
        for args in [vec!["migrate"], made.clone()] {
            let out = std::process::Command::new(exe())
                .args(&args)
                .args(["--database-url", &db])
                .output()
                .expect("runs");
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        let server = spawn(dir.path(), &["--simulate", "--database-url", &db])
            .await
            .expect("starts");
        let refused = demo_client(&server.endpoint).list_jobs(&[]).await;
        assert!(
            matches!(
                refused,
                Err(litejobs::client::ClientError::Api { status: 401, .. })
            ),
            "{made:?}: {refused:?}"
        );
        server.terminate().await.expect("stops");
    }
}

/// A seeded job is one a create could have made, run as the service runs jobs: its status
/// agrees with its tasks, each task is on a registered server of its own, its times are
/// after 1970, and its id can be read by a client. Anything else is a 400 that loads
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_job_is_one_a_create_could_have_made() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let job = |extra: serde_json::Value, tasks: serde_json::Value| {
        let mut job = serde_json::json!({
            "project": demo::PROJECT_ID, "name": "seeded", "type": "COMMON", "tasks": tasks,
        });
        for (k, v) in extra.as_object().expect("fields") {
            job[k] = v.clone();
        }
        serde_json::json!({ "jobs": [job] })
    };
    let task =
        |server: &str, status: &str| serde_json::json!({"server_id": server, "status": status});
    let done = serde_json::json!([task("sim-server-01", "SUCCESS")]);
    let running = serde_json::json!([task("sim-server-01", "PROCESSING")]);
    for bad in [
        job(serde_json::json!({"status": "PROCESSING"}), done.clone()),
        job(serde_json::json!({"status": "FINISHED"}), running.clone()),
        job(serde_json::json!({"status": "DELETED"}), running.clone()),
        job(serde_json::json!({"deleted_at": 1_000}), running.clone()),
        job(
            serde_json::json!({}),
            serde_json::json!([
                task("sim-server-01", "SUCCESS"),
                task("sim-server-01", "FAILED")
            ]),
        ),
        job(
            serde_json::json!({}),
            serde_json::json!([task("ghost", "SUCCESS")]),
        ),
        job(serde_json::json!({"create_at": -5}), done.clone()),
        job(serde_json::json!({"id": ".."}), done.clone()),
        job(serde_json::json!({"id": "."}), done.clone()),
        job(serde_json::json!({"id": "events"}), done.clone()),
        job(serde_json::json!({"id": "new"}), done.clone()),
        job(
            serde_json::json!({}),
            serde_json::json!([{"id": "..", "server_id": "sim-server-01", "status": "SUCCESS"}]),
        ),
        job(
            serde_json::json!({}),
            serde_json::json!([{"server_id": "sim-server-01", "server_name": "a\u{0}b",
                                "status": "SUCCESS"}]),
        ),
        job(
            serde_json::json!({}),
            serde_json::json!([{"server_id": "sim-server-01", "status": "SUCCESS",
                                "cloud_server": {"k": "a\u{1}b"}}]),
        ),
    ] {
        let (status, body) = call(
            &admin,
            reqwest::Method::POST,
            "/_litejobs/seed",
            Some(bad.to_string().into_bytes()),
        )
        .await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("ModelArts.0107")),
            "{bad}: {body}"
        );
    }
    // What agrees is loaded: a running job, an ended one, a deleted one with a skipped task.
    let good = serde_json::json!({"jobs": [
        {"project": demo::PROJECT_ID, "name": "runs", "type": "COMMON", "status": "PROCESSING",
         "tasks": [task("sim-server-01", "PROCESSING"), task("sim-server-02", "SUCCESS")]},
        {"project": demo::PROJECT_ID, "name": "ended", "type": "COMMON", "status": "FINISHED",
         "tasks": [task("sim-server-01", "FAILED")]},
        {"project": demo::PROJECT_ID, "name": "gone", "type": "COMMON", "status": "DELETED",
         "tasks": [task("sim-server-01", "SKIPPED")]},
    ]});
    let (status, body) = call(
        &admin,
        reqwest::Method::POST,
        "/_litejobs/seed",
        Some(good.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, exported) = call(&admin, reqwest::Method::GET, "/_litejobs/export", None).await;
    let names: Vec<&str> = exported["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "seeded").count(),
        0,
        "{exported}"
    );
    for name in ["runs", "ended", "gone"] {
        assert!(names.contains(&name), "{name}: {exported}");
    }
    server.terminate().await.expect("stops");
}

/// A reset of one project named by its name erases that project's jobs, as by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_a_project_named_by_name_erases_its_jobs() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let demo = demo_client(info["endpoint"].as_str().expect("endpoint"));
    demo.create_job(
        &crate::helpers::job_request("doomed", &["sim-server-01"]),
        None,
    )
    .await
    .expect("created");
    let body = serde_json::json!({ "project_id": demo::PROJECT_NAME });
    let (status, erased) = call(
        &admin,
        reqwest::Method::POST,
        "/_litejobs/reset",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        (status, erased["erased_jobs"].as_u64()),
        (200, Some(1)),
        "{erased}"
    );
    assert_eq!(demo.list_jobs(&[]).await.expect("list").total, 0);
    let body = serde_json::json!({ "project_id": "no-such-project" });
    let (status, _) = call(
        &admin,
        reqwest::Method::POST,
        "/_litejobs/reset",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 404);
    server.terminate().await.expect("stops");
}

/// `emulator faults remove` without a rule's id or `--all` is a wrong command line: exit 2.
#[test]
fn removing_faults_names_a_rule_or_all() {
    let out = std::process::Command::new(exe())
        .args(["emulator", "faults", "remove"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = std::process::Command::new(exe())
        .args(["emulator", "faults", "remove", "3", "--all"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
