//! Serving the agent API over mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rjob_proto::v1::agent_server::AgentServer;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::AgentConfig;
use crate::runs::Runs;
use crate::service::AgentService;

/// Serves until `shutdown` resolves, then stops every run still going.
pub async fn serve(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
    };
    let identity = Identity::from_pem(
        read(&config.cert, "certificate")?,
        read(&config.key, "private key")?,
    );
    let client_ca = Certificate::from_pem(read(&config.client_ca, "client CA certificate")?);
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(client_ca)
        .client_auth_optional(false)
        .timeout(Duration::from_secs(10));

    let runs = Arc::new(Runs::open(&config.spool_dir, config.max_concurrent_runs)?);
    let expiring = runs.clone();
    let retention = config.retention;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            expiring.expire(retention);
        }
    });

    // Requests carry at most a script and stdin; anything bigger is refused by the transport.
    let max_message =
        usize::try_from(config.max_script_bytes + config.max_stdin_bytes + (1 << 20)).unwrap_or(usize::MAX);
    let listen = config.listen;
    let kill_grace = config.kill_grace;
    let service = AgentService::new(config, runs.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, "rjob-agent ready");
    Server::builder()
        .tls_config(tls)
        .context("setting up TLS")?
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(AgentServer::new(service).max_decoding_message_size(max_message))
        // TCP_NODELAY on the accepted sockets themselves (the builder's setting does not reach
        // connections from an incoming stream): without it, small answers wait ~40ms for the
        // peer's delayed ACK.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                shutdown.await;
                // Stop the runs first: their attach streams then end with a result, and the
                // connections can drain.
                tracing::info!("shutting down: stopping the runs still going");
                runs.stop_all(kill_grace + Duration::from_secs(1)).await;
            },
        )
        .await
        .context("serving")?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (the agent's and the controller daemon's way to stop).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process can still be killed; it just won't stop cleanly.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
