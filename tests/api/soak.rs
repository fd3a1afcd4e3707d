//! `kill -9` under load, round after round, on both backends, with an invariant checker:
//! every acknowledged job is there after each restart (deleted ones as `DELETED`); a create
//! retried with its `X-Client-Token` after the crash makes one job, never two; and the total
//! equals the jobs listed and the sum of the per-status totals. `LITEJOBS_LONG_TESTS=1`
//! runs more and longer rounds.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litejobs::client::{Client, ClientAuth, ClientError};
use litejobs::sign::Credentials;
use litejobs::testkit::ServerProcess;

use crate::helpers::{job_request, test_database};

fn long_tests() -> bool {
    std::env::var_os("LITEJOBS_LONG_TESTS").is_some()
}

/// What the writers were told, and what they asked without an answer.
#[derive(Default)]
struct Ledger {
    /// Token → the job acknowledged for it.
    acknowledged: HashMap<String, String>,
    /// Jobs whose delete was acknowledged.
    deleted: HashSet<String>,
    /// Tokens whose create got no answer (the server died meanwhile).
    unanswered: HashSet<String>,
}

async fn start(dir: &Path, url: &str) -> ServerProcess {
    let exe = Path::new(env!("CARGO_BIN_EXE_litejobs"));
    let args = ["--simulate", "--simulate-delay", "100ms"];
    ServerProcess::serve(exe, dir, url, &args)
        .await
        .expect("the server starts")
}

fn client(endpoint: &str, dir: &Path) -> Client {
    let profile = litejobs::serve::read_profile(&dir.join("litejobs-admin.json")).expect("profile");
    let auth = ClientAuth::AkSk(Credentials {
        access_key: profile.access_key,
        secret_key: profile.secret_key,
    });
    Client::new(endpoint, &profile.project_id, auth).expect("client")
}

/// Creates (and now and then deletes) jobs as fast as it can until the server goes away.
async fn write(client: Client, round: usize, writer: usize, ledger: Arc<Mutex<Ledger>>) {
    for i in 0.. {
        let token = format!("r{round}-w{writer}-{i}");
        let request = job_request(&token, &["sim-server-01", "sim-server-02"]);
        let job = match client.create_job(&request, Some(&token)).await {
            Ok(job) => job,
            Err(ClientError::Api { status, .. }) if status < 500 => {
                panic!("{token}: refused with {status}")
            }
            Err(_) => {
                ledger.lock().expect("ledger").unanswered.insert(token);
                return;
            }
        };
        ledger
            .lock()
            .expect("ledger")
            .acknowledged
            .insert(token, job.id.clone());
        if i % 4 == 3 {
            match client.delete_jobs(std::slice::from_ref(&job.id)).await {
                Ok(_) => {
                    ledger.lock().expect("ledger").deleted.insert(job.id);
                }
                Err(_) => return,
            }
        }
    }
}

/// Every job of the project, page by page.
async fn all_jobs(client: &Client) -> Vec<litejobs::wire::JobListItem> {
    let mut all = Vec::new();
    loop {
        let page = client
            .list_jobs(&[("limit", "1000".into()), ("offset", all.len().to_string())])
            .await
            .expect("list");
        let done = page.data.is_empty() || all.len() + page.data.len() >= page.total as usize;
        all.extend(page.data);
        if done {
            return all;
        }
    }
}

async fn total(client: &Client, query: &[(&str, &str)]) -> u64 {
    let mut query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
    query.push(("limit", "1".to_string()));
    client.list_jobs(&query).await.expect("list").total
}

/// Checks what the ledger says against what the restarted server answers, after retrying
/// every create that got no answer.
async fn check(client: &Client, ledger: &mut Ledger) {
    for token in std::mem::take(&mut ledger.unanswered) {
        let request = job_request(&token, &["sim-server-01", "sim-server-02"]);
        let job = client
            .create_job(&request, Some(&token))
            .await
            .expect("a retried create is answered");
        ledger.acknowledged.insert(token, job.id);
    }
    // The simulated fleet ends every task within a moment: totals are compared once no job
    // is running any more, as their statuses no longer move then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while total(client, &[("status", "PROCESSING")]).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "jobs still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = all_jobs(client).await;
    let by_id: HashMap<&str, &litejobs::wire::JobListItem> =
        jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    assert_eq!(by_id.len(), jobs.len(), "a job listed twice");
    for (token, id) in &ledger.acknowledged {
        let job = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged job {id} ({token}) lost"));
        assert_eq!(&job.name, token);
        if ledger.deleted.contains(id) {
            assert_eq!(job.status, "DELETED", "{token}");
        }
    }
    // One job per token, whatever the retries.
    let mut names = HashSet::new();
    for job in &jobs {
        assert!(names.insert(job.name.as_str()), "two jobs for {}", job.name);
    }
    // Totals: the listed jobs, and the sum of the per-status totals.
    let all = total(client, &[]).await;
    assert_eq!(all as usize, jobs.len());
    let mut by_status = 0;
    let mut counts = Vec::new();
    for status in ["PROCESSING", "FINISHED", "DELETED"] {
        let n = total(client, &[("status", status)]).await;
        let listed = jobs.iter().filter(|j| j.status == status).count();
        counts.push((status, n, listed));
        by_status += n;
    }
    assert_eq!(by_status, all, "per status (total, listed): {counts:?}");
}

async fn soak(url: &str, dir: &Path) {
    let (rounds, load) = if long_tests() {
        (12, Duration::from_secs(4))
    } else {
        (3, Duration::from_millis(700))
    };
    let mut ledger = Ledger::default();
    for round in 0..rounds {
        let server = start(dir, url).await;
        let c = client(&server.endpoint, dir);
        check(&c, &mut ledger).await;
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let writers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(write(c.clone(), round, w, shared.clone())))
            .collect();
        tokio::time::sleep(load).await;
        server.kill_hard().await.expect("kill -9");
        for writer in writers {
            writer.await.expect("writer");
        }
        ledger = std::mem::take(&mut *shared.lock().expect("ledger"));
        assert!(
            !ledger.acknowledged.is_empty(),
            "round {round} made progress"
        );
    }
    let server = start(dir, url).await;
    check(&client(&server.endpoint, dir), &mut ledger).await;
    server.kill_hard().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rounds_lose_and_duplicate_nothing_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("soak.db").display());
    soak(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rounds_lose_and_duplicate_nothing_on_postgres() {
    let Some(database) = test_database().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    soak(&database.url, dir.path()).await;
}
