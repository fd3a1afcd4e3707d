//! `litejobs agent`: the node agent of one Lite Server. It registers the server, long-polls
//! the service for the server's tasks, runs each task's template command with the item's
//! parameters in its environment, renews the task's lease with heartbeats while it runs,
//! uploads the tail of its output, and reports `SUCCESS` or `FAILED`.
//!
//! Each command runs in a process group of its own: a timeout, a cancellation (its job was
//! deleted) or a lease taken over ends the whole group (`SIGTERM`, then `SIGKILL` after a
//! grace period), not only the shell. Its stdout and stderr are read together, and only
//! their last bytes are kept, so the agent's memory stays flat whatever a command prints.
//! When the service cannot be reached the agent keeps running its commands, retries with
//! backoff, and goes on renewing their leases once the service is back.
//!
//! Kept as one file of a little over 600 lines: a task's path (lease, run, heartbeat,
//! upload, report) reads top to bottom here; running a command (`execute` and the
//! process-group helpers above it) is the part to move out should it grow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientError};
use crate::wire::{AgentHeartbeat, AgentRegistration, AgentResult, AgentTask, HeldLease};

/// Most of a task's output kept in its reported summary (its tail).
const MAX_SUMMARY: usize = 64 * 1024;
/// How often a running task's output is uploaded, when it changed.
const UPLOAD_EVERY: Duration = Duration::from_secs(2);
/// Longest pause between attempts to reach the service.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a result is offered to a service that cannot be reached: longer than the
/// default start timeout, after which the service ends a task whose lease lapsed.
const REPORT_PATIENCE: Duration = Duration::from_secs(15 * 60);

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
    /// How often the leases of running tasks are renewed (and cancellations learnt).
    pub heartbeat: Duration,
    /// Bytes of a task's output kept and uploaded (its tail).
    pub output_tail: usize,
    /// Time a command's processes have after `SIGTERM` before `SIGKILL`.
    pub kill_grace: Duration,
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

/// The last bytes a command wrote, at most a fixed number.
#[derive(Debug)]
pub struct Tail {
    bytes: VecDeque<u8>,
    max: usize,
    /// Bytes ever written.
    written: u64,
}

impl Tail {
    pub fn new(max: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            max: max.max(1),
            written: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.written += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.max)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.max);
        self.bytes.drain(..overflow.min(self.bytes.len()));
        self.bytes.extend(chunk);
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Where a command's output goes: each sink keeps its own tail.
type Sinks = Arc<[Arc<Mutex<Tail>>]>;

fn write_all(sinks: &Sinks, bytes: &[u8]) {
    for sink in sinks.iter() {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
    }
}

/// Copies what `from` yields into `sinks` until its end.
async fn drain(mut from: impl AsyncRead + Unpin, sinks: Sinks) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => write_all(&sinks, &buf[..n]),
        }
    }
}

/// Why a command stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Sends `signal` to every process of the group `pgid`.
fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // ESRCH (nobody left in the group) is what we want anyway.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
}

/// Ends the whole process group of `child`: `SIGTERM`, then `SIGKILL` once `grace` has
/// passed and the shell has not exited.
async fn end_group(child: &mut tokio::process::Child, pgid: u32, grace: Duration) {
    signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(
            pgid,
            "the command outlived SIGTERM; killing its process group"
        );
    }
    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Runs one item: the template command under `sh -c` with the parameters as environment
/// variables, in a process group of its own, its output into `sinks`; until `deadline` or
/// `cancel`. Answers whether it succeeded (and how it ended otherwise).
async fn run_item(
    command: &str,
    params: &BTreeMap<String, String>,
    (deadline, cancel): (tokio::time::Instant, &CancellationToken),
    sinks: Sinks,
    grace: Duration,
) -> Result<bool, Stop> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in params.iter().filter(|(k, _)| is_env_name(k)) {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            write_all(
                &sinks,
                format!("cannot start the command: {e}\n").as_bytes(),
            );
            return Ok(false);
        }
    };
    let pgid = child.id().unwrap_or(0);
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(drain(s, sinks.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(drain(s, sinks.clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep_until(deadline) => Err(Stop::TimedOut),
        () = cancel.cancelled() => Err(Stop::Cancelled),
    };
    match &outcome {
        // Whatever the shell left behind in its group goes with it.
        Ok(_) => signal_group(pgid, nix::sys::signal::Signal::SIGKILL),
        Err(_) => end_group(&mut child, pgid, grace).await,
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    match outcome? {
        Ok(s) if s.success() => Ok(true),
        Ok(s) => {
            write_all(&sinks, format!("\n[{s}]\n").as_bytes());
            Ok(false)
        }
        Err(e) => {
            write_all(
                &sinks,
                format!("\n[cannot wait for the command: {e}]\n").as_bytes(),
            );
            Ok(false)
        }
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}s (the task's timeout): its processes were ended",
        timeout.as_secs()
    )
}

/// Keeps the last `max` bytes of `text`, cut at a character boundary.
fn keep_tail(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = text.len() - max;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        *text = text.split_off(cut);
    }
}

/// How a task ended: its result to report, or `None` when it was stopped because it is no
/// longer this agent's to report (cancelled, or leased again elsewhere).
pub type Outcome = Option<AgentResult>;

/// Runs every item of a task in order; the task fails at the first failing item. The
/// template's timeout bounds the whole task (every item together). `output` receives the
/// tail of everything the commands print; `cancel` stops the task.
pub async fn execute(
    task: &AgentTask,
    output: Arc<Mutex<Tail>>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Outcome {
    let result = |status: &str, message: String| {
        Some(AgentResult {
            status: status.into(),
            message,
            lease_epoch: Some(task.lease_epoch),
        })
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
        let header = format!("[item {} {}]\n", i + 1, item.item_type);
        write_all(&[output.clone()].into(), header.as_bytes());
        let own = Arc::new(Mutex::new(Tail::new(MAX_SUMMARY)));
        let sinks: Sinks = [own.clone(), output.clone()].into();
        let ran = if deadline <= tokio::time::Instant::now() {
            Err(Stop::TimedOut)
        } else {
            run_item(&task.command, &params, (deadline, cancel), sinks, grace).await
        };
        message.push_str(&header);
        message.push_str(&own.lock().unwrap_or_else(|e| e.into_inner()).text());
        keep_tail(&mut message, MAX_SUMMARY);
        match ran {
            Ok(true) => {}
            Ok(false) => return result("FAILED", message),
            Err(Stop::TimedOut) => {
                message.push_str(&timed_out(timeout));
                keep_tail(&mut message, MAX_SUMMARY);
                return result("FAILED", message);
            }
            Err(Stop::Cancelled) => return None,
        }
    }
    result("SUCCESS", message)
}

/// A task this agent runs: the epoch of its lease (a lease again raises it), and how to
/// stop it.
#[derive(Debug)]
struct Running {
    epoch: Mutex<i64>,
    cancel: CancellationToken,
}

type RunningTasks = Arc<Mutex<HashMap<String, Arc<Running>>>>;

/// Registers the server, retrying with backoff while the service cannot be reached.
async fn register(
    client: &Client,
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let name = if config.name.is_empty() {
        host_facts()
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| config.server_id.clone())
    } else {
        config.name.clone()
    };
    let registration = AgentRegistration {
        name,
        cloud_server: host_facts(),
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        match client
            .register_server(&config.server_id, &registration)
            .await
        {
            Ok(()) => return Ok(true),
            // Refused (credentials, permissions, a bad id): no use trying again.
            Err(e @ ClientError::Api { status, .. }) if (400..500).contains(&status) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register; retrying in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Renews the leases of the running tasks every `config.heartbeat`, stopping those whose
/// task ended (a deleted job's) or was leased again elsewhere; until `shutdown`.
async fn heartbeats(
    client: Client,
    config: AgentConfig,
    running: RunningTasks,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.heartbeat) => {}
        }
        let held: Vec<HeldLease> = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(task_id, r)| HeldLease {
                task_id: task_id.clone(),
                lease_epoch: *r.epoch.lock().unwrap_or_else(|e| e.into_inner()),
            })
            .collect();
        if held.is_empty() {
            continue;
        }
        let answer = match client
            .heartbeat(&config.server_id, &AgentHeartbeat { tasks: held })
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the commands keep running");
                continue;
            }
        };
        for lease in answer.tasks.into_iter().filter(|l| l.state != "held") {
            let task = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&lease.task_id)
                .cloned();
            if let Some(task) = task {
                tracing::info!(
                    task_id = lease.task_id,
                    state = lease.state,
                    status = lease.status,
                    "stopping a task that is no longer this agent's to run"
                );
                task.cancel.cancel();
            }
        }
    }
}

/// Uploads the tail of a task's output every [`UPLOAD_EVERY`] while it changes, until
/// `done`.
async fn upload_output(
    client: Client,
    (server_id, task_id): (String, String),
    running: Arc<Running>,
    output: Arc<Mutex<Tail>>,
    done: CancellationToken,
) {
    let mut sent = 0u64;
    loop {
        let finished = tokio::select! {
            _ = done.cancelled() => true,
            _ = tokio::time::sleep(UPLOAD_EVERY) => false,
        };
        let (written, text) = {
            let tail = output.lock().unwrap_or_else(|e| e.into_inner());
            (tail.written, (tail.written != sent).then(|| tail.text()))
        };
        if let Some(text) = text {
            let epoch = *running.epoch.lock().unwrap_or_else(|e| e.into_inner());
            match client.put_output(&server_id, &task_id, epoch, &text).await {
                Ok(()) => sent = written,
                Err(e) => tracing::debug!(task_id, error = %e, "cannot upload the output"),
            }
        }
        if finished {
            return;
        }
    }
}

/// Runs a leased task to its end and reports it (unless it was stopped as no longer this
/// agent's).
async fn run_task(client: Client, config: AgentConfig, task: AgentTask, running: Arc<Running>) {
    tracing::info!(task_id = task.task_id, job_id = task.job_id, "running task");
    let output = Arc::new(Mutex::new(Tail::new(config.output_tail)));
    let uploaded = CancellationToken::new();
    let uploader = tokio::spawn(upload_output(
        client.clone(),
        (config.server_id.clone(), task.task_id.clone()),
        running.clone(),
        output.clone(),
        uploaded.clone(),
    ));
    let outcome = execute(&task, output, &running.cancel, config.kill_grace).await;
    uploaded.cancel();
    let _ = uploader.await;
    let Some(mut result) = outcome else {
        tracing::info!(task_id = task.task_id, "task stopped; not reporting it");
        return;
    };
    result.lease_epoch = Some(*running.epoch.lock().unwrap_or_else(|e| e.into_inner()));
    report(&client, &config.server_id, &task.task_id, &result).await;
}

/// Serves the server's tasks until `shutdown`; tasks already running finish and report.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !register(&client, &config, &shutdown).await? {
        return Ok(());
    }
    tracing::info!(
        server_id = config.server_id,
        "agent registered; waiting for tasks"
    );
    let running: RunningTasks = Arc::default();
    let beating = CancellationToken::new();
    let heart = tokio::spawn(heartbeats(
        client.clone(),
        config.clone(),
        running.clone(),
        beating.clone(),
    ));
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let free = slots.available_permits() as u32;
        if free == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tasks.join_next() => continue,
            }
        }
        let lease = tokio::select! {
            _ = shutdown.cancelled() => break,
            lease = client.lease_tasks(&config.server_id, config.poll_wait_secs, free) => lease,
        };
        let leased = match lease {
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
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        for task in leased {
            // A task this agent still runs, leased to it again (its lease lapsed while the
            // service was away): it goes on under the new lease.
            let known = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&task.task_id)
                .cloned();
            if let Some(known) = known {
                *known.epoch.lock().unwrap_or_else(|e| e.into_inner()) = task.lease_epoch;
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let entry = Arc::new(Running {
                epoch: Mutex::new(task.lease_epoch),
                cancel: CancellationToken::new(),
            });
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(task.task_id.clone(), entry.clone());
            let (client, config, running) = (client.clone(), config.clone(), running.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let task_id = task.task_id.clone();
                run_task(client, config, task, entry).await;
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&task_id);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    beating.cancel();
    let _ = heart.await;
    Ok(())
}

/// Reports a result, retrying while the service cannot be reached or answers 5xx, for up
/// to [`REPORT_PATIENCE`] (the lease is renewed meanwhile, whenever the service answers).
async fn report(client: &Client, server_id: &str, task_id: &str, result: &AgentResult) {
    let mut wait = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    while started.elapsed() < REPORT_PATIENCE {
        match client.report_result(server_id, task_id, result).await {
            Ok(()) => {
                tracing::info!(task_id, status = result.status, "task reported");
                return;
            }
            Err(ClientError::Api { status: 409, .. }) => {
                tracing::info!(task_id, "task no longer this agent's; result dropped");
                return;
            }
            Err(e @ ClientError::Api { status, .. }) if (400..500).contains(&status) => {
                tracing::error!(task_id, error = %e, "the report was refused");
                return;
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot report; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::error!(
        task_id,
        "gave up reporting; the lease will lapse and the task run again"
    );
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn a_tail_keeps_the_last_bytes_only() {
        let mut tail = Tail::new(10);
        tail.push(b"hello ");
        tail.push(b"world, again");
        assert_eq!(tail.text(), "rld, again");
        tail.push(&[b'x'; 100]);
        assert_eq!(tail.text(), "x".repeat(10));
        assert_eq!(tail.written, 6 + 12 + 100);
    }
}
