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
//! A task's path (lease, run, heartbeat, upload, report) reads top to bottom here; running
//! its commands, in process groups, keeping the tail of their output, is `command.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod command;

pub use self::command::{execute, Outcome, Tail};
use crate::client::{Client, ClientError};
use crate::wire::{
    AgentHeartbeat, AgentRegistration, AgentResult, AgentTask, HeldLease, LeaseAnswer,
};

/// How often a running task's output is uploaded, when it changed.
const UPLOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a task the service says this agent lost keeps running, in case the answer of
/// this agent's own lease request, taking the task again, is on its way.
const LOST_GRACE: Duration = Duration::from_secs(5);
/// Longest pause between attempts to reach the service.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Least time from one lease request to the next when the first brought no task: a lease
/// that waits no time (`--poll-wait 0`), or a service answering at once, is asked again no
/// more than once a second.
const EMPTY_POLL_INTERVAL: Duration = Duration::from_secs(1);
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

/// A task this agent runs: the epoch of its lease (a lease again raises it), and how to
/// stop it.
#[derive(Debug)]
struct Running {
    epoch: Mutex<i64>,
    cancel: CancellationToken,
}

type RunningTasks = Arc<Mutex<HashMap<String, Arc<Running>>>>;

/// The task `task_id` when this agent runs it.
fn running_task(running: &RunningTasks, task_id: &str) -> Option<Arc<Running>> {
    running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(task_id)
        .cloned()
}

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
        let sent: HashMap<String, i64> = held
            .iter()
            .map(|h| (h.task_id.clone(), h.lease_epoch))
            .collect();
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
            let Some(task) = running_task(&running, &lease.task_id) else {
                continue;
            };
            if lease.state != "lost" {
                stop_running(&task, &lease);
                continue;
            }
            // Lost: taken under a new lease. When this agent was cut off for longer than a
            // lease, its own waiting lease request may be what took the task again: that
            // answer, read now or soon, moves the task's epoch on and the command goes on.
            // Stopped only if the epoch is still the one this heartbeat sent.
            let sent = sent.get(&lease.task_id).copied();
            tokio::spawn(async move {
                tokio::time::sleep(LOST_GRACE).await;
                if Some(*task.epoch.lock().unwrap_or_else(|e| e.into_inner())) == sent {
                    stop_running(&task, &lease);
                }
            });
        }
    }
}

fn stop_running(task: &Running, lease: &LeaseAnswer) {
    tracing::info!(
        task_id = lease.task_id,
        state = lease.state,
        status = lease.status,
        "stopping a task that is no longer this agent's to run"
    );
    task.cancel.cancel();
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
        let asked = tokio::time::Instant::now();
        let lease = tokio::select! {
            _ = shutdown.cancelled() => break,
            lease = client.lease_tasks(&config.server_id, config.poll_wait_secs, free) => lease,
        };
        let leased = match lease {
            Ok(lease) => {
                backoff = Duration::from_millis(500);
                if lease.tasks.is_empty() {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(asked + EMPTY_POLL_INTERVAL) => {}
                    }
                }
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
            if let Some(known) = running_task(&running, &task.task_id) {
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

/// Reports a result, retrying while the service cannot be reached or cannot take it yet
/// (5xx, 429, 408; 401 and 403 too: a key locked out for a while, a grant being restored),
/// for up to [`REPORT_PATIENCE`] (the lease is renewed meanwhile, whenever the service
/// answers). A dropped result would have the task run again once its lease lapsed.
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
            Err(e @ ClientError::Api { status, .. })
                if !e.is_transient() && !matches!(status, 401 | 403) =>
            {
                tracing::error!(task_id, error = %e, "the report was refused");
                return;
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot report yet; retrying");
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
