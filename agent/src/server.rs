//! Serving the agent API over mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rjob_proto::v1::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::Server;

use crate::config::AgentConfig;
use crate::listener::{self, Limits};
use crate::runs::{Runs, RunsOptions};
use crate::service::AgentService;

/// Serves until `shutdown` resolves, then stops every run still going.
pub async fn serve(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
    };
    let cert_pem = read(&config.cert, "certificate")?;
    let tls = rjob_proto::tls::server_config(
        &cert_pem,
        &read(&config.key, "private key")?,
        &read(&config.client_ca, "client CA certificate")?,
    )
    .context("setting up TLS")?;

    let runs = Arc::new(Runs::open_with(&config.spool_dir, RunsOptions::of(&config))?);
    let _expiring = crate::embedded::keep_expiring(runs.clone(), config.retention);

    // Requests carry at most a script and stdin; anything bigger is refused by the transport.
    let max_message =
        usize::try_from(config.max_script_bytes + config.max_stdin_bytes + (1 << 20)).unwrap_or(usize::MAX);
    let listen = config.listen;
    let kill_grace = config.kill_grace;
    let limits = Limits {
        max_handshakes: config.max_handshakes as usize,
        max_handshakes_per_source: config.max_handshakes_per_source as usize,
        handshake_timeout: config.handshake_timeout,
        log_interval: config.handshake_log_interval,
    };
    let dial_name = match (&config.name, config.connect.is_empty()) {
        (_, true) => None,
        (Some(name), false) => Some(name.clone()),
        (None, false) => Some(crate::dialout::certificate_name(&cert_pem).with_context(|| {
            format!(
                "{} names no host (DNS name or IP address) to announce when dialling out: give --name",
                config.cert.display()
            )
        })?),
    };
    let connect = config.connect.clone();
    let service = Arc::new(AgentService::new(config, runs.clone())?);
    let listening = match listen {
        Some(addr) => {
            let listener = listener::bind(addr).with_context(|| format!("listening on {addr}"))?;
            defer_accept(&listener);
            Some(listener)
        }
        None => None,
    };
    tracing::info!(
        listen = %listening.as_ref().and_then(|l| l.local_addr().ok()).map_or_else(|| "none (dials out only)".to_string(), |a| a.to_string()),
        connect = ?connect,
        max_handshakes = limits.max_handshakes,
        max_handshakes_per_source = limits.max_handshakes_per_source,
        handshake_timeout = %humantime::format_duration(limits.handshake_timeout),
        open_files = open_file_limit(),
        "rjob-agent ready"
    );
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (dialling, dialled_serving) = match dial_name {
        Some(name) => {
            let (tx, dialled) = tokio::sync::mpsc::channel(16);
            let dialler = crate::dialout::Dialler {
                name,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls.clone())),
                connections: tx,
            };
            let serving = serve_dialled(service.clone(), max_message, dialled, stopping.clone());
            (dialler.spawn(&connect), Some(tokio::spawn(serving)))
        }
        None => (Vec::new(), None),
    };
    let (connections, accepting) = match listening {
        Some(listener) => listener::accept_tls(listener, tls, limits),
        None => no_listener(),
    };
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(AgentServer::from_arc(service).max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(connections), async {
            shutdown.await;
            accepting.abort();
            for dialler in &dialling {
                dialler.abort();
            }
            // Stop the runs first: their attach streams then end with a result, and the
            // connections can drain.
            tracing::info!("shutting down: stopping the runs still going");
            runs.stop_all(kill_grace + Duration::from_secs(1)).await;
            let _ = stopping_tx.send(true);
        })
        .await
        .context("serving")?;
    if let Some(serving) = dialled_serving {
        let _ = serving.await;
    }
    Ok(())
}

/// Serves the connections this agent dialled out ([`crate::dialout`]) until `stopping`: the
/// same service as on the listener, with a keep-alive short enough that a controller gone
/// silent is noticed (and dialled again) within about half a minute.
pub async fn serve_dialled(
    service: Arc<AgentService>,
    max_message: usize,
    dialled: tokio::sync::mpsc::Receiver<crate::dialout::Dialled>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let served = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(AgentServer::from_arc(service).max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(dialled).map(Ok::<_, std::io::Error>),
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            },
        )
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "serving the dialled-out connections stopped");
    }
}

/// What the server takes when the agent only dials out: a stream of connections that never
/// yields, open until the (returned) task holding its sender is aborted at shutdown.
fn no_listener() -> (listener::Established, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let holding = tokio::spawn(async move {
        let _tx = tx;
        std::future::pending::<()>().await
    });
    (rx, holding)
}

/// A new connection wakes the agent once its first bytes (the ClientHello) are in, not at the
/// bare TCP handshake: one wakeup per connection less. A client that sends nothing is still
/// accepted, after about this long, and then has the handshake timeout.
const DEFER_ACCEPT_SECS: libc::c_int = 5;

fn defer_accept(listener: &TcpListener) {
    use std::os::fd::AsRawFd as _;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: setsockopt on the listener's own descriptor, with a pointer to a live c_int and
    // its size.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set TCP_DEFER_ACCEPT");
    }
}

/// The soft limit on open files in force (the agent raised it to the hard limit at start).
fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

pub use rjob_proto::process::shutdown_signal;
