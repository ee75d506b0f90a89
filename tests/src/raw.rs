//! A raw gRPC client of an agent, for requests `rjob` never sends (hostile peers).

use std::path::Path;

use rjob_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Agent;

/// A client of `agent` with the identity in `dir` (ca.crt, client.crt, client.key); messages
/// up to 64 MiB either way, so that the agent's own limits are what is tested.
pub async fn agent_client(agent: &Agent, dir: &Path) -> AgentClient<Channel> {
    let read = |f: &str| std::fs::read(dir.join(f)).expect("identity file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("client.crt"), read("client.key")))
        .domain_name(agent.addr.ip().to_string());
    let channel = Endpoint::from_shared(format!("https://{}", agent.addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    AgentClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}
