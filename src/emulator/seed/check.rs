//! A seed's checks, made before anything is written: that each part is one the service
//! could have made (a job as a create makes it, a task as an agent reports it, users and
//! projects as the CLI makes them), and that its jobs' types and servers exist.

use super::{bad, Seed, SeedError, SeedJob, SeedProject};
use crate::domain::{ProjectId, MAX_SERVERS_PER_JOB};
use crate::iam;
use crate::store::Store;
use crate::templates::TemplateCatalog;
use crate::worker::SimulationConfig;

const JOB_STATUSES: [&str; 3] = ["PROCESSING", "FINISHED", "DELETED"];
/// Ids no seeded job may have: the paths of other routes below the jobs' (the API's and the
/// console's), and those a client takes out of a path.
const RESERVED_JOB_IDS: [&str; 6] = ["templates", "services", "events", "new", ".", ".."];
const TASK_STATUSES: [&str; 4] = ["PROCESSING", "SUCCESS", "FAILED", "SKIPPED"];

impl Seed {
    /// Checks what can be checked before anything is written.
    pub fn check(&self) -> Result<(), SeedError> {
        let simple = crate::domain::ids::is_simple_name;
        let bounded = crate::domain::ids::bounded;
        for p in &self.projects {
            if let Some(id) = &p.id {
                ProjectId::parse(id).map_err(|e| bad(format!("project {id}: {}", e.0)))?;
            }
            if !iam::project_name_ok(&p.name) {
                return Err(bad(format!(
                    "project {:?}: a name is 1 to 64 characters, none of them a control \
                     character",
                    p.name
                )));
            }
        }
        // Projects are named by id or name: none of the document's stands for another, nor
        // has another's name or id.
        for p in &self.projects {
            let another = |q: &SeedProject| {
                !std::ptr::eq(q, p)
                    && (q.id.as_ref() == Some(&p.name)
                        || q.name == p.name
                        || (q.id.is_some() && q.id == p.id))
            };
            if self.projects.iter().any(another) {
                return Err(bad(format!(
                    "project {:?}: its name or id is another project's of the seed",
                    p.name
                )));
            }
        }
        for u in &self.users {
            if let Err(e) = iam::check_new_user(&u.name, u.password.as_deref()) {
                return Err(bad(format!("user {:?}: {e}", u.name)));
            }
            for k in &u.access_keys {
                let ok = (1..=64).contains(&k.access_key.len())
                    && k.access_key.bytes().all(|b| b.is_ascii_alphanumeric())
                    && k.secret_key.len() >= 16;
                if !ok {
                    return Err(bad(format!(
                        "access key {:?}: 1 to 64 letters or digits, and a secret of 16 \
                         characters or more",
                        k.access_key
                    )));
                }
            }
        }
        for s in &self.servers {
            if !simple(&s.id) {
                return Err(bad(format!(
                    "server {:?}: an id matches ^[-_.a-zA-Z0-9]{{1,64}}$",
                    s.id
                )));
            }
            if let Some(o) = &s.outcome {
                if !["SUCCESS", "FAILED", "RANDOM"].contains(&o.as_str()) {
                    return Err(bad("a server's outcome is SUCCESS, FAILED or RANDOM"));
                }
            }
        }
        for j in &self.jobs {
            // As a create would have them: the same patterns of name, description and type.
            if !simple(&j.name) || !simple(&j.job_type) {
                return Err(bad(format!(
                    "job {:?}: a name and a type each match ^[-_.a-zA-Z0-9]{{1,64}}$",
                    j.name
                )));
            }
            if j.description.as_deref().is_some_and(|d| !simple(d)) {
                return Err(bad(format!(
                    "job {:?}: a description matches ^[-_.a-zA-Z0-9]{{1,64}}$ (or is left out)",
                    j.name
                )));
            }
            if bounded("user_name", &j.user_name).is_err() {
                return Err(bad(format!(
                    "job {:?}: a user_name is 1 to 64 characters, none of them a control \
                     character",
                    j.name
                )));
            }
            if j.tasks.iter().any(|t| t.message.contains('\0')) {
                return Err(bad(format!(
                    "job {:?}: a task message holds U+0000",
                    j.name
                )));
            }
            if let Some(id) = &j.id {
                // (No job with such an id could be read: see `RESERVED_JOB_IDS`.)
                if !simple(id) || RESERVED_JOB_IDS.contains(&id.as_str()) {
                    return Err(bad(format!(
                        "job id {id:?}: an id matches ^[-_.a-zA-Z0-9]{{1,64}}$ and is none of \
                         {RESERVED_JOB_IDS:?}"
                    )));
                }
            }
            if j.status
                .as_deref()
                .is_some_and(|s| !JOB_STATUSES.contains(&s))
            {
                return Err(bad(format!(
                    "job {:?}: status is one of {JOB_STATUSES:?}",
                    j.name
                )));
            }
            if j.tasks.is_empty() || j.tasks.len() > MAX_SERVERS_PER_JOB {
                return Err(bad(format!(
                    "job {:?} has 1 to {MAX_SERVERS_PER_JOB} tasks",
                    j.name
                )));
            }
            let mut servers = std::collections::HashSet::new();
            for t in &j.tasks {
                if !TASK_STATUSES.contains(&t.status.as_str()) || !simple(&t.server_id) {
                    return Err(bad(format!(
                        "job {:?}: a task names its server_id and a status of {TASK_STATUSES:?}",
                        j.name
                    )));
                }
                if let Some(id) = &t.id {
                    if !simple(id) || [".", ".."].contains(&id.as_str()) {
                        return Err(bad(format!(
                            "job {:?}: task id {id:?}: an id matches ^[-_.a-zA-Z0-9]{{1,64}}$ \
                             and is neither . nor ..",
                            j.name
                        )));
                    }
                }
                if let Some(name) = &t.server_name {
                    bounded("server_name", name)
                        .map_err(|e| bad(format!("job {:?}: a task's {}", j.name, e.0)))?;
                }
                crate::wire::check_cloud_server(&t.cloud_server)
                    .map_err(|e| bad(format!("job {:?}: a task's {}", j.name, e.0)))?;
                if !servers.insert(t.server_id.as_str()) {
                    return Err(bad(format!(
                        "job {:?}: server {} has more than one task",
                        j.name, t.server_id
                    )));
                }
            }
            check_status(j)?;
            let task_times = j.tasks.iter().map(|t| t.update_at);
            if [j.create_at, j.update_at, j.deleted_at]
                .into_iter()
                .chain(task_times)
                .flatten()
                .any(|t| t < 0)
            {
                return Err(bad(format!(
                    "job {:?}: create_at, update_at, deleted_at and its tasks' update_at are \
                     times since 1970",
                    j.name
                )));
            }
            if let (Some(c), Some(u)) = (j.create_at, j.update_at) {
                if u < c {
                    return Err(bad(format!(
                        "job {:?}: update_at is before create_at",
                        j.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Checks that every job's servers are registered, as a create's must be: in its project, by
/// the seed, or in the simulated fleet.
pub async fn check_servers(
    store: &dyn Store,
    seed: &Seed,
    fleet: Option<&SimulationConfig>,
) -> anyhow::Result<()> {
    // Each project's servers, looked up once however many of its jobs the seed holds.
    let mut by_project = std::collections::HashMap::new();
    for j in &seed.jobs {
        if !by_project.contains_key(j.project.as_str()) {
            let servers = servers_of(store, seed, &j.project, fleet).await?;
            by_project.insert(j.project.as_str(), servers);
        }
        let known = &by_project[j.project.as_str()];
        if let Some(t) = j.tasks.iter().find(|t| !known.contains(&t.server_id)) {
            return Err(bad(format!(
                "job {:?}: server {} is not registered in project {:?} (nor by the seed)",
                j.name, t.server_id, j.project
            ))
            .into());
        }
    }
    Ok(())
}

/// The servers a job of the project named `project` (by id or name) may have tasks on once
/// the seed is loaded: the project's own, the seed's, and the simulated fleet's.
async fn servers_of(
    store: &dyn Store,
    seed: &Seed,
    project: &str,
    fleet: Option<&SimulationConfig>,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut names = vec![project.to_string()];
    let mut known = std::collections::HashSet::new();
    if let Some(found) = store.find_project(project).await? {
        let id = ProjectId::parse(&found.id)?;
        known.extend(store.list_servers(&id).await?.into_iter().map(|s| s.id));
        names.extend([found.id, found.name]);
    }
    for p in &seed.projects {
        if names.contains(&p.name) || p.id.as_ref().is_some_and(|id| names.contains(id)) {
            names.extend(p.id.iter().cloned().chain([p.name.clone()]));
        }
    }
    for s in seed.servers.iter().filter(|s| names.contains(&s.project)) {
        known.insert(s.id.clone());
    }
    if let Some(fleet) = fleet {
        known.extend((1..=fleet.servers).map(SimulationConfig::server_id));
    }
    Ok(known)
}

/// A job's status as its tasks make it: `PROCESSING` while a task runs, `FINISHED` once
/// none does, `DELETED` (or a `deleted_at`) with none running (a delete skips them).
fn check_status(j: &SeedJob) -> Result<(), SeedError> {
    let running = j.tasks.iter().any(|t| t.status == "PROCESSING");
    let deleted = j.deleted_at.is_some();
    let fits = match j.status.as_deref() {
        None => !(deleted && running),
        Some("PROCESSING") => running && !deleted,
        Some("FINISHED") => !running && !deleted,
        Some(_) => !running,
    };
    if fits {
        return Ok(());
    }
    Err(bad(format!(
        "job {:?}: a job is PROCESSING while one of its tasks is, FINISHED once none is, and \
         DELETED (with deleted_at) with none left PROCESSING",
        j.name
    )))
}

/// Checks that every job's type is a template's, as a create's must be (its job gets that
/// template).
pub fn check_types(seed: &Seed, templates: &TemplateCatalog) -> anyhow::Result<()> {
    for j in &seed.jobs {
        if templates.by_type(&j.job_type).is_none() {
            return Err(bad(format!(
                "job {:?}: type {} names no job template",
                j.name, j.job_type
            ))
            .into());
        }
    }
    Ok(())
}
