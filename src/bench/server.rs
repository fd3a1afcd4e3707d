//! The server under test: the real `litejobs serve`, run as a child process on a loopback
//! port, so that its memory is its own and can be read from `/proc`. The replica tests run
//! their servers the same way.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of the server's log kept to explain a failure.
const LOG_TAIL: usize = 40;
/// Longest wait for the server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `litejobs serve`.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The address in a `litejobs listening on http://ADDR` log line.
fn listening_address(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on http://")?;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

impl ServerProcess {
    /// Starts `exe serve` on `database_url`, listening on a free loopback port, with no rate
    /// limit and the floor route; its files go to `dir`.
    pub async fn start(exe: &Path, database_url: &str, dir: &Path) -> anyhow::Result<Self> {
        let mut args: Vec<OsString> = [
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--bench-floor",
            "--database-url",
            database_url,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push("--admin-credentials".into());
        args.push(dir.join("server-admin.json").into());
        Self::spawn(exe, &args).await
    }

    /// Runs `exe` with `args` (a `serve` command line listening on a loopback address) and
    /// waits until it listens.
    pub async fn spawn(exe: &Path, args: &[OsString]) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn,litejobs::serve=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr = child.stderr.take().context("no server stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = |tail: &Mutex<VecDeque<String>>, line: String| {
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        };
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let addr = listening_address(&line);
                keep(&log_tail, line);
                if let Some(addr) = addr {
                    return Ok::<_, std::io::Error>(Some(addr));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) | Ok(Err(_)) => {
                bail!(
                    "the server stopped before listening:\n{}",
                    tail_text(&log_tail)
                )
            }
            Err(_) => bail!(
                "the server did not listen within {START_TIMEOUT:?}:\n{}",
                tail_text(&log_tail)
            ),
        };
        let drain = log_tail.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&drain, line);
            }
        });
        Ok(Self {
            child,
            pid,
            endpoint: format!("http://{addr}"),
            log_tail,
        })
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        tail_text(&self.log_tail)
    }

    /// Stops the server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot stop the server")?;
        Ok(())
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn finds_the_address_in_the_log_line() {
        let line = "2025-01-01T00:00:00Z  INFO litejobs::serve: litejobs listening on \
                    http://127.0.0.1:41234 addr=127.0.0.1:41234 backend=\"sqlite\"";
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:41234"));
        assert_eq!(listening_address("nothing here"), None);
    }
}
