//! The fleet row of the benchmark: N agents speaking the agent protocol (each a real
//! long-poll over HTTP, as `litejobs agent` does) wait idle for a while, then jobs are
//! created across them one at a time. It reports the database statements the server sent
//! per second while they were idle (from its `/metrics`), the dispatch latency (the create
//! answered -> the task leased), and the server's memory with the agents waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::testkit::ServerProcess;
use crate::wire::{AgentRegistration, AgentResult, JobCreateRequest, JobItem};

/// Labels of the fleet rows start with this (`--only fleet`).
pub const LABEL: &str = "fleet";
/// Most statements per second an idle fleet may cost.
const IDLE_STATEMENTS_TARGET: f64 = 1.0;
/// Longest dispatch (p99).
const DISPATCH_P99_TARGET: Duration = Duration::from_millis(100);
/// Most resident memory of the server with the agents waiting.
const MEMORY_TARGET: u64 = 150 * 1024 * 1024;
/// Seconds each long-poll waits, as `litejobs agent` does by default.
const POLL_WAIT_SECS: u64 = 20;

/// What the fleet run measured.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub agents: usize,
    pub idle_for: Duration,
    pub idle_statements_per_sec: f64,
    /// Dispatch latencies, sorted.
    pub dispatch: Vec<Duration>,
    /// Jobs whose task no agent leased within the wait.
    pub undelivered: usize,
    /// Resident memory of the server with every agent waiting, and before they connected.
    pub memory_waiting: Option<u64>,
    pub memory_before: Option<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl FleetReport {
    fn quantile(&self, q: f64) -> Duration {
        if self.dispatch.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.dispatch.len() as f64).ceil() as usize;
        self.dispatch[rank.clamp(1, self.dispatch.len()) - 1]
    }

    /// The targets missed, in words.
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        if self.idle_statements_per_sec > IDLE_STATEMENTS_TARGET {
            misses.push(format!(
                "fleet idle: {:.1} statements/s > {IDLE_STATEMENTS_TARGET}/s",
                self.idle_statements_per_sec
            ));
        }
        let p99 = self.quantile(0.99);
        if p99 > DISPATCH_P99_TARGET || self.undelivered > 0 {
            misses.push(format!(
                "fleet dispatch: p99 {:.1} ms (target {} ms), {} undelivered",
                ms(p99),
                DISPATCH_P99_TARGET.as_millis(),
                self.undelivered
            ));
        }
        match self.memory_waiting {
            Some(m) if m > MEMORY_TARGET => misses.push(format!(
                "fleet memory: {:.1} MiB > {} MiB",
                super::report::mib(m),
                MEMORY_TARGET / (1024 * 1024)
            )),
            None => misses.push("fleet memory unknown".to_string()),
            Some(_) => {}
        }
        if self.errors > 0 {
            misses.push(format!("fleet: {} errors", self.errors));
        }
        misses
    }

    /// The report's lines.
    pub fn lines(&self) -> String {
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        let memory = |m: Option<u64>| {
            m.map_or("unknown".to_string(), |b| {
                format!("{:.1} MiB", super::report::mib(b))
            })
        };
        let p99 = self.quantile(0.99);
        format!(
            "{:<34} {:>10.2}  (over {:?}; target <= {IDLE_STATEMENTS_TARGET}/s: {})\n\
             {:<34} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} jobs, \
             {} undelivered  (target p99 <= {} ms: {})\n\
             {:<34} {} (before the agents: {}; target <= {} MiB: {})\n\
             {:<34} {}",
            format!("{LABEL} idle statements/s ({} agents)", self.agents),
            self.idle_statements_per_sec,
            self.idle_for,
            verdict(self.idle_statements_per_sec <= IDLE_STATEMENTS_TARGET),
            format!("{LABEL} dispatch (answered -> leased)"),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.9)),
            ms(p99),
            ms(self.dispatch.last().copied().unwrap_or_default()),
            self.dispatch.len(),
            self.undelivered,
            DISPATCH_P99_TARGET.as_millis(),
            verdict(p99 <= DISPATCH_P99_TARGET && self.undelivered == 0),
            format!("{LABEL} server memory (VmRSS)"),
            memory(self.memory_waiting),
            memory(self.memory_before),
            MEMORY_TARGET / (1024 * 1024),
            verdict(self.memory_waiting.is_some_and(|m| m <= MEMORY_TARGET)),
            format!("{LABEL} errors"),
            match &self.first_error {
                Some(e) => format!("{} (first: {e})", self.errors),
                None => self.errors.to_string(),
            },
        )
    }

    /// Its part of the summary line.
    pub fn summary(&self) -> String {
        format!(
            "{LABEL} {} agents: idle {:.2} statements/s, dispatch p99 {:.2} ms, memory {}",
            self.agents,
            self.idle_statements_per_sec,
            ms(self.quantile(0.99)),
            self.memory_waiting
                .map_or("unknown".to_string(), |b| format!(
                    "{:.1} MiB",
                    super::report::mib(b)
                ))
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When each job's task was leased, by job id.
type Leases = Arc<Mutex<HashMap<String, Instant>>>;

/// Errors the agents met, and the first of them.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

fn note(errors: &Mutex<Errors>, e: impl std::fmt::Display) {
    let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
    errors.count += 1;
    errors.first.get_or_insert_with(|| e.to_string());
}

/// One agent: long-polls for its server's tasks, notes when each was leased, and reports it
/// done, until `stop`.
async fn agent(
    client: Client,
    server_id: String,
    leases: Leases,
    errors: Arc<Mutex<Errors>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let lease = tokio::select! {
            () = stop.cancelled() => return,
            lease = client.lease_tasks(&server_id, POLL_WAIT_SECS, 4) => lease,
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                note(&errors, e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let leased_at = Instant::now();
        for task in lease.tasks {
            leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(task.job_id.clone(), leased_at);
            let result = AgentResult {
                status: "SUCCESS".to_string(),
                message: "bench".to_string(),
                lease_epoch: Some(task.lease_epoch),
            };
            if let Err(e) = client
                .report_result(&server_id, &task.task_id, &result)
                .await
            {
                note(&errors, e);
            }
        }
    }
}

/// The server's statement counter, from its `/metrics`.
async fn statements(client: &Client) -> anyhow::Result<f64> {
    let answer = client
        .send(reqwest::Method::GET, "/metrics", &[], None, &[])
        .await?;
    anyhow::ensure!(answer.status == 200, "/metrics answered {}", answer.status);
    let text = String::from_utf8_lossy(&answer.body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with(crate::metrics::DB_STATEMENTS))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum())
}

fn resident_memory(server: &ServerProcess) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the fleet row against `server`, as `client`'s user in its project.
pub async fn measure(
    client: &Client,
    server: &ServerProcess,
    agents: usize,
    idle_for: Duration,
    jobs: usize,
) -> anyhow::Result<FleetReport> {
    let memory_before = resident_memory(server);
    let ids: Vec<String> = (0..agents).map(|n| format!("fleet-{n:05}")).collect();
    println!("  registering {agents} fleet servers");
    for chunk in ids.chunks(64) {
        let registered = chunk.iter().map(|id| async move {
            client
                .register_server(id, &AgentRegistration::default())
                .await
        });
        for outcome in futures::future::join_all(registered).await {
            outcome.context("cannot register a fleet server")?;
        }
    }
    let leases: Leases = Arc::default();
    let errors: Arc<Mutex<Errors>> = Arc::default();
    let stop = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    for id in &ids {
        running.spawn(agent(
            client.clone(),
            id.clone(),
            leases.clone(),
            errors.clone(),
            stop.clone(),
        ));
    }
    // Every agent's first lease request has come and found nothing; from then on they wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("  {agents} agents waiting; idle for {idle_for:?}");
    let before = statements(client).await?;
    let started = Instant::now();
    tokio::time::sleep(idle_for).await;
    let after = statements(client).await?;
    // The two scrapes' own requests send no statement.
    let idle_statements_per_sec = (after - before) / started.elapsed().as_secs_f64();
    let memory_waiting = resident_memory(server);

    println!("  creating {jobs} jobs across the fleet, one at a time");
    let mut dispatch = Vec::with_capacity(jobs);
    let mut undelivered = 0;
    let stride = (agents / jobs.max(1)).max(1);
    for n in 0..jobs {
        let server_id = &ids[(n * stride + n / agents.max(1)) % agents];
        let request = JobCreateRequest {
            name: format!("fleet-dispatch-{n}"),
            description: None,
            server_ids: vec![server_id.clone()],
            job_type: "COMMON".to_string(),
            is_reboot: None,
            items: vec![JobItem {
                item_type: "COMMON".to_string(),
                spec: Some([("cmd".to_string(), "true".to_string())].into()),
            }],
            visible: None,
        };
        let created = client.create_job(&request, None).await;
        let answered = Instant::now();
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                note(&errors, e);
                continue;
            }
        };
        let limit = answered + Duration::from_secs(5);
        loop {
            let leased = leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&created.id)
                .copied();
            if let Some(at) = leased {
                // Leased before the create's answer reached us counts as no wait.
                dispatch.push(at.saturating_duration_since(answered));
                break;
            }
            if Instant::now() > limit {
                undelivered += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    stop.cancel();
    while running.join_next().await.is_some() {}
    dispatch.sort_unstable();
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(FleetReport {
        agents,
        idle_for,
        idle_statements_per_sec,
        dispatch,
        undelivered,
        memory_waiting,
        memory_before,
        errors: errors.count,
        first_error: errors.first,
    })
}
