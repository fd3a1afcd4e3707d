//! Admin commands `servers …`: the Lite Servers registered in a project, on the database.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::admin::{emit, find_project, open, DatabaseArgs};
use super::output::{self, OutputArgs, Table};
use crate::domain::{now_ms, ProjectId};
use crate::store::NewServer;

/// `litejobs servers …`
#[derive(Debug, Args)]
pub struct ServersArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: ServersCommand,
}

/// Outcome of a simulated server's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Outcome {
    Success,
    Failed,
    /// Fails with the chance set by `serve --simulate-failure-rate`.
    Random,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::Random => "RANDOM",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// Register a Lite Server in a project (or update it).
    Add {
        /// Project name or id.
        #[arg(long)]
        project: String,
        /// Server id.
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// A simulated server whose tasks finish by themselves (needs `serve --simulate`).
        #[arg(long)]
        simulated: bool,
        /// Outcome of a simulated server's tasks.
        #[arg(long, value_enum, requires = "simulated", default_value_t = Outcome::Random, ignore_case = true)]
        outcome: Outcome,
    },
    /// List a project's Lite Servers.
    List {
        /// Project name or id.
        #[arg(long)]
        project: String,
    },
    /// Remove a Lite Server from a project.
    Remove {
        /// Project name or id.
        #[arg(long)]
        project: String,
        /// Server id.
        id: String,
    },
}

/// Runs a `servers` command, recording it in the audit trail when it changes something.
pub async fn run_servers(args: ServersArgs) -> anyhow::Result<()> {
    let store = open(&args.database).await?;
    let audit = match &args.command {
        ServersCommand::Add { project, id, .. } => Some(("server.add", project, id)),
        ServersCommand::Remove { project, id } => Some(("server.remove", project, id)),
        ServersCommand::List { .. } => None,
    }
    .map(|(action, project, id)| (action, project.clone(), id.clone()));
    let outcome = servers_command(store.as_ref(), args).await;
    if let Some((action, project, id)) = audit {
        let resources = vec![project.clone(), id.clone()];
        let named = (action, resources, Some(project.as_str()));
        super::admin::record_admin(store.as_ref(), named, &outcome).await;
    }
    outcome
}

async fn servers_command(store: &dyn crate::store::Store, args: ServersArgs) -> anyhow::Result<()> {
    let format = args.output.output;
    match args.command {
        ServersCommand::Add {
            project,
            id,
            name,
            simulated,
            outcome,
        } => {
            let p = find_project(store, &project).await?;
            let project_id = ProjectId::parse(&p.id)?;
            if !crate::domain::ids::is_simple_name(&id) {
                bail!("a server id must match ^[-_.a-zA-Z0-9]{{1,64}}$");
            }
            let name = name.unwrap_or_else(|| id.clone());
            if name.is_empty() || name.chars().count() > 64 {
                bail!("a server name is 1 to 64 characters");
            }
            store
                .upsert_server(
                    &project_id,
                    NewServer {
                        id: id.clone(),
                        name,
                        kind: if simulated { "simulated" } else { "agent" }.to_string(),
                        sim_outcome: simulated.then(|| outcome.as_str().to_string()),
                        cloud_server: Default::default(),
                        now_ms: now_ms(),
                    },
                )
                .await?;
            if simulated {
                eprintln!(
                    "note: the tasks of a simulated server end only while a server started with \
                     `litejobs serve --simulate` serves this database"
                );
            }
            let servers = store.list_servers(&project_id).await?;
            let Some(server) = servers.into_iter().find(|s| s.id == id) else {
                bail!("server {id} was not registered");
            };
            emit(format, &serde_json::to_value(&server)?, || {
                format!(
                    "registered {} server {} in project {} ({})\n",
                    server.kind, server.id, p.name, p.id
                )
            })
        }
        ServersCommand::List { project } => {
            let p = find_project(store, &project).await?;
            let servers = store.list_servers(&ProjectId::parse(&p.id)?).await?;
            emit(format, &serde_json::to_value(&servers)?, || {
                let mut table =
                    Table::new(["ID", "NAME", "KIND", "ONLINE", "LAST SEEN", "CREATED"]);
                for s in &servers {
                    table.row([
                        s.id.clone(),
                        s.name.clone(),
                        s.kind.clone(),
                        if s.online { "yes" } else { "no" }.to_string(),
                        s.last_seen_at.map_or_else(|| "-".to_string(), output::time),
                        output::time(s.create_at),
                    ]);
                }
                if table.is_empty() {
                    format!("project {} has no servers\n", p.name)
                } else {
                    table.render()
                }
            })
        }
        ServersCommand::Remove { project, id } => {
            let p = find_project(store, &project).await?;
            if !store.delete_server(&ProjectId::parse(&p.id)?, &id).await? {
                bail!("project {} has no server {id}", p.name);
            }
            emit(
                format,
                &json!({"project_id": p.id, "id": id, "removed": true}),
                || format!("removed server {id} from project {}\n", p.name),
            )
        }
    }
}
