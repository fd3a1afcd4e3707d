//! TLS for `serve --tls-cert --tls-key`: rustls with a certificate that is reloaded without
//! a restart when its files change, or on `SIGHUP`. A reload that fails (a half-written
//! file, a key that does not match) keeps the certificate in use and says why in the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate's files are looked at for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads a certificate chain and its private key (PEM) into what rustls serves.
fn load(files: &TlsFiles) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| anyhow::anyhow!("the key does not match the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The certificate in use, replaced when its files change.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl Reloading {
    /// Loads the files again; keeps the certificate in use when they do not load.
    fn reload(&self, why: &str) {
        match load(&self.files) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = certified;
                tracing::info!(cert = %self.files.cert.display(), why, "reloaded the TLS certificate");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                why,
                "cannot reload the TLS certificate; still serving the one loaded before"
            ),
        }
    }
}

/// Accepts TLS connections with the current certificate.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    reloading: Arc<Reloading>,
}

impl TlsAcceptor {
    /// Loads the certificate and key; fails when they do not load.
    pub fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let certified = load(&files)?;
        let reloading = Arc::new(Reloading {
            files,
            current: RwLock::new(certified),
        });
        // ring rather than aws-lc-rs (which would build a C library with cmake): without the
        // post-quantum key exchange, which rustls marks by deprecating this name.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(reloading.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            reloading,
        })
    }

    /// Completes a handshake within `timeout`; `None` (logged at debug level) when it fails.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match tokio::time::timeout(timeout, self.inner.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Reloads the certificate when its files change or on `SIGHUP`, until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        let files = self.reloading.files.clone();
        let stamp = || (modified(&files.cert), modified(&files.key));
        let mut seen = stamp();
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = hup => {
                    self.reloading.reload("SIGHUP");
                    seen = stamp();
                }
                () = tokio::time::sleep(WATCH_EVERY) => {
                    let now = stamp();
                    if now != seen {
                        seen = now;
                        self.reloading.reload("its files changed");
                    }
                }
            }
        }
    }
}
