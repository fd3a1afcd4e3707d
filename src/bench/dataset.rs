//! The benchmark's data set: jobs as an operator's database holds them after months of use,
//! generated from a seed (the same seed gives the same rows on either backend).
//!
//! Per project, jobs are spread over the last 180 days, oldest first. Types follow the
//! built-in templates with uneven weights, names are `<purpose>-<6 hex digits>` (some with
//! capitals), about 8% are hidden from consoles. Recent jobs may still run (`PROCESSING`) or
//! have been deleted (`DELETED`, within the 30-day retention); the rest are `FINISHED`, a
//! few with a failed task. Every job has one task.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::store::bulk::{BulkJob, BulkTask};
use crate::store::ProjectRecord;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// How far back the jobs go.
const HISTORY_MS: i64 = 180 * DAY_MS;
/// Jobs younger than this may be deleted (older deleted ones are purged by retention).
const DELETABLE_MS: i64 = 25 * DAY_MS;

/// Job types with their weight, name purposes and what they run.
const TYPES: [(&str, u32, &[&str], &str); 5] = [
    (
        "COMMON",
        40,
        &[
            "smoke-test",
            "npu-health-check",
            "hccl-bandwidth",
            "dataset-sync",
            "model-deploy",
        ],
        r#"[{"type":"COMMON","spec":{"cmd":"npu-smi info"}}]"#,
    ),
    (
        "ASCEND_DIAGNOSIS",
        20,
        &["nightly-diagnosis", "ascend-diagnosis"],
        r#"[{"type":"ASCEND_DIAGNOSIS","spec":{"level":"full"}}]"#,
    ),
    (
        "LOG_COLLECT",
        15,
        &["log-collect", "syslog-collect"],
        r#"[{"type":"LOG_COLLECT","spec":{"path":"/var/log/npu"}}]"#,
    ),
    (
        "ASCEND_SOFTWARE_UPGRADE",
        15,
        &["cann-upgrade", "driver-upgrade", "firmware-upgrade"],
        r#"[{"type":"ASCEND_SOFTWARE_UPGRADE","spec":{"package":"cann-8.0.RC3"}}]"#,
    ),
    (
        "DEVICE_LOG_COLLECT",
        10,
        &["device-log-collect", "npu-log-dump"],
        r#"[{"type":"DEVICE_LOG_COLLECT"}]"#,
    ),
];

const USERS: [(&str, u32); 4] = [("admin", 40), ("ops-bot", 30), ("alice", 15), ("bob", 15)];
const DESCRIPTIONS: [&str; 4] = ["nightly", "POC", "weekly-maintenance", "change-4711"];

fn weighted<'a, T>(rng: &mut StdRng, choices: &'a [(T, u32)]) -> &'a T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut pick = rng.gen_range(0..total);
    for (value, weight) in choices {
        if pick < *weight {
            return value;
        }
        pick -= weight;
    }
    &choices[0].0
}

fn capitalised(purpose: &str) -> String {
    purpose
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Makes the data set's rows, deterministically from a seed.
pub struct Generator {
    rng: StdRng,
    now_ms: i64,
    /// Template id by job type.
    template_ids: std::collections::HashMap<String, String>,
}

impl Generator {
    pub fn new(seed: u64, now_ms: i64, templates: &crate::templates::TemplateCatalog) -> Self {
        let template_ids = TYPES
            .iter()
            .filter_map(|(t, ..)| {
                templates
                    .by_type(t)
                    .map(|tpl| (t.to_string(), tpl.id.clone()))
            })
            .collect();
        Self {
            rng: StdRng::seed_from_u64(seed),
            now_ms,
            template_ids,
        }
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.gen())
            .into_uuid()
            .to_string()
    }

    /// `count` other projects.
    pub fn projects(&mut self, count: u64) -> Vec<ProjectRecord> {
        (1..=count)
            .map(|n| ProjectRecord {
                id: uuid::Builder::from_random_bytes(self.rng.gen())
                    .into_uuid()
                    .simple()
                    .to_string(),
                name: format!("bench-project-{n:04}"),
                create_at: self.now_ms - HISTORY_MS - DAY_MS,
            })
            .collect()
    }

    /// Job number `index` of `of` jobs of a project (0 is the oldest), whose task runs on
    /// one of `servers`.
    pub fn job(&mut self, project_id: &str, index: u64, of: u64, servers: &[String]) -> BulkJob {
        let of = of.max(1);
        let step = HISTORY_MS / of as i64;
        let create_at =
            self.now_ms - HISTORY_MS + step * index as i64 + self.rng.gen_range(0..step.max(1));
        let age = self.now_ms - create_at;
        let newest = index * 50 >= of * 49; // the newest 2%
        let roll: f64 = self.rng.gen();
        let (status, task_status) = if newest && roll < 0.8 {
            ("PROCESSING", "PROCESSING")
        } else if age < DELETABLE_MS && roll < 0.45 {
            ("DELETED", "SKIPPED")
        } else {
            ("FINISHED", "SUCCESS")
        };
        let failed = status == "FINISHED" && self.rng.gen_bool(0.04);
        let weights: Vec<(usize, u32)> = TYPES.iter().enumerate().map(|(i, t)| (i, t.1)).collect();
        let (job_type, _, purposes, items) = TYPES[*weighted(&mut self.rng, &weights)];
        let purpose = purposes[self.rng.gen_range(0..purposes.len())];
        let purpose = if self.rng.gen_bool(0.1) {
            capitalised(purpose)
        } else {
            purpose.to_string()
        };
        let name = format!("{purpose}-{:06x}", self.rng.gen_range(0..0x100_0000u32));
        let update_at = match status {
            "PROCESSING" => create_at,
            "DELETED" => (create_at + self.rng.gen_range(1_000..2 * DAY_MS)).min(self.now_ms),
            _ => (create_at + self.rng.gen_range(5_000..1_800_000)).min(self.now_ms),
        };
        let server = servers
            .get(self.rng.gen_range(0..servers.len().max(1)))
            .cloned()
            .unwrap_or_else(|| "node-01".to_string());
        let (task_status, message) = match (task_status, failed) {
            ("SUCCESS", true) => ("FAILED", format!("exit status 1 on {server}")),
            ("SUCCESS", false) => ("SUCCESS", format!("done on {server}")),
            ("SKIPPED", _) => ("SKIPPED", "cancelled: the job was deleted".to_string()),
            (other, _) => (other, String::new()),
        };
        BulkJob {
            project_id: project_id.to_string(),
            id: self.uuid(),
            name,
            user_name: weighted(&mut self.rng, &USERS).to_string(),
            description: self
                .rng
                .gen_bool(0.3)
                .then(|| DESCRIPTIONS[self.rng.gen_range(0..DESCRIPTIONS.len())].to_string()),
            job_type: job_type.to_string(),
            template_id: self.template_ids.get(job_type).cloned(),
            status,
            visible: self.rng.gen_bool(0.92),
            abnormal_count: i64::from(failed),
            pending_tasks: i64::from(status == "PROCESSING"),
            items: items.to_string(),
            create_at,
            update_at,
            deleted_at: (status == "DELETED").then_some(update_at),
            task: BulkTask {
                id: uuid::Builder::from_unix_timestamp_millis(
                    u64::try_from(create_at).unwrap_or(0),
                    &self.rng.gen(),
                )
                .into_uuid()
                .to_string(),
                server_name: server.clone(),
                server_id: server,
                status: task_status,
                message,
            },
        }
    }

    /// A random index below `n`.
    pub fn index_below(&mut self, n: u64) -> u64 {
        self.rng.gen_range(0..n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(seed: u64) -> Generator {
        let templates = crate::templates::TemplateCatalog::load(None).expect("templates");
        Generator::new(seed, 1_750_000_000_000, &templates)
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let servers = vec!["s1".to_string(), "s2".to_string()];
        let (mut a, mut b) = (generator(7), generator(7));
        for i in 0..100 {
            let (x, y) = (a.job("p", i, 100, &servers), b.job("p", i, 100, &servers));
            assert_eq!((x.id, x.name, x.create_at), (y.id, y.name, y.create_at));
        }
    }

    #[test]
    fn rows_are_valid_and_mixed() {
        let servers = vec!["s1".to_string()];
        let mut g = generator(1);
        let n = 20_000;
        let jobs: Vec<BulkJob> = (0..n).map(|i| g.job("p", i, n, &servers)).collect();
        let mut statuses = std::collections::BTreeMap::new();
        for j in &jobs {
            assert!(crate::domain::ids::is_simple_name(&j.name), "{}", j.name);
            assert!(j.update_at >= j.create_at);
            assert!(
                j.template_id.is_some(),
                "{} has a built-in template",
                j.job_type
            );
            *statuses.entry(j.status).or_insert(0u64) += 1;
        }
        assert_eq!(statuses.len(), 3, "{statuses:?}");
        assert!(jobs.windows(2).all(|w| w[0].create_at <= w[1].create_at));
        assert!(jobs.iter().any(|j| !j.visible));
        assert!(jobs
            .iter()
            .any(|j| j.name.chars().any(|c| c.is_ascii_uppercase())));
    }
}
