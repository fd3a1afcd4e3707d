//! The `litejobs` binary's client and admin commands, run as a separate process against a
//! real server: what they print (tables and JSON), their exit codes, and their effects.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};

backend_tests!(
    jobs_create_list_get_wait_delete_in_table_and_json,
    read_only_user_lists_but_cannot_create_and_a_deleted_key_is_refused,
    a_written_profile_connects_to_its_project,
    names_that_would_mislead_the_lookups_or_the_trail_are_refused,
);

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and answers stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and answers stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts failure with exit code 1 and answers stderr.
    fn failed(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit code 1: {self:#?}");
        &self.stderr
    }
}

/// The binary with a clean environment: no `LITEJOBS_*` from outside, a home and working
/// directory without profiles, and the app's database and endpoint.
fn litejobs(app: &TestApp) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LITEJOBS_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(app.dir.path())
        .env("HOME", app.dir.path())
        .env("LITEJOBS_DATABASE_URL", &app.database_url)
        .env("LITEJOBS_ENDPOINT", &app.endpoint)
        .env("LITEJOBS_PROJECT_ID", &app.project_id)
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: tokio::process::Command, args: &[&str]) -> Run {
    let out = cmd.args(args).output().await.expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command signed with the given key.
async fn with_key(app: &TestApp, ak: &str, sk: &str, args: &[&str]) -> Run {
    let mut cmd = litejobs(app);
    cmd.env("LITEJOBS_ACCESS_KEY", ak)
        .env("LITEJOBS_SECRET_KEY", sk);
    run(cmd, args).await
}

/// Runs a command as the administrator (admin commands ignore the key).
async fn admin(app: &TestApp, args: &[&str]) -> Run {
    with_key(
        app,
        &app.credentials.access_key,
        &app.credentials.secret_key,
        args,
    )
    .await
}

/// The value after `label` on a `label  value` line of a key/value block.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {label} line in:\n{text}"))
}

/// The table row that starts with `first_cell`, split into cells.
fn row<'a>(table: &'a str, first_cell: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&first_cell))
        .unwrap_or_else(|| panic!("no row {first_cell} in:\n{table}"))
}

fn ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> = page["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

async fn jobs_create_list_get_wait_delete_in_table_and_json(app: TestApp) {
    let created = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "cli-job-1",
            "--type",
            "COMMON",
            "--server",
            "sim-server-01",
            "--spec",
            "cmd=echo hi",
            "--description",
            "from-cli",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    let id1 = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["name"], "cli-job-1");
    assert_eq!(created["status"], "PROCESSING");
    assert_eq!(created["description"], "from-cli");
    assert_eq!(created["items"][0]["type"], "COMMON");
    assert_eq!(created["items"][0]["spec"]["cmd"], "echo hi");
    assert_eq!(created["tasks"][0]["server_id"], "sim-server-01");

    let table = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "cli-job-2",
            "--type",
            "COMMON",
            "--server",
            "sim-server-01",
            "--server",
            "sim-server-02",
            "--spec",
            "cmd=true",
        ],
    )
    .await;
    let text = table.ok();
    let id2 = field(text, "ID").to_string();
    assert_eq!(field(text, "Name"), "cli-job-2");
    assert_eq!(field(text, "Status"), "PROCESSING");
    assert_eq!(row(text, "COMMON"), ["COMMON", "cmd=true"]);
    assert!(text.contains("sim-server-02"), "{text}");
    let stored = app.admin.get_job(&id2).await.expect("job exists");
    assert_eq!(stored.tasks.len(), 2);

    let list = admin(&app, &["jobs", "list"]).await;
    let text = list.ok();
    assert!(text.starts_with("ID "), "{text}");
    assert_eq!(row(text, &id1)[1..4], ["cli-job-1", "COMMON", "PROCESSING"]);
    assert_eq!(row(text, &id2)[1..4], ["cli-job-2", "COMMON", "PROCESSING"]);

    let page = admin(&app, &["jobs", "list", "--output", "json"])
        .await
        .json();
    assert_eq!(page["total"], 2);
    let mut expected = vec![id1.clone(), id2.clone()];
    expected.sort();
    assert_eq!(ids(&page), expected);

    let filtered = admin(&app, &["jobs", "list", "--name", "JOB-1", "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&filtered), [id1.as_str()]);
    let paged = admin(
        &app,
        &[
            "jobs",
            "list",
            "--limit",
            "1",
            "--sort-key",
            "name",
            "--sort-dir",
            "asc",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(ids(&paged), [id1.as_str()]);
    assert_eq!(
        (paged["size"].as_u64(), paged["pages"].as_u64()),
        (Some(1), Some(2))
    );

    let get = admin(&app, &["jobs", "get", &id1]).await;
    let text = get.ok();
    assert_eq!(field(text, "ID"), id1);
    assert_eq!(field(text, "Name"), "cli-job-1");
    assert_eq!(field(text, "Description"), "from-cli");
    assert_eq!(row(text, "COMMON"), ["COMMON", "cmd=echo hi"]);
    let detail = admin(&app, &["jobs", "get", &id1, "-o", "json"])
        .await
        .json();
    assert_eq!(detail["id"], id1.as_str());
    assert_eq!(detail["tasks"].as_array().map(Vec::len), Some(1));

    let finished = admin(
        &app,
        &["jobs", "wait", &id1, "--timeout", "20s", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(finished["status"], "FINISHED");
    assert_eq!(finished["tasks"][0]["status"], "SUCCESS");

    let deleted = admin(&app, &["jobs", "delete", &id1, &id2, "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&deleted), expected);
    assert!(deleted["data"]
        .as_array()
        .expect("data")
        .iter()
        .all(|j| j["status"] == "DELETED"));
    assert_eq!(
        app.admin
            .get_job(&id2)
            .await
            .expect("still readable")
            .status,
        "DELETED"
    );
    let listed = admin(&app, &["jobs", "list", "--status", "DELETED"]).await;
    let text = listed.ok();
    assert_eq!(row(text, &id1)[3], "DELETED");
    assert_eq!(row(text, &id2)[3], "DELETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_from_a_body_file_hidden_and_idempotent() {
    let app = TestApp::sqlite().await;
    let body = app.dir.path().join("job.json");
    std::fs::write(
        &body,
        r#"{"name": "from-file", "server_ids": ["sim-server-03"], "type": "COMMON",
            "items": [{"type": "COMMON", "spec": {"cmd": "uptime"}}]}"#,
    )
    .expect("write body");
    let body = body.to_string_lossy().into_owned();
    let first = admin(
        &app,
        &[
            "jobs",
            "create",
            "--body",
            &body,
            "--client-token",
            "tok-1",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(first["name"], "from-file");
    assert_eq!(first["items"][0]["spec"]["cmd"], "uptime");
    let again = admin(
        &app,
        &[
            "jobs",
            "create",
            "--body",
            &body,
            "--client-token",
            "tok-1",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(again["id"], first["id"]);

    let hidden = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "hidden-one",
            "--type",
            "COMMON",
            "--item",
            "COMMON",
            "--server",
            "sim-server-01",
            "--spec",
            "cmd=true",
            "--hidden",
            "--reboot",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(hidden["visible"], false);
    assert_eq!(hidden["is_reboot"], true);
    let invisible = admin(&app, &["jobs", "list", "--visible", "false", "-o", "json"])
        .await
        .json();
    assert_eq!(
        ids(&invisible),
        [hidden["id"].as_str().expect("id").to_string()]
    );
    let visible = admin(&app, &["jobs", "list", "--visible", "true", "-o", "json"])
        .await
        .json();
    assert_eq!(
        ids(&visible),
        [first["id"].as_str().expect("id").to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_list_and_get_in_table_and_json() {
    let app = TestApp::sqlite().await;

    let page = admin(&app, &["templates", "list", "-o", "json"])
        .await
        .json();
    let templates = page["data"].as_array().expect("data");
    let common = templates
        .iter()
        .find(|t| t["type"] == "COMMON")
        .expect("a COMMON template");
    let id = common["id"].as_str().expect("id");
    let name = common["name"].as_str().expect("name");
    assert_eq!(page["total"].as_u64(), Some(templates.len() as u64));

    let list = admin(&app, &["templates", "list"]).await;
    assert_eq!(row(list.ok(), id)[1..3], [name, "COMMON"]);

    let only = admin(
        &app,
        &["templates", "list", "--type", "LOG_COLLECT", "-o", "json"],
    )
    .await
    .json();
    let data = only["data"].as_array().expect("data");
    assert!(!data.is_empty());
    assert!(data.iter().all(|t| t["type"] == "LOG_COLLECT"), "{only}");

    let get = admin(&app, &["templates", "get", id]).await;
    let text = get.ok();
    assert_eq!(field(text, "ID"), id);
    assert_eq!(field(text, "Name"), name);
    assert_eq!(field(text, "Type"), "COMMON");
    assert_eq!(field(text, "Status"), "ACTIVE");
    assert_eq!(row(text, "cmd")[0], "cmd");
    let detail = admin(&app, &["templates", "get", id, "-o", "json"])
        .await
        .json();
    assert_eq!(detail["id"], id);
    assert_eq!(detail["type"], "COMMON");
    assert!(detail["timeout"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_print_status_code_and_request_id_and_exit_1() {
    let app = TestApp::sqlite().await;

    let missing = admin(
        &app,
        &["jobs", "get", "00000000-0000-4000-8000-000000000000"],
    )
    .await;
    let stderr = missing.failed();
    assert!(
        stderr.starts_with("error: 404 ModelArts.0102: "),
        "{stderr}"
    );
    assert!(stderr.contains("(request id "), "{stderr}");
    assert!(missing.stdout.is_empty());

    let bad = admin(&app, &["jobs", "list", "--status", "DONE"]).await;
    assert!(
        bad.failed().starts_with("error: 400 ModelArts.0107: "),
        "{bad:?}"
    );

    let unknown_server = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "x",
            "--type",
            "COMMON",
            "--server",
            "no-such-server",
            "--spec",
            "cmd=true",
        ],
    )
    .await;
    let stderr = unknown_server.failed();
    assert!(
        stderr.starts_with("error: 400 ModelArts.0107: "),
        "{stderr}"
    );
    assert!(stderr.contains("no-such-server"), "{stderr}");

    let template = admin(&app, &["templates", "get", "no-such-template"]).await;
    assert!(
        template.failed().starts_with("error: 404 ModelArts.0102: "),
        "{template:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_connection_problems_exit_1() {
    let app = TestApp::sqlite().await;

    let no_name = admin(
        &app,
        &["jobs", "create", "--type", "COMMON", "--server", "s"],
    )
    .await;
    assert_eq!(no_name.code, 2, "{no_name:?}");
    let bad_bool = admin(&app, &["jobs", "list", "--visible", "maybe"]).await;
    assert_eq!(bad_bool.code, 2, "{bad_bool:?}");
    let bad_outcome = admin(
        &app,
        &[
            "servers",
            "add",
            "--project",
            "default",
            "s1",
            "--outcome",
            "FAILED",
        ],
    )
    .await;
    assert_eq!(
        bad_outcome.code, 2,
        "--outcome needs --simulated: {bad_outcome:?}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let endpoint = format!("http://127.0.0.1:{port}");
    let refused = admin(&app, &["jobs", "list", "--endpoint", &endpoint]).await;
    let stderr = refused.failed();
    assert!(
        stderr.starts_with(&format!("error: cannot reach {endpoint}")),
        "{stderr}"
    );

    // A value no request may carry is the caller's to mend: said so, and not waited out.
    let started = std::time::Instant::now();
    let unsendable = admin(
        &app,
        &[
            "jobs",
            "wait",
            "some-job",
            "--timeout",
            "20s",
            "--token",
            "a\nb",
        ],
    )
    .await;
    let stderr = unsendable.failed();
    assert!(
        stderr.starts_with("error: cannot make the request: "),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // An answer that is not the service's (a proxy's page) is said as such, on one line.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_endpoint = format!("http://{}", proxy.local_addr().expect("addr"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = proxy.accept().await {
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head).await;
            let page = "<html>\n<body>Bad Gateway</body>\n</html>";
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    let proxied = admin(&app, &["jobs", "list", "--endpoint", &proxy_endpoint]).await;
    let stderr = proxied.failed();
    assert_eq!(
        stderr.trim_end(),
        "error: 502 502: an answer that is not the service's: <html> <body>Bad Gateway</body> </html>",
        "{stderr}"
    );

    let mut cmd = litejobs(&app);
    cmd.env_remove("LITEJOBS_PROJECT_ID");
    let no_project = run(cmd, &["jobs", "list"]).await;
    assert!(no_project.failed().contains("no project"), "{no_project:?}");

    let no_credentials = run(litejobs(&app), &["jobs", "list"]).await;
    assert!(
        no_credentials.failed().contains("no credentials"),
        "{no_credentials:?}"
    );

    let wrong_secret = with_key(
        &app,
        &app.credentials.access_key,
        "WrongSecretKey000000000000",
        &["jobs", "list"],
    )
    .await;
    let stderr = wrong_secret.failed();
    assert!(stderr.starts_with("error: 401 APIG.0301: "), "{stderr}");
    assert!(!stderr.contains("WrongSecretKey"), "{stderr}");

    // Values that would do nothing, or not what was meant, are refused.
    for args in [
        &["serve", "--log-format", "xml"][..],
        &["agent", "--server-id", "s1", "--log-format", "xml"][..],
    ] {
        let odd = admin(&app, args).await;
        assert_eq!(odd.code, 2, "{odd:?}");
    }
    // A region goes into a variable's name, which a shell evaluates.
    let region = admin(&app, &["env", "--region", "x;. ./p;y"]).await;
    assert_eq!(region.code, 2, "{region:?}");
    let ready = app.dir.path().join("odd-ready.json");
    std::fs::write(&ready, r#"{"env": {"A;id;B": "v"}}"#).expect("ready file");
    let odd_name = admin(&app, &["env", "--ready-file", &ready.display().to_string()]).await;
    assert!(
        odd_name.failed().contains("no environment variable's name"),
        "{odd_name:?}"
    );
    let forever = admin(&app, &["jobs", "wait", "x", "--timeout", "300000000000y"]).await;
    assert_eq!(forever.code, 2, "{forever:?}");
    let not_a_url = admin(&app, &["env", "--endpoint", "notaurl"]).await;
    assert!(not_a_url.failed().contains("not a URL"), "{not_a_url:?}");
    let key_file = app.dir.path().join("not-a-cert.pem");
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
    )
    .expect("file");
    let no_cert = admin(
        &app,
        &["jobs", "list", "--ca-cert", &key_file.to_string_lossy()],
    )
    .await;
    assert!(
        no_cert.failed().contains("holds no PEM certificate"),
        "{no_cert:?}"
    );
    let typo = admin(
        &app,
        &[
            "iam",
            "policy",
            "put",
            "p",
            "--action",
            "modelarts:devserverJobs:list",
        ],
    )
    .await;
    assert!(typo.failed().contains("grants an action"), "{typo:?}");
}

async fn read_only_user_lists_but_cannot_create_and_a_deleted_key_is_refused(app: TestApp) {
    let user = admin(&app, &["iam", "user", "create", "reader", "-o", "json"])
        .await
        .json();
    assert_eq!(user["name"], "reader");
    assert!(
        user["password"].as_str().is_some_and(|p| p.len() >= 16),
        "{user}"
    );
    admin(
        &app,
        &[
            "iam",
            "grant",
            "reader",
            "default",
            "ModelArts ReadOnlyAccess",
        ],
    )
    .await
    .ok();
    let grants = admin(&app, &["iam", "grants", "reader", "-o", "json"])
        .await
        .json();
    assert_eq!(
        grants,
        serde_json::json!([{"project_id": app.project_id, "project_name": "default",
                            "policy": "ModelArts ReadOnlyAccess"}])
    );

    let key = admin(
        &app,
        &[
            "iam",
            "key",
            "create",
            "reader",
            "--description",
            "ci",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let ak = key["access_key"].as_str().expect("access_key").to_string();
    let sk = key["secret_key"].as_str().expect("secret_key").to_string();
    assert_eq!(key["user_name"], "reader");
    let keys = admin(&app, &["iam", "key", "list", "reader"]).await;
    assert_eq!(row(keys.ok(), &ak)[1], "ci");
    assert!(!keys.stdout.contains(&sk), "key list must not show secrets");
    let keys_json = admin(&app, &["iam", "key", "list", "reader", "-o", "json"]).await;
    assert!(
        !keys_json.ok().contains(&sk),
        "key list must not show secrets"
    );

    let job = app.create_job("seen-by-reader", &["sim-server-01"]).await;
    let page = with_key(&app, &ak, &sk, &["jobs", "list", "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&page), [job.id.as_str()]);
    let denied = with_key(
        &app,
        &ak,
        &sk,
        &[
            "jobs",
            "create",
            "--name",
            "nope",
            "--type",
            "COMMON",
            "--server",
            "sim-server-01",
            "--spec",
            "cmd=true",
        ],
    )
    .await;
    assert!(
        denied.failed().starts_with("error: 403 ModelArts.0105: "),
        "{denied:?}"
    );

    let added = admin(
        &app,
        &[
            "servers",
            "add",
            "--project",
            "default",
            "node-a",
            "--name",
            "Node A",
            "--simulated",
            "--outcome",
            "SUCCESS",
            "-o",
            "json",
        ],
    )
    .await;
    // Its tasks need a simulating server: said, so that they are not left waiting unawares.
    assert!(added.stderr.contains("serve --simulate"), "{added:?}");
    let server = added.json();
    assert_eq!(server["id"], "node-a");
    assert_eq!(server["kind"], "simulated");
    let servers = admin(&app, &["servers", "list", "--project", &app.project_id]).await;
    assert_eq!(row(servers.ok(), "node-a")[1..3], ["Node A", "simulated"]);
    let on_node = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "on-node-a",
            "--type",
            "COMMON",
            "--server",
            "node-a",
            "--spec",
            "cmd=true",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(on_node["tasks"][0]["server_id"], "node-a");
    let id = on_node["id"].as_str().expect("id");
    let done = admin(
        &app,
        &["jobs", "wait", id, "--timeout", "20s", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(done["status"], "FINISHED");
    assert_eq!(done["abnormal_count"], 0);
    assert_eq!(done["tasks"][0]["status"], "SUCCESS");

    admin(&app, &["iam", "key", "delete", &ak]).await.ok();
    let refused = with_key(&app, &ak, &sk, &["jobs", "list"]).await;
    assert!(
        refused.failed().starts_with("error: 401 APIG.0301: "),
        "{refused:?}"
    );
    let again = admin(&app, &["iam", "key", "delete", &ak]).await;
    assert!(again.failed().contains("unknown access key"), "{again:?}");

    admin(
        &app,
        &["servers", "remove", "--project", "default", "node-a"],
    )
    .await
    .ok();
    let gone = admin(
        &app,
        &["servers", "list", "--project", "default", "-o", "json"],
    )
    .await
    .json();
    assert!(
        gone.as_array()
            .expect("array")
            .iter()
            .all(|s| s["id"] != "node-a"),
        "{gone}"
    );
}

async fn a_written_profile_connects_to_its_project(app: TestApp) {
    let project = admin(&app, &["iam", "project", "create", "team-x", "-o", "json"])
        .await
        .json();
    let project_id = project["id"].as_str().expect("id").to_string();
    let projects = admin(&app, &["iam", "project", "list"]).await;
    assert_eq!(row(projects.ok(), &project_id)[1], "team-x");
    admin(
        &app,
        &[
            "iam",
            "user",
            "create",
            "carol",
            "--password",
            "carol-pw-123",
        ],
    )
    .await
    .ok();
    admin(
        &app,
        &["iam", "grant", "carol", "team-x", "ModelArts FullAccess"],
    )
    .await
    .ok();
    admin(
        &app,
        &[
            "servers",
            "add",
            "--project",
            "team-x",
            "srv-1",
            "--simulated",
        ],
    )
    .await
    .ok();

    // A profile that cannot be written leaves no key behind (its secret was never shown).
    let blocked = app.dir.path().join("a-file");
    std::fs::write(&blocked, "").expect("file");
    let failed = admin(
        &app,
        &[
            "iam",
            "profile",
            "carol",
            "team-x",
            "--endpoint",
            &app.endpoint,
            "--out",
            &blocked.join("profile.json").to_string_lossy(),
        ],
    )
    .await;
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("cannot make the folder"),
        "{failed:?}"
    );
    let keys = admin(&app, &["iam", "key", "list", "carol", "-o", "json"]).await;
    assert_eq!(keys.json(), serde_json::json!([]), "{keys:?}");
    // The profile's folder is made (~/.litejobs on a new machine).
    let home_profile = app.dir.path().join(".litejobs").join("profile.json");
    let out = home_profile.to_string_lossy().into_owned();
    let wrote = admin(
        &app,
        &[
            "iam",
            "profile",
            "carol",
            "team-x",
            "--endpoint",
            &app.endpoint,
            "--out",
            &out,
        ],
    )
    .await;
    wrote.ok();
    assert!(wrote.stderr.is_empty(), "{wrote:?}");
    assert_mode_600(&home_profile);
    let profile: litejobs::iam::Profile =
        serde_json::from_str(&std::fs::read_to_string(&home_profile).expect("read"))
            .expect("profile");
    assert_eq!(profile.project_id, project_id);
    assert_eq!(profile.endpoint, app.endpoint);
    assert_eq!(profile.user_name.as_deref(), Some("carol"));
    assert!(!wrote.stdout.contains(&profile.secret_key));
    // A profile is not written over (its secret key is nowhere else) unless asked, and a
    // refused one makes no key.
    let on = &app;
    let again = |force: bool| {
        let mut args = vec![
            "iam",
            "profile",
            "carol",
            "team-x",
            "--endpoint",
            &app.endpoint,
            "--out",
            &out,
        ];
        if force {
            args.push("--force");
        }
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            admin(on, &args).await
        }
    };
    let refused = again(false).await;
    assert!(refused.failed().contains("--force"), "{refused:?}");
    let kept: litejobs::iam::Profile =
        serde_json::from_str(&std::fs::read_to_string(&home_profile).expect("read"))
            .expect("profile");
    assert_eq!(kept.secret_key, profile.secret_key);
    let keys = admin(&app, &["iam", "key", "list", "carol", "-o", "json"]).await;
    assert_eq!(keys.json().as_array().map(Vec::len), Some(1), "{keys:?}");
    again(true).await.ok();
    let replaced: litejobs::iam::Profile =
        serde_json::from_str(&std::fs::read_to_string(&home_profile).expect("read"))
            .expect("profile");
    assert_ne!(replaced.secret_key, profile.secret_key);

    // No endpoint, project or key in the environment: the profile in ~/.litejobs is used.
    let mut cmd = litejobs(&app);
    cmd.env_remove("LITEJOBS_ENDPOINT")
        .env_remove("LITEJOBS_PROJECT_ID");
    let created = run(
        cmd,
        &[
            "jobs", "create", "--name", "carols", "--type", "COMMON", "--server", "srv-1",
            "--spec", "cmd=true", "-o", "json",
        ],
    )
    .await
    .json();
    assert_eq!(created["user_name"], "carol");
    let team_x = litejobs::domain::ProjectId::parse(&project_id).expect("project id");
    let stored = app
        .store
        .get_job(&team_x, created["id"].as_str().expect("id"))
        .await
        .expect("store answers");
    assert_eq!(stored.map(|j| j.name).as_deref(), Some("carols"));
    let default_jobs = admin(&app, &["jobs", "list", "-o", "json"]).await.json();
    assert_eq!(
        default_jobs["total"], 0,
        "the job is in team-x, not in default"
    );

    // An explicit --profile wins over the environment's project.
    let moved = app.dir.path().join("carol.json");
    std::fs::rename(&home_profile, &moved).expect("move");
    let mut cmd = litejobs(&app);
    cmd.env_remove("LITEJOBS_PROJECT_ID");
    let listed = run(
        cmd,
        &[
            "jobs",
            "list",
            "--profile",
            &moved.to_string_lossy(),
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        ids(&listed),
        [created["id"].as_str().expect("id").to_string()]
    );
}

/// A first start on a new database, where an administrator's credentials file of another
/// database is, keeps that file aside (its secret key is nowhere else) before writing the
/// new administrator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_administrator_keeps_an_older_credentials_file_aside() {
    let dir = tempfile::tempdir().expect("dir");
    let old =
        r#"{"endpoint":"http://x","project_id":"p","access_key":"OLDAK","secret_key":"OLDSK"}"#;
    let file = dir.path().join("litejobs-admin.json");
    std::fs::write(&file, old).expect("an older file");
    let db = dir.path().join("new.db").display().to_string();
    let server = litejobs::testkit::ServerProcess::serve(
        Path::new(env!("CARGO_BIN_EXE_litejobs")),
        dir.path(),
        &db,
        &[],
    )
    .await
    .expect("serves");
    let new = litejobs::serve::read_profile(&file).expect("the new administrator's");
    assert_ne!(new.access_key, "OLDAK");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("litejobs-admin.json.replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the older file, kept aside");
    assert_eq!(std::fs::read_to_string(aside[0].path()).expect("read"), old);
    server.terminate().await.expect("stops");
}

#[cfg(unix)]
fn assert_mode_600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[cfg(not(unix))]
fn assert_mode_600(_path: &Path) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_until_the_users_tokens_are_revoked() {
    let app = TestApp::sqlite().await;
    admin(
        &app,
        &["iam", "user", "create", "dave", "--password", "dave-pw-123"],
    )
    .await
    .ok();
    admin(
        &app,
        &[
            "iam",
            "grant",
            "dave",
            &app.project_id,
            "ModelArts FullAccess",
        ],
    )
    .await
    .ok();
    let token =
        litejobs::client::issue_token(&app.endpoint, "dave", "dave-pw-123", &app.project_id)
            .await
            .expect("token issued");

    let mut cmd = litejobs(&app);
    cmd.env("LITEJOBS_TOKEN", &token);
    run(cmd, &["jobs", "list"]).await.ok();

    let revoked = admin(&app, &["iam", "token", "revoke-user", "dave", "-o", "json"])
        .await
        .json();
    assert_eq!(revoked["revoked"], 1);
    let refused = run(litejobs(&app), &["jobs", "list", "--token", &token]).await;
    assert!(
        refused.failed().starts_with("error: 401 APIG.0301: "),
        "{refused:?}"
    );

    // A new password ends the tokens issued under the old one.
    let token =
        litejobs::client::issue_token(&app.endpoint, "dave", "dave-pw-123", &app.project_id)
            .await
            .expect("token");
    let mut cmd = litejobs(&app);
    cmd.env("LITEJOBS_TOKEN", &token);
    run(cmd, &["jobs", "list"]).await.ok();
    let set = admin(
        &app,
        &[
            "iam",
            "user",
            "set-password",
            "dave",
            "--password",
            "new-pw-456",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(set["revoked_tokens"], 1, "{set}");
    let refused = run(litejobs(&app), &["jobs", "list", "--token", &token]).await;
    assert!(
        refused.failed().starts_with("error: 401 APIG.0301: "),
        "{refused:?}"
    );
    let fresh =
        litejobs::client::issue_token(&app.endpoint, "dave", "new-pw-456", &app.project_id).await;
    assert!(fresh.is_ok(), "{fresh:?}");
    let old =
        litejobs::client::issue_token(&app.endpoint, "dave", "dave-pw-123", &app.project_id).await;
    assert!(old.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_refuse_unknown_users_projects_and_policies() {
    let app = TestApp::sqlite().await;

    let user = admin(
        &app,
        &["iam", "grant", "nobody", "default", "ModelArts FullAccess"],
    )
    .await;
    assert_eq!(user.failed().trim(), "error: unknown user nobody");
    let project = admin(
        &app,
        &["iam", "grant", "admin", "nowhere", "ModelArts FullAccess"],
    )
    .await;
    assert_eq!(project.failed().trim(), "error: unknown project nowhere");
    let policy = admin(
        &app,
        &["iam", "grant", "admin", "default", "No Such Policy"],
    )
    .await;
    assert!(
        policy
            .failed()
            .starts_with("error: unknown policy No Such Policy"),
        "{policy:?}"
    );
    let servers = admin(&app, &["servers", "list", "--project", "nowhere"]).await;
    assert_eq!(servers.failed().trim(), "error: unknown project nowhere");
    let builtin = admin(&app, &["iam", "policy", "delete", "ModelArts FullAccess"]).await;
    assert!(builtin.failed().contains("built-in"), "{builtin:?}");
    let duplicate = admin(&app, &["iam", "user", "create", "admin", "--password", "x"]).await;
    assert!(
        duplicate.failed().contains("already exists"),
        "{duplicate:?}"
    );

    admin(
        &app,
        &[
            "iam",
            "policy",
            "put",
            "listers",
            "--action",
            "modelarts:*:list",
        ],
    )
    .await
    .ok();
    let policies = admin(&app, &["iam", "policy", "list", "-o", "json"])
        .await
        .json();
    let listers = policies
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "listers")
        .expect("listers policy");
    assert_eq!(listers["actions"], serde_json::json!(["modelarts:*:list"]));
    admin(&app, &["iam", "grant", "admin", "default", "listers"])
        .await
        .ok();
    admin(&app, &["iam", "revoke", "admin", "default", "listers"])
        .await
        .ok();
    let twice = admin(&app, &["iam", "revoke", "admin", "default", "listers"]).await;
    assert!(twice.failed().contains("holds no listers"), "{twice:?}");
    admin(&app, &["iam", "policy", "delete", "listers"])
        .await
        .ok();

    admin(
        &app,
        &["iam", "user", "create", "erin", "--password", "erin-pw-123"],
    )
    .await
    .ok();
    let users = admin(&app, &["iam", "user", "list"]).await;
    let names: Vec<&str> = users
        .ok()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        names.contains(&"admin") && names.contains(&"erin"),
        "{users:?}"
    );
    admin(&app, &["iam", "user", "delete", "erin"]).await.ok();
    let gone = admin(&app, &["iam", "user", "list", "-o", "json"])
        .await
        .json();
    assert!(gone
        .as_array()
        .expect("array")
        .iter()
        .all(|u| u["name"] != "erin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_after_its_timeout() {
    let app = TestApp::sqlite().await;
    // An agent server without a running agent: its task stays PROCESSING.
    admin(
        &app,
        &["servers", "add", "--project", "default", "idle-node"],
    )
    .await
    .ok();
    let job = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "stuck",
            "--type",
            "COMMON",
            "--server",
            "idle-node",
            "--spec",
            "cmd=true",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let id = job["id"].as_str().expect("id");
    let waited = admin(&app, &["jobs", "wait", id, "--timeout", "300ms"]).await;
    assert_eq!(
        waited.failed().trim(),
        format!("error: job {id} is still PROCESSING after 300ms")
    );
    assert!(waited.stdout.is_empty());
}

/// `jobs watch | head -n 1`: once its reader went away, the watch ends at the next change
/// (it would otherwise print into the void for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_reader_went_away_ends() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::sqlite().await;
    let mut cmd = litejobs(&app);
    cmd.env("LITEJOBS_ACCESS_KEY", &app.credentials.access_key)
        .env("LITEJOBS_SECRET_KEY", &app.credentials.secret_key)
        .args(["jobs", "watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut watch = cmd.spawn().expect("jobs watch runs");
    let stdout = watch.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let create = || async {
        app.admin
            .create_job(
                &crate::helpers::job_request("seen", &["sim-server-01"]),
                None,
            )
            .await
            .expect("created");
    };
    // The watch starts at the newest change: create until one reaches it.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            create().await;
            let next = tokio::time::timeout(Duration::from_millis(500), lines.next_line());
            if let Ok(line) = next.await {
                return line.expect("read").expect("a line");
            }
        }
    })
    .await
    .expect("a change is printed");
    assert!(first.contains("\"kind\""), "{first}");
    drop(lines);
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            create().await;
            if let Ok(status) = tokio::time::timeout(Duration::from_millis(500), watch.wait()).await
            {
                return status.expect("waited");
            }
        }
    })
    .await
    .expect("the watch ends once its reader is gone");
    assert!(ended.success(), "{ended}");
}

/// `litejobs migrate` on `url`, which it cannot open: what it says on stderr, after
/// checking it exits 1.
async fn migrate_fails(url: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args(["migrate", "--database-url", url])
        .env_remove("LITEJOBS_DATABASE_URL")
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// A database URL the server cannot use is one line on stderr, each cause said once.
#[tokio::test]
async fn a_bad_database_url_is_said_once() {
    let stderr =
        migrate_fails("postgres://postgres@127.0.0.1:5432/postgres?sslmode=sometimes").await;
    assert!(
        stderr.starts_with("litejobs: cannot open the database: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("\"sometimes\"").count(), 1, "{stderr}");
    // A SQLite file in a folder that does not exist: the file and the folder are named.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("missing").join("jobs.db");
    let stderr = migrate_fails(&file.display().to_string()).await;
    let folder = format!(
        "its folder {} does not exist",
        file.parent().expect("folder").display()
    );
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains(&folder), "{stderr}");
}

/// So is a database an administration command cannot open; and one that does not exist is
/// not made (a mistyped path would seem to work, on a new and empty database).
#[tokio::test]
async fn an_administration_commands_database_error_is_said_once() {
    let dir = tempfile::tempdir().expect("dir");
    let fails = |url: std::path::PathBuf| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
            .args(["iam", "user", "list", "--database-url"])
            .arg(&url)
            .env_remove("LITEJOBS_DATABASE_URL")
            .output()
            .await
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        stderr
    };
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).expect("file");
    let stderr = fails(garbage).await;
    assert_eq!(stderr.matches("not a database").count(), 1, "{stderr}");
    let missing = dir.path().join("missing.db");
    let stderr = fails(missing.clone()).await;
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "nothing made beside it"
    );
    let stderr = fails("mysql://root@127.0.0.1/test".into()).await;
    assert!(stderr.contains("mysql:// names no database"), "{stderr}");
}

/// A PostgreSQL server that refuses connections is tried for a while (one may be starting
/// beside the service), then reported by its cause, not by a pool's timeout.
#[tokio::test]
async fn a_database_that_refuses_connections_is_reported_by_its_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let stderr = migrate_fails(&format!("postgres://postgres@127.0.0.1:{port}/litejobs")).await;
    assert!(stderr.contains("trying again"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("litejobs: cannot open the database: the database is unavailable: ")
            && last.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_commands_read_a_strict_servers_answers() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.strict = true)
        .await
        .expect("sqlite");
    let created = admin(
        &app,
        &[
            "jobs",
            "create",
            "--name",
            "strictly",
            "--type",
            "COMMON",
            "--server",
            "sim-server-01",
            "--spec",
            "cmd=true",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    // The answer as it came: the cloud's fields only.
    assert!(created.get("visible").is_none(), "{created}");
    let id = created["id"].as_str().expect("id");
    let waited = admin(&app, &["jobs", "wait", id, "--timeout", "20s"]).await;
    assert_eq!(waited.code, 0, "{waited:#?}");
    let shown = admin(&app, &["jobs", "get", id]).await;
    assert_eq!(shown.code, 0, "{shown:#?}");
    assert_eq!(field(&shown.stdout, "Status"), "FINISHED");
    assert_eq!(field(&shown.stdout, "Visible"), "-");
    // One job: the create was not reported as a failure to be tried again.
    let listed = admin(&app, &["jobs", "list", "-o", "json"]).await.json();
    assert_eq!(listed["total"], 1, "{listed}");
    app.stop().await;
}

/// Users and projects are named by name or id, and the audit trail names the unauthenticated
/// and the administration commands by names of its own: no new name may stand for another.
async fn names_that_would_mislead_the_lookups_or_the_trail_are_refused(app: TestApp) {
    let empty = admin(&app, &["iam", "user", "create", "carol", "--password", ""]).await;
    assert!(
        empty.failed().contains("password must not be empty"),
        "{empty:?}"
    );
    for reserved in ["unknown", "cli"] {
        let taken = admin(
            &app,
            &["iam", "user", "create", reserved, "--password", "pw-123456"],
        )
        .await;
        assert!(taken.failed().contains("audit trail's own"), "{taken:?}");
    }
    let users = admin(&app, &["iam", "user", "list", "-o", "json"])
        .await
        .json();
    let users = users.as_array().expect("array");
    assert!(users.iter().all(|u| u["name"] != "carol"), "{users:?}");
    let admin_id = users
        .iter()
        .find(|u| u["name"] == "admin")
        .and_then(|u| u["id"].as_str())
        .expect("the admin user's id")
        .to_string();
    let alias = admin(
        &app,
        &[
            "iam",
            "user",
            "create",
            &admin_id,
            "--password",
            "pw-123456",
        ],
    )
    .await;
    assert!(
        alias
            .failed()
            .contains(&format!("a user whose id is {admin_id} already exists")),
        "{alias:?}"
    );

    // A project named with another's id, or numbered with another's name.
    let named = admin(&app, &["iam", "project", "create", &app.project_id]).await;
    assert!(named.failed().contains("already exists"), "{named:?}");
    admin(&app, &["iam", "project", "create", "team-x"])
        .await
        .ok();
    let numbered = admin(
        &app,
        &["iam", "project", "create", "team-y", "--id", "team-x"],
    )
    .await;
    assert!(
        numbered
            .failed()
            .contains("a project whose id or name is team-y or team-x already exists"),
        "{numbered:?}"
    );
    let projects = admin(&app, &["iam", "project", "list", "-o", "json"])
        .await
        .json();
    let names: Vec<&str> = projects
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(!names.contains(&"team-y"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == app.project_id).count(),
        0,
        "{names:?}"
    );

    // An administration command run by an operating system's user named like an IAM user is
    // not that user's record.
    let mut cmd = litejobs(&app);
    cmd.env("USER", "admin");
    run(cmd, &["iam", "project", "create", "team-z"]).await.ok();
    let mine = admin(&app, &["audit", "list", "--user", "admin", "-o", "json"])
        .await
        .json();
    assert!(
        mine.as_array()
            .expect("array")
            .iter()
            .all(|r| r["user_id"] == admin_id.as_str()),
        "{mine:?}"
    );
    let commands = admin(&app, &["audit", "list", "--user", "cli", "-o", "json"])
        .await
        .json();
    assert!(
        commands
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["action"] == "iam.project.create" && r["user_name"] == "admin"),
        "{commands:?}"
    );
}

/// An administration command's record names the project it acts in, and the access key it
/// made: the key's requests can be traced back to the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_records_name_their_project_and_the_key_they_make() {
    let app = TestApp::sqlite().await;
    admin(&app, &["iam", "project", "create", "team-r"])
        .await
        .ok();
    admin(
        &app,
        &["iam", "user", "create", "rita", "--password", "rita-pw-123"],
    )
    .await
    .ok();
    admin(
        &app,
        &["iam", "grant", "rita", "team-r", "ModelArts ReadOnlyAccess"],
    )
    .await
    .ok();
    let key = admin(&app, &["iam", "key", "create", "rita", "-o", "json"])
        .await
        .json();
    let access_key = key["access_key"].as_str().expect("access key");
    let team = admin(
        &app,
        &["audit", "list", "--project", "team-r", "-o", "json"],
    )
    .await
    .json();
    let actions: Vec<&str> = team
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(actions, ["iam.grant", "iam.project.create"], "{team}");
    // A user of an earlier version named like the trail's own names hides nothing of it.
    let legacy = litejobs::store::UserRecord {
        id: "legacy-cli".into(),
        name: "cli".into(),
        password_hash: None,
        create_at: 1,
    };
    app.store.create_user(&legacy).await.expect("legacy user");
    let own = litejobs::store::AuditRecord {
        at: litejobs::domain::now_ms(),
        project_id: None,
        user_id: legacy.id.clone(),
        user_name: legacy.name.clone(),
        access_key: None,
        action: "token.issue".into(),
        resources: vec![],
        source: "127.0.0.1".into(),
        request_id: "legacy-request".into(),
        outcome: "success".into(),
        status: 201,
        error_code: None,
    };
    app.store.record_audit(&[own]).await.expect("record");
    let commands = admin(&app, &["audit", "list", "--user", "cli", "-o", "json"])
        .await
        .json();
    assert!(
        commands
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["action"] == "iam.grant"),
        "{commands}"
    );
    assert!(
        commands
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["user_id"] == "cli"),
        "the legacy user's own records are not the commands': {commands}"
    );
    let made = admin(
        &app,
        &["audit", "list", "--action", "iam.key.create", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(
        made[0]["resources"],
        serde_json::json!(["rita", access_key]),
        "{made}"
    );
}
