//! Two real `litejobs serve` processes on one PostgreSQL database behave as one service: no
//! job is lost or duplicated, an idempotent create holds across them, and list totals stay
//! exact through concurrent creates, deletes and task completions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use litejobs::client::{Client, ClientAuth, ClientError};
use litejobs::sign::Credentials;
use litejobs::wire::{JobCreateRequest, JobListItem};

use crate::helpers::{job_request, test_database, ServerProcess};

/// A replica with a simulated fleet whose tasks end quickly, no caching of grants or keys, and
/// few database connections (the concurrent requests below wait for them in turn).
async fn start_replica(database_url: &str, admin_file: &Path) -> ServerProcess {
    let admin = admin_file.display().to_string();
    let args = [
        "--auth-cache-ttl",
        "0s",
        "--simulate",
        "--simulate-delay",
        "200ms",
        "--db-max-connections",
        "3",
        "--admin-credentials",
        &admin,
    ];
    let exe = Path::new(env!("CARGO_BIN_EXE_litejobs"));
    let dir = admin_file.parent().unwrap_or(Path::new("."));
    ServerProcess::serve(exe, dir, database_url, &args)
        .await
        .expect("replica starts")
}

fn request(name: &str, visible: bool, job_type: &str) -> JobCreateRequest {
    let mut request = job_request(name, &["sim-server-01", "sim-server-02"]);
    request.visible = Some(visible);
    request.job_type = job_type.to_string();
    request
}

/// Every job of the project, page by page.
async fn list_all(client: &Client) -> Vec<JobListItem> {
    let mut all = Vec::new();
    loop {
        let page = client
            .list_jobs(&[("limit", "1000".into()), ("offset", all.len().to_string())])
            .await
            .expect("list");
        let done = page.data.is_empty();
        all.extend(page.data);
        if done || all.len() as u64 >= page.total {
            return all;
        }
    }
}

async fn total(client: &Client, query: &[(&str, &str)]) -> u64 {
    let mut query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
    query.push(("limit", "1".to_string()));
    client.list_jobs(&query).await.expect("list").total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_behave_as_one_service() {
    let Some(database) = test_database().await else {
        return;
    };
    let database_url = database.url.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_file, b_file) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let a = start_replica(&database_url, &a_file).await;
    let b = start_replica(&database_url, &b_file).await;
    assert!(
        !b_file.exists(),
        "only the first replica creates the administrator"
    );
    let profile = litejobs::serve::read_profile(&a_file).expect("admin profile");
    let auth = ClientAuth::AkSk(Credentials {
        access_key: profile.access_key.clone(),
        secret_key: profile.secret_key.clone(),
    });
    let ca = Client::new(&a.endpoint, &profile.project_id, auth.clone()).expect("client");
    let cb = Client::new(&b.endpoint, &profile.project_id, auth).expect("client");
    let clients = [ca.clone(), cb.clone()];

    // Concurrent creates through both replicas, several types and visibilities.
    let types = ["COMMON", "LOG_COLLECT", "ASCEND_DIAGNOSIS"];
    let mut creates = tokio::task::JoinSet::new();
    for worker in 0..16usize {
        let client = clients[worker % 2].clone();
        creates.spawn(async move {
            let mut made = Vec::new();
            for n in 0..12usize {
                let name = format!("w{worker}-n{n}");
                let req = request(&name, (worker + n) % 3 != 0, types[n % types.len()]);
                made.push(client.create_job(&req, None).await.expect("create").id);
            }
            made
        });
    }

    // Meanwhile the same X-Client-Token reaches both replicas at once: one job.
    let mut idempotent = Vec::new();
    for n in 0..10 {
        let token = format!("replica-token-{n}");
        let req = request(&format!("idem-{n}"), true, "COMMON");
        let (x, y) = tokio::join!(
            ca.create_job(&req, Some(&token)),
            cb.create_job(&req, Some(&token))
        );
        let (x, y) = (x.expect("create on a"), y.expect("create on b"));
        assert_eq!(x.id, y.id, "one token, one job, whichever replica answers");
        let mut other = req.clone();
        other.name = format!("idem-{n}-changed");
        match cb.create_job(&other, Some(&token)).await {
            Err(ClientError::Api { status: 409, .. }) => {}
            other => panic!("reusing a token with another body must be 409, got {other:?}"),
        }
        idempotent.push(x.id);
    }

    let mut created: Vec<String> = Vec::new();
    while let Some(made) = creates.join_next().await {
        created.extend(made.expect("create worker"));
    }
    assert_eq!(created.len(), 16 * 12);
    created.extend(idempotent.iter().cloned());
    let created_set: HashSet<&String> = created.iter().collect();
    assert_eq!(
        created_set.len(),
        created.len(),
        "every create made its own job"
    );

    // Concurrent, overlapping deletes through both replicas, while tasks finish.
    let to_delete: Vec<String> = created.iter().step_by(3).cloned().collect();
    let mut deletes = tokio::task::JoinSet::new();
    for (i, chunk) in to_delete.chunks(8).enumerate() {
        let mut ids = chunk.to_vec();
        if let Some(next) = to_delete.get((i + 1) * 8) {
            ids.push(next.clone()); // overlaps the next chunk's delete
        }
        let client = clients[i % 2].clone();
        deletes.spawn(async move { client.delete_jobs(&ids).await.expect("delete").data });
    }
    let mut answered_deleted = HashSet::new();
    while let Some(page) = deletes.join_next().await {
        for job in page.expect("delete worker") {
            assert_eq!(job.status, "DELETED");
            answered_deleted.insert(job.id);
        }
    }
    let to_delete_set: HashSet<String> = to_delete.iter().cloned().collect();
    assert_eq!(answered_deleted, to_delete_set);

    // Let the simulated tasks of the remaining jobs end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total(&ca, &[("status", "PROCESSING")]).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "jobs still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One service: both replicas list the same jobs, none lost, none twice.
    let listed_a = list_all(&ca).await;
    let listed_b = list_all(&cb).await;
    let ids_a: Vec<&String> = listed_a.iter().map(|j| &j.id).collect();
    let unique_a: HashSet<&String> = ids_a.iter().copied().collect();
    assert_eq!(unique_a.len(), ids_a.len(), "no job is listed twice");
    assert_eq!(
        unique_a, created_set,
        "every created job is listed, and nothing else"
    );
    assert_eq!(
        ids_a,
        listed_b.iter().map(|j| &j.id).collect::<Vec<_>>(),
        "both replicas list the same jobs in the same order"
    );
    for n in 0..10 {
        let named = listed_a
            .iter()
            .filter(|j| j.name == format!("idem-{n}"))
            .count();
        assert_eq!(named, 1, "idem-{n} was created once");
    }
    for job in &listed_a {
        let expected = if to_delete_set.contains(&job.id) {
            "DELETED"
        } else {
            "FINISHED"
        };
        assert_eq!(job.status, expected, "job {}", job.name);
    }

    // Totals are exact on both replicas, for every status, type and visibility.
    let visible_of: HashMap<&str, bool> = (0..16usize)
        .flat_map(|w| (0..12usize).map(move |n| (w, n)))
        .map(|(w, n)| (format!("w{w}-n{n}"), (w + n) % 3 != 0))
        .map(|(name, v)| (listed_name(&listed_a, &name), v))
        .collect();
    let mut expected: BTreeMap<(String, String, bool), u64> = BTreeMap::new();
    for job in &listed_a {
        let visible = visible_of.get(job.id.as_str()).copied().unwrap_or(true);
        *expected
            .entry((job.status.clone(), job.job_type.clone(), visible))
            .or_default() += 1;
    }
    for client in [&ca, &cb] {
        assert_eq!(total(client, &[]).await, created.len() as u64);
        for status in ["PROCESSING", "FINISHED", "DELETED"] {
            let want: u64 = expected
                .iter()
                .filter(|((s, _, _), _)| s == status)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(total(client, &[("status", status)]).await, want, "{status}");
        }
        for ((status, job_type, visible), want) in &expected {
            let visible = visible.to_string();
            let query = [
                ("status", status.as_str()),
                ("type", job_type.as_str()),
                ("visible", visible.as_str()),
            ];
            assert_eq!(total(client, &query).await, *want, "{query:?}");
        }
    }

    a.kill_hard().await.expect("stop a");
    b.kill_hard().await.expect("stop b");
}

/// The id of the listed job named `name`.
fn listed_name<'a>(listed: &'a [JobListItem], name: &str) -> &'a str {
    listed
        .iter()
        .find(|j| j.name == name)
        .map(|j| j.id.as_str())
        .unwrap_or_else(|| panic!("{name} is listed"))
}
