//! The command line: `serve` and `migrate` run the service; the other commands are the
//! service's client and its administration.
//!
//! Client commands live in `jobs.rs` and `templates.rs`, calling the API through `api.rs`
//! with the connection settings of `connect.rs`; admin commands in `iam.rs` and `servers.rs`,
//! sharing `admin.rs`; printing in `output.rs`.

pub mod admin;
pub mod api;
pub mod audit;
pub mod connect;
pub mod emulator;
pub mod iam;
pub mod jobs;
pub mod output;
pub mod servers;
pub mod templates;
pub mod watch;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::serve::Server;

/// litejobs: the ModelArts Lite Server job API, self-hosted.
#[derive(Debug, Parser)]
#[command(name = "litejobs", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The process's command line, parsed as [`clap::Parser::parse`] does (a wrong one
    /// exits with its message).
    pub fn from_command_line() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        // `emulator reset --project-id ID` resets that project only as written on the
        // command line: the same flag is every command's project to connect as, which
        // LITEJOBS_PROJECT_ID or a profile must not turn into a reset of one project.
        if let Command::Emulator(args) = &mut cli.command {
            if let emulator::EmulatorCommand::Reset { project_id } = &mut args.command {
                let written = matches
                    .subcommand_matches("emulator")
                    .and_then(|m| m.subcommand_matches("reset"))
                    .and_then(|m| m.value_source("project_id"));
                if written != Some(clap::parser::ValueSource::CommandLine) {
                    *project_id = None;
                }
            }
        }
        cli
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (SQLite file by default; PostgreSQL with a postgres:// URL).
    Serve(Box<ServeConfig>),
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// Database: a SQLite file path or `sqlite:` URL, or a `postgres://` URL.
        #[arg(long, env = "LITEJOBS_DATABASE_URL", default_value = "litejobs.db")]
        database_url: String,
    },
    /// Fill a database with a realistic data set and measure the API against it.
    Bench(crate::bench::BenchArgs),
    /// Jobs of a project: list, get, create, delete, wait (signed API calls).
    Jobs(jobs::JobsArgs),
    /// Job templates: list, get (signed API calls).
    Templates(templates::TemplatesArgs),
    /// Users, access keys, projects, policies, grants and tokens (on the database).
    Iam(iam::IamArgs),
    /// Lite Servers registered in a project (on the database).
    Servers(servers::ServersArgs),
    /// The audit trail: who changed what, from where (on the database).
    Audit(audit::AuditArgs),
    /// Run the node agent of one Lite Server: lease its tasks, run them, report results.
    Agent(AgentArgs),
    /// Print the environment variables that point the official SDKs at a litejobs server.
    Env(emulator::EnvArgs),
    /// The emulator's control API (`serve --simulate`): requests, faults, reset, seed, export.
    Emulator(emulator::EmulatorArgs),
}

/// `litejobs agent` settings.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
    /// This server's id in the project (jobs name it in `server_ids`).
    #[arg(long, env = "LITEJOBS_SERVER_ID")]
    pub server_id: String,
    /// Display name of the server (default: the host name).
    #[arg(long, env = "LITEJOBS_SERVER_NAME", default_value = "")]
    pub name: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Seconds one lease request waits for work (long poll; after an answer with no task,
    /// the next request goes at least a second after the last one).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub poll_wait: u64,
    /// How often the leases of running tasks are renewed, and cancellations learnt (a
    /// deleted job's processes are ended within about this time).
    #[arg(long, default_value = "2s", value_parser = parse_heartbeat)]
    pub heartbeat: std::time::Duration,
    /// Bytes of each task's output kept and uploaded (its tail; e.g. `1MiB`).
    #[arg(long, default_value = "1MiB", value_parser = parse_output_tail)]
    pub output_tail: usize,
    /// Time a stopped command's processes have after SIGTERM before SIGKILL.
    #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// A heartbeat period: from 100 ms to 10 s (a lease lasts 30 s).
fn parse_heartbeat(raw: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(raw)?;
    if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(10)).contains(&d) {
        return Err("must be from 100ms to 10s".into());
    }
    Ok(d)
}

/// An output tail size: from 1 KiB to the 1 MiB the service keeps.
fn parse_output_tail(raw: &str) -> Result<usize, String> {
    let n = crate::config::parse_size(raw)?;
    if !(1024..=crate::wire::MAX_OUTPUT_BYTES).contains(&n) {
        return Err("must be from 1KiB to 1MiB".into());
    }
    Ok(n)
}

/// Sets up logging on stderr; `RUST_LOG` overrides the level. With `telemetry`, the spans
/// are exported too.
pub fn init_logging(json: bool, telemetry: Option<&crate::telemetry::Telemetry>) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    use crate::http::request_span::RequestSpans;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a file or a pipe.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A line a request causes is written in the request's span (see `http::request_span`).
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .map_event_format(RequestSpans)
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .map_event_format(RequestSpans)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(telemetry.map(|t| t.layer()))
        .init();
}

/// Cancels the token on SIGINT or SIGTERM. The handlers are in place when this returns, so
/// a signal sent as soon as the server answers is never met by the default action (which
/// ends the process at once).
pub fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        let (Ok(mut int), Ok(mut term)) = handlers else {
            tracing::warn!("cannot handle SIGINT and SIGTERM: they will stop the process at once");
            return;
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutting down: finishing in-flight requests");
            token.cancel();
        }
    });
}

/// Keeps `SIGHUP` from ending the process (its default action), from the start: a service
/// manager's reload (`systemctl reload`) sends it. A served TLS certificate is read again
/// on it (its watcher listens too); nothing else reloads.
pub fn survive_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot handle SIGHUP: it will stop the process at once");
            return;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing reloads but a served TLS certificate");
            }
        });
    }
}

/// An error as the command line prints it: each cause after the one it caused, except a
/// cause whose text the message before already holds (errors that write their source into
/// their own text, as sqlx's and the store's do, would say it twice).
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Runs a parsed command line; answers the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(config) => {
            let telemetry = match config.otlp_endpoint.as_deref() {
                Some(endpoint) => Some(crate::telemetry::Telemetry::start(endpoint)?),
                None => None,
            };
            init_logging(config.log_format == "json", telemetry.as_ref());
            survive_hangup();
            let server = Server::bind(*config).await?;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            let served = server.run(shutdown).await;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown().await;
            }
            served?;
            Ok(0)
        }
        Command::Migrate { database_url } => {
            init_logging(false, None);
            let store = crate::store::open(&database_url)
                .await
                .context("cannot open the database")?;
            crate::iam::ensure_builtin_policies(store.as_ref()).await?;
            tracing::info!(backend = store.backend(), "database is migrated");
            Ok(0)
        }
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Jobs(args) => Ok(report(jobs::run_jobs(args).await)),
        Command::Templates(args) => Ok(report(templates::run_templates(args).await)),
        Command::Iam(args) => Ok(report(iam::run_iam(args).await)),
        Command::Servers(args) => Ok(report(servers::run_servers(args).await)),
        Command::Audit(args) => Ok(report(audit::run_audit(args).await)),
        Command::Env(args) => Ok(report(emulator::run_env(args))),
        Command::Emulator(args) => Ok(report(emulator::run_emulator(args).await)),
        Command::Agent(args) => {
            init_logging(args.log_format == "json", None);
            survive_hangup();
            crate::domain::ids::bounded("server-id", &args.server_id)?;
            let client = args.connect.client()?;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            let config = crate::agent::AgentConfig {
                server_id: args.server_id,
                name: args.name,
                concurrency: args.concurrency,
                poll_wait_secs: args.poll_wait,
                heartbeat: args.heartbeat,
                output_tail: args.output_tail,
                kill_grace: args.kill_grace,
            };
            Ok(report(crate::agent::run(client, config, shutdown).await))
        }
    }
}

/// Exit code of a client or admin command: 0, or 1 after printing `error: …` on stderr.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", output::describe(&e));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn an_error_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("unavailable: {0}")]
        struct Wraps(#[source] std::io::Error);
        let io = || std::io::Error::other("refused");
        let e = anyhow::Error::new(Wraps(io())).context("cannot open the database");
        assert_eq!(
            error_text(&e),
            "cannot open the database: unavailable: refused"
        );
        let plain = anyhow::Error::new(io()).context("cannot read");
        assert_eq!(error_text(&plain), "cannot read: refused");
    }
}
