//! A short overload with `wrk` (the Debian package, which `scripts/test` installs): one
//! user far over its rate limit gets 429 with `Retry-After` for the excess, never a 5xx,
//! and the server's memory stays bounded. Without `wrk` the test says `SKIPPED:`, and fails
//! when `LITEJOBS_REQUIRE_TOOLS` is set (as CI sets it).

use std::path::Path;
use std::time::Duration;

const COUNTING_SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; throttled = 0; failed = 0; other = 0; no_retry_after = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1
  elseif status == 429 then
    throttled = throttled + 1
    if headers["retry-after"] == nil and headers["Retry-After"] == nil then
      no_retry_after = no_retry_after + 1
    end
  elseif status >= 500 then failed = failed + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t = { ok = 0, throttled = 0, failed = 0, other = 0, no_retry_after = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  io.write(string.format("RESULT ok=%d throttled=%d failed=%d other=%d no_retry_after=%d\n",
    t.ok, t.throttled, t.failed, t.other, t.no_retry_after))
end
"#;

fn find_wrk() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("wrk"))
        .find(|p| p.is_file())
}

/// A number after `name=` in wrk's result line.
fn count(result: &str, name: &str) -> u64 {
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {result}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_429_with_retry_after_and_never_5xx() {
    let Some(wrk) = find_wrk() else {
        if std::env::var_os("LITEJOBS_REQUIRE_TOOLS").is_some() {
            panic!("wrk is required (LITEJOBS_REQUIRE_TOOLS) but not installed");
        }
        eprintln!("SKIPPED: wrk is not installed (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("overload.db").display());
    let args: Vec<std::ffi::OsString> = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--simulate",
        "--rate-limit",
        "100",
        "--rate-burst",
        "100",
    ]
    .iter()
    .map(std::ffi::OsString::from)
    .collect();
    let exe = Path::new(env!("CARGO_BIN_EXE_litejobs"));
    let server = litejobs::testkit::ServerProcess::spawn(exe, &args, dir.path())
        .await
        .expect("the server starts");
    let token = litejobs::client::issue_token(
        &server.endpoint,
        litejobs::iam::demo::USER,
        litejobs::iam::demo::PASSWORD,
        litejobs::iam::demo::PROJECT_ID,
    )
    .await
    .expect("a token");
    let script = dir.path().join("count.lua");
    std::fs::write(&script, COUNTING_SCRIPT).expect("script");
    let url = format!(
        "{}/v1/{}/dev-servers/jobs?limit=10",
        server.endpoint,
        litejobs::iam::demo::PROJECT_ID
    );
    let output = tokio::process::Command::new(wrk)
        .args(["-t2", "-c64", "-d3s", "--timeout", "5s", "-s"])
        .arg(&script)
        .args(["-H", &format!("X-Auth-Token: {token}")])
        .arg(&url)
        .output()
        .await
        .expect("wrk runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {stdout}");
    let result = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no result line:\n{stdout}"));
    assert!(count(result, "ok") > 0, "{result}");
    assert!(count(result, "throttled") > count(result, "ok"), "{result}");
    assert_eq!(count(result, "failed"), 0, "{result}");
    assert_eq!(count(result, "other"), 0, "{result}");
    assert_eq!(count(result, "no_retry_after"), 0, "{result}");
    let peak = server.peak_memory_bytes().expect("peak memory");
    assert!(peak < 256 * 1024 * 1024, "peak memory {peak} bytes");
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.kill_hard().await.expect("kill");
}
