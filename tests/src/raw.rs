//! Raw gRPC clients of an agent and of the daemon, for requests `rjob` never sends (hostile
//! peers, other clients of the daemon's socket).

use std::path::Path;

use rjob_proto::v1::agent_client::AgentClient;
use rjob_proto::v1::controller_client::ControllerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Agent, Daemon};

/// A client of `agent` with the identity in `dir` (ca.crt, client.crt, client.key); messages
/// up to 64 MiB either way, so that the agent's own limits are what is tested.
pub async fn agent_client(agent: &Agent, dir: &Path) -> AgentClient<Channel> {
    try_agent_client(agent, dir).await.expect("connect")
}

/// [`agent_client`], for identities the agent may refuse: why it could not connect.
pub async fn try_agent_client(agent: &Agent, dir: &Path) -> Result<AgentClient<Channel>, String> {
    let read = |f: &str| std::fs::read(dir.join(f)).expect("identity file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("client.crt"), read("client.key")))
        .domain_name(agent.addr.ip().to_string());
    let channel = Endpoint::from_shared(format!("https://{}", agent.addr))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(AgentClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A client of `daemon`'s Unix socket, as any process of the daemon's user could open.
pub async fn daemon_client(daemon: &Daemon) -> ControllerClient<Channel> {
    let socket = format!("unix://{}", daemon.state_dir.join("rjob.sock").display());
    let channel = Endpoint::try_from(socket)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the daemon");
    ControllerClient::new(channel)
}
