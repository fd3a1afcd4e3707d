//! The connect options a PostgreSQL URL gives, with the server's choice of TLS where the URL
//! leaves it open.
//!
//! The URL's parameters are libpq's (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, ...),
//! and so is the default, `prefer`: TLS when the server offers it, without checking its
//! certificate; `verify-ca` and `verify-full` check it against the system's certificate
//! authorities or `sslrootcert`. One default differs: a database on this machine (a
//! loopback address, `localhost`, or a Unix socket) is reached without TLS unless the URL
//! or `PGSSLMODE` asks for it. Its traffic never leaves the kernel, and TLS would cost every
//! statement (`docs/design/job-list.md`, "What a page costs PostgreSQL").

use std::ffi::OsStr;
use std::net::IpAddr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The connect options of `url` (see the module's comment for TLS).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    options_with(url, std::env::var_os("PGSSLMODE").as_deref())
}

/// [`connect_options`], with `PGSSLMODE` as `env_sslmode`.
fn options_with(url: &str, env_sslmode: Option<&OsStr>) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    if env_sslmode.is_some() || names_sslmode(url) || !is_local(&options) {
        return Ok(options);
    }
    Ok(options.ssl_mode(PgSslMode::Disable))
}

/// True when the URL's query names an SSL mode (as sqlx reads it: `sslmode` or `ssl-mode`).
fn names_sslmode(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
        .any(|key| key == "sslmode" || key == "ssl-mode")
}

/// True when the options reach a server on this machine: a Unix socket, `localhost`, or a
/// loopback address.
fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, env: Option<&str>) -> PgSslMode {
        options_with(url, env.map(OsStr::new))
            .expect("options")
            .get_ssl_mode()
    }

    #[test]
    fn a_database_on_this_machine_is_reached_without_tls_unless_asked() {
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@127.0.0.2/db",
            "postgres://u@localhost/db",
            "postgresql://u@LOCALHOST:5433/db?application_name=x",
            "postgres://u@[::1]:5432/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres:///db?host=/var/run/postgresql",
        ] {
            assert!(matches!(mode(url, None), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=require", None),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode(
                "postgres://u@localhost/db?application_name=x&ssl-mode=verify-full",
                None
            ),
            PgSslMode::VerifyFull
        ));
        // PGSSLMODE is sqlx's to read; here it only says the default is not ours to set.
        assert!(!matches!(
            mode("postgres://u@127.0.0.1/db", Some("require")),
            PgSslMode::Disable
        ));
    }

    #[test]
    fn a_database_elsewhere_gets_libpq_s_default_or_what_the_url_says() {
        for url in [
            "postgres://u@db.example.com/db",
            "postgres://u@10.0.0.5:5432/db",
            "postgres://u@[2001:db8::1]/db",
            "postgres://u@db.example.com/db?sslmodes=disable",
        ] {
            assert!(matches!(mode(url, None), PgSslMode::Prefer), "{url}");
        }
        assert!(matches!(
            mode("postgres://u@db.example.com/db?sslmode=disable", None),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@db.example.com/db?sslmode=verify-ca", None),
            PgSslMode::VerifyCa
        ));
    }

    #[test]
    fn a_bad_sslmode_is_an_error() {
        assert!(options_with("postgres://u@db.example.com/db?sslmode=sometimes", None).is_err());
    }
}
