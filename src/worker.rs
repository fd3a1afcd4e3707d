//! Background work of a server: the simulated fleet that finishes tasks, the tasks of real
//! servers that no agent ran in time, the fleet's liveness, and retention.
//!
//! Every replica runs these loops; the store's guarded updates make running them twice
//! harmless (a task ends once, a purge deletes once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::domain::{now_ms, ProjectId, TaskStatus};
use crate::fleet::{Fleet, SEEN_FLUSH_EVERY};
use crate::store::{NewServer, Stall, StalledTask, Store};

/// What a simulated task whose time has come does, as fault rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskVerdict {
    /// Ends as the simulation says (its server's outcome, or the failure rate).
    AsSimulated,
    /// Ends `FAILED`.
    Fail,
    /// Does not end yet.
    Wait,
}

/// Faults injected into the simulated fleet (the emulator's task rules).
pub trait TaskFaults: Send + Sync {
    fn verdict(&self, project_id: &str, server_id: &str, task_id: &str) -> TaskVerdict;
    /// Told every simulated task now due (when they are all read at once): a task held
    /// back and no longer among them (its job erased or deleted) is held no more.
    fn due_now(&self, tasks: &std::collections::HashSet<String>);
}

/// The task faults of a simulation, if any.
#[derive(Clone, Default)]
pub struct TaskFaultHook(pub Option<Arc<dyn TaskFaults>>);

impl std::fmt::Debug for TaskFaultHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TaskFaultHook(Some)"
        } else {
            "TaskFaultHook(None)"
        })
    }
}

/// How the simulated fleet behaves.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Faults injected into simulated tasks.
    pub task_faults: TaskFaultHook,
    /// Servers registered in every project: `sim-server-01` … `sim-server-NN`.
    pub servers: u32,
    /// Time from a task's creation to its end.
    pub delay: Duration,
    /// Chance that a task of a server without a fixed outcome fails.
    pub failure_rate: f64,
    /// Fixed outcomes by server id: `SUCCESS` or `FAILED`.
    pub outcomes: BTreeMap<String, String>,
}

impl SimulationConfig {
    /// The simulation `serve`'s flags ask for (no task faults yet).
    pub fn of(config: &crate::config::ServeConfig) -> Self {
        Self {
            task_faults: TaskFaultHook::default(),
            servers: config.simulate_servers,
            delay: config.simulate_delay,
            failure_rate: config.simulate_failure_rate,
            outcomes: config.simulate_outcomes.iter().cloned().collect(),
        }
    }

    /// Id (and name) of the `n`th simulated server, from 1.
    pub fn server_id(n: u32) -> String {
        format!("sim-server-{n:02}")
    }
}

/// Registers the simulated servers in every project.
pub async fn sync_simulated_fleet(
    store: &dyn Store,
    config: &SimulationConfig,
) -> anyhow::Result<()> {
    let now = now_ms();
    for project in store.list_projects().await? {
        let project_id = ProjectId::parse(&project.id)?;
        for n in 1..=config.servers {
            let id = SimulationConfig::server_id(n);
            let outcome = config
                .outcomes
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "RANDOM".to_string());
            let cloud_server = BTreeMap::from([
                (
                    "id".to_string(),
                    format!("bms-{}-{id}", &project.id[..8.min(project.id.len())]),
                ),
                ("type".to_string(), "BMS".to_string()),
                ("flavor".to_string(), "simulated.ascend.8xlarge".to_string()),
                ("simulated".to_string(), "true".to_string()),
            ]);
            store
                .upsert_server(
                    &project_id,
                    NewServer {
                        id: id.clone(),
                        name: id,
                        kind: "simulated".to_string(),
                        sim_outcome: Some(outcome),
                        cloud_server,
                        now_ms: now,
                    },
                )
                .await?;
        }
    }
    Ok(())
}

/// Most simulated tasks read at once.
const DUE_BATCH: i64 = 500;

/// Ends the simulated tasks whose delay has passed. Answers how many it ended.
pub async fn finish_due_tasks(
    store: &dyn Store,
    config: &SimulationConfig,
) -> anyhow::Result<usize> {
    let due_before = now_ms() - config.delay.as_millis() as i64;
    let due = store.due_simulated_tasks(due_before, DUE_BATCH).await?;
    if let (Some(faults), true) = (&config.task_faults.0, due.len() < DUE_BATCH as usize) {
        faults.due_now(&due.iter().map(|t| t.task_id.clone()).collect());
    }
    let mut ended = 0;
    for task in due {
        let verdict = config
            .task_faults
            .0
            .as_ref()
            .map_or(TaskVerdict::AsSimulated, |f| {
                f.verdict(task.project_id.as_str(), &task.server_id, &task.task_id)
            });
        let failed = match task.outcome.as_str() {
            _ if verdict == TaskVerdict::Wait => continue,
            _ if verdict == TaskVerdict::Fail => true,
            "FAILED" => true,
            "SUCCESS" => false,
            // A rate that is not a number (the flag refuses one) fails nothing.
            _ if config.failure_rate.is_nan() => false,
            _ => rand::thread_rng().gen_bool(config.failure_rate.clamp(0.0, 1.0)),
        };
        let (status, message) = if failed {
            (
                TaskStatus::Failed,
                format!("simulated failure on {}", task.server_id),
            )
        } else {
            (
                TaskStatus::Success,
                format!("simulated success on {}", task.server_id),
            )
        };
        if store
            .complete_task(
                &task.project_id,
                &task.task_id,
                status,
                &message,
                now_ms(),
                None,
            )
            .await?
        {
            ended += 1;
        }
    }
    Ok(ended)
}

/// Runs the simulated fleet until `shutdown`.
pub async fn run_simulation(
    store: Arc<dyn Store>,
    config: SimulationConfig,
    shutdown: CancellationToken,
) {
    let tick = (config.delay / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut last_sync = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if last_sync.elapsed() > Duration::from_secs(10) {
            last_sync = tokio::time::Instant::now();
            if let Err(e) = sync_simulated_fleet(store.as_ref(), &config).await {
                tracing::warn!(error = %format_args!("{e:#}"), "cannot register the simulated fleet");
            }
        }
        if let Err(e) = finish_due_tasks(store.as_ref(), &config).await {
            tracing::warn!(error = %format_args!("{e:#}"), "cannot finish simulated tasks");
        }
    }
}

/// Purges deleted jobs past `retention`, and expired idempotency keys and tokens, every
/// `every` until `shutdown`.
pub async fn run_retention(
    store: Arc<dyn Store>,
    retention: Retention,
    every: Duration,
    shutdown: CancellationToken,
) {
    let before = |now: i64, d: Duration| {
        now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = now_ms();
        let deleted_before = before(now, retention.deleted_jobs);
        let keys_before = before(now, retention.idempotency_window);
        match store.purge(deleted_before, keys_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "purged deleted jobs past retention"),
            Err(e) => tracing::warn!(error = ?e, "retention purge failed"),
        }
        let events_before = before(now, EVENT_RETENTION);
        let audit_before = before(now, retention.audit);
        if let Err(e) = store.purge_activity(events_before, audit_before).await {
            tracing::warn!(error = ?e, "purging old job events and audit records failed");
        }
    }
}

/// How long what is kept is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Deleted jobs.
    pub deleted_jobs: Duration,
    /// Idempotency keys (and expired tokens after it).
    pub idempotency_window: Duration,
    /// Audit records.
    pub audit: Duration,
}

/// How long job events are kept for watchers that resume.
pub const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the gauges of the fleet and the pools are read.
const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Keeps the gauges of running tasks, agents online per project and the database pools
/// current, every [`GAUGES_EVERY`].
pub async fn run_gauges(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut projects: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let now = now_ms();
        match store
            .fleet_gauges(now, now - crate::domain::ONLINE_WITHIN_MS)
            .await
        {
            Ok(g) => {
                use crate::metrics::{AGENTS_ONLINE, TASKS_RUNNING};
                metrics::gauge!(TASKS_RUNNING, "state" => "waiting").set(g.waiting as f64);
                metrics::gauge!(TASKS_RUNNING, "state" => "leased").set(g.leased as f64);
                metrics::gauge!(TASKS_RUNNING, "state" => "simulated").set(g.simulated as f64);
                let online: std::collections::HashSet<String> =
                    g.agents_online.iter().map(|(p, _)| p.clone()).collect();
                for gone in projects.difference(&online) {
                    metrics::gauge!(AGENTS_ONLINE, "project" => gone.clone()).set(0.0);
                }
                for (project, n) in g.agents_online {
                    metrics::gauge!(AGENTS_ONLINE, "project" => project).set(n as f64);
                }
                projects.extend(online);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the fleet's gauges"),
        }
        for pool in store.pool_use() {
            let gauge = |state: &'static str| metrics::gauge!(crate::metrics::DB_CONNECTIONS, "pool" => pool.pool, "state" => state);
            gauge("idle").set(pool.idle as f64);
            gauge("in_use").set(pool.in_use as f64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAUGES_EVERY) => {}
        }
    }
}

/// How often the running tasks of real servers are looked at for ones no agent ran in time.
const STALL_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The time of `ms` (epoch ms) as people read it, in UTC.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Why the server ended `task`, in its message.
fn stall_message(task: &StalledTask, start_timeout: Duration) -> String {
    let within = humantime::format_duration(start_timeout);
    match task.stall {
        Stall::NeverStarted { created_at } => format!(
            "no agent of server {} picked the task up within {within} of {} (is the server's \
             agent running?)",
            task.server_id,
            time(created_at)
        ),
        Stall::LeaseLapsed { at } => format!(
            "the agent of server {} stopped renewing its lease at {}, and none came back \
             within {within}",
            task.server_id,
            time(at)
        ),
        Stall::PastDeadline { at } => format!(
            "no result from server {} by {}: the task's run time (its template's timeout) \
             is over",
            task.server_id,
            time(at)
        ),
    }
}

/// Stalled tasks of each kind read at once by the sweep.
const STALL_BATCH: usize = 500;

/// Ends `FAILED` the running tasks of real servers that no agent ran in time, every few
/// seconds until `shutdown`, so that every job reaches `FINISHED`. A sweep goes on while it
/// finds full batches, and ends the tasks whose agent stopped (a lapsed lease, a run past
/// its time) before those never started: a backlog of the latter, on servers whose agents
/// are away, holds neither back.
pub async fn run_stall_sweeper(
    store: Arc<dyn Store>,
    start_timeout: Duration,
    shutdown: CancellationToken,
) {
    let timeout_ms = i64::try_from(start_timeout.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STALL_SWEEP_EVERY) => {}
        }
        loop {
            let batch = store.stalled_tasks(now_ms(), timeout_ms, STALL_BATCH as i64);
            let mut stalled = match batch.await {
                Ok(stalled) => stalled,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for stalled tasks");
                    break;
                }
            };
            let never = |t: &StalledTask| matches!(t.stall, Stall::NeverStarted { .. });
            let never_started = stalled.iter().filter(|t| never(t)).count();
            let full = never_started >= STALL_BATCH || stalled.len() - never_started >= STALL_BATCH;
            stalled.sort_by_key(|t| never(t));
            let mut ended = false;
            for task in stalled {
                if shutdown.is_cancelled() {
                    return;
                }
                ended |= end_stalled(store.as_ref(), &task, start_timeout).await;
            }
            // (A batch none of which could be ended waits for the next sweep: the database
            // refuses writes, say.)
            if !full || !ended {
                break;
            }
        }
    }
}

/// Ends one stalled task `FAILED`, saying why; answers whether it did.
async fn end_stalled(store: &dyn Store, task: &StalledTask, start_timeout: Duration) -> bool {
    let message = stall_message(task, start_timeout);
    let ended = store
        .complete_task(
            &task.project_id,
            &task.task_id,
            TaskStatus::Failed,
            &message,
            now_ms(),
            None,
        )
        .await;
    match ended {
        Ok(true) => {
            tracing::warn!(
                project_id = %task.project_id,
                task_id = task.task_id,
                server_id = task.server_id,
                message,
                "ended a task no agent ran in time"
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot end a stalled task");
            false
        }
    }
}

/// Writes when each server was last heard from, in one statement every
/// [`SEEN_FLUSH_EVERY`], until `shutdown` (and once more then).
pub async fn run_liveness_flush(
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    shutdown: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(SEEN_FLUSH_EVERY) => false,
        };
        if let Err(e) = fleet.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "cannot record when servers were last heard from");
        }
        if stop {
            return;
        }
    }
}
