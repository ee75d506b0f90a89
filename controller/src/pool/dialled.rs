//! A session the daemon dialled (`rjob session new`): one connection per host, dialled once
//! and kept open (HTTP/2 keep-alive pings it while idle), redialled by a keeper task per host
//! with jittered, capped backoff once it ends; and dialled once more at invoke time when it
//! is down then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{watch, Semaphore};

use super::{Connections, HostLink};
use crate::backoff::{jittered, random_unit};
use crate::connect::{connect_live, Agent, ConnectError, Live, Tls};
use crate::hosts::Host;

/// Longest wait between two redials of a host that stays down.
const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// One host's connection.
struct Line {
    host: Host,
    /// The connection, while it is open (a closed one is dropped at the next look).
    live: Mutex<Option<Live>>,
    /// Why the last dial failed or the connection ended.
    reason: Mutex<String>,
    /// One dial at a time per host (the keeper's, or an invoke's).
    dialling: tokio::sync::Mutex<()>,
}

impl Line {
    /// The open connection, if there is one.
    fn current(&self) -> Option<Live> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.as_ref().is_some_and(Live::is_closed) {
            *live = None;
            self.set_reason("the connection ended".to_string());
        }
        live.clone()
    }

    fn set_reason(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Dials, unless another dial got there first; keeps the connection.
    async fn dial(&self, tls: &Tls, timeout: Duration) -> Result<Live, ConnectError> {
        let _one = self.dialling.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        match connect_live(&self.host, tls, timeout).await {
            Ok(live) => {
                *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
                self.set_reason(String::new());
                Ok(live)
            }
            Err(e) => {
                self.set_reason(format!("cannot connect: {e}"));
                Err(e)
            }
        }
    }
}

/// The session's hosts and the keepers of their connections.
pub struct Dialled {
    lines: Vec<Arc<Line>>,
    index: HashMap<Host, usize>,
    tls: Tls,
    /// `true` once the session is closed: the keepers stop.
    closed: watch::Sender<bool>,
}

impl Dialled {
    /// Dials every host (at most `throttle_limit` at once, each within `timeout`), then keeps
    /// each connection open; returns once every host was tried once.
    pub async fn open(hosts: Vec<Host>, tls: Tls, throttle_limit: usize, timeout: Duration) -> Arc<Dialled> {
        let (session, dialling) = Dialled::start(hosts, tls, throttle_limit, timeout);
        dialling.await;
        session
    }

    /// The session at once, and what dials its hosts the first time and then starts their
    /// keepers: awaited by [`Dialled::open`], spawned for a session a restarted daemon opens
    /// again (listed at once; an invoke meanwhile dials a host not connected yet).
    pub fn start(
        hosts: Vec<Host>,
        tls: Tls,
        throttle_limit: usize,
        timeout: Duration,
    ) -> (
        Arc<Dialled>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let lines: Vec<Arc<Line>> = hosts
            .iter()
            .map(|host| {
                Arc::new(Line {
                    host: host.clone(),
                    live: Mutex::new(None),
                    reason: Mutex::new("not dialled yet".to_string()),
                    dialling: tokio::sync::Mutex::new(()),
                })
            })
            .collect();
        let index = hosts.into_iter().enumerate().map(|(i, h)| (h, i)).collect();
        let (closed, _) = watch::channel(false);
        let session = Arc::new(Dialled {
            lines,
            index,
            tls,
            closed,
        });
        let dialling = {
            let session = session.clone();
            async move {
                let throttle = Arc::new(Semaphore::new(throttle_limit.max(1)));
                // Every host of the session shares the output budget (crate::flow) from its
                // first connection on: each stays open, for fan-outs of up to all of them.
                let _sharing = crate::flow::expect(session.lines.len());
                let first = session.lines.iter().map(|line| {
                    let (throttle, tls) = (throttle.clone(), &session.tls);
                    async move {
                        let _slot = throttle.acquire().await;
                        let _ = line.dial(tls, timeout).await;
                    }
                });
                futures::future::join_all(first).await;
                for line in &session.lines {
                    let keeper = keep(
                        line.clone(),
                        session.tls.clone(),
                        throttle.clone(),
                        timeout,
                        session.closed.subscribe(),
                    );
                    tokio::spawn(keeper);
                }
            }
        };
        (session, dialling)
    }

    fn line(&self, host: &Host) -> Option<&Arc<Line>> {
        self.index.get(host).and_then(|&i| self.lines.get(i))
    }
}

impl Connections for Dialled {
    fn hosts(&self) -> Vec<HostLink> {
        self.lines
            .iter()
            .map(|line| {
                let connected = line.current().is_some();
                HostLink {
                    host: line.host.clone(),
                    connected,
                    reason: if connected {
                        String::new()
                    } else {
                        line.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
                    },
                }
            })
            .collect()
    }

    fn agent<'a>(&'a self, host: &'a Host, timeout: Duration) -> BoxFuture<'a, Result<Agent, ConnectError>> {
        Box::pin(async move {
            let line = self.line(host).ok_or_else(|| {
                ConnectError::Transport(format!("{} is not a host of this session", host.label()))
            })?;
            if *self.closed.borrow() {
                return Err(ConnectError::Transport("the session was removed".to_string()));
            }
            match line.current() {
                Some(live) => Ok(live.agent()),
                // Down: dialled once now, like any host without a session.
                None => Ok(line.dial(&self.tls, timeout).await?.agent()),
            }
        })
    }

    fn close(&self) {
        self.closed.send_replace(true);
        for line in &self.lines {
            line.live.lock().unwrap_or_else(|p| p.into_inner()).take();
            line.set_reason("the session was removed".to_string());
        }
    }
}

/// Keeps one host's connection open until the session closes: waits for it to end, then
/// redials, after a jittered, capped backoff between failed attempts (so that a fleet that
/// comes back does not get every redial at one instant).
async fn keep(
    line: Arc<Line>,
    tls: Tls,
    throttle: Arc<Semaphore>,
    timeout: Duration,
    mut closed: watch::Receiver<bool>,
) {
    let mut attempt = 0u32;
    loop {
        if *closed.borrow_and_update() {
            return;
        }
        if let Some(live) = line.current() {
            attempt = 0;
            tokio::select! {
                () = live.closed() => {
                    tracing::info!(host = %line.host.label(), "a session's connection ended: redialling");
                }
                _ = closed.changed() => return,
            }
            drop(live);
            let _ = line.current();
        }
        // A first redial right away spread over a moment; then capped exponential.
        let delay = jittered(attempt, RECONNECT_CAP, random_unit());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = closed.changed() => return,
        }
        let dialled = {
            let _slot = throttle.acquire().await;
            tokio::select! {
                d = line.dial(&tls, timeout) => Some(d),
                _ = closed.changed() => None,
            }
        };
        match dialled {
            None => return,
            Some(Ok(_)) => attempt = 0,
            Some(Err(e)) => {
                tracing::debug!(host = %line.host.label(), error = %e, attempt, "a session's redial failed");
                attempt = attempt.saturating_add(1);
            }
        }
    }
}
