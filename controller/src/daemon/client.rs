//! The CLI's side of the daemon socket. A job command that finds no daemon starts one in the
//! background (`rjob serve`, logging to STATE_DIR/daemon.log) and waits for its socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rjob_proto::v1::controller_client::ControllerClient;
use tonic::transport::{Channel, Endpoint};

use super::socket_path;

async fn try_connect(socket: &Path) -> Option<ControllerClient<Channel>> {
    let endpoint = Endpoint::try_from(format!("unix://{}", socket.display())).ok()?;
    let channel = tokio::time::timeout(Duration::from_secs(5), endpoint.connect())
        .await
        .ok()?
        .ok()?;
    Some(ControllerClient::new(channel).max_decoding_message_size(64 << 20))
}

/// Connects to the daemon of `state_dir`, starting one if none answers.
pub async fn connect(state_dir: &Path, identity: Option<&Path>) -> anyhow::Result<ControllerClient<Channel>> {
    let socket = socket_path(state_dir);
    if let Some(client) = try_connect(&socket).await {
        return Ok(client);
    }
    start_daemon(state_dir, identity)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(client) = try_connect(&socket).await {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "started a daemon but it did not answer on {} within 10s; see {}",
        socket.display(),
        state_dir.join("daemon.log").display()
    )
}

fn start_daemon(state_dir: &Path, identity: Option<&Path>) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::process::CommandExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let log_path: PathBuf = state_dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the rjob binary to start the daemon")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve").arg("--state-dir").arg(state_dir);
    if let Some(identity) = identity {
        cmd.arg("--identity").arg(identity);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal does not reach it.
        .process_group(0);
    cmd.spawn().context("starting the daemon (rjob serve)")?;
    eprintln!(
        "rjob: started a daemon for {} (log: {})",
        state_dir.display(),
        log_path.display()
    );
    Ok(())
}
