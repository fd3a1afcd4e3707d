//! Durability: a job answered 200 survives `kill -9` of the server and a restart, and no
//! job is left half-written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litejobs::client::{Client, ClientAuth};
use litejobs::sign::Credentials;

use crate::helpers::{job_request, serve_process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let sim = ["--simulate", "--simulate-delay", "50ms"];
    let server = serve_process(dir.path(), &db, &sim).await;
    let profile =
        litejobs::serve::read_profile(&dir.path().join("litejobs-admin.json")).expect("profile");
    let credentials = Credentials {
        access_key: profile.access_key.clone(),
        secret_key: profile.secret_key.clone(),
    };
    let client = |endpoint: &str| {
        Client::new(
            endpoint,
            &profile.project_id,
            ClientAuth::AkSk(credentials.clone()),
        )
        .expect("client")
    };

    // Four writers create jobs as fast as they can, recording every acknowledged id.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = client(&server.endpoint);
        let acked = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let servers = ["sim-server-01", "sim-server-02", "sim-server-03"];
                match c
                    .create_job(&job_request(&format!("w{w}-{i}"), &servers), None)
                    .await
                {
                    Ok(job) => acked.lock().expect("lock").push(job.id),
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the load run, then pull the plug mid-flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().expect("lock").len() < 150 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_hard().await.expect("kill");
    for w in writers {
        w.await.expect("writer");
    }
    let acked: HashSet<String> = acknowledged.lock().expect("lock").iter().cloned().collect();
    assert!(acked.len() >= 20, "the load made progress before the crash");

    let restarted = serve_process(dir.path(), &db, &sim).await;
    let c = client(&restarted.endpoint);
    let page = c
        .list_jobs(&[("limit", "1000".into())])
        .await
        .expect("list after restart");
    let stored: HashSet<String> = page.data.iter().map(|j| j.id.clone()).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
    // Totals (kept by counters) agree with the rows; every job is whole.
    assert_eq!(page.total as usize, page.data.len());
    for job in &page.data {
        let detail = c.get_job(&job.id).await.expect("detail");
        assert_eq!(detail.tasks.len(), 3, "job {} is whole", job.id);
        assert_eq!(detail.items.len(), 1);
    }
    // And the service goes on: the interrupted jobs still finish.
    let any = page.data.first().expect("a job").id.clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let detail = c.get_job(&any).await.expect("detail");
        if detail.status == "FINISHED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "job never finished after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restarted.kill_hard().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("term.db").display());
    let server = serve_process(dir.path(), &db, &[]).await;
    // A service manager's reload (SIGHUP) ends nothing, TLS or not.
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(format!("{}/health", server.endpoint))
        .await
        .expect("still serving after SIGHUP");
    assert_eq!(health.status().as_u16(), 200);
    let exit = server.terminate().await.expect("exits after SIGTERM");
    assert!(exit.success(), "clean exit, got {exit:?}");
}

/// A server whose database reaches the process's file-size limit (`ulimit -f`) refuses the
/// change that would pass it (503), as on a full disk, and goes on: the signal such a write
/// sends would otherwise kill it, and again at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_file_size_limit_is_refused_and_the_server_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let args: Vec<std::ffi::OsString> = [
        "-c",
        // 2 MiB: the fresh database's write-ahead log is a good part of it already.
        "ulimit -f 2048 && exec \"$0\" serve --simulate --addr 127.0.0.1:0 --rate-limit 0 \
         --database-url lj.db",
        env!("CARGO_BIN_EXE_litejobs"),
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .collect();
    let server =
        litejobs::testkit::ServerProcess::spawn(std::path::Path::new("/bin/sh"), &args, dir.path())
            .await
            .expect("serves");
    let demo = crate::emulator::demo_client(&server.endpoint);
    let mut refused = None;
    for n in 0..2000 {
        let name = format!("big-{n}");
        let mut request = job_request(&name, &["sim-server-01", "sim-server-02"]);
        request.items[0].spec = Some([("cmd".to_string(), "x".repeat(4000))].into());
        if let Err(e) = demo.create_job(&request, None).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(litejobs::client::ClientError::Api { status: 503, .. }) => {}
        other => panic!("expected a 503 at the limit: {other:?}"),
    }
    let page = demo.list_jobs(&[]).await.expect("the server still answers");
    assert!(page.total > 0);
    server.terminate().await.expect("stops");
}

/// The administrator of the server started in `dir`, signing with a token; and the token.
async fn admin_by_token(
    server: &litejobs::testkit::ServerProcess,
    dir: &std::path::Path,
) -> (Client, String) {
    let profile = litejobs::serve::read_profile(&dir.join("litejobs-admin.json")).expect("profile");
    let password = profile.password.clone().expect("password");
    let token =
        litejobs::client::issue_token(&server.endpoint, "admin", &password, &profile.project_id)
            .await
            .expect("token");
    let auth = ClientAuth::Token(token.clone());
    let client = Client::new(&server.endpoint, &profile.project_id, auth).expect("client");
    (client, token)
}

/// Sends a whole create of job `name` on `servers` as `client`'s caller, then resets the
/// connection `after` later, without waiting for the answer.
async fn create_and_go(
    server: &litejobs::testkit::ServerProcess,
    client: &Client,
    token: &str,
    (name, servers): (&str, &[&str]),
    after: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_string(&job_request(name, servers)).expect("body");
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        client.project_path("/dev-servers/jobs"),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("sent");
    tokio::time::sleep(after).await;
    // (Deprecated for lingers that block a drop; a zero one does not: it resets.)
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
}

/// The number of jobs whose names hold `name`.
async fn jobs_named(client: &Client, name: &str) -> u64 {
    let query = [("name", name.to_string()), ("limit", "1".to_string())];
    client.list_jobs(&query).await.expect("list").total
}

/// Creates whose clients reset their connections just after sending them are carried out
/// whole, or not at all: every job made is in the audit trail, and no connection is left
/// inside a transaction for a later request to find (PostgreSQL says so in a notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_whose_clients_went_away_are_carried_through() {
    let dir = tempfile::tempdir().expect("dir");
    let database = litejobs::testkit::test_database().await;
    let sqlite = format!("sqlite://{}", dir.path().join("gone.db").display());
    let urls: Vec<String> = std::iter::once(sqlite)
        .chain(database.as_ref().map(|d| d.url.clone()))
        .collect();
    for (n, url) in urls.iter().enumerate() {
        let here = dir.path().join(format!("server-{n}"));
        std::fs::create_dir(&here).expect("dir");
        let server = serve_process(&here, url, &["--simulate"]).await;
        let (admin, token) = admin_by_token(&server, &here).await;
        for i in 0..200u64 {
            // Gone at moments from at once to a few milliseconds later.
            let name = format!("gone-{i}");
            let after = Duration::from_micros(i % 5 * 800);
            create_and_go(
                &server,
                &admin,
                &token,
                (&name, &["sim-server-01", "sim-server-02"]),
                after,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let made = jobs_named(&admin, "gone-").await;
        let store = litejobs::store::open(url).await.expect("store");
        let recorded = store
            .list_audit(&litejobs::store::AuditFilter {
                action: Some("job.create".into()),
                outcome: Some("success".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("audit");
        assert_eq!(
            recorded.len() as u64,
            made,
            "{url}: every job made is recorded"
        );
        let log = server.log_tail();
        assert!(
            !log.contains("transaction in progress"),
            "{url}: a connection was left in a transaction:\n{log}"
        );
        server.terminate().await.expect("stops");
    }
}

/// Clients that send a change and go cannot pile up work without bound: while the database
/// holds every create back, at most `MAX_ORPHANED_CHANGES` of theirs go on; the others are
/// stopped, as a request whose client goes was before (and each one made is recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_whose_clients_went_away_are_carried_through_within_a_bound() {
    let Some(database) = litejobs::testkit::test_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let server = serve_process(dir.path(), &database.url, &["--simulate"]).await;
    let (admin, token) = admin_by_token(&server, dir.path()).await;
    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url)
        .await
        .expect("connect");
    for statement in ["BEGIN", "LOCK TABLE jobs IN EXCLUSIVE MODE"] {
        sqlx::query(statement)
            .execute(&mut holder)
            .await
            .expect(statement);
    }
    let sent = 3 * litejobs::http::MAX_ORPHANED_CHANGES;
    for i in 0..sent {
        let name = format!("held-{i}");
        let after = Duration::from_millis(2);
        create_and_go(&server, &admin, &token, (&name, &["sim-server-01"]), after).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("commit");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = jobs_named(&admin, "held-").await;
    assert!(made > 0, "some were carried through");
    assert!(
        made <= litejobs::http::MAX_ORPHANED_CHANGES as u64,
        "{made} of {sent} went on without their clients"
    );
    server.terminate().await.expect("stops");
}
