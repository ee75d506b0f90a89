//! A child's connection to its agent, with the reconnect policy.

use std::time::Instant;

use super::{Cause, ChildSettings, ChildSink, Target};
use crate::backoff::backoff;
use crate::connect::Agent;
use crate::state::State;

/// Why a child gave up on its agent: Unreachable (a first connect failed) or AgentLost (out
/// of reach past the reconnect window), and the reason in words.
#[derive(Debug)]
pub(super) struct GaveUp {
    pub cause: Cause,
    pub reason: String,
}

/// The connection to a child's agent, with the reconnect policy: capped backoff, and a
/// failure once the agent has been out of reach for longer than the reconnect window.
pub(super) struct Link<'a> {
    target: &'a Target,
    settings: &'a ChildSettings,
    /// Since when, and why first, the agent has been out of reach.
    broken_since: Option<(Instant, String)>,
    attempt: u32,
}

impl<'a> Link<'a> {
    pub(super) fn new(target: &'a Target, settings: &'a ChildSettings) -> Self {
        Link {
            target,
            settings,
            broken_since: None,
            attempt: 0,
        }
    }

    /// The agent answered a request: the next break starts a new reconnect window.
    pub(super) fn healthy(&mut self) {
        self.broken_since = None;
        self.attempt = 0;
    }

    /// Connects; with `retry`, keeps trying (showing Disconnected) within the window.
    pub(super) async fn connect(&mut self, sink: &impl ChildSink, retry: bool) -> Result<Agent, GaveUp> {
        loop {
            match self.target.connect(self.settings).await {
                Ok(c) => return Ok(c),
                Err(e) if !retry => {
                    return Err(GaveUp {
                        cause: Cause::Unreachable,
                        reason: format!("cannot connect: {e}"),
                    })
                }
                Err(e) => {
                    self.wait(sink, e.to_string()).await?;
                }
            }
        }
    }

    /// The connection broke: waits, then connects again (within the window).
    pub(super) async fn broken(&mut self, sink: &impl ChildSink, reason: String) -> Result<Agent, GaveUp> {
        self.wait(sink, reason).await?;
        self.connect(sink, true).await
    }

    async fn wait(&mut self, sink: &impl ChildSink, reason: String) -> Result<(), GaveUp> {
        if self.broken_since.is_none() {
            sink.state(State::Disconnected, Some(reason.clone())).await;
        }
        let (since, first_reason) = self.broken_since.get_or_insert_with(|| (Instant::now(), reason));
        if since.elapsed() > self.settings.reconnect_window {
            return Err(GaveUp {
                cause: Cause::AgentLost,
                reason: format!(
                    "connection lost ({first_reason}) and not back within {}",
                    humantime::format_duration(self.settings.reconnect_window)
                ),
            });
        }
        tokio::time::sleep(backoff(self.attempt)).await;
        self.attempt += 1;
        Ok(())
    }
}
