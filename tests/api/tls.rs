//! HTTPS: `serve --tls-cert --tls-key` with certificates made here (rcgen), the CLI trusting
//! a private CA with `--ca-cert`, the certificate reloaded when its files change and on
//! SIGHUP, and a loud warning for plain HTTP on a non-loopback address.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use litejobs::testkit::ServerProcess;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

/// A CA, and a certificate for 127.0.0.1 and `localhost` it signed: (CA PEM, cert PEM,
/// key PEM).
fn certificates(name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_litejobs"))
}

/// `litejobs jobs list` against `endpoint`, trusting `ca` when given.
fn cli_list(dir: &Path, endpoint: &str, ca: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(exe());
    command
        .current_dir(dir)
        .args(["jobs", "list", "--endpoint", endpoint, "-o", "json"]);
    if let Some(ca) = ca {
        command.arg("--ca-cert").arg(ca);
    }
    command.output().expect("the CLI runs")
}

/// A client trusting only `ca_pem`; true when `endpoint` answers `/health` through it.
async fn trusted_by(endpoint: &str, ca_pem: &str) -> bool {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client");
    client
        .get(format!("{endpoint}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_verified_and_reloaded() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca1, cert1, key1) = certificates("first");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert1).expect("cert");
    std::fs::write(&key_path, &key1).expect("key");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca1).expect("ca");
    let db = format!("sqlite://{}", dir.path().join("tls.db").display());
    let cert_arg = cert_path.display().to_string();
    let key_arg = key_path.display().to_string();
    let server = ServerProcess::serve(
        exe(),
        dir.path(),
        &db,
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    )
    .await
    .expect("the server starts");
    assert!(
        server.endpoint.starts_with("https://"),
        "{}",
        server.endpoint
    );
    // The first start's profile names the https endpoint.
    let profile =
        litejobs::serve::read_profile(&dir.path().join("litejobs-admin.json")).expect("profile");
    assert_eq!(profile.endpoint, server.endpoint);

    // The CLI verifies the certificate: with the private CA it works, without it fails.
    let trusted = cli_list(dir.path(), &server.endpoint, Some(&ca_path));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&trusted.stdout).expect("json");
    assert_eq!(json["total"], 0);
    let untrusted = cli_list(dir.path(), &server.endpoint, None);
    assert_eq!(untrusted.status.code(), Some(1));
    // `jobs wait` waits out a service that cannot answer for a moment, not a certificate
    // it does not trust: that fails at once.
    let started = std::time::Instant::now();
    let waited = std::process::Command::new(exe())
        .current_dir(dir.path())
        .args([
            "jobs",
            "wait",
            "some-job",
            "--timeout",
            "20s",
            "--endpoint",
            &server.endpoint,
        ])
        .output()
        .expect("the CLI runs");
    assert_eq!(waited.status.code(), Some(1));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "waited {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&waited.stderr)
    );
    // The client's error (as the agent logs it) says why: the certificate.
    let auth = litejobs::client::ClientAuth::AkSk(litejobs::sign::Credentials {
        access_key: profile.access_key.clone(),
        secret_key: profile.secret_key.clone(),
    });
    let client =
        litejobs::client::Client::new(&server.endpoint, &profile.project_id, auth).expect("client");
    let refused = client
        .list_jobs(&[])
        .await
        .expect_err("an untrusted certificate");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = server.endpoint.replace("https://", "http://");
    let answer = reqwest::get(format!("{plain}/health")).await;
    assert!(answer.is_err() || answer.is_ok_and(|r| r.status() != 200));

    // New files are picked up without a restart.
    assert!(trusted_by(&server.endpoint, &ca1).await);
    let (ca2, cert2, key2) = certificates("second");
    std::fs::write(&key_path, &key2).expect("key");
    std::fs::write(&cert_path, &cert2).expect("cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trusted_by(&server.endpoint, &ca2).await {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!trusted_by(&server.endpoint, &ca1).await);

    // SIGHUP reloads too (and does not stop the server).
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let reloaded_on_hangup = |log: String| {
        log.lines()
            .any(|l| l.contains("reloaded the TLS certificate") && l.contains("SIGHUP"))
    };
    while !reloaded_on_hangup(server.log_tail()) {
        assert!(
            Instant::now() < deadline,
            "no reload on SIGHUP:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusted_by(&server.endpoint, &ca2).await);
    // A broken file keeps the certificate in use.
    std::fs::write(&cert_path, "not a certificate").expect("cert");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(trusted_by(&server.endpoint, &ca2).await);
    assert!(server
        .log_tail()
        .contains("cannot reload the TLS certificate"));
    server.kill_hard().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_a_non_loopback_address_is_warned_about() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("warn.db").display());
    let args: Vec<OsString> = ["serve", "--addr", "0.0.0.0:0", "--database-url", &db]
        .iter()
        .map(OsString::from)
        .collect();
    let server = ServerProcess::spawn(exe(), &args, dir.path())
        .await
        .expect("the server starts");
    assert!(
        server
            .log_tail()
            .contains("SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS"),
        "{}",
        server.log_tail()
    );
    server.kill_hard().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "junk").expect("cert");
    std::fs::write(&key, "junk").expect("key");
    let db = format!("sqlite://{}", dir.path().join("bad.db").display());
    let output = std::process::Command::new(exe())
        .current_dir(dir.path())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .expect("serve runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS certificate"), "{stderr}");
}

#[tokio::test]
async fn the_console_marks_its_cookies_secure_over_https() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = certificates("console");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert).expect("cert");
    std::fs::write(&key_path, &key).expect("key");
    let db = format!("sqlite://{}", dir.path().join("tls.db").display());
    let (cert_arg, key_arg) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let server = ServerProcess::serve(
        exe(),
        dir.path(),
        &db,
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    )
    .await
    .expect("the server starts");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let answer = client
        .get(format!("{}/console/login", server.endpoint))
        .send()
        .await
        .expect("the sign-in page");
    let cookie = answer
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("the sign-in form's cookie")
        .to_string();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
}
