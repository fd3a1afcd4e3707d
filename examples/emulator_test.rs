//! A Rust test against the emulator: start `litejobs serve --in-memory --simulate` on a free
//! port, read the JSON line it prints once it answers, inject throttling through the control
//! API and check that the code under test (here: a list call with one retry) copes.
//!
//! Run it: `cargo run --example emulator_test` (uses `LITEJOBS_BIN`, else
//! `target/debug/litejobs`). In a test suite, call [`run`] from a `#[tokio::test]`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use litejobs::client::{Client, ClientAuth, ClientError};
use litejobs::sign::Credentials;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The running emulator and what it printed; stopped (SIGTERM, so that it removes its
/// in-memory database) when this is dropped.
pub struct Emulator {
    child: Child,
    pub config: serde_json::Value,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl Emulator {
    /// Starts the emulator; it is killed when this is dropped.
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--in-memory",
                "--simulate",
                "--addr",
                "127.0.0.1:0",
            ])
            .args(["--print-config", "--simulate-delay", "200ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the emulator did not start in time")??;
        let config = serde_json::from_str(&line).context("the configuration line")?;
        Ok(Self { child, config })
    }

    fn client(&self, who: &serde_json::Value) -> anyhow::Result<Client> {
        let text = |key: &str| who[key].as_str().unwrap_or_default().to_string();
        let auth = ClientAuth::AkSk(Credentials {
            access_key: text("access_key"),
            secret_key: text("secret_key"),
        });
        let endpoint = self.config["endpoint"].as_str().unwrap_or_default();
        Ok(Client::new(endpoint, &text("project_id"), auth)?)
    }

    /// A client of the account tests call the API with (the demo account).
    pub fn api(&self) -> anyhow::Result<Client> {
        self.client(&self.config)
    }

    /// Calls the control API as the administrator.
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let admin = self.client(&self.config["admin"])?;
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let answer = admin
            .send(method, &format!("/_litejobs/{path}"), &[], body, &[])
            .await?;
        anyhow::ensure!(
            answer.status < 400,
            "control call failed: {}",
            answer.api_error()
        );
        Ok(serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null))
    }
}

/// The code under test: lists the jobs, trying once more after a throttled answer.
async fn count_jobs(client: &Client) -> Result<u64, ClientError> {
    match client.list_jobs(&[]).await {
        Err(ClientError::Api { status: 429, .. }) => Ok(client.list_jobs(&[]).await?.total),
        other => Ok(other?.total),
    }
}

/// The test: one throttled list call is retried, and the journal shows both calls.
pub async fn run(binary: &Path) -> anyhow::Result<()> {
    let emulator = Emulator::start(binary).await?;
    let rule = serde_json::json!({"operation": "ListDevServerJobs", "status": 429, "times": 1});
    emulator
        .control(reqwest::Method::POST, "faults", Some(rule))
        .await?;
    assert_eq!(count_jobs(&emulator.api()?).await?, 0);
    let journal = emulator
        .control(reqwest::Method::GET, "requests", None)
        .await?;
    let seen: Vec<(String, u64)> = journal["requests"]
        .as_array()
        .context("requests")?
        .iter()
        .map(|r| {
            let op = r["operation"].as_str().unwrap_or_default().to_string();
            (op, r["status"].as_u64().unwrap_or_default())
        })
        .collect();
    let list = "ListDevServerJobs".to_string();
    assert_eq!(seen, vec![(list.clone(), 429), (list, 200)]);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = std::env::var_os("LITEJOBS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/litejobs"));
    run(&binary).await?;
    println!("ok: the throttled call was retried");
    Ok(())
}
