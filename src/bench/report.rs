//! The benchmark's report: one table row per query, the targets each row is held to, and
//! one summary line per backend.

use std::time::Duration;

use super::load::Measured;

/// What a row is expected to reach (at the full size: 1,000,000 jobs, concurrency 16).
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// Least throughput as a share of the floor's.
    pub min_floor_ratio: Option<f64>,
    /// Least throughput as a share of the reference row's ([`REFERENCE`]).
    pub min_ref_ratio: Option<f64>,
    pub max_p99: Option<Duration>,
    /// Least successful requests per second.
    pub min_rate: Option<f64>,
}

/// One measured query.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    /// Matching jobs (`total` of the answer), when the query is a list.
    pub total: Option<u64>,
    pub measured: Measured,
    pub target: Target,
    /// Throughput as a share of the floor's (the faster of the floor's two measurements).
    pub floor_ratio: Option<f64>,
    /// Throughput as a share of the reference row's, where there is one.
    pub ref_ratio: Option<f64>,
}

/// Labels of the floor's rows start with this.
pub const FLOOR: &str = "floor";
/// Label of the reference row of PostgreSQL runs: the floor after one `SELECT 1`, the least
/// any query costs there.
pub const REFERENCE: &str = "round trip (floor + SELECT 1)";

impl Row {
    /// True for a measurement of the floor.
    pub fn is_floor(&self) -> bool {
        self.label.starts_with(FLOOR)
    }

    /// The targets this row missed, in words.
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        let t = &self.target;
        if let (Some(min), Some(ratio)) = (t.min_floor_ratio, self.floor_ratio) {
            if ratio < min {
                misses.push(format!(
                    "{}: {ratio:.2}x of the floor < {min:.2}x",
                    self.label
                ));
            }
        }
        if let (Some(min), Some(ratio)) = (t.min_ref_ratio, self.ref_ratio) {
            if ratio < min {
                misses.push(format!(
                    "{}: {ratio:.2}x of the reference < {min:.2}x",
                    self.label
                ));
            }
        }
        if let Some(max) = t.max_p99 {
            let p99 = self.measured.quantile(0.99);
            if p99 > max {
                misses.push(format!(
                    "{}: p99 {} ms > {} ms",
                    self.label,
                    ms(p99),
                    ms(max)
                ));
            }
        }
        if let Some(min) = t.min_rate {
            let rate = self.measured.rate();
            if rate < min {
                misses.push(format!("{}: {rate:.0}/s < {min:.0}/s", self.label));
            }
        }
        if self.measured.errors > 0 {
            misses.push(format!("{}: {} errors", self.label, self.measured.errors));
        }
        misses
    }

    fn has_target(&self) -> bool {
        let t = &self.target;
        t.min_floor_ratio.is_some()
            || t.min_ref_ratio.is_some()
            || t.max_p99.is_some()
            || t.min_rate.is_some()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The table's header.
pub fn header() -> String {
    format!(
        "{:<34} {:>9} {:>10} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}  {}",
        "query",
        "total",
        "req/s",
        "x floor",
        "x ref",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "target"
    )
}

/// One row of the table.
pub fn line(row: &Row) -> String {
    let m = &row.measured;
    let verdict = if !row.has_target() {
        "-"
    } else if row.misses().is_empty() {
        "met"
    } else {
        "MISSED"
    };
    format!(
        "{:<34} {:>9} {:>10.1} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}  {}",
        row.label,
        row.total.map_or("-".to_string(), |t| t.to_string()),
        m.rate(),
        row.floor_ratio
            .map_or("-".to_string(), |r| format!("{r:.2}")),
        row.ref_ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
        ms(m.quantile(0.5)),
        ms(m.quantile(0.9)),
        ms(m.quantile(0.99)),
        ms(m.max()),
        m.errors,
        verdict
    )
}

/// The rate the queries are held to: the faster of the floor's measurements.
pub fn fastest_floor(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|r| r.is_floor())
        .map(|r| r.measured.rate())
        .fold(0.0, f64::max)
}

/// The rate of the reference row, when the run has one.
pub fn reference_rate(rows: &[Row]) -> Option<f64> {
    rows.iter()
        .find(|r| r.label == REFERENCE)
        .map(|r| r.measured.rate())
}

/// The one-line summary of a backend's run: the floor (the faster of its measurements), then
/// each query.
pub fn summary(backend: &str, rows: &[Row], peak_memory: Option<u64>, memory_limit: u64) -> String {
    let floor = fastest_floor(rows);
    let rows: Vec<&Row> = rows.iter().filter(|r| !r.is_floor()).collect();
    let mut misses: Vec<String> = rows.iter().flat_map(|r| r.misses()).collect();
    let targets = rows.iter().filter(|r| r.has_target()).count() + 1;
    let mut failed = rows
        .iter()
        .filter(|r| r.has_target() && !r.misses().is_empty())
        .count();
    let memory = match peak_memory {
        Some(bytes) => {
            if bytes > memory_limit {
                failed += 1;
                misses.push(format!(
                    "peak memory {:.1} MiB > {} MiB",
                    mib(bytes),
                    memory_limit / (1024 * 1024)
                ));
            }
            format!("{:.1} MiB", mib(bytes))
        }
        None => {
            failed += 1;
            misses.push("peak memory unknown".to_string());
            "unknown".to_string()
        }
    };
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            let ratio = r
                .floor_ratio
                .map_or(String::new(), |ratio| format!(" {ratio:.2}x"));
            let ratio = match r.ref_ratio {
                Some(reference) => format!("{ratio} ({reference:.2}x ref)"),
                None => ratio,
            };
            format!(
                "{} {:.0}/s{ratio} p99 {} ms",
                r.label,
                r.measured.rate(),
                ms(r.measured.quantile(0.99))
            )
        })
        .collect();
    let verdict = if misses.is_empty() {
        format!("all {targets} targets met")
    } else {
        format!(
            "{}/{targets} targets met; missed: {}",
            targets - failed,
            misses.join("; ")
        )
    };
    format!(
        "summary {backend}: floor {floor:.0}/s | {} | peak memory {memory} | {verdict}",
        parts.join(" | ")
    )
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
