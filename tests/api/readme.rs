//! The README's quickstart, run as written against `serve --simulate`, so it stays true.

use crate::helpers::serve_process;

/// The first ```sh block after the quickstart heading.
fn quickstart_script() -> String {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Quickstart")
        .nth(1)
        .expect("README has a Quickstart section");
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("block ends");
    section[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_works_as_written() {
    let script = quickstart_script();
    assert!(script.contains("EP=http://127.0.0.1:8080"));
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("qs.db").display());
    let server = serve_process(dir.path(), &db, &["--simulate"]).await;
    let script = script.replace(
        "EP=http://127.0.0.1:8080",
        &format!("EP={}", server.endpoint),
    );
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Templates, the finished job in the list and in detail, then the deleted job.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let json = |i: usize| -> serde_json::Value {
        serde_json::from_str(lines[i])
            .unwrap_or_else(|e| panic!("line {i} is JSON ({e}): {}", lines[i]))
    };
    assert!(json(0)["total"].as_u64() >= Some(5));
    let finished = json(1);
    assert_eq!(finished["total"], 1);
    assert_eq!(finished["data"][0]["status"], "FINISHED");
    assert_eq!(finished["data"][0]["user_name"], "demo");
    assert_eq!(json(2)["tasks"].as_array().map(Vec::len), Some(2));
    assert_eq!(json(3)["data"][0]["status"], "DELETED");
    server.kill_hard().await.expect("kill");
}
