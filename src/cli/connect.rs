//! Connection settings of the client commands: a profile file, overridden by flags and
//! environment variables, turned into a signing [`Client`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use crate::client::{Client, ClientAuth};
use crate::iam::Profile;
use crate::sign::Credentials;

/// Endpoint used when neither a profile nor a flag names one: where `serve` listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// Where to find the service and how to prove who the caller is.
#[derive(Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Profile file (the JSON `serve` writes for the administrator). Default:
    /// ~/.litejobs/profile.json if it exists, else ./litejobs-admin.json if it exists.
    #[arg(long, env = "LITEJOBS_PROFILE", global = true, value_name = "PATH")]
    pub profile: Option<PathBuf>,

    /// Service endpoint, e.g. http://127.0.0.1:8080 (overrides the profile's).
    #[arg(long, env = "LITEJOBS_ENDPOINT", global = true, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Project to act in (overrides the profile's).
    #[arg(long, env = "LITEJOBS_PROJECT_ID", global = true, value_name = "ID")]
    pub project_id: Option<String>,

    /// Access key id (overrides the profile's).
    #[arg(long, env = "LITEJOBS_ACCESS_KEY", global = true, value_name = "AK")]
    pub access_key: Option<String>,

    /// Secret key (overrides the profile's; prefer the profile or the environment variable).
    #[arg(
        long,
        env = "LITEJOBS_SECRET_KEY",
        global = true,
        hide_env_values = true,
        value_name = "SK"
    )]
    pub secret_key: Option<String>,

    /// Send this IAM token as X-Auth-Token instead of signing with a key.
    #[arg(
        long,
        env = "LITEJOBS_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Also trust the certificates in this PEM file (a private CA) for https:// endpoints.
    #[arg(long, env = "LITEJOBS_CA_CERT", global = true, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("profile", &self.profile)
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// The profile file to read when none is named: the user's, else the administrator's file
/// `serve` wrote in the working directory.
fn default_profile() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".litejobs").join("profile.json"));
    let local = PathBuf::from("litejobs-admin.json");
    home.into_iter().chain([local]).find(|p| p.is_file())
}

fn read_profile(path: &Path) -> anyhow::Result<Profile> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the profile {}", path.display()))?;
    serde_json::from_str(&raw)
        .with_context(|| format!("{} is not a litejobs profile", path.display()))
}

impl ConnectArgs {
    /// A client from the profile and the overrides.
    pub fn client(&self) -> anyhow::Result<Client> {
        let path = self.profile.clone().or_else(default_profile);
        let profile = path.as_deref().map(read_profile).transpose()?;
        let from_profile =
            |f: fn(&Profile) -> &String| profile.as_ref().map(f).filter(|v| !v.is_empty()).cloned();
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| from_profile(|p| &p.endpoint))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let Some(project_id) = self
            .project_id
            .clone()
            .or_else(|| from_profile(|p| &p.project_id))
        else {
            bail!(
                "no project: pass --project-id, set LITEJOBS_PROJECT_ID, or use a profile (--profile)"
            );
        };
        let auth = match &self.token {
            Some(token) if !token.is_empty() => ClientAuth::Token(token.clone()),
            _ => {
                let access_key = self
                    .access_key
                    .clone()
                    .or_else(|| from_profile(|p| &p.access_key));
                let secret_key = self
                    .secret_key
                    .clone()
                    .or_else(|| from_profile(|p| &p.secret_key));
                match (access_key, secret_key) {
                    (Some(access_key), Some(secret_key)) => ClientAuth::AkSk(Credentials {
                        access_key,
                        secret_key,
                    }),
                    (Some(_), None) => bail!(
                        "the access key needs its secret key: --secret-key or LITEJOBS_SECRET_KEY"
                    ),
                    (None, Some(_)) => bail!(
                        "the secret key needs its access key: --access-key or LITEJOBS_ACCESS_KEY"
                    ),
                    (None, None) => bail!(
                        "no credentials: use a profile (--profile), an access key and secret key \
                         (--access-key/--secret-key), or a token (--token)"
                    ),
                }
            }
        };
        check_endpoint(&endpoint)?;
        let client = Client::new(&endpoint, &project_id, auth)?;
        match &self.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read the CA certificate {}", path.display())
                })?;
                anyhow::ensure!(
                    String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
                    "{} holds no PEM certificate",
                    path.display()
                );
                client
                    .trusting(&pem)
                    .with_context(|| format!("{} holds no usable PEM certificate", path.display()))
            }
            None => Ok(client),
        }
    }
}

/// Refuses endpoints that are not `http://` or `https://` URLs with a host.
pub fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("{endpoint} is not a URL (expected e.g. {DEFAULT_ENDPOINT})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("{endpoint} is not an http:// or https:// URL with a host");
    }
    Ok(())
}
