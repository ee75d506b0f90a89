//! The supervision of a run's process: its limits, stop and kill escalation, the pumps
//! that store its output, and the record of how it ended.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use rjob_proto::v1::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use super::{now_ms, write_record, Control, Outcome, Phase, Run, RunLimits, Status};
use crate::contain::Contained;
use crate::runner::{self, Spawned};
use crate::spool::Spool;

pub(super) async fn supervise(
    run: &Run,
    spawned: Spawned,
    contained: &Contained,
    limits: RunLimits,
    mut control: mpsc::Receiver<Control>,
) {
    let Spawned {
        mut child,
        pid,
        stdout,
        stderr,
        ..
    } = spawned;
    let (fault_tx, mut fault_rx) = mpsc::channel::<Outcome>(2);
    let pumps = [
        tokio::spawn(pump(
            stdout,
            Stream::Stdout,
            run_ptr(run),
            limits.max_output_bytes,
            limits.max_chunk_bytes,
            fault_tx.clone(),
        )),
        tokio::spawn(pump(
            stderr,
            Stream::Stderr,
            run_ptr(run),
            limits.max_output_bytes,
            limits.max_chunk_bytes,
            fault_tx,
        )),
    ];

    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let kill_timer = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(kill_timer);
    let mut ending: Option<Outcome> = None;
    // The SIGKILL after a stop's grace was sent, or a fault killed at once.
    let mut killed = false;
    let terminate =
        |why: Outcome, ending: &mut Option<Outcome>, kill_timer: std::pin::Pin<&mut tokio::time::Sleep>| {
            if ending.is_none() {
                *ending = Some(why);
                run.status.send_modify(|s| s.phase = Phase::Stopping);
                let _ = runner::signal_group(pid, Signal::SIGCONT);
                let _ = runner::signal_group(pid, Signal::SIGTERM);
                contained.signal_others(Signal::SIGCONT, pid);
                contained.signal_others(Signal::SIGTERM, pid);
                kill_timer.reset(tokio::time::Instant::now() + limits.kill_grace);
            }
        };

    let wait = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = &mut deadline, if ending.is_none() => {
                let after_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
                terminate(Outcome::TimedOut { after_ms }, &mut ending, kill_timer.as_mut());
            }
            () = &mut kill_timer => {
                let _ = runner::signal_group(pid, Signal::SIGKILL);
                contained.kill_now();
                killed = true;
                kill_timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            Some(fault) = fault_rx.recv(), if ending.is_none() => {
                // Output can no longer be kept: kill at once.
                ending = Some(fault);
                killed = true;
                let _ = runner::signal_group(pid, Signal::SIGKILL);
                contained.kill_now();
            }
            Some(c) = control.recv() => match c {
                Control::Stop => terminate(Outcome::Stopped, &mut ending, kill_timer.as_mut()),
                Control::Shutdown => terminate(
                    Outcome::Lost { reason: "the agent shut down while the run was going".to_string() },
                    &mut ending,
                    kill_timer.as_mut(),
                ),
                Control::Suspend if ending.is_none() => {
                    if runner::signal_group(pid, Signal::SIGSTOP).is_ok() {
                        run.status.send_modify(|s| s.phase = Phase::Suspended);
                    }
                }
                Control::Resume if ending.is_none() => {
                    if runner::signal_group(pid, Signal::SIGCONT).is_ok() {
                        run.status.send_modify(|s| s.phase = Phase::Running);
                    }
                }
                Control::Suspend | Control::Resume => {}
            },
        }
    };

    // After a stop or timeout, what the SIGTERM reached beyond the main process has the rest
    // of kill_grace to end too.
    if ending.is_some() && !killed {
        contained.drain(kill_timer.deadline()).await;
    }
    // The run is over when its main process is: whatever it left behind is killed, in its
    // process group and beyond it (its cgroup, or what reparented to the subreaper), so
    // nothing of the run outlives it.
    let _ = runner::signal_group(pid, Signal::SIGCONT);
    let _ = runner::signal_group(pid, Signal::SIGKILL);
    contained.ended(pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for mut pump in pumps {
        // The pipes close once every process that held them is gone. One that reparented late
        // (its parent was killed just now) is looked for again; one that escaped everything
        // may hold a pipe open: don't wait forever.
        let finished = loop {
            match tokio::time::timeout(Duration::from_millis(50), &mut pump).await {
                Ok(_) => break true,
                Err(_) if tokio::time::Instant::now() >= deadline => break false,
                Err(_) => contained.sweep_again(),
            }
        };
        if !finished {
            tracing::warn!(
                run = run.id(),
                "an output pipe stayed open after the run ended; closing it"
            );
            // Dropping the pump's pipe closes it: the escaped process gets SIGPIPE, and
            // nothing is added to the spool after the run's result.
            pump.abort();
            let _ = pump.await;
        }
    }
    let outcome = ending.unwrap_or_else(|| match wait {
        Ok(status) => exit_outcome(status),
        Err(e) => Outcome::Lost {
            reason: format!("cannot wait for the process: {e}"),
        },
    });
    let ended_at_ms = now_ms();
    let mut record = run.record.clone();
    record.outcome = Some(outcome.clone());
    record.ended_at_ms = Some(ended_at_ms);
    // Flushed to disk later (see SYNC_AFTER), unless acknowledged by then.
    if let Err(e) = write_record(&run.spool, &record) {
        tracing::error!(run = run.id(), error = %format!("{e:#}"), "cannot store the run's result");
    }
    run.status.send_modify(|s| {
        s.extent = run.spool.extent();
        s.phase = Phase::Ended { outcome, ended_at_ms };
    });
}

/// The pumps are spawned tasks: they get their own handles on the run's spool and status.
fn run_ptr(run: &Run) -> PumpTarget {
    PumpTarget {
        spool: run.spool.clone(),
        status: run.status.clone(),
    }
}

struct PumpTarget {
    spool: Arc<Spool>,
    status: watch::Sender<Status>,
}

async fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    target: PumpTarget,
    max_output: u64,
    chunk: usize,
    fault: mpsc::Sender<Outcome>,
) {
    // Read into spare capacity: nothing is zeroed, and a run that prints nothing never
    // touches the buffer's pages. One read is one spool record (and one chunk sent).
    let mut buf = Vec::with_capacity(chunk);
    loop {
        buf.clear();
        let n = match pipe.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading a run's output failed");
                return;
            }
        };
        let used = target.spool.extent().data_bytes;
        let room = usize::try_from(max_output.saturating_sub(used)).unwrap_or(usize::MAX);
        let take = n.min(room);
        if take > 0 {
            match target.spool.append(stream, &buf[..take]) {
                Ok(extent) => target.status.send_modify(|s| s.extent = extent),
                Err(e) => {
                    let _ = fault
                        .send(Outcome::Lost {
                            reason: format!("cannot store output: {e}"),
                        })
                        .await;
                    return;
                }
            }
        }
        if take < n {
            let _ = fault.send(Outcome::OutputLimit { limit: max_output }).await;
            return;
        }
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited { code },
        (None, Some(signal)) => Outcome::Signaled { signal },
        (None, None) => Outcome::Lost {
            reason: "the process ended in an unknown way".to_string(),
        },
    }
}
