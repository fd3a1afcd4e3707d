//! The load: signed requests from a fixed number of concurrent clients for a fixed time, and
//! what they measured.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::client::Client;
use crate::wire::JobCreateRequest;

/// One kind of request the load repeats.
#[derive(Debug, Clone)]
pub enum Call {
    /// A `GET` of a path below the project, with query pairs.
    Get {
        rest: String,
        query: Vec<(String, String)>,
    },
    /// A create; each one gets a name of its own.
    Create { template: JobCreateRequest },
}

/// What one run of a call measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Other answers and failed requests.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// CPU time the server spent meanwhile, when it was read.
    pub server_cpu: Option<Duration>,
}

impl Measured {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0.0 to 1.0) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// The server's CPU time per successful request, when it was read.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        let n = u32::try_from(self.ok).ok().filter(|n| *n > 0)?;
        Some(self.server_cpu? / n)
    }

    /// Several measurements of one call as one: their requests, errors and time together.
    pub fn merged(parts: Vec<Measured>) -> Measured {
        let mut all = Measured {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            server_cpu: Some(Duration::ZERO),
        };
        for part in parts {
            all.server_cpu = all.server_cpu.zip(part.server_cpu).map(|(a, b)| a + b);
            all.ok += part.ok;
            all.errors += part.errors;
            all.elapsed += part.elapsed;
            all.latencies.extend(part.latencies);
            if all.first_error.is_none() {
                all.first_error = part.first_error;
            }
        }
        all.latencies.sort_unstable();
        all
    }
}

/// Sends `call` once; answers the status and body.
pub async fn send_once(
    client: &Client,
    call: &Call,
    sequence: u64,
) -> Result<(u16, bytes::Bytes), String> {
    let response = match call {
        Call::Get { rest, query } => {
            let path = client.project_path(rest);
            let query: Vec<(&str, String)> =
                query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            client.send(Method::GET, &path, &query, None, &[]).await
        }
        Call::Create { template } => {
            let mut request = template.clone();
            request.name = format!("{}-{sequence}", template.name);
            let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let path = client.project_path("/dev-servers/jobs");
            client.send(Method::POST, &path, &[], Some(body), &[]).await
        }
    };
    response
        .map(|r| (r.status, r.body))
        .map_err(|e| e.to_string())
}

/// Runs `call` from `concurrency` clients until `duration` has passed.
pub async fn run(client: &Client, call: &Call, concurrency: usize, duration: Duration) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency as u64 {
        let client = client.clone();
        let call = call.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            let mut sequence = worker << 32;
            while Instant::now() < deadline {
                sequence += 1;
                let sent = Instant::now();
                match send_once(&client, &call, sequence).await {
                    Ok((status, _)) if (200..300).contains(&status) => {
                        latencies.push(sent.elapsed());
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut measured = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        server_cpu: None,
    };
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((latencies, errors, first_error)) => {
                measured.latencies.extend(latencies);
                measured.errors += errors;
                if measured.first_error.is_none() {
                    measured.first_error = first_error;
                }
            }
            Err(e) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(e.to_string());
            }
        }
    }
    measured.elapsed = started.elapsed();
    measured.ok = measured.latencies.len() as u64;
    measured.latencies.sort_unstable();
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_ranked_latency() {
        let m = Measured {
            ok: 100,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(2),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            server_cpu: Some(Duration::from_millis(50)),
        };
        assert_eq!(m.quantile(0.5), Duration::from_millis(50));
        assert_eq!(m.quantile(0.99), Duration::from_millis(99));
        assert_eq!(m.max(), Duration::from_millis(100));
        assert!((m.rate() - 50.0).abs() < 1e-9);
        assert_eq!(m.cpu_per_request(), Some(Duration::from_micros(500)));
    }

    #[test]
    fn merged_measurements_add_their_requests_and_time() {
        let part = |ok: u64, secs: u64, first: u64, error: Option<&str>| Measured {
            ok,
            errors: u64::from(error.is_some()),
            first_error: error.map(str::to_string),
            elapsed: Duration::from_secs(secs),
            latencies: (first..first + ok).map(Duration::from_millis).collect(),
            server_cpu: Some(Duration::from_secs(secs)),
        };
        let m = Measured::merged(vec![
            part(100, 1, 101, None),
            part(300, 3, 1, Some("a")),
            part(0, 1, 0, Some("b")),
        ]);
        assert_eq!((m.ok, m.errors), (400, 2));
        assert_eq!(m.first_error.as_deref(), Some("a"));
        assert!((m.rate() - 80.0).abs() < 1e-9, "{}", m.rate());
        assert_eq!(m.quantile(0.5), Duration::from_millis(150));
        assert_eq!(m.max(), Duration::from_millis(300));
        assert_eq!(m.cpu_per_request(), Some(Duration::from_micros(12_500)));
        let unread = Measured {
            server_cpu: None,
            ..part(1, 1, 1, None)
        };
        assert_eq!(
            Measured::merged(vec![part(1, 1, 1, None), unread]).server_cpu,
            None
        );
    }
}
