//! `rjob watch JOB`: a full-screen live view of one job (ratatui + crossterm).
//!
//! One row per host (state, duration, exit code, last output line) under a header with the
//! counts per state and the throttle. The job is listed from the daemon four times a second;
//! the last output line is read only for the hosts on screen whose output grew (from their
//! last few chunks: `ReceiveJob`'s `after_seq`), and the
//! followed host's output is streamed: always as `rjob receive --keep` reads it, so watching
//! never consumes output. The screen is drawn at most ten times a second.

mod view;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEvent, KeyEventKind};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use super::{from_status, DaemonAddr};
use crate::cli::WatchArgs;
use crate::daemon::client::DaemonClient;
use crate::UsageError;
use view::{Action, Model};

/// The shortest time between two draws: at most ten a second.
const FRAME: Duration = Duration::from_millis(100);
/// Chunks read back from a host's last one to find its last line.
const LAST_CHUNKS: u64 = 4;
/// Chunks read back when a host is followed (the view keeps its last lines only).
const FOLLOW_BACK_CHUNKS: u64 = 256;
/// How often the job is listed.
const POLL: Duration = Duration::from_millis(250);

enum Update {
    Job(pb::JobInfo),
    LastLine(u32, String),
    Follow(u32, Vec<u8>),
    /// The job could not be listed (the daemon went away, the job was removed).
    Trouble(String),
}

pub async fn run(args: &WatchArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "rjob watch needs a terminal; use rjob jobs --children or rjob receive --keep when piped".into(),
        )
        .into());
    }
    let mut client = daemon.connect().await?;
    let job = list(&mut client, &args.job).await.map_err(from_status)?;
    let (updates_tx, mut updates) = mpsc::channel(64);
    let (visible_tx, visible) = watch::channel(Vec::new());
    let poller = tokio::spawn(poll(
        client.clone(),
        job.instance_id.clone(),
        visible,
        updates_tx.clone(),
    ));
    let mut keys = read_keys();
    let mut model = Model::default();
    model.set_job(job);
    let mut screen = Screen::enter()?;
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {}
            key = keys.recv() => {
                let Some(key) = key else { break Ok(0) }; // the terminal went away
                match model.key(key) {
                    Action::Quit => break Ok(0),
                    Action::Follow(index, host) => {
                        if let Some(f) = follower.take() {
                            f.abort();
                        }
                        let job = model.job.instance_id.clone();
                        let last_seq = model.job.children.iter().find(|c| c.index == index).map_or(0, |c| c.last_seq);
                        let from = last_seq.saturating_sub(FOLLOW_BACK_CHUNKS);
                        follower = Some(tokio::spawn(follow(client.clone(), job, (index, host), from, updates_tx.clone())));
                    }
                    Action::Unfollow => {
                        if let Some(f) = follower.take() {
                            f.abort();
                        }
                    }
                    Action::None => {}
                }
                continue;
            }
            Some(update) = updates.recv() => {
                match update {
                    Update::Job(job) => {
                        model.trouble = None;
                        model.set_job(job);
                    }
                    Update::Trouble(text) => model.trouble = Some(text),
                    Update::LastLine(index, line) => {
                        model.last_line.insert(index, line);
                    }
                    Update::Follow(index, data) => {
                        if model.following.as_ref().is_some_and(|(i, _)| *i == index) {
                            model.follow_output(&data);
                        }
                    }
                }
                continue;
            }
        }
        model.now_ms = now_ms();
        if let Err(e) = screen.terminal.draw(|frame| model.draw(frame)) {
            break Err(anyhow::Error::from(e).context("cannot draw on the terminal"));
        }
        visible_tx.send_if_modified(|shown| {
            let now = model.visible();
            let changed = *shown != now;
            *shown = now;
            changed
        });
    };
    poller.abort();
    if let Some(f) = follower {
        f.abort();
    }
    drop(screen);
    result
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn list(client: &mut DaemonClient, job: &str) -> Result<pb::JobInfo, tonic::Status> {
    client
        .list_jobs(pb::ListJobsRequest {
            jobs: vec![job.to_string()],
        })
        .await?
        .into_inner()
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| tonic::Status::not_found(format!("no job {job:?}")))
}

/// The terminal in raw mode on its alternate screen; put back as it was when dropped.
struct Screen {
    terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e.into());
        }
        let terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(stdout));
        match terminal {
            Ok(mut terminal) => {
                let _ = terminal.hide_cursor();
                let _ = terminal.clear();
                Ok(Screen { terminal })
            }
            Err(e) => {
                let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
                let _ = disable_raw_mode();
                Err(e.into())
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        let _ = execute!(self.terminal.backend_mut(), LeaveAlternateScreen);
        let _ = disable_raw_mode();
    }
}

/// Key presses, read on a thread of their own (crossterm's reads block).
fn read_keys() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(FRAME) {
                Ok(false) => {}
                Ok(true) => match event::read() {
                    Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                        if tx.send(key).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
    });
    rx
}

/// Lists the job every [`POLL`] and reads the last output line of the hosts on screen whose
/// output grew since it was last read.
async fn poll(
    mut client: DaemonClient,
    job: String,
    visible: watch::Receiver<Vec<(u32, String)>>,
    updates: mpsc::Sender<Update>,
) {
    let mut read_up_to: HashMap<u32, u64> = HashMap::new();
    loop {
        let listed = list(&mut client, &job).await;
        if let Err(status) = &listed {
            let text = crate::connect::describe_status(status);
            if updates.send(Update::Trouble(text)).await.is_err() {
                return;
            }
        }
        if let Ok(info) = listed {
            let shown = visible.borrow().clone();
            let children = info.children.clone();
            if updates.send(Update::Job(info)).await.is_err() {
                return;
            }
            for (index, host) in shown {
                let Some(child) = children.iter().find(|c| c.index == index) else {
                    continue;
                };
                if child.last_seq <= read_up_to.get(&index).copied().unwrap_or(0) {
                    continue;
                }
                if let Ok(line) = last_line(&mut client, &job, &host, child.last_seq).await {
                    read_up_to.insert(index, child.last_seq);
                    if updates.send(Update::LastLine(index, line)).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last line a host wrote (its unfinished line if it has one), read with `keep` from its
/// last [`LAST_CHUNKS`] chunks only: a host's whole output is never read for one row.
async fn last_line(
    client: &mut DaemonClient,
    job: &str,
    host: &str,
    last_seq: u64,
) -> Result<String, tonic::Status> {
    let request = pb::ReceiveJobRequest {
        job: job.to_string(),
        keep: true,
        host: host.to_string(),
        follow: false,
        after_seq: last_seq.saturating_sub(LAST_CHUNKS),
    };
    let (_open, request) = opened(request);
    let mut stream = client.receive_job(request).await?.into_inner();
    let mut last = LastLine::default();
    while let Some(out) = stream.message().await? {
        last.push(&out.data);
    }
    Ok(last.text())
}

/// A receive's request stream: the request, then nothing (a `keep` receive sends no acks). The
/// sender is held for as long as the receive goes on: a closed request stream ends it.
fn opened(
    request: pb::ReceiveJobRequest,
) -> (
    mpsc::UnboundedSender<pb::ReceiveJobMessage>,
    tokio_stream::wrappers::UnboundedReceiverStream<pb::ReceiveJobMessage>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(pb::ReceiveJobMessage {
        message: Some(pb::receive_job_message::Message::Request(request)),
    });
    (tx, tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
}

/// Keeps the last whole line and the unfinished one of an output stream.
#[derive(Default)]
struct LastLine {
    done: Vec<u8>,
    open: Vec<u8>,
}

impl LastLine {
    fn push(&mut self, mut data: &[u8]) {
        while let Some(pos) = memchr::memchr(b'\n', data) {
            self.open.extend_from_slice(&data[..pos]);
            self.done = std::mem::take(&mut self.open);
            data = &data[pos + 1..];
        }
        // Only the start of a very long line is kept: it is one row of a table.
        let room = crate::output::MAX_LINE.saturating_sub(self.open.len());
        self.open.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn text(&self) -> String {
        let line = if self.open.is_empty() {
            &self.done
        } else {
            &self.open
        };
        String::from_utf8_lossy(line).into_owned()
    }
}

/// Streams one host's output, live, as `rjob receive --keep --follow --host` reads it.
/// It starts after chunk `after_seq`: the view keeps the last lines only, so a long history
/// is not read back.
async fn follow(
    mut client: DaemonClient,
    job: String,
    (index, host): (u32, String),
    after_seq: u64,
    updates: mpsc::Sender<Update>,
) {
    let request = pb::ReceiveJobRequest {
        job,
        keep: true,
        host,
        follow: true,
        after_seq,
    };
    let (_open, request) = opened(request);
    let Ok(stream) = client.receive_job(request).await else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(out)) = stream.message().await {
        if updates.send(Update::Follow(index, out.data)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_unfinished_one_or_the_last_whole_one() {
        let mut last = LastLine::default();
        last.push(b"one\ntwo\nthr");
        assert_eq!(last.text(), "thr");
        last.push(b"ee\n");
        assert_eq!(last.text(), "three");
        last.push(b"a\nb\n");
        assert_eq!(last.text(), "b");
    }
}
