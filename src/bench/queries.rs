//! The queries the benchmark measures, in order, with the target each row is held to.

use anyhow::Context;

use super::load::{self, Call};
use super::report::{self, Target};
use super::setup::Loaded;
use crate::client::Client;
use crate::wire::{JobCreateRequest, JobItem};

/// Rows per page of the paged queries.
const PAGE: &str = "50";
/// How far from the end the deep page starts.
const DEEP_FROM_END: u64 = 75;

/// One query of the run: its label, the call, and its target.
#[derive(Clone)]
pub struct Query {
    pub label: String,
    pub call: Call,
    pub target: Target,
    /// A page this many jobs from the end of the unfiltered list: its offset is taken anew
    /// before each measurement (creates make the list longer during a run).
    pub from_end: Option<u64>,
}

impl Query {
    fn new(label: impl Into<String>, call: Call, target: Target) -> Self {
        Self {
            label: label.into(),
            call,
            target,
            from_end: None,
        }
    }

    /// Whether the query is a page of the job list (its row shows the page's total).
    pub fn is_list(&self) -> bool {
        matches!(&self.call, Call::Get { rest, .. } if rest == "/dev-servers/jobs")
    }

    /// The call to measure now: for a page from the end, with the offset of the list's
    /// current length.
    pub async fn call_now(&self, client: &Client) -> anyhow::Result<Call> {
        let (Some(from_end), Call::Get { rest, query }) = (self.from_end, &self.call) else {
            return Ok(self.call.clone());
        };
        let (total, _) = total_of(client, &unfiltered()).await?;
        let offset = total.saturating_sub(from_end).to_string();
        let query = query
            .iter()
            .map(|(k, v)| match k.as_str() {
                "offset" => (k.clone(), offset.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        Ok(Call::Get {
            rest: rest.clone(),
            query,
        })
    }
}

fn get(query: &[(&str, &str)]) -> Call {
    Call::Get {
        rest: "/dev-servers/jobs".to_string(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn unfiltered() -> Call {
    get(&[("limit", PAGE)])
}

/// The `total` of a list answer, and the answer's size.
pub async fn total_of(client: &Client, call: &Call) -> anyhow::Result<(u64, usize)> {
    let (status, body) = load::send_once(client, call, 0)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        status == 200,
        "the list answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let total = page["total"]
        .as_u64()
        .context("the list answered no total")?;
    Ok((total, body.len()))
}

/// Every query of a run on `backend`, the floor first (and the reference row second, on
/// PostgreSQL); `client` reads the list's length and page size from a server.
pub async fn all(backend: &str, client: &Client, loaded: &Loaded) -> anyhow::Result<Vec<Query>> {
    let (total, page_bytes) = total_of(client, &unfiltered()).await?;
    // A page of 50 jobs: on SQLite at least half the floor; on PostgreSQL, whose
    // statements share the two cores with the server, at least 60% of the reference row.
    let page = |max_p99_ms: u64, min_floor_ratio: f64| Target {
        min_floor_ratio: (backend == "sqlite").then_some(min_floor_ratio),
        min_ref_ratio: (backend == "postgres").then_some(0.6),
        max_p99: Some(std::time::Duration::from_millis(max_p99_ms)),
        min_rate: None,
    };
    let page_fast = page(10, 0.5);
    let deep_offset = total.saturating_sub(DEEP_FROM_END).to_string();
    let create = JobCreateRequest {
        name: "bench-create".to_string(),
        description: None,
        server_ids: loaded.servers.clone(),
        job_type: "COMMON".to_string(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: "COMMON".to_string(),
            spec: Some([("cmd".to_string(), "npu-smi info".to_string())].into()),
        }],
        visible: None,
    };
    let floor = |ping: bool| {
        let mut query = vec![("bytes".to_string(), page_bytes.to_string())];
        if ping {
            query.push(("ping".to_string(), "true".to_string()));
        }
        Call::Get {
            rest: "/bench-floor".to_string(),
            query,
        }
    };
    let mut queries = vec![
        Query::new("floor (auth, fixed bytes)", floor(false), Target::default()),
        Query::new("unfiltered limit=50", unfiltered(), page_fast),
        Query::new(
            "status limit=50",
            get(&[("status", "FINISHED"), ("limit", PAGE)]),
            page_fast,
        ),
        Query::new(
            "type+status+visible limit=50",
            get(&[
                ("type", "ASCEND_DIAGNOSIS"),
                ("status", "FINISHED"),
                ("visible", "true"),
                ("limit", PAGE),
            ]),
            page_fast,
        ),
        Query::new("id", get(&[("id", &loaded.probe_id)]), page_fast),
        Query::new(
            format!("name={} limit=50", loaded.probe_name),
            get(&[("name", &loaded.probe_name), ("limit", PAGE)]),
            Target {
                max_p99: None,
                ..page(0, 0.2)
            },
        ),
        Query::new("sdk default (no parameters)", get(&[]), Target::default()),
        Query {
            from_end: Some(DEEP_FROM_END),
            ..Query::new(
                format!("deep page offset={deep_offset}"),
                get(&[("offset", &deep_offset), ("limit", PAGE)]),
                Target {
                    min_floor_ratio: None,
                    ..page(50, 0.0)
                },
            )
        },
        Query::new(
            format!("create ({} servers each)", loaded.servers.len()),
            Call::Create { template: create },
            Target {
                min_rate: (backend == "sqlite").then_some(1000.0),
                ..Target::default()
            },
        ),
    ];
    if backend == "postgres" {
        // The least any query costs on PostgreSQL: the floor's answer after one `SELECT 1`.
        queries.insert(
            1,
            Query::new(report::REFERENCE, floor(true), Target::default()),
        );
    }
    Ok(queries)
}
