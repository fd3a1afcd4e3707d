//! `litejobs agent`: the node agent of one Lite Server. It registers the server, long-polls
//! the service for the server's tasks, runs each task's template command with the item's
//! parameters in its environment, and reports `SUCCESS` or `FAILED` with the output.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientError};
use crate::wire::{AgentRegistration, AgentResult, AgentTask};

/// Most output kept from one task (its tail).
const MAX_OUTPUT: usize = 64 * 1024;

/// What the agent runs as.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Lite Server's id in the project.
    pub server_id: String,
    /// Its display name (the host name when empty).
    pub name: String,
    /// Tasks run at once.
    pub concurrency: u32,
    /// Seconds a lease request waits for work.
    pub poll_wait_secs: u64,
}

fn host_facts() -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        facts.insert("hostname".into(), name.trim().to_string());
    }
    facts.insert("os".into(), std::env::consts::OS.into());
    facts.insert("arch".into(), std::env::consts::ARCH.into());
    facts.insert(
        "agent".into(),
        format!("litejobs/{}", env!("CARGO_PKG_VERSION")),
    );
    facts
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn keep_tail(out: &mut String) {
    if out.len() > MAX_OUTPUT {
        let mut cut = out.len() - MAX_OUTPUT;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        *out = out.split_off(cut);
    }
}

/// Runs one item: the template command under `sh -c` with the parameters as environment
/// variables, killed after `left` (what remains of the task's timeout, `timeout`). Answers
/// whether it succeeded and its output.
async fn run_item(
    command: &str,
    params: &BTreeMap<String, String>,
    left: Duration,
    timeout: Duration,
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in params.iter().filter(|(k, _)| is_env_name(k)) {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start the command: {e}")),
    };
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(left, collect).await {
        Ok((status, out, err)) => {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            text.push_str(&String::from_utf8_lossy(&err));
            keep_tail(&mut text);
            match status {
                Ok(s) if s.success() => (true, text),
                Ok(s) => (false, format!("{text}\n[{s}]")),
                Err(e) => (false, format!("{text}\n[cannot wait for the command: {e}]")),
            }
        }
        Err(_) => (false, timed_out(timeout)),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}s (the task's timeout)",
        timeout.as_secs()
    )
}

/// Runs every item of a task in order; the task fails at the first failing item. The
/// template's timeout bounds the whole task (every item together), so that the task ends
/// and is reported within its lease.
pub async fn execute(task: &AgentTask) -> AgentResult {
    let result = |status: &str, message: String| AgentResult {
        status: status.into(),
        message,
        lease_until: Some(task.lease_until),
    };
    if task.command.is_empty() {
        return result(
            "FAILED",
            format!("no template for job type {}", task.job_type),
        );
    }
    let timeout = Duration::from_secs(task.timeout_secs.max(1));
    let now = tokio::time::Instant::now();
    // (A timeout too far off to be an instant is as good as none.)
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut message = String::new();
    for (i, item) in task.items.iter().enumerate() {
        let mut params = task.params.clone();
        if let Some(spec) = &item.spec {
            params.extend(spec.clone());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (ok, output) = if left.is_zero() {
            (false, timed_out(timeout))
        } else {
            run_item(&task.command, &params, left, timeout).await
        };
        message.push_str(&format!("[item {} {}]\n{output}", i + 1, item.item_type));
        keep_tail(&mut message);
        if !ok {
            return result("FAILED", message);
        }
    }
    result("SUCCESS", message)
}

/// Serves the server's tasks until `shutdown`; tasks already running finish and report.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = if config.name.is_empty() {
        host_facts()
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| config.server_id.clone())
    } else {
        config.name.clone()
    };
    client
        .register_server(
            &config.server_id,
            &AgentRegistration {
                name,
                cloud_server: host_facts(),
            },
        )
        .await?;
    tracing::info!(
        server_id = config.server_id,
        "agent registered; waiting for tasks"
    );
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut running = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let free = slots.available_permits() as u32;
        if free == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = running.join_next() => continue,
            }
        }
        let lease = tokio::select! {
            _ = shutdown.cancelled() => break,
            lease = client.lease_tasks(&config.server_id, config.poll_wait_secs, free) => lease,
        };
        let tasks = match lease {
            Ok(lease) => {
                backoff = Duration::from_millis(500);
                lease.tasks
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        for task in tasks {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let client = client.clone();
            let server_id = config.server_id.clone();
            running.spawn(async move {
                let _permit = permit;
                tracing::info!(task_id = task.task_id, job_id = task.job_id, "running task");
                let result = execute(&task).await;
                report(&client, &server_id, &task.task_id, &result).await;
            });
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Reports a result, retrying transport failures for a while.
async fn report(client: &Client, server_id: &str, task_id: &str, result: &AgentResult) {
    let mut wait = Duration::from_millis(500);
    for _ in 0..8 {
        match client.report_result(server_id, task_id, result).await {
            Ok(()) => {
                tracing::info!(task_id, status = result.status, "task reported");
                return;
            }
            Err(ClientError::Api { status: 409, .. }) => {
                tracing::info!(task_id, "task no longer running; result dropped");
                return;
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot report; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    tracing::error!(
        task_id,
        "gave up reporting; the lease will expire and the task run again"
    );
}
