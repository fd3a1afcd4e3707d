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

fn demo_client(endpoint: &str) -> Client {
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
