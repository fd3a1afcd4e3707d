//! Configuration of `litejobs serve`: flags, each also settable by an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;

/// A duration as people write it (`500ms`, `30s`, `2m`, `30d`), for the command line.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err("must be at most 100 years".into());
    }
    Ok(d)
}

/// The longest duration a setting takes: a time that far ahead is still a time (a clock
/// reading plus much more overflows).
const MAX_DURATION: Duration = Duration::from_secs(36_525 * 24 * 3600);

fn parse_interval(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// A size in bytes as people write it: `256MiB`, `1GiB`, `512KiB`, or a number of bytes.
pub fn parse_size(raw: &str) -> Result<usize, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{raw} is not a size (e.g. 256MiB)"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" | "KB" | "kB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown size unit {other} (KiB, MiB or GiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{raw} is too large"))
}

/// Open files this process may have, as `/proc/self/limits` says (its soft limit).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Default of `--max-connections`: three quarters of the open-file limit (the rest is left
/// to the database, the log and the files of the process), at most 4,096.
pub fn default_max_connections() -> usize {
    open_file_limit().map_or(1024, |n| (n / 4 * 3).clamp(16, 4096))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw.parse().map_err(|_| format!("{raw} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err("must be from 0.0 to 1.0".into());
    }
    Ok(rate)
}

fn parse_outcome(raw: &str) -> Result<(String, String), String> {
    let (server, outcome) = raw
        .split_once('=')
        .ok_or_else(|| "expected SERVER=SUCCESS or SERVER=FAILED".to_string())?;
    let outcome = outcome.to_ascii_uppercase();
    if outcome != "SUCCESS" && outcome != "FAILED" {
        return Err("the outcome is SUCCESS or FAILED".into());
    }
    Ok((server.to_string(), outcome))
}

/// A region id as the cloud writes them: `cn-north-4`, `ap-southeast-1`.
pub fn parse_region(raw: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err("a region is 1 to 64 lower-case letters, digits and dashes (e.g. cn-north-4)".into())
    }
}

/// `litejobs serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "LITEJOBS_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Database: a SQLite file path or `sqlite:` URL, or a `postgres://` URL.
    #[arg(long, env = "LITEJOBS_DATABASE_URL", default_value = "litejobs.db")]
    pub database_url: String,

    /// Most connections to PostgreSQL this server keeps, a quarter each for the job list's
    /// pages one plan fits (unfiltered, `id`, `status`), its `name` searches, its other
    /// pages, and the rest (default: four per core and four more).
    #[arg(long, env = "LITEJOBS_DB_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: Option<u32>,

    /// Largest page of the job list, and its size when the client asks for none.
    #[arg(long, env = "LITEJOBS_MAX_PAGE_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_page_size: u64,

    /// How long deleted jobs stay listed before they are purged (e.g. `30d`, `12h`).
    #[arg(long, env = "LITEJOBS_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,

    /// Record no audit trail (for an emulator whose data is throwaway, or to measure what
    /// the trail costs).
    #[arg(long, env = "LITEJOBS_NO_AUDIT", value_parser = BoolishValueParser::new())]
    pub no_audit: bool,

    /// How long the audit trail keeps its records (e.g. `90d`).
    #[arg(long, env = "LITEJOBS_AUDIT_RETENTION", default_value = "90d", value_parser = parse_interval)]
    pub audit_retention: Duration,

    /// Serve `/metrics` on this address (e.g. `127.0.0.1:9464`) instead of the API's, so
    /// that it can stay off the public port.
    #[arg(long, env = "LITEJOBS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Export each request's trace span to this OpenTelemetry collector (OTLP over HTTP,
    /// protobuf; e.g. `http://127.0.0.1:4318`: spans go to `<URL>/v1/traces`). Off unless
    /// given.
    #[arg(long, env = "LITEJOBS_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// Requests per second allowed to one access key or user; 0 turns the limit off.
    #[arg(long, env = "LITEJOBS_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Requests one access key may send in a burst above the rate.
    #[arg(long, env = "LITEJOBS_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,

    /// How long access keys, tokens and grants looked up for authentication are reused
    /// (e.g. `5s`; `0s` looks them up on every request). Revocations take effect within it.
    #[arg(long, env = "LITEJOBS_AUTH_CACHE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,

    /// Directory of extra job templates (`*.json`), added to the built-in ones.
    #[arg(long, env = "LITEJOBS_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,

    /// Where the first start writes the administrator's credentials (mode 0600).
    #[arg(
        long,
        env = "LITEJOBS_ADMIN_CREDENTIALS",
        default_value = "litejobs-admin.json"
    )]
    pub admin_credentials: PathBuf,

    /// Run a simulated fleet whose tasks finish by themselves, for testing cloud code.
    #[arg(long, env = "LITEJOBS_SIMULATE", value_parser = BoolishValueParser::new())]
    pub simulate: bool,

    /// Simulated servers registered in every project.
    #[arg(long, env = "LITEJOBS_SIMULATE_SERVERS", default_value_t = 4)]
    pub simulate_servers: u32,

    /// Time a simulated task takes (e.g. `3s`, `500ms`).
    #[arg(long, env = "LITEJOBS_SIMULATE_DELAY", default_value = "3s", value_parser = parse_duration)]
    pub simulate_delay: Duration,

    /// Chance (0.0 to 1.0) that a simulated task fails.
    #[arg(long, env = "LITEJOBS_SIMULATE_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub simulate_failure_rate: f64,

    /// Fixed outcome of one simulated server, e.g. `sim-server-02=FAILED`; repeatable.
    #[arg(long = "simulate-outcome", value_parser = parse_outcome)]
    pub simulate_outcomes: Vec<(String, String)>,

    /// A task of a real server that no agent of that server picked up within this time, or
    /// whose lease lapsed this long ago with no agent back, ends `FAILED` (e.g. `10m`).
    #[arg(long, env = "LITEJOBS_TASK_START_TIMEOUT", default_value = "10m", value_parser = parse_interval)]
    pub task_start_timeout: Duration,

    /// How long an agent's lease of a task lasts unless its heartbeats renew it (a crashed
    /// agent's task is leased again after about this time).
    #[arg(long, env = "LITEJOBS_AGENT_LEASE", default_value = "30s", value_parser = parse_interval)]
    pub agent_lease: Duration,

    /// Interval of the retention purge (at least `1s`).
    #[arg(long, env = "LITEJOBS_PURGE_INTERVAL", default_value = "1m", value_parser = parse_interval)]
    pub purge_interval: Duration,

    /// Also answer `GET /v1/{project_id}/bench-floor`: fixed bytes behind the same
    /// middleware and authentication, for `litejobs bench` to measure the floor.
    #[arg(long, hide = true)]
    pub bench_floor: bool,

    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "LITEJOBS_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    pub log_format: String,

    /// A request's line and headers must arrive within this time (a TLS handshake too), and
    /// a kept-alive connection is closed when its next request does not start within it.
    #[arg(long, env = "LITEJOBS_HEADER_TIMEOUT", default_value = "15s", value_parser = parse_interval)]
    pub header_timeout: Duration,

    /// A request's body must arrive whole within this time (else 408 and the connection
    /// closes); a client that reads nothing of what it is sent for this long loses its
    /// connection.
    #[arg(long, env = "LITEJOBS_BODY_TIMEOUT", default_value = "30s", value_parser = parse_interval)]
    pub body_timeout: Duration,

    /// Connections served at once; more are answered 503 and closed (default: three
    /// quarters of the open-file limit, at most 4096).
    #[arg(long, env = "LITEJOBS_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,

    /// Memory that request bodies and large answers being sent may take at once, all
    /// requests together (e.g. `256MiB`; at least one 12 MB body); a body that cannot get its
    /// share in time, or a read's answer that cannot get it at once, is answered 503.
    #[arg(long, env = "LITEJOBS_MAX_BODY_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub max_body_memory: usize,

    /// Failed authentications from one address, with any credential, within five minutes,
    /// after which that address is refused for the rest of them (0: no limit). Default 100;
    /// 0 with --simulate, whose clients are all one address (a suite's tests of wrong
    /// credentials would lock out the rest of it).
    #[arg(long, env = "LITEJOBS_AUTH_FAILURES_PER_ADDRESS")]
    pub auth_failures_per_address: Option<u32>,

    /// The cloud region the demo project answers for in the IAM project listing
    /// (`GET /v3/projects?name=REGION`), so SDK code written with `.with_region(...)` finds it.
    #[arg(long, env = "LITEJOBS_REGION", default_value = "cn-north-4", value_parser = parse_region)]
    pub region: String,

    /// Keep the whole database in memory (a fresh SQLite database on a memory-backed file
    /// system, removed at exit): an emulator for one test run. The administrator's
    /// credentials are written only where `--admin-credentials` says.
    #[arg(long, env = "LITEJOBS_IN_MEMORY", value_parser = BoolishValueParser::new())]
    pub in_memory: bool,

    /// Once the server answers, write its endpoint, region and credentials (one JSON object)
    /// to this file.
    #[arg(long, env = "LITEJOBS_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Once the server answers, print its endpoint, region and credentials as one JSON line
    /// on stdout.
    #[arg(long)]
    pub print_config: bool,

    /// Answer exactly what the cloud's API answers: no list extensions (`limit`, `offset`,
    /// `sort_key`, `sort_dir`), no extension fields in requests or answers, no extension
    /// routes.
    #[arg(long, env = "LITEJOBS_STRICT", value_parser = BoolishValueParser::new())]
    pub strict: bool,

    /// Seed file (JSON: projects, users with keys, servers, jobs) loaded at start with
    /// `--simulate`, and again by every reset.
    #[arg(long, env = "LITEJOBS_SEED", value_name = "FILE")]
    pub seed: Option<PathBuf>,

    /// A fault rule of the emulator, e.g. `op=ListDevServerJobs,status=429,times=2`
    /// (see docs/emulator.md); repeatable; only with `--simulate`.
    #[arg(long = "fault", value_name = "RULE")]
    pub faults: Vec<String>,

    /// Requests the emulator's journal keeps (the last ones).
    #[arg(long, env = "LITEJOBS_JOURNAL_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub journal_size: u32,

    /// Serve the emulator's control API (`/_litejobs/...`) even on a non-loopback address.
    #[arg(long, env = "LITEJOBS_CONTROL_ON_ANY_ADDRESS", value_parser = BoolishValueParser::new())]
    pub control_on_any_address: bool,

    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`. Reloaded when the
    /// file changes or on SIGHUP.
    #[arg(long, env = "LITEJOBS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "LITEJOBS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeConfig {
    /// The settings `serve` uses with no flags (and no environment).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        <Wrapper as clap::Parser>::parse_from(["litejobs"]).config
    }
}

/// An OTLP collector's base URL: `http://` or `https://`, a host, no query.
fn parse_otlp_endpoint(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(raw.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServeConfig, clap::Error> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        let argv = std::iter::once("litejobs").chain(args.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.config)
    }

    #[test]
    fn sizes_are_read_with_their_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(
            parse(&["--tls-cert", "c.pem"]).is_err(),
            "a certificate needs its key"
        );
    }

    #[test]
    fn durations_past_a_century_are_refused() {
        assert_eq!(
            parse_duration("100y"),
            Ok(Duration::from_secs(3_155_760_000))
        );
        for bad in ["300000000000y", "101y", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse(&["--body-timeout", "300000000000y"]).is_err());
    }

    #[test]
    fn rates_and_intervals_out_of_range_are_refused() {
        let ok = parse(&["--simulate-failure-rate", "0.25", "--purge-interval", "1s"])
            .expect("valid settings");
        assert_eq!(ok.simulate_failure_rate, 0.25);
        assert_eq!(ok.purge_interval, Duration::from_secs(1));
        for bad in [
            &["--simulate-failure-rate", "NaN"][..],
            &["--simulate-failure-rate", "1.5"],
            &["--simulate-failure-rate", "-0.1"],
            &["--purge-interval", "0s"],
            &["--purge-interval", "500ms"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
