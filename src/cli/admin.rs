//! What the admin commands (`iam …` in `iam.rs`, `servers …` in `servers.rs`) share: they
//! work directly on the database (the same URL forms as `serve`), through [`crate::iam`] and
//! the store traits, not through the API.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::output::{self, Format};
use crate::iam;
use crate::store::{self, ProjectRecord, Store, UserRecord};

/// `--database-url`, accepted after any admin subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Database: a SQLite file path or `sqlite:` URL, or a `postgres://` URL.
    #[arg(
        long,
        env = "LITEJOBS_DATABASE_URL",
        global = true,
        default_value = "litejobs.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// Opens (and migrates) the database. A SQLite file that does not exist is refused, not
/// made: a command run in the wrong folder, or with a mistyped path, would otherwise work
/// on a new, empty database (with a master key of its own) and seem to succeed.
pub async fn open(database: &DatabaseArgs) -> anyhow::Result<Arc<dyn Store>> {
    let url = database.database_url.as_str();
    if let Some(path) = store::sqlite_file(url).filter(|p| !p.exists()) {
        bail!(
            "no database at {}: `litejobs serve` or `litejobs migrate` makes one; give another \
             with --database-url",
            path.display()
        );
    }
    let store = store::open(url)
        .await
        .with_context(|| "cannot open the database")?;
    iam::ensure_builtin_policies(store.as_ref()).await?;
    Ok(store)
}

pub async fn find_user(store: &dyn Store, name: &str) -> anyhow::Result<UserRecord> {
    match store.find_user(name).await? {
        Some(user) => Ok(user),
        None => bail!("unknown user {name}"),
    }
}

pub async fn find_project(store: &dyn Store, name: &str) -> anyhow::Result<ProjectRecord> {
    match store.find_project(name).await? {
        Some(project) => Ok(project),
        None => bail!("unknown project {name}"),
    }
}

/// Prints `value` as JSON, or `text` for a table.
pub fn emit(
    format: Format,
    value: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => output::print(&format!("{}\n", output::to_json(value)?)),
        Format::Table => output::print(&text()),
    }
}

/// Tells, on stderr, that a running server notices a revocation within its lookup cache time.
pub fn note_cache_delay() {
    eprintln!(
        "note: running servers notice this within their auth cache time \
         (serve --auth-cache-ttl, default 5s)"
    );
}

/// The operating system's user running this command: `$USER` or `$LOGNAME`, else (under
/// cron, systemd or `docker exec`, which set neither) the name of its uid, else the uid.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let uid = nix::unistd::Uid::current();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => user.name,
                _ => format!("uid {uid}"),
            }
        })
}

/// Records an administration command in the audit trail (as `cli`, by the operating
/// system's user), whether it succeeded or not, in the project it names (by name or id) when
/// there is one. A record that cannot be written is a warning: the command's own outcome
/// stands.
pub async fn record_admin(
    store: &dyn Store,
    (action, resources, project): (&str, Vec<String>, Option<&str>),
    outcome: &anyhow::Result<()>,
) {
    let who = os_user();
    let project_id = match project {
        Some(named) => store.find_project(named).await.ok().flatten().map(|p| p.id),
        None => None,
    };
    let record = store::AuditRecord {
        at: crate::domain::now_ms(),
        project_id,
        user_id: crate::audit::ADMIN.to_string(),
        user_name: who,
        access_key: None,
        action: action.to_string(),
        resources,
        source: "cli".to_string(),
        request_id: uuid::Uuid::new_v4().simple().to_string(),
        outcome: if outcome.is_ok() { "success" } else { "failed" }.to_string(),
        status: 0,
        error_code: None,
    };
    if let Err(e) = store.record_audit(&[record]).await {
        eprintln!("warning: cannot record this command in the audit trail: {e}");
    }
}
