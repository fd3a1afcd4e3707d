//! A fleet an operator can trust, with real `litejobs serve` and `litejobs agent` processes
//! on loopback: timeouts and deletes leave no process of the command alive (looked for in
//! `/proc`), output of any size keeps the agent's memory flat, a crashed agent's task is
//! leased again and its late report refused, a restarted server's tasks still finish once,
//! a task no agent runs fails after the start timeout, two agents of one server never run a
//! task twice, an agent frozen past its lease or throttled when it reports runs its task
//! once, and on PostgreSQL a job created on one replica reaches an agent waiting on
//! another at once.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use litejobs::client::{Client, ClientAuth, ClientError};
use litejobs::sign::Credentials;
use litejobs::testkit::ServerProcess;
use litejobs::wire::{AgentResult, JobCreateRequest, JobDetail, JobItem};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_litejobs"))
}

/// A server in `dir` (SQLite unless `url` names another database), with a short lease, a
/// short start timeout, and a `SHORT` template whose tasks may run 2 seconds.
async fn server(dir: &Path, url: Option<&str>, addr: Option<&str>) -> ServerProcess {
    server_with(dir, url, addr, "2s", &[]).await
}

/// [`server`] with another start timeout, and more flags.
async fn server_with(
    dir: &Path,
    url: Option<&str>,
    addr: Option<&str>,
    start_timeout: &str,
    more: &[&str],
) -> ServerProcess {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).expect("templates dir");
    let short = serde_json::json!({
        "id": "short-template", "name": "short", "description": "COMMON with a 2 s timeout",
        "cmd": "/bin/sh -c \"${cmd}\"", "swr_path": "", "resources": "", "volumes": "",
        "volumes_mount": "", "flavor_type": "ASCEND_GENERIC", "timeout": "2",
        "check_interval": "1", "type": "SHORT", "status": "ACTIVE",
        "params": [{"name": "cmd", "description": "", "value": "", "visible": "true",
                    "regex": "^.{1,4096}$"}]
    });
    std::fs::write(templates.join("short.json"), short.to_string()).expect("template");
    let db = url.map_or_else(
        || format!("sqlite://{}", dir.join("fleet.db").display()),
        str::to_string,
    );
    let args: Vec<OsString> = [
        "serve",
        "--addr",
        addr.unwrap_or("127.0.0.1:0"),
        "--database-url",
        &db,
        "--rate-limit",
        "0",
        "--auth-cache-ttl",
        "0s",
        "--agent-lease",
        "3s",
        "--task-start-timeout",
        start_timeout,
        "--templates-dir",
        &templates.display().to_string(),
    ]
    .iter()
    .chain(more)
    .map(OsString::from)
    .collect();
    ServerProcess::spawn(exe(), &args, dir)
        .await
        .expect("the server starts")
}

fn admin(server: &ServerProcess, dir: &Path) -> Client {
    let profile = litejobs::serve::read_profile(&dir.join("litejobs-admin.json")).expect("profile");
    let auth = ClientAuth::AkSk(Credentials {
        access_key: profile.access_key,
        secret_key: profile.secret_key,
    });
    Client::new(&server.endpoint, &profile.project_id, auth).expect("client")
}

/// The admin's project id.
fn client_project(dir: &Path) -> String {
    let profile = litejobs::serve::read_profile(&dir.join("litejobs-admin.json"));
    profile.expect("profile").project_id
}

/// `litejobs servers list -o json` of the admin's project, through the CLI.
fn servers_json(dir: &Path) -> Vec<serde_json::Value> {
    let servers = std::process::Command::new(exe())
        .current_dir(dir)
        .args([
            "servers",
            "list",
            "--database-url",
            "fleet.db",
            "-o",
            "json",
        ])
        .args(["--project", &client_project(dir)])
        .output()
        .expect("servers list runs");
    assert!(
        servers.status.success(),
        "{}",
        String::from_utf8_lossy(&servers.stderr)
    );
    serde_json::from_slice(&servers.stdout).expect("json")
}

/// A running `litejobs agent`.
struct Agent {
    child: tokio::process::Child,
}

impl Agent {
    fn start(server: &ServerProcess, dir: &Path, server_id: &str) -> Self {
        let child = tokio::process::Command::new(exe())
            .current_dir(dir)
            .args([
                "agent",
                "--server-id",
                server_id,
                "--endpoint",
                &server.endpoint,
            ])
            .args([
                "--heartbeat",
                "500ms",
                "--poll-wait",
                "20",
                "--kill-grace",
                "1s",
            ])
            .arg("--profile")
            .arg(dir.join("litejobs-admin.json"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent starts");
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Peak resident memory (`VmHWM`), in KiB.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the agent's status");
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("VmHWM")
    }

    async fn kill_hard(mut self) {
        self.child.kill().await.expect("kill");
    }
}

fn job(name: &str, job_type: &str, servers: &[&str], cmd: &str) -> JobCreateRequest {
    JobCreateRequest {
        name: name.to_string(),
        description: None,
        server_ids: servers.iter().map(|s| s.to_string()).collect(),
        job_type: job_type.to_string(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: job_type.to_string(),
            spec: Some([("cmd".to_string(), cmd.to_string())].into()),
        }],
        visible: None,
    }
}

/// Registers `ids` as agent servers of the admin's project.
async fn register(client: &Client, ids: &[&str]) {
    for id in ids {
        client
            .register_server(id, &litejobs::wire::AgentRegistration::default())
            .await
            .expect("register");
    }
}

/// Waits (at most `limit`) until `check` holds of the job.
async fn wait_job(
    client: &Client,
    id: &str,
    limit: Duration,
    check: impl Fn(&JobDetail) -> bool,
) -> JobDetail {
    let deadline = Instant::now() + limit;
    loop {
        let job = client.get_job(id).await.expect("job");
        if check(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never got there: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Asserts that a command writing a line to `runs` at its start ran once.
fn assert_ran_once(runs: &Path) {
    let started = std::fs::read_to_string(runs).expect("runs");
    assert_eq!(
        started.lines().count(),
        1,
        "the command ran once: {started:?}"
    );
}

async fn wait_until(limit: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_and_a_delete_leave_no_process_of_the_command() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&server, dir.path(), "node-1");
    // The SHORT template gives 2 s: a background process of the command goes too.
    let timed = client
        .create_job(
            &job("timed", "SHORT", &["node-1"], "sleep 33.11 & sleep 34.11"),
            None,
        )
        .await
        .expect("create");
    let ended = wait_job(&client, &timed.id, Duration::from_secs(20), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(ended.tasks[0].status, "FAILED");
    assert!(
        ended.tasks[0].message.contains("timed out"),
        "{}",
        ended.tasks[0].message
    );
    wait_until(Duration::from_secs(5), "no sleep 33.11 left", || {
        processes_with("33.11").is_empty() && processes_with("34.11").is_empty()
    })
    .await;
    // A delete cancels a running command: its processes are gone within 5 s.
    let deleted = client
        .create_job(
            &job(
                "deleted",
                "COMMON",
                &["node-1"],
                "sleep 41.22 & sleep 42.22",
            ),
            None,
        )
        .await
        .expect("create");
    wait_until(Duration::from_secs(10), "the command running", || {
        !processes_with("42.22").is_empty()
    })
    .await;
    client
        .delete_jobs(std::slice::from_ref(&deleted.id))
        .await
        .expect("delete");
    let took = wait_until(
        Duration::from_secs(5),
        "the command's processes gone",
        || processes_with("41.22").is_empty() && processes_with("42.22").is_empty(),
    )
    .await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let shown = client.get_job(&deleted.id).await.expect("job");
    assert_eq!(shown.tasks[0].status, "SKIPPED");
    assert!(shown.tasks[0].message.contains("deleted"));
    agent.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_of_output_finish_promptly_with_the_agent_memory_flat() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&server, dir.path(), "node-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = agent.peak_kib();
    // 8 MiB to stderr first (which a reader of stdout alone would block on), then 64 MiB.
    let cmd =
        "head -c 8388608 /dev/zero | tr '\\0' e >&2; head -c 67108864 /dev/zero | tr '\\0' o; \
               echo; echo the-end";
    let created = client
        .create_job(&job("loud", "COMMON", &["node-1"], cmd), None)
        .await
        .expect("create");
    let started = Instant::now();
    let done = wait_job(&client, &created.id, Duration::from_secs(60), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(
        done.tasks[0].status,
        "SUCCESS",
        "{}",
        &done.tasks[0].message[..200.min(done.tasks[0].message.len())]
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(done.tasks[0].message.ends_with("the-end\n"));
    assert!(done.tasks[0].message.len() <= 64 * 1024 + 64);
    let after = agent.peak_kib();
    assert!(
        after < before + 32 * 1024,
        "agent peak {before} KiB, then {after} KiB"
    );
    // The tail of the output, as uploaded, is there to read (`jobs logs`).
    let output = client
        .task_output(&created.id, &done.tasks[0].id)
        .await
        .expect("output");
    assert!(output.output.ends_with("the-end\n"));
    assert!(output.output.len() <= 1024 * 1024);
    let logs = std::process::Command::new(exe())
        .current_dir(dir.path())
        .args(["jobs", "logs", &created.id, "--server", "node-1"])
        .output()
        .expect("jobs logs runs");
    assert!(logs.status.success());
    assert!(String::from_utf8_lossy(&logs.stdout).ends_with("the-end\n"));
    agent.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agents_task_is_leased_again_and_its_late_report_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let first = Agent::start(&server, dir.path(), "node-1");
    let created = client
        .create_job(
            &job(
                "crash",
                "COMMON",
                &["node-1"],
                "sleep 2.5; echo done-$RANDOM",
            ),
            None,
        )
        .await
        .expect("create");
    wait_until(
        Duration::from_secs(10),
        "the first agent running it",
        || !processes_with("2.5; echo done").is_empty() || !processes_with("sleep 2.5").is_empty(),
    )
    .await;
    first.kill_hard().await;
    let crashed_at = Instant::now();
    let second = Agent::start(&server, dir.path(), "node-1");
    let done = wait_job(&client, &created.id, Duration::from_secs(30), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "SUCCESS");
    // Leased again within about one lease (3 s), and run to its end (2.5 s).
    assert!(
        crashed_at.elapsed() < Duration::from_secs(15),
        "{:?}",
        crashed_at.elapsed()
    );
    // The first lease's report comes too late: refused.
    let late = AgentResult {
        status: "FAILED".into(),
        message: "from the dead lease".into(),
        lease_epoch: Some(1),
    };
    match client
        .report_result("node-1", &done.tasks[0].id, &late)
        .await
    {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }
    second.kill_hard().await;
}

/// An agent frozen for longer than a lease (a stalled network, a paused VM) while its
/// command runs: its own waiting lease request takes the task again, and the command goes on
/// under the new lease instead of being stopped and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_for_longer_than_a_lease_runs_its_task_once() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server_with(dir.path(), None, None, "60s", &[]).await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&server, dir.path(), "node-1");
    let runs = dir.path().join("runs.txt");
    let cmd = format!("echo run >> {}; sleep 7; echo frozen-once", runs.display());
    let created = client
        .create_job(&job("frozen", "COMMON", &["node-1"], &cmd), None)
        .await
        .expect("create");
    wait_until(Duration::from_secs(10), "the command running", || {
        runs.exists()
    })
    .await;
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &agent.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    };
    // Longer than the 3 s lease and its renewals.
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal("-CONT");
    let done = wait_job(&client, &created.id, Duration::from_secs(30), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "SUCCESS", "{}", done.tasks[0].message);
    assert_ran_once(&runs);
    agent.kill_hard().await;
}

/// A report the service cannot take yet (429: the key's rate limit) is sent again, not
/// dropped: the task is not run a second time when its lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_report_is_sent_again_and_the_task_runs_once() {
    let dir = tempfile::tempdir().expect("dir");
    let fault = "op=POST /v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/result,\
                 status=429,times=2";
    let server = server_with(
        dir.path(),
        None,
        None,
        "60s",
        &["--simulate", "--fault", fault],
    )
    .await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&server, dir.path(), "node-1");
    let runs = dir.path().join("runs.txt");
    let cmd = format!("echo run >> {}; echo throttled-once", runs.display());
    let created = client
        .create_job(&job("throttled", "COMMON", &["node-1"], &cmd), None)
        .await
        .expect("create");
    let done = wait_job(&client, &created.id, Duration::from_secs(30), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "SUCCESS", "{}", done.tasks[0].message);
    let journal = client
        .send(reqwest::Method::GET, "/_litejobs/requests", &[], None, &[])
        .await
        .expect("journal");
    let journal: serde_json::Value = serde_json::from_slice(&journal.body).expect("json");
    let throttled = journal["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| {
            r["status"] == 429 && r["path"].as_str().is_some_and(|p| p.ends_with("/result"))
        })
        .count();
    assert_eq!(throttled, 2, "{journal}");
    // Longer than a lease (3 s): a dropped result would have had the task leased again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_ran_once(&runs);
    agent.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_task_still_gets_its_result_once() {
    let dir = tempfile::tempdir().expect("dir");
    let first = server(dir.path(), None, None).await;
    let addr = first.addr.to_string();
    let client = admin(&first, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&first, dir.path(), "node-1");
    let created = client
        .create_job(
            &job("restart", "COMMON", &["node-1"], "sleep 4; echo once"),
            None,
        )
        .await
        .expect("create");
    wait_until(Duration::from_secs(10), "the command running", || {
        !processes_with("sleep 4; echo once").is_empty() || !processes_with("sleep 4").is_empty()
    })
    .await;
    let exit = first.terminate().await.expect("stops");
    assert!(exit.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = server(dir.path(), None, Some(&addr)).await;
    let client = admin(&second, dir.path());
    let done = wait_job(&client, &created.id, Duration::from_secs(40), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "SUCCESS", "{}", done.tasks[0].message);
    assert_eq!(done.tasks[0].message.matches("once").count(), 1);
    assert_eq!(done.abnormal_count, 0);
    agent.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_agent_picks_up_fails_after_the_start_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["nobody-home"]).await;
    let created = client
        .create_job(&job("orphan", "COMMON", &["nobody-home"], "true"), None)
        .await
        .expect("create");
    let done = wait_job(&client, &created.id, Duration::from_secs(20), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "FAILED");
    assert!(
        done.tasks[0]
            .message
            .contains("no agent of server nobody-home"),
        "{}",
        done.tasks[0].message
    );
    assert_eq!(done.abnormal_count, 1);
    assert_eq!(
        done.tasks[0].server_online,
        Some(false),
        "in the task answer too"
    );
    let home = servers_json(dir.path())
        .into_iter()
        .find(|s| s["id"] == "nobody-home")
        .expect("the server");
    assert_eq!(home["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_with_one_server_id_run_each_task_once() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["twin"]).await;
    let ran = dir.path().join("ran.txt");
    let (a, b) = (
        Agent::start(&server, dir.path(), "twin"),
        Agent::start(&server, dir.path(), "twin"),
    );
    let mut ids = Vec::new();
    for n in 0..8 {
        let cmd = format!("echo task-{n} >> {}; sleep 0.3", ran.display());
        let created = client
            .create_job(&job(&format!("twin-{n}"), "COMMON", &["twin"], &cmd), None)
            .await
            .expect("create");
        ids.push(created.id);
    }
    for id in &ids {
        let done = wait_job(&client, id, Duration::from_secs(30), |j| {
            j.status == "FINISHED"
        })
        .await;
        assert_eq!(done.tasks[0].server_online, Some(true));
    }
    let text = std::fs::read_to_string(&ran).expect("ran");
    let twin = servers_json(dir.path())
        .into_iter()
        .find(|s| s["id"] == "twin")
        .expect("the server");
    assert_eq!(twin["online"], true, "{twin}");
    for n in 0..8 {
        assert_eq!(text.matches(&format!("task-{n}\n")).count(), 1, "{text}");
    }
    a.kill_hard().await;
    b.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_job_created_on_one_replica_reaches_an_agent_on_another_at_once() {
    let Some(database) = litejobs::testkit::test_database().await else {
        return;
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = server(dir_a.path(), Some(&database.url), None).await;
    let b = server(dir_b.path(), Some(&database.url), None).await;
    // Both replicas answer for the administrator the first one created.
    let profile = dir_a.path().join("litejobs-admin.json");
    std::fs::copy(&profile, dir_b.path().join("litejobs-admin.json")).expect("profile");
    let on_a = admin(&a, dir_a.path());
    let on_b = admin(&b, dir_b.path());
    register(&on_a, &["node-x"]).await;
    let agent = Agent::start(&a, dir_a.path(), "node-x");
    // The agent's long poll waits 20 s: a task it gets sooner was announced across replicas.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let created = on_b
        .create_job(&job("across", "COMMON", &["node-x"], "echo across"), None)
        .await
        .expect("create on b");
    let started = Instant::now();
    let done = wait_job(&on_b, &created.id, Duration::from_secs(15), |j| {
        j.status == "FINISHED"
    })
    .await;
    assert_eq!(done.tasks[0].status, "SUCCESS");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    agent.kill_hard().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_logs_follow_prints_a_running_commands_output_until_it_ends() {
    let dir = tempfile::tempdir().expect("dir");
    let server = server(dir.path(), None, None).await;
    let client = admin(&server, dir.path());
    register(&client, &["node-1"]).await;
    let agent = Agent::start(&server, dir.path(), "node-1");
    let cmd = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.8; done";
    let created = client
        .create_job(&job("follow", "COMMON", &["node-1"], cmd), None)
        .await
        .expect("create");
    let follow = tokio::process::Command::new(exe())
        .current_dir(dir.path())
        .args(["jobs", "logs", &created.id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("jobs logs --follow ends with the job")
        .expect("jobs logs runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    // The agent heads each item's output with the item; a job of one server needs no
    // server id before each line.
    let expected: Vec<String> = std::iter::once("[item 1 COMMON]".to_string())
        .chain((1..=5).map(|i| format!("line-{i}")))
        .collect();
    assert_eq!(lines, expected, "each line once, in order:\n{printed}");
    // As JSON: one object per task and piece of output.
    let json = std::process::Command::new(exe())
        .current_dir(dir.path())
        .args(["jobs", "logs", &created.id, "-o", "json"])
        .output()
        .expect("jobs logs runs");
    assert!(json.status.success());
    let pieces: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(pieces.len(), 1, "{pieces:?}");
    assert_eq!(pieces[0]["server_id"], "node-1");
    assert_eq!(pieces[0]["task_id"], created.tasks[0].id.as_str());
    assert_eq!(pieces[0]["output"], format!("{}\n", expected.join("\n")));
    // A reader that went away (`| head`) ends the command without an error, as it ends the
    // others.
    for format in ["table", "json"] {
        let (reader, writer) = nix::unistd::pipe().expect("a pipe");
        drop(reader);
        let gone = std::process::Command::new(exe())
            .current_dir(dir.path())
            .args(["jobs", "logs", &created.id, "-o", format])
            .stdout(Stdio::from(writer))
            .output()
            .expect("jobs logs runs");
        let said = String::from_utf8_lossy(&gone.stderr);
        assert!(gone.status.success() && said.is_empty(), "{format}: {said}");
    }
    agent.kill_hard().await;
}
