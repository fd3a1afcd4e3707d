//! `litejobs env` (the lines to export so that the official SDKs call a litejobs server) and
//! `litejobs emulator …` (the control API of a `serve --simulate`: the request journal, fault
//! rules, reset, seed, export), as the administrator.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::connect::ConnectArgs;
use super::output::{self, Format, OutputArgs, Table};
use crate::client::{Client, ClientAuth};
use crate::emulator::faults::RuleSpec;
use crate::iam::demo;
use crate::sign::Credentials;

/// `litejobs env`
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Read everything from the ready file of `serve --ready-file`.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// The server's endpoint.
    #[arg(long, env = "LITEJOBS_ENDPOINT", default_value = super::connect::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// The region the code names (`.with_region(...)`).
    #[arg(
        long,
        env = "LITEJOBS_REGION",
        default_value = crate::emulator::DEFAULT_REGION,
        value_parser = crate::config::parse_region
    )]
    pub region: String,
    /// Access key to sign with (default: the demo account of `serve --simulate`).
    #[arg(long, env = "LITEJOBS_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Secret key to sign with.
    #[arg(
        long,
        env = "LITEJOBS_SECRET_KEY",
        hide_env_values = true,
        requires = "access_key"
    )]
    pub secret_key: Option<String>,
}

fn read_ready(path: &Path) -> anyhow::Result<serde_json::Value> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ready file {}", path.display()))?;
    serde_json::from_str(&raw).with_context(|| format!("{} is not a ready file", path.display()))
}

/// Quotes a value for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

pub fn run_env(args: EnvArgs) -> anyhow::Result<()> {
    let lines: Vec<(String, String)> = match &args.ready_file {
        Some(path) => {
            let ready = read_ready(path)?;
            let env = ready
                .get("env")
                .and_then(|e| e.as_object())
                .context("the ready file has no env")?;
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        }
        None => {
            let (ak, sk) = match (&args.access_key, &args.secret_key) {
                (Some(ak), Some(sk)) => (ak.clone(), sk.clone()),
                _ => (demo::ACCESS_KEY.to_string(), demo::SECRET_KEY.to_string()),
            };
            super::connect::check_endpoint(&args.endpoint)?;
            crate::emulator::env_lines(args.endpoint.trim_end_matches('/'), &args.region, &ak, &sk)
        }
    };
    let mut out = String::new();
    for (key, value) in lines {
        // The name goes unquoted into a line a shell evaluates.
        anyhow::ensure!(
            crate::domain::ids::is_env_name(&key),
            "{key:?} is no environment variable's name"
        );
        out.push_str(&format!("export {key}={}\n", shell_quote(&value)));
    }
    output::print(&out)
}

/// `litejobs emulator …`
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Call as the administrator named in the ready file of `serve --ready-file`.
    #[arg(long, global = true, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: EmulatorCommand,
}

#[derive(Debug, Subcommand)]
pub enum EmulatorCommand {
    /// The last requests the server answered, oldest first (in the order of their answers).
    Requests {
        /// Only those after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many: the first after --after, else the newest.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Fault rules: list them, add one (`key=value,...` as `serve --fault`), or clear them.
    Faults {
        #[command(subcommand)]
        command: Option<FaultsCommand>,
    },
    /// Back to the start state: everything, or one project's jobs.
    Reset {
        /// The project (an id or a name) whose jobs to erase, as written here: never the
        /// project the command connects as (LITEJOBS_PROJECT_ID, a profile's).
        #[arg(long, value_name = "ID")]
        project_id: Option<String>,
    },
    /// Load a seed file (JSON).
    Seed { file: PathBuf },
    /// Print the current state as a seed document.
    Export,
}

#[derive(Debug, Subcommand)]
pub enum FaultsCommand {
    /// Add a rule, e.g. `op=ListDevServerJobs,status=429,times=2`.
    Add { rule: String },
    /// Remove one rule, or every rule with `--all`.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Remove {
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

fn admin_client(args: &EmulatorArgs) -> anyhow::Result<Client> {
    let Some(path) = &args.ready_file else {
        return args.connect.client();
    };
    let ready: ReadyInfoFile = serde_json::from_value(read_ready(path)?)
        .with_context(|| format!("{} is not a ready file", path.display()))?;
    let admin = ready
        .admin
        .context("the ready file holds no administrator's credentials")?;
    Ok(Client::new(
        &ready.endpoint,
        &admin.project_id,
        ClientAuth::AkSk(Credentials {
            access_key: admin.access_key,
            secret_key: admin.secret_key,
        }),
    )?)
}

/// The parts of the ready file (`emulator::ready::ReadyInfo`) the commands read back.
#[derive(serde::Deserialize)]
struct ReadyInfoFile {
    endpoint: String,
    admin: Option<crate::iam::Profile>,
}

/// True for the answer to a path the server does not serve (`APIG.0101`).
fn path_is_unknown(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|b| b["error_code"] == "APIG.0101")
}

async fn control(
    client: &Client,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<bytes::Bytes> {
    let response = client
        .send(method, &format!("/_litejobs/{path}"), query, body, &[])
        .await?;
    if response.status == 404 && path_is_unknown(&response.body) {
        anyhow::bail!(
            "the server serves no emulator control API: it runs without `litejobs serve \
             --simulate`"
        );
    }
    if response.status >= 400 {
        return Err(response.api_error().into());
    }
    Ok(response.body)
}

fn requests_table(raw: &[u8]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(raw)?;
    let mut table = Table::new([
        "SEQ",
        "METHOD",
        "PATH",
        "OPERATION",
        "STATUS",
        "ERROR",
        "MS",
    ]);
    for r in value["requests"].as_array().into_iter().flatten() {
        let path = match r["query"].as_str() {
            Some(q) if !q.is_empty() => format!("{}?{q}", r["path"].as_str().unwrap_or("")),
            _ => r["path"].as_str().unwrap_or("").to_string(),
        };
        table.row([
            r["seq"].to_string(),
            r["method"].as_str().unwrap_or("").to_string(),
            output::truncate(&output::clean(&path), 70),
            r["operation"].as_str().unwrap_or("").to_string(),
            r["status"].to_string(),
            r["error_code"].as_str().unwrap_or("").to_string(),
            format!("{:.1}", r["elapsed_ms"].as_f64().unwrap_or(0.0)),
        ]);
    }
    Ok(if table.is_empty() {
        "no requests\n".to_string()
    } else {
        table.render()
    })
}

fn print_json(raw: &[u8]) -> anyhow::Result<()> {
    output::print(&format!("{}\n", output::pretty_json(raw)))
}

pub async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let client = admin_client(&args)?;
    let format = args.output.output;
    match args.command {
        EmulatorCommand::Requests { after, limit } => {
            let mut query: Vec<(&str, String)> = after
                .map(|a| ("after", a.to_string()))
                .into_iter()
                .collect();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let raw = control(&client, Method::GET, "requests", &query, None).await?;
            match format {
                Format::Json => print_json(&raw),
                Format::Table => output::print(&requests_table(&raw)?),
            }
        }
        EmulatorCommand::Faults { command: None } => {
            print_json(&control(&client, Method::GET, "faults", &[], None).await?)
        }
        EmulatorCommand::Faults {
            command: Some(FaultsCommand::Add { rule }),
        } => {
            let spec = RuleSpec::parse_flag(&rule).map_err(anyhow::Error::msg)?;
            let body = serde_json::to_vec(&spec)?;
            print_json(&control(&client, Method::POST, "faults", &[], Some(body)).await?)
        }
        EmulatorCommand::Faults {
            command: Some(FaultsCommand::Remove { id, .. }),
        } => {
            // (clap makes sure that one of them is given, and not both.)
            match id {
                Some(id) => {
                    control(&client, Method::DELETE, &format!("faults/{id}"), &[], None).await?
                }
                None => control(&client, Method::DELETE, "faults", &[], None).await?,
            };
            Ok(())
        }
        EmulatorCommand::Reset { project_id } => {
            let body = serde_json::to_vec(&serde_json::json!({ "project_id": project_id }))?;
            print_json(&control(&client, Method::POST, "reset", &[], Some(body)).await?)
        }
        EmulatorCommand::Seed { file } => {
            let body = std::fs::read(&file)
                .with_context(|| format!("cannot read the seed {}", file.display()))?;
            print_json(&control(&client, Method::POST, "seed", &[], Some(body)).await?)
        }
        EmulatorCommand::Export => {
            print_json(&control(&client, Method::GET, "export", &[], None).await?)
        }
    }
}
