//! One process of the handshake flood (`rjob-bench __flood-worker …`, started by
//! `handshake-flood`): holds up to COUNT connections to the target that stall in the TLS
//! handshake, each from one of the given loopback source addresses, and reopens those the
//! agent closes. It stops by itself after DURATION seconds, and prints its counters once a
//! second: `open=N connects=N closed_by_peer=N connect_errors=N`.
//!
//! Only loopback (127.0.0.0/8) is accepted, for the target and for the sources.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The start of a ClientHello: a record header announcing 512 bytes and the handshake header,
/// then nothing more.
pub const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a,
];

/// What a flood connection sends before it stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// Nothing: a bare TCP connection.
    Silent,
    /// The first 12 bytes of a ClientHello.
    Partial,
    /// Half of each.
    Mixed,
}

impl Payload {
    fn sends_hello(self, i: usize) -> bool {
        match self {
            Payload::Silent => false,
            Payload::Partial => true,
            Payload::Mixed => i % 2 == 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Payload::Silent => "silent",
            Payload::Partial => "partial",
            Payload::Mixed => "mixed",
        }
    }

    fn parse(text: &str) -> Result<Payload> {
        Ok(match text {
            "silent" => Payload::Silent,
            "partial" => Payload::Partial,
            "mixed" => Payload::Mixed,
            other => bail!("payload {other:?} is not silent, partial or mixed"),
        })
    }
}

/// How a worker is started (and the arguments it is started with).
#[derive(Debug, Clone)]
pub struct Job {
    pub target: SocketAddr,
    pub sources: Vec<Ipv4Addr>,
    pub count: usize,
    pub payload: Payload,
    /// None: a closed connection stays closed.
    pub reconnect: Option<Duration>,
    pub duration: Duration,
}

impl Job {
    pub fn args(&self) -> Vec<String> {
        let sources: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        vec![
            "__flood-worker".into(),
            self.target.to_string(),
            sources.join(","),
            self.count.to_string(),
            self.payload.name().into(),
            self.reconnect
                .map_or("none".into(), |d| d.as_millis().to_string()),
            self.duration.as_secs().to_string(),
        ]
    }

    fn parse(args: &[String]) -> Result<Job> {
        let [target, sources, count, payload, reconnect, duration] = args else {
            bail!("usage: __flood-worker TARGET SOURCES COUNT PAYLOAD RECONNECT_MS|none DURATION_S");
        };
        let target: SocketAddr = target.parse().context("target")?;
        let sources = sources
            .split(',')
            .map(|s| s.parse::<Ipv4Addr>().context("source"))
            .collect::<Result<Vec<_>>>()?;
        let loopback = |ip: &Ipv4Addr| ip.octets()[0] == 127;
        if !matches!(target, SocketAddr::V4(v4) if loopback(v4.ip()))
            || !sources.iter().all(loopback)
            || sources.is_empty()
        {
            bail!("the flood targets and comes from 127.0.0.0/8 only");
        }
        Ok(Job {
            target,
            sources,
            count: count.parse().context("count")?,
            payload: Payload::parse(payload)?,
            reconnect: match reconnect.as_str() {
                "none" => None,
                ms => Some(Duration::from_millis(ms.parse().context("reconnect")?)),
            },
            duration: Duration::from_secs(duration.parse().context("duration")?),
        })
    }
}

#[derive(Default)]
struct Counters {
    open: AtomicU64,
    connects: AtomicU64,
    closed_by_peer: AtomicU64,
    connect_errors: AtomicU64,
}

/// `rjob-bench __flood-worker ARGS…`.
pub fn main(args: &[String]) -> std::process::ExitCode {
    match Job::parse(args).and_then(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-bench flood worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(job: Job) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let counters = Arc::new(Counters::default());
        let deadline = tokio::time::Instant::now() + job.duration;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..job.count {
            let counters = counters.clone();
            let source = job.sources[i % job.sources.len()];
            let hello = job.payload.sends_hello(i);
            let (target, reconnect) = (job.target, job.reconnect);
            tasks.spawn(async move {
                let _ = tokio::time::timeout_at(
                    deadline,
                    hold(target, source, hello, reconnect, &counters, i as u64),
                )
                .await;
            });
            // Let the first connections go out while the rest are set up.
            if i % 512 == 511 {
                tokio::task::yield_now().await;
            }
        }
        let report = {
            let counters = counters.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    println!(
                        "open={} connects={} closed_by_peer={} connect_errors={}",
                        counters.open.load(Ordering::Relaxed),
                        counters.connects.load(Ordering::Relaxed),
                        counters.closed_by_peer.load(Ordering::Relaxed),
                        counters.connect_errors.load(Ordering::Relaxed),
                    );
                }
            }
        };
        tokio::select! {
            () = report => {}
            () = async { while tasks.join_next().await.is_some() {} } => {}
        }
    });
    Ok(())
}

/// One flood connection: connect from `source`, send the start of a ClientHello or nothing,
/// wait until the agent closes it, and (with `reconnect`) again after a pause (jittered).
async fn hold(
    target: SocketAddr,
    source: Ipv4Addr,
    hello: bool,
    reconnect: Option<Duration>,
    c: &Counters,
    seed: u64,
) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    loop {
        match connect(target, source).await {
            Ok(mut tcp) => {
                // Closed with a reset when this process ends: no TIME_WAIT, no connection
                // tracking entry for two minutes.
                let _ = tcp.set_zero_linger();
                c.connects.fetch_add(1, Ordering::Relaxed);
                c.open.fetch_add(1, Ordering::Relaxed);
                if hello {
                    let _ = tcp.write_all(PARTIAL_CLIENT_HELLO).await;
                }
                let mut buf = [0u8; 256];
                // Whatever the agent sends (it sends nothing to a stalled handshake), until it closes.
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                c.open.fetch_sub(1, Ordering::Relaxed);
                c.closed_by_peer.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        match reconnect {
            // Between half and one and a half times the pause, so the connections do not
            // come back in waves.
            Some(pause) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let jittered = pause.mul_f64(0.5 + (rng % 1000) as f64 / 1000.0);
                tokio::time::sleep(jittered).await
            }
            None => std::future::pending::<()>().await,
        }
    }
}

async fn connect(target: SocketAddr, source: Ipv4Addr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
