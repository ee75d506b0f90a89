//! The CLI's side of the daemon socket. A job command that finds no daemon starts one in the
//! background (`rjob serve`, logging to STATE_DIR/daemon.log) and waits for its socket; a
//! daemon that exits instead has its own error printed. Before anything is sent on the socket
//! (a password may be), the CLI checks that the process listening on it runs as the CLI's own
//! user (`SO_PEERCRED`). Every answer of the daemon may carry a store warning, printed once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hyper_util::rt::TokioIo;
use rjob_proto::v1::controller_client::ControllerClient;
use tokio::net::UnixStream;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tower::util::MapResponse;

use super::health::{LOST_HEADER, WARNING_HEADER};
use super::socket_path;

type Response = http::Response<tonic::body::Body>;

/// The channel to the daemon: reads the store notices off every response.
pub type DaemonChannel = MapResponse<Channel, fn(Response) -> Response>;
pub type DaemonClient = ControllerClient<DaemonChannel>;

/// What the daemon said it lost from its store (the `rjob jobs` notice).
static LOST: OnceLock<String> = OnceLock::new();

/// The daemon's notice of jobs lost from its store, when an answer carried one.
pub fn lost_notice() -> Option<&'static str> {
    LOST.get().map(String::as_str)
}

fn note_notices(response: Response) -> Response {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let headers = response.headers();
    if let Some(warning) = headers.get(WARNING_HEADER).and_then(|v| v.to_str().ok()) {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("rjob: warning: {warning}");
        }
    }
    if let Some(lost) = headers.get(LOST_HEADER).and_then(|v| v.to_str().ok()) {
        let _ = LOST.set(lost.to_string());
    }
    response
}

/// The socket is served by another user: nothing may be sent on it.
#[derive(Debug, thiserror::Error)]
#[error("{socket} is served by uid {uid}{name}, not by you (uid {me}): refusing to send anything on it; is the state directory someone else's?")]
pub struct ForeignSocket {
    socket: String,
    uid: u32,
    name: String,
    me: u32,
}

/// Connects to the socket and checks who listens on it.
async fn dial(socket: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(socket).await?;
    let uid = stream.peer_cred()?.uid();
    let me = nix::unistd::geteuid().as_raw();
    if uid != me {
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(String::new, |u| format!(" ({})", u.name));
        let foreign = ForeignSocket {
            socket: socket.display().to_string(),
            uid,
            name,
            me,
        };
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, foreign));
    }
    Ok(stream)
}

/// `Ok(None)`: no daemon answers (none runs); an error: one that must not be talked to.
async fn try_connect(socket: &Path) -> anyhow::Result<Option<DaemonClient>> {
    let first = match tokio::time::timeout(Duration::from_secs(5), dial(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            match e.into_inner().map(|inner| inner.downcast::<ForeignSocket>()) {
                Some(Ok(foreign)) => return Err(anyhow::Error::new(*foreign)),
                Some(Err(other)) => bail!("{}: {other}", socket.display()),
                None => bail!("{}: permission denied", socket.display()),
            }
        }
        Ok(Err(_)) | Err(_) => return Ok(None),
    };
    // The checked stream is the channel's first connection; a reconnect dials (and checks) again.
    let first = Arc::new(Mutex::new(Some(first)));
    let path: PathBuf = socket.to_owned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let first = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let path = path.clone();
        async move {
            let stream = match first {
                Some(stream) => stream,
                None => dial(&path).await?,
            };
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = match Endpoint::from_static("http://rjob-daemon")
        .connect_with_connector(connector)
        .await
    {
        Ok(channel) => channel,
        Err(_) => return Ok(None),
    };
    let channel: DaemonChannel = MapResponse::new(channel, note_notices as fn(Response) -> Response);
    Ok(Some(
        ControllerClient::new(channel).max_decoding_message_size(64 << 20),
    ))
}

/// Connects to the daemon of `state_dir` if one runs; never starts one (for completions).
pub async fn connect_running(state_dir: &Path) -> anyhow::Result<Option<DaemonClient>> {
    try_connect(&socket_path(state_dir)).await
}

/// Connects to the daemon of `state_dir`, starting one if none answers.
pub async fn connect(state_dir: &Path, identity: Option<&Path>) -> anyhow::Result<DaemonClient> {
    let socket = socket_path(state_dir);
    if let Some(client) = try_connect(&socket).await? {
        return Ok(client);
    }
    let mut daemon = start_daemon(state_dir, identity)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(client) = try_connect(&socket).await? {
            return Ok(client);
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            // It gave up: its own error says why (the store cannot be opened, ...).
            match daemon.error() {
                Some(error) => bail!("the daemon could not start: {error}"),
                None => bail!(
                    "the daemon exited ({status}) without answering; see {}",
                    daemon.log.display()
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "started a daemon but it did not answer on {} within 10s; see {}",
        socket.display(),
        daemon.log.display()
    )
}

/// A daemon this CLI started.
struct Started {
    child: std::process::Child,
    log: PathBuf,
    /// Where its lines start in the log.
    log_start: u64,
}

impl Started {
    /// The daemon's last error line in its log, without the `rjob: error: ` prefix.
    fn error(&self) -> Option<String> {
        use std::io::{Read as _, Seek as _};
        let mut file = std::fs::File::open(&self.log).ok()?;
        file.seek(std::io::SeekFrom::Start(self.log_start)).ok()?;
        let mut text = String::new();
        // At most 64 KiB of what it wrote: its error is the last line.
        file.take(64 << 10).read_to_string(&mut text).ok()?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        Some(line.strip_prefix("rjob: error: ").unwrap_or(line).to_string())
    }
}

fn start_daemon(state_dir: &Path, identity: Option<&Path>) -> anyhow::Result<Started> {
    use std::os::unix::process::CommandExt;
    // The same checks as the daemon's: the log is opened here, never through a symlink.
    super::statedir::ensure_dir(state_dir)?;
    let log_path: PathBuf = state_dir.join("daemon.log");
    let log = super::statedir::open_private(&log_path, true)?;
    let log_start = log.metadata().map_or(0, |m| m.len());
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
    let child = cmd.spawn().context("starting the daemon (rjob serve)")?;
    eprintln!(
        "rjob: started a daemon for {} (log: {})",
        state_dir.display(),
        log_path.display()
    );
    Ok(Started {
        child,
        log: log_path,
        log_start,
    })
}
