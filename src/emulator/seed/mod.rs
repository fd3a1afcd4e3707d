//! Seed files: known data to start from (projects, users with their keys and grants,
//! servers, jobs in any state with their tasks and times), loaded at start (`--seed`) or
//! posted to the control API, and the export of the current state in the same format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{now_ms, ProjectId};
use crate::iam;
use crate::secrets::Sealer;
use crate::store::seed::{JobRow, TaskRow};
use crate::store::{NewServer, Store};
use crate::templates::TemplateCatalog;
use crate::worker::SimulationConfig;

mod check;

pub use check::{check_servers, check_types};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub servers: Vec<SeedServer>,
    #[serde(default)]
    pub jobs: Vec<SeedJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    /// 32 hex digits as the cloud's (default: a new one).
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default)]
    pub access_keys: Vec<SeedKey>,
    /// Policies by project (id or name): `{"project": "...", "policy": "ModelArts FullAccess"}`.
    #[serde(default)]
    pub grants: Vec<SeedGrant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGrant {
    pub project: String,
    #[serde(default = "full_access")]
    pub policy: String,
}

fn full_access() -> String {
    iam::FULL_ACCESS.to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedServer {
    /// Project id or name.
    pub project: String,
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// A simulated server (its tasks end by themselves) or a real one (an agent's).
    #[serde(default = "yes")]
    pub simulated: bool,
    /// A simulated server's fixed outcome: `SUCCESS`, `FAILED` or `RANDOM` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedJob {
    /// Project id or name.
    pub project: String,
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default = "seed_user")]
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", default = "common")]
    pub job_type: String,
    /// `PROCESSING`, `FINISHED` or `DELETED` (default: from the tasks).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default = "yes")]
    pub visible: bool,
    #[serde(default)]
    pub items: Option<Vec<crate::wire::JobItem>>,
    /// Epoch milliseconds (default: now).
    #[serde(default)]
    pub create_at: Option<i64>,
    #[serde(default)]
    pub update_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    pub tasks: Vec<SeedTask>,
}

fn seed_user() -> String {
    "seed".to_string()
}

fn common() -> String {
    "COMMON".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTask {
    #[serde(default)]
    pub id: Option<String>,
    pub server_id: String,
    #[serde(default)]
    pub server_name: Option<String>,
    /// `PROCESSING`, `SUCCESS`, `FAILED` or `SKIPPED`.
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub cloud_server: BTreeMap<String, String>,
    #[serde(default)]
    pub update_at: Option<i64>,
}

/// A seed's mistake, said so the author can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SeedError(pub String);

fn bad(what: impl Into<String>) -> SeedError {
    SeedError(what.into())
}

/// The project an id or name means.
async fn project_of(store: &dyn Store, id_or_name: &str) -> anyhow::Result<ProjectId> {
    let project = store
        .find_project(id_or_name)
        .await?
        .ok_or_else(|| bad(format!("no project {id_or_name:?}")))?;
    Ok(ProjectId::parse(&project.id)?)
}

/// Loads a checked seed: what exists already (same project id, user, key) is kept.
pub async fn load(
    store: &dyn Store,
    sealer: Option<&Sealer>,
    templates: &TemplateCatalog,
    seed: &Seed,
    fleet: Option<&SimulationConfig>,
) -> anyhow::Result<()> {
    seed.check()?;
    check_types(seed, templates)?;
    // Every project named must exist or be made by the seed: checked before anything is
    // written, so that a wrong name changes nothing.
    let mut made: Vec<String> = Vec::new();
    for p in &seed.projects {
        made.extend(p.id.clone());
        made.push(p.name.clone());
    }
    let mut named: Vec<String> = Vec::new();
    for u in &seed.users {
        named.extend(u.grants.iter().map(|g| g.project.clone()));
    }
    named.extend(seed.servers.iter().map(|s| s.project.clone()));
    named.extend(seed.jobs.iter().map(|j| j.project.clone()));
    named.sort();
    named.dedup();
    for project in &named {
        if !made.contains(project) && store.find_project(project).await?.is_none() {
            return Err(bad(format!("no project {project:?}")).into());
        }
    }
    // A project or user of the seed is the one it names, never another one whose id or name
    // the name stands for (projects and users are looked up by either). The projects that
    // are not there yet are made below.
    let mut missing = Vec::new();
    for p in &seed.projects {
        let taken = match &p.id {
            Some(id) => match store.find_project(id).await? {
                Some(found) => found.id != *id,
                None => {
                    missing.push(p);
                    store.find_project(&p.name).await?.is_some()
                }
            },
            None => match store.find_project(&p.name).await? {
                Some(found) => found.name != p.name,
                None => {
                    missing.push(p);
                    false
                }
            },
        };
        if taken {
            let named = p.id.as_deref().unwrap_or(&p.name);
            return Err(bad(format!(
                "project {named:?}: its id or name is another project's name or id"
            ))
            .into());
        }
    }
    for u in &seed.users {
        let found = store.find_user(&u.name).await?;
        if found.is_some_and(|found| found.name != u.name) {
            return Err(bad(format!("user {:?}: the name is another user's id", u.name)).into());
        }
    }
    // And every policy granted.
    let policies = store.list_policies().await?;
    for g in seed.users.iter().flat_map(|u| &u.grants) {
        if !policies.iter().any(|p| p.name == g.policy) {
            return Err(bad(format!("no policy {:?}", g.policy)).into());
        }
    }
    check_servers(store, seed, fleet).await?;
    for p in missing {
        iam::create_project(store, &p.name, p.id.as_deref()).await?;
    }
    // The simulated fleet of every project, the seed's new ones too, before their jobs: a
    // job's task on `sim-server-01` is then a simulated server's.
    if let Some(fleet) = fleet {
        crate::worker::sync_simulated_fleet(store, fleet).await?;
    }
    for u in &seed.users {
        let user = match store.find_user(&u.name).await? {
            Some(user) => user,
            None => iam::create_user(store, &u.name, u.password.as_deref()).await?,
        };
        for k in &u.access_keys {
            if store.find_access_key(&k.access_key).await?.is_none() {
                let fixed = Some((k.access_key.as_str(), k.secret_key.as_str()));
                iam::create_access_key(store, sealer, &user, "seed", fixed).await?;
            }
        }
        for g in &u.grants {
            let project = project_of(store, &g.project).await?;
            store.grant(&user.id, project.as_str(), &g.policy).await?;
        }
    }
    let now = now_ms();
    for s in &seed.servers {
        let project = project_of(store, &s.project).await?;
        let outcome = s.outcome.clone().unwrap_or_else(|| "RANDOM".to_string());
        store
            .upsert_server(
                &project,
                NewServer {
                    id: s.id.clone(),
                    name: s.name.clone().unwrap_or_else(|| s.id.clone()),
                    kind: if s.simulated { "simulated" } else { "agent" }.to_string(),
                    sim_outcome: s.simulated.then_some(outcome),
                    cloud_server: BTreeMap::new(),
                    now_ms: now,
                },
            )
            .await?;
    }
    let mut by_project: BTreeMap<String, (ProjectId, Vec<JobRow>)> = BTreeMap::new();
    for j in &seed.jobs {
        let project = project_of(store, &j.project).await?;
        let simulated: std::collections::HashSet<String> = store
            .list_servers(&project)
            .await?
            .into_iter()
            .filter(|s| s.kind == "simulated")
            .map(|s| s.id)
            .collect();
        let template = templates.by_type(&j.job_type).map(|t| t.id.clone());
        let row = job_row(j, template, &simulated, now);
        by_project
            .entry(project.as_str().to_string())
            .or_insert_with(|| (project.clone(), Vec::new()))
            .1
            .push(row);
    }
    for (project, rows) in by_project.values() {
        store.insert_job_rows(project, rows).await?;
    }
    Ok(())
}

fn job_row(
    j: &SeedJob,
    template_id: Option<String>,
    simulated: &std::collections::HashSet<String>,
    now: i64,
) -> JobRow {
    let create_at = j.create_at.unwrap_or(now);
    let update_at = j.update_at.unwrap_or(create_at).max(create_at);
    let status = j.status.clone().unwrap_or_else(|| {
        if j.deleted_at.is_some() {
            "DELETED".to_string()
        } else if j.tasks.iter().any(|t| t.status == "PROCESSING") {
            "PROCESSING".to_string()
        } else {
            "FINISHED".to_string()
        }
    });
    let deleted_at = match (&j.deleted_at, status.as_str()) {
        (Some(d), _) => Some(*d),
        (None, "DELETED") => Some(update_at),
        _ => None,
    };
    let items = j.items.clone().unwrap_or_else(|| {
        vec![crate::wire::JobItem {
            item_type: j.job_type.clone(),
            spec: None,
        }]
    });
    JobRow {
        id: j.id.clone().unwrap_or_else(crate::domain::ids::new_id),
        name: j.name.clone(),
        user_name: j.user_name.clone(),
        description: j.description.clone(),
        job_type: j.job_type.clone(),
        template_id,
        status,
        visible: j.visible,
        items: serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_string()),
        create_at,
        update_at,
        deleted_at,
        tasks: j
            .tasks
            .iter()
            .map(|t| TaskRow {
                id: t.id.clone().unwrap_or_else(crate::domain::ids::new_id),
                server_id: t.server_id.clone(),
                server_name: t.server_name.clone().unwrap_or_else(|| t.server_id.clone()),
                status: t.status.clone(),
                message: t.message.clone(),
                cloud_server: serde_json::to_string(&t.cloud_server)
                    .unwrap_or_else(|_| "{}".to_string()),
                simulated: simulated.contains(&t.server_id),
                update_at: t.update_at.unwrap_or(update_at).max(create_at),
            })
            .collect(),
    }
}

/// The current state in the seed format: every project, user (keys whose secrets can be
/// opened, grants; no passwords: only their hashes are kept), server and job.
pub async fn export(store: &dyn Store, sealer: Option<&Sealer>) -> anyhow::Result<Seed> {
    let mut seed = Seed::default();
    for p in store.list_projects().await? {
        let project = ProjectId::parse(&p.id)?;
        for s in store.list_servers(&project).await? {
            seed.servers.push(SeedServer {
                project: p.id.clone(),
                simulated: s.kind == "simulated",
                id: s.id,
                name: Some(s.name),
                outcome: s.outcome,
            });
        }
        for j in store.job_rows(&project).await? {
            let items = serde_json::from_str(&j.items).ok();
            seed.jobs.push(SeedJob {
                project: p.id.clone(),
                id: Some(j.id),
                name: j.name,
                user_name: j.user_name,
                description: j.description,
                job_type: j.job_type,
                status: Some(j.status),
                visible: j.visible,
                items,
                create_at: Some(j.create_at),
                update_at: Some(j.update_at),
                deleted_at: j.deleted_at,
                tasks: j
                    .tasks
                    .into_iter()
                    .map(|t| SeedTask {
                        id: Some(t.id),
                        server_id: t.server_id,
                        server_name: Some(t.server_name),
                        status: t.status,
                        message: t.message,
                        cloud_server: serde_json::from_str(&t.cloud_server).unwrap_or_default(),
                        update_at: Some(t.update_at),
                    })
                    .collect(),
            });
        }
        seed.projects.push(SeedProject {
            id: Some(p.id),
            name: p.name,
        });
    }
    for u in store.list_users().await? {
        let mut access_keys = Vec::new();
        for k in store.list_access_keys(&u.id).await? {
            let opened = match sealer {
                Some(sealer) => sealer.open(&k.access_key, &k.secret_key),
                None => crate::secrets::open_unsealed(&k.access_key, &k.secret_key),
            };
            if let Ok(secret) = opened {
                access_keys.push(SeedKey {
                    access_key: k.access_key,
                    secret_key: secret.to_string(),
                });
            }
        }
        let grants = store
            .list_grants(&u.id)
            .await?
            .into_iter()
            .map(|(project, policy)| SeedGrant { project, policy })
            .collect();
        seed.users.push(SeedUser {
            name: u.name,
            password: None,
            access_keys,
            grants,
        });
    }
    Ok(seed)
}
