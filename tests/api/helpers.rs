//! `TestApp`: the real server on a random loopback port, on a fresh SQLite file or a fresh
//! PostgreSQL database, with typed clients.

use std::sync::Arc;
use std::time::Duration;

use litejobs::client::{Client, ClientAuth, RawResponse};
use litejobs::config::ServeConfig;
use litejobs::serve::Server;
use litejobs::sign::Credentials;
use litejobs::store::Store;
use litejobs::testkit::ScratchDatabase;
pub use litejobs::testkit::{test_database, ServerProcess};
use litejobs::wire::{JobCreateRequest, JobDetail, JobItem};
use reqwest::Method;
use tokio_util::sync::CancellationToken;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    /// The administrator's client in the `default` project.
    pub admin: Client,
    pub project_id: String,
    pub credentials: Credentials,
    pub store: Arc<dyn Store>,
    pub database_url: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of the test, dropped with it.
    pub database: Option<ScratchDatabase>,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings of a test server: simulated fleet with a short delay, no rate limit.
pub fn test_config(dir: &std::path::Path, database_url: &str) -> ServeConfig {
    let mut config = ServeConfig::defaults();
    config.addr = "127.0.0.1:0".parse().expect("addr");
    config.database_url = database_url.to_string();
    config.admin_credentials = dir.join("admin.json");
    config.simulate = true;
    config.simulate_delay = Duration::from_millis(150);
    config.rate_limit = 0;
    // Revocations must show at once in tests.
    config.auth_cache_ttl = Duration::ZERO;
    config
}

impl TestApp {
    /// A server on `backend`; `None` when that backend is unavailable here.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn sqlite() -> Self {
        Self::spawn(Backend::Sqlite)
            .await
            .expect("sqlite is always available")
    }

    /// A server on `backend` with settings adjusted by `adjust`.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("litejobs.db").display()),
                None,
            ),
            Backend::Postgres => {
                let db = test_database().await?;
                (db.url.clone(), Some(db))
            }
        };
        let mut config = test_config(dir.path(), &database_url);
        adjust(&mut config);
        let mut app = Self::start(dir, config).await;
        app.database = database;
        Some(app)
    }

    /// Starts a server with exactly `config` (whose files live in `dir`).
    pub async fn start(dir: tempfile::TempDir, config: ServeConfig) -> Self {
        let database_url = config.database_url.clone();
        let admin_file = config.admin_credentials.clone();
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr().expect("local addr");
        let store = server.store();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server.run(shutdown.clone()));
        let profile = litejobs::serve::read_profile(&admin_file).expect("admin profile");
        let endpoint = format!("http://{addr}");
        let credentials = Credentials {
            access_key: profile.access_key.clone(),
            secret_key: profile.secret_key.clone(),
        };
        let admin = Client::new(
            &endpoint,
            &profile.project_id,
            ClientAuth::AkSk(credentials.clone()),
        )
        .expect("client");
        Self {
            endpoint,
            addr,
            admin,
            project_id: profile.project_id,
            credentials,
            store,
            database_url,
            dir,
            database: None,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran cleanly");
        }
    }

    /// A signed request from the administrator: path relative to `/v1/{project}`.
    pub async fn admin_send(
        &self,
        method: Method,
        rest: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> RawResponse {
        let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let path = self.admin.project_path(rest);
        self.admin
            .send(
                method,
                &path,
                &query,
                body.map(|b| b.to_string().into_bytes()),
                &[],
            )
            .await
            .expect("request reaches the server")
    }

    /// An unsigned request with a raw path and query.
    pub async fn raw(&self, method: Method, path_and_query: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, format!("{}{}", self.endpoint, path_and_query))
            .send()
            .await
            .expect("request reaches the server")
    }

    /// Creates a job of `COMMON` type on the given simulated servers.
    pub async fn create_job(&self, name: &str, servers: &[&str]) -> JobDetail {
        self.admin
            .create_job(&job_request(name, servers), None)
            .await
            .expect("job created")
    }

    /// Polls (at most `timeout`) until the job reaches `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> JobDetail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.admin.get_job(id).await.expect("job readable");
            if job.status == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} still {} after {timeout:?}",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A create request for a `COMMON` job running `echo hi`.
pub fn job_request(name: &str, servers: &[&str]) -> JobCreateRequest {
    JobCreateRequest {
        name: name.to_string(),
        description: None,
        server_ids: servers.iter().map(|s| s.to_string()).collect(),
        job_type: "COMMON".to_string(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: "COMMON".to_string(),
            spec: Some([("cmd".to_string(), "echo hi".to_string())].into()),
        }],
        visible: None,
    }
}

/// A user with one policy in a project, and a signing client for it.
pub async fn user_with_policy(app: &TestApp, name: &str, project: &str, policy: &str) -> Client {
    let store = app.store.as_ref();
    let user = litejobs::iam::create_user(store, name, Some("pw-of-the-user"))
        .await
        .expect("user");
    store.grant(&user.id, project, policy).await.expect("grant");
    let sealer = litejobs::secrets::Sealer::for_database(&app.database_url, store)
        .await
        .expect("master key");
    let key = litejobs::iam::create_access_key(store, sealer.as_ref(), &user, "test", None)
        .await
        .expect("key");
    Client::new(
        &app.endpoint,
        project,
        ClientAuth::AkSk(Credentials {
            access_key: key.access_key,
            secret_key: key.secret_key,
        }),
    )
    .expect("client")
}

/// Runs each named test on SQLite and on PostgreSQL: `backend_tests!(a, b)` makes
/// `sqlite::a`, `postgres::a`, … from `async fn a(app: TestApp)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite)
                        .await
                        .expect("sqlite");
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(app) =
                        $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await
                    else {
                        return;
                    };
                    super::$name(app).await;
                }
            )*
        }
    };
}

/// The real `litejobs serve` binary on a free loopback port, with JSON logs and `args`
/// added, its files in `dir`.
pub async fn serve_process(
    dir: &std::path::Path,
    database_url: &str,
    args: &[&str],
) -> ServerProcess {
    let mut all = vec!["--log-format", "json"];
    all.extend_from_slice(args);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_litejobs"));
    ServerProcess::serve(exe, dir, database_url, &all)
        .await
        .expect("the server starts")
}

/// Sends SIGTERM to a child process and asserts that it exits with success within 20 s.
pub async fn terminate_cleanly(child: &mut tokio::process::Child) {
    let pid = child.id().expect("the process is running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "clean exit, got {exit:?}");
}
