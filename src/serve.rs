//! Start-up of `litejobs serve`: open and migrate the store, create the first administrator,
//! bind, run the API and the background loops, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::http::auth::AuthConfig;
use crate::http::server::ConnectionLimits;
use crate::http::tls::{TlsAcceptor, TlsFiles};
use crate::http::{self, ApiConfig, AppState};
use crate::iam::{self, demo, Bootstrap, Profile};
use crate::secrets::Sealer;
use crate::store::{self, Store};
use crate::templates::TemplateCatalog;
use crate::worker::{self, SimulationConfig};

/// A server that has bound its address and is ready to run.
pub struct Server {
    listener: TcpListener,
    /// The listener of `/metrics`, when it has an address of its own.
    metrics: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    state: AppState,
    config: ServeConfig,
    /// The audit writer, which ends once the API is gone and its records are written.
    audit_writer: tokio::task::JoinHandle<()>,
    /// The administrator's credentials, when this start made them or can read them.
    admin: Option<Profile>,
    /// The memory-backed directory of an `--in-memory` database, removed when this goes.
    _memory: Option<crate::emulator::ready::MemoryDir>,
}

impl Server {
    /// Opens the store, prepares accounts and binds `config.addr`.
    pub async fn bind(mut config: ServeConfig) -> anyhow::Result<Self> {
        // The recorder first: nothing counted from here on is lost.
        let _ = crate::metrics::handle();
        survive_file_size_limit();
        if config.simulate && !config.addr.ip().is_loopback() && !config.control_on_any_address {
            anyhow::bail!(
                "refusing to serve the emulator's control API (--simulate) on the non-loopback \
                 address {}: anyone who reaches it with the administrator's key can reset the \
                 data and inject faults; pass --control-on-any-address to serve it there",
                config.addr
            );
        }
        anyhow::ensure!(
            !config.in_memory || config.database_url == crate::emulator::ready::DEFAULT_DATABASE,
            "--in-memory keeps its own database: give no --database-url with it"
        );
        let memory = if config.in_memory {
            let dir = crate::emulator::ready::MemoryDir::create()?;
            config.database_url = dir.database_url();
            Some(dir)
        } else {
            None
        };
        // The templates, fault rules and seed are read and checked before anything is
        // written: a start that cannot load them stops with the database as it was. (A seed
        // is checked at every start, loaded or not: every reset loads it again.)
        let templates = TemplateCatalog::load(config.templates_dir.as_deref())?;
        let mut emulator = crate::emulator::ready::emulator(&config)?;
        if let Some(seed) = emulator.start_state.as_ref().and_then(|s| s.seed.as_ref()) {
            crate::emulator::seed::check_types(seed, &templates)
                .context("the seed (--seed) cannot be loaded")?;
        }
        let store = store::open_with(&config.database_url, config.db_max_connections)
            .await
            .with_context(|| "cannot open the database")?;
        // The seed's servers, against the database's, before the start writes anything.
        if let Some(start) = emulator.start_state.as_ref() {
            if let Some(seed) = start.seed.as_ref() {
                crate::emulator::seed::check_servers(store.as_ref(), seed, Some(&start.simulation))
                    .await
                    .context("the seed (--seed) cannot be loaded")?;
            }
        }
        let sealer = Sealer::for_database(&config.database_url, store.as_ref())
            .await
            .context("cannot load the master key that seals secret keys")?;
        if sealer.is_none() {
            tracing::warn!(
                "no master key (LITEJOBS_MASTER_KEY or LITEJOBS_MASTER_KEY_FILE): new secret \
                 keys are stored unsealed; set one key shared by every replica"
            );
        }
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsAcceptor::new(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .context("cannot load the TLS certificate")?,
            ),
            _ => None,
        };
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{addr}");
        let write_admin = !config.in_memory
            || config.admin_credentials.as_os_str() != crate::emulator::ready::DEFAULT_ADMIN_FILE;
        let admin;
        let fresh = match iam::bootstrap_admin(store.as_ref(), sealer.as_ref(), &endpoint).await? {
            Bootstrap::Created(profile) if !write_admin => {
                admin = Some(profile);
                true
            }
            Bootstrap::Created(profile) => {
                admin = Some(profile.clone());
                // A file there is another database's administrator (a database removed and
                // made anew): kept aside, since its secret is nowhere else.
                let written = iam::write_profile(
                    &config.admin_credentials,
                    &profile,
                    iam::IfExists::KeepAside,
                );
                if let Ok(Some(kept)) = &written {
                    tracing::warn!(
                        path = %config.admin_credentials.display(),
                        kept = %kept.display(),
                        "a file was where the new administrator's credentials go (another \
                         database's administrator?): it is kept aside"
                    );
                }
                if let Err(e) = written {
                    // Without its credentials the administrator is of no use, and the next
                    // start would find it and write none: it goes, and the next start
                    // creates it again.
                    if let Some(admin) = store.find_user("admin").await? {
                        store.delete_user(&admin.id).await?;
                    }
                    return Err(e.context(format!(
                        "cannot write the administrator's credentials to {}; nothing was kept, \
                         start again once it can be written (--admin-credentials)",
                        config.admin_credentials.display()
                    )));
                }
                tracing::info!(
                    path = %config.admin_credentials.display(),
                    user = "admin",
                    project_id = profile.project_id,
                    "created the administrator; its credentials are in this file (mode 0600)"
                );
                true
            }
            Bootstrap::Existing => {
                admin = read_profile(&config.admin_credentials).ok();
                false
            }
        };
        let mut demo_account = config.simulate && addr.ip().is_loopback();
        if !demo_account {
            demo::retire(store.as_ref()).await?;
        }
        if config.simulate {
            if demo_account {
                demo_account = demo::ensure(store.as_ref(), sealer.as_ref()).await?;
            }
            if demo_account {
                tracing::info!(
                    project_id = demo::PROJECT_ID,
                    access_key = demo::ACCESS_KEY,
                    user = demo::USER,
                    "simulate: demo account ready (see README for its secret and password)"
                );
            } else if !addr.ip().is_loopback() {
                tracing::warn!("simulate: not on a loopback address, so no demo account");
            }
            worker::sync_simulated_fleet(store.as_ref(), &SimulationConfig::of(&config)).await?;
        }
        emulator.demo_account = demo_account;
        // The seed's demo project may be named by its region, as IAM names it.
        if let Some(mut start) = emulator.start_state.take() {
            if let Some(seed) = start.seed.as_mut() {
                emulator.resolve_seed(store.as_ref(), seed).await?;
            }
            emulator.start_state = Some(start);
        }
        let emulator = Arc::new(emulator);
        // The seed fills a fresh database once: the start that made the administrator loads
        // it, other replicas and later starts find it there (resets load it again).
        // (A seed is only given with --simulate: the emulator's start state holds it.)
        let seeded = (emulator.start_state.as_ref())
            .and_then(|start| start.seed.as_ref().map(|seed| (start, seed)));
        if let Some((start, seed)) = seeded {
            if fresh {
                let fleet = Some(&start.simulation);
                crate::emulator::seed::load(
                    store.as_ref(),
                    sealer.as_ref(),
                    &templates,
                    seed,
                    fleet,
                )
                .await
                .context("cannot load the seed (--seed)")?;
            } else {
                tracing::info!(
                    "--seed is not loaded: an earlier start made this database (and loaded its \
                     seed then); a reset loads it again"
                );
            }
        }
        let api = ApiConfig {
            max_page_size: config.max_page_size,
            auth: AuthConfig {
                rate_limit_per_sec: config.rate_limit,
                rate_burst: config.rate_burst,
                cache_ttl: config.auth_cache_ttl,
                demo_account,
                failures_per_address: config.auth_failures_per_address.unwrap_or(
                    if config.simulate {
                        0
                    } else {
                        crate::http::lockout::DEFAULT_ADDRESS_FAILURES
                    },
                ),
            },
            bench_floor: config.bench_floor,
            body_timeout: config.body_timeout,
            max_body_memory: config.max_body_memory,
            agent_lease: config.agent_lease,
            metrics_elsewhere: config.metrics_addr.is_some(),
            secure_cookies: tls.is_some(),
            ..ApiConfig::default()
        };
        let metrics = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for /metrics"))?,
            ),
            None => None,
        };
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS: tokens, passwords and job data \
                 cross the network in clear; give --tls-cert and --tls-key, or serve on \
                 loopback behind a TLS-terminating proxy"
            );
        }
        let (audit, audit_writer) = if config.no_audit {
            (crate::audit::AuditLog::off(), tokio::spawn(async {}))
        } else {
            crate::audit::AuditLog::start(store.clone())
        };
        Ok(Self {
            listener,
            metrics,
            tls,
            state: crate::http::Shared {
                sealer: sealer.map(std::sync::Arc::new),
                audit,
                emulator,
                ..crate::http::Shared::new(store, templates, api)
            }
            .into(),
            config,
            audit_writer,
            admin,
            _memory: memory,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on, when it is not the API's.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        let mut workers = tokio::task::JoinSet::new();
        if !self.config.simulate {
            let now = crate::domain::now_ms();
            match store.fleet_gauges(now, now).await {
                Ok(gauges) if gauges.simulated > 0 => tracing::warn!(
                    tasks = gauges.simulated,
                    "tasks of simulated servers are running; they end only while a server \
                     started with --simulate serves this database"
                ),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot count the simulated tasks"),
            }
        }
        if self.config.simulate {
            let mut simulation = SimulationConfig::of(&self.config);
            let faults: Arc<dyn worker::TaskFaults> = self.state.emulator.clone();
            simulation.task_faults = worker::TaskFaultHook(Some(faults));
            workers.spawn(worker::run_simulation(
                store.clone(),
                simulation,
                shutdown.clone(),
            ));
        }
        let retention = worker::Retention {
            deleted_jobs: self.config.retention,
            idempotency_window: self.state.config.idempotency_window,
            audit: self.config.audit_retention,
        };
        workers.spawn(worker::run_retention(
            store.clone(),
            retention,
            self.config.purge_interval,
            shutdown.clone(),
        ));
        workers.spawn(worker::run_gauges(store.clone(), shutdown.clone()));
        workers.spawn(crate::metrics::run_upkeep(shutdown.clone()));
        workers.spawn(worker::run_stall_sweeper(
            store.clone(),
            self.config.task_start_timeout,
            shutdown.clone(),
        ));
        workers.spawn(worker::run_liveness_flush(
            store.clone(),
            self.state.fleet.clone(),
            shutdown.clone(),
        ));
        if let Some(tls) = &self.tls {
            workers.spawn(tls.clone().watch(shutdown.clone()));
        }
        if let Some(listener) = self.metrics {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            let app = axum::Router::new().route("/metrics", axum::routing::get(http::metrics));
            let limits = ConnectionLimits {
                header_timeout: self.config.header_timeout,
                max_connections: 64,
                send_timeout: self.config.body_timeout,
            };
            let stop = shutdown.clone();
            workers.spawn(async move {
                if let Err(e) = http::server::serve(listener, app, limits, None, stop).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        }
        workers.spawn(log_abuse(
            self.state.authenticator.clone(),
            shutdown.clone(),
        ));
        let addr = self.listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        crate::emulator::ready::announce(
            &self.config,
            &format!("{scheme}://{addr}"),
            &self.state.emulator,
            self.admin.as_ref(),
        )?;
        tracing::info!(
            %addr,
            backend = store.backend(),
            "litejobs listening on {scheme}://{addr}"
        );
        let limits = ConnectionLimits {
            header_timeout: self.config.header_timeout,
            max_connections: self
                .config
                .max_connections
                .map_or_else(crate::config::default_max_connections, |n| n as usize),
            send_timeout: self.config.body_timeout,
        };
        let state = self.state.until(shutdown.clone());
        let app = http::router(state);
        http::server::serve(self.listener, app, limits, self.tls, shutdown.clone())
            .await
            .context("server failed")?;
        shutdown.cancel();
        while workers.join_next().await.is_some() {}
        // The API is gone with its references to the audit log: what is queued is written.
        if tokio::time::timeout(AUDIT_FLUSH, self.audit_writer)
            .await
            .is_err()
        {
            tracing::warn!("the audit trail's last records were not all written in time");
        }
        tracing::info!("litejobs stopped");
        Ok(())
    }
}

/// How long a stopping server waits for its last audit records to be written.
const AUDIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// How often failed authentications and throttled requests are summed up in the log.
const ABUSE_SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs, every [`ABUSE_SUMMARY_EVERY`] when there were any, how many authentications
/// failed, how many requests were refused by a lock-out and how many were throttled: one
/// line for a flood, where a line per request would flood the log.
async fn log_abuse(authenticator: Arc<http::auth::Authenticator>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ABUSE_SUMMARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (failed, locked_out, throttled) = authenticator.failures.counters.take();
        if failed + locked_out + throttled > 0 {
            tracing::warn!(
                failed,
                locked_out,
                throttled,
                every_secs = ABUSE_SUMMARY_EVERY.as_secs(),
                "authentication failures and throttled requests"
            );
        }
    }
}

/// The admin profile the first start wrote, if readable.
pub fn read_profile(path: &std::path::Path) -> anyhow::Result<Profile> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&raw).with_context(|| format!("{} is not a profile", path.display()))
}

/// A write past the process's file-size limit (`ulimit -f`, systemd's `LimitFSIZE=`) sends
/// `SIGXFSZ`, whose default is to kill the process: at every start again, once the database
/// has grown to the limit. With a handler the write fails instead (`EFBIG`), as on a full
/// disk: the change is refused and the server goes on. (A command an agent runs gets the
/// default back when it starts.)
fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let kind = SignalKind::from_raw(nix::sys::signal::Signal::SIGXFSZ as i32);
        match signal(kind) {
            Ok(mut xfsz) => {
                tokio::spawn(async move {
                    while xfsz.recv().await.is_some() {
                        tracing::warn!(
                            "a write went past the process's file-size limit (ulimit -f) and \
                             failed; raise the limit"
                        );
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGXFSZ"),
        }
    }
}
