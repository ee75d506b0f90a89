//! Reaching the database: the connection URL (`postgres://user@host/db?sslmode=require`,
//! or `postgres:///db?host=/socket/dir` for a Unix socket), TLS through rustls, and the
//! connection pool.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{Fault, StoreError};

/// Connections the pool keeps at most: enough for the writer, the readers and a few
/// receives at once.
const POOL_SIZE: usize = 16;

/// How long a connection attempt may take, unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a free connection, or for a new one to be made.
const WAIT: Duration = Duration::from_secs(10);

/// The system's CA bundle (Debian's layout), for TLS without `sslrootcert=`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whether `url` names a PostgreSQL database (and not a SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_string();
    };
    format!("{scheme}://{user}:***@{host}{tail}")
}

fn config_error(url: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: redacted(url).into(),
        fault: Fault::Other,
        detail: detail.to_string(),
    }
}

/// Where the database is and how to reach it: for the pool, and for the connections of
/// their own (the LISTEN connection, the receive claims).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
}

impl Target {
    pub(super) fn new(url: &str, idle_in_transaction: Duration) -> Result<Target, StoreError> {
        let (url_for_pg, root_file) = take_sslrootcert(url);
        let mut config: tokio_postgres::Config = url_for_pg
            .parse()
            .map_err(|e| config_error(url, format_args!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("rjob");
        }
        // A server that went away without a word (a dead host, a cut network) is noticed on
        // a connection that only listens too.
        config.keepalives(true).keepalives_idle(Duration::from_secs(10));
        // A daemon paused inside a transaction (SIGSTOP, a frozen VM) must not hold a
        // child's or a job's row, and with it the takeover, for longer than about half its
        // lease.
        let idle = format!(
            "-c idle_in_transaction_session_timeout={}",
            idle_in_transaction.as_millis().max(500)
        );
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {idle}"),
            None => idle,
        };
        config.options(&options);
        let tls = MakeRustlsConnect::new(tls_config(url, root_file.as_deref())?);
        Ok(Target { config, tls })
    }

    /// A connection of its own, outside the pool, driven by a task of its own: the client,
    /// and the notifications it hears (LISTEN). The channel closes when the connection ends
    /// (the server went away, or the client was dropped).
    pub(super) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {} // a notice from the server
                    Err(e) => {
                        tracing::debug!(error = %e, "job store: a connection of its own ended");
                        return;
                    }
                }
            }
        });
        Ok((client, rx))
    }
}

/// The pool of connections to the database at `target`. Connects lazily: the first call
/// made through the pool reports a database that cannot be reached.
pub(super) fn pool(url: &str, target: &Target) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            // A connection the server closed (a restart) is noticed by its task and
            // dropped here instead of being handed out.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .recycle_timeout(Some(WAIT))
        .build()
        .map_err(|e| config_error(url, e))
}

/// Takes libpq's `sslrootcert=FILE` out of the URL's query (tokio-postgres does not know
/// it): the URL without it, and the file.
fn take_sslrootcert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(file) => {
                root = Some(file.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, root)
}

/// The TLS client of the database connections: server certificates checked against
/// `root_file` (PEM), else the system's CA bundle.
fn tls_config(url: &str, root_file: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    let file = root_file.unwrap_or(SYSTEM_ROOTS);
    match std::fs::read(file) {
        Ok(pem) => {
            for cert in x509_parser::pem::Pem::iter_from_buffer(&pem).flatten() {
                // A bundle's odd certificate is skipped, as libpq and browsers do.
                let _ = roots.add(rustls::pki_types::CertificateDer::from(cert.contents));
            }
            if root_file.is_some() && roots.is_empty() {
                return Err(config_error(
                    url,
                    format_args!("sslrootcert {file} holds no certificate"),
                ));
            }
        }
        Err(e) if root_file.is_some() => {
            return Err(config_error(url, format_args!("sslrootcert {file}: {e}")));
        }
        Err(_) => {} // no system bundle: only a TLS-less connection works
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(url, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redacted("postgres://rjob:s3cret@db.example:5432/jobs?sslmode=require"),
            "postgres://rjob:***@db.example:5432/jobs?sslmode=require"
        );
        assert_eq!(
            redacted("postgres:///jobs?host=/tmp/s"),
            "postgres:///jobs?host=/tmp/s"
        );
        assert_eq!(redacted("postgres://rjob@db/jobs"), "postgres://rjob@db/jobs");
    }

    #[test]
    fn sslrootcert_is_ours_and_the_rest_goes_to_tokio_postgres() {
        let (url, root) = take_sslrootcert("postgres://db/j?sslmode=verify-full&sslrootcert=/ca.pem&user=u");
        assert_eq!(url, "postgres://db/j?sslmode=verify-full&user=u");
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(take_sslrootcert("postgres://db/j").1, None);
    }

    #[test]
    fn urls_are_told_apart_from_paths() {
        assert!(is_postgres_url("postgresql://db/j"));
        assert!(is_postgres_url("postgres:///j?host=/s"));
        assert!(!is_postgres_url("/var/lib/rjob/jobs.db"));
    }
}
