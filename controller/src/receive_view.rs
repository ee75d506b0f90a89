//! `rjob receive -b`, `--output-dir` and `--color`: the same [`Presenter`] as `rjob invoke`,
//! fed from a job's stored output.
//!
//! [`Presenter`]: crate::present::Presenter

use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::DEFAULT_PORT;

use crate::child::{Cause, ChildOutcome};
use crate::cli::{OutputFormat, ReceiveArgs};
use crate::colour::{self, Paint};
use crate::hosts::{self, Host};
use crate::present::Presentation;
use crate::state::State;
use crate::UsageError;

/// The hosts of a job's children, from their labels (`name` or `name:port`).
pub fn hosts_of(job: &pb::JobInfo) -> Vec<Host> {
    job.children
        .iter()
        .map(|c| {
            hosts::parse_host_list(std::slice::from_ref(&c.host))
                .ok()
                .and_then(|h| h.into_iter().next())
                .unwrap_or_else(|| Host {
                    name: c.host.clone(),
                    port: DEFAULT_PORT,
                })
        })
        .collect()
}

/// How `rjob receive` shows a job's output.
pub fn presentation(args: &ReceiveArgs, job: &pb::JobInfo) -> Result<Presentation, UsageError> {
    let labels: Vec<String> = job.children.iter().map(|c| c.host.clone()).collect();
    let outdir = match &args.output_dir {
        Some(dir) => Some(crate::outdir::OutDir::prepare(dir, args.force, &labels)?),
        None => None,
    };
    let stdout_tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    Ok(Presentation {
        format: args.output,
        hosts: hosts_of(job),
        labels,
        escape: crate::escape::for_stdout(args.raw),
        paint: Paint::new(args.output == OutputFormat::Text && colour::enabled(args.color, stdout_tty)),
        gather: args.gather,
        sort: false,
        outdir,
        // The daemon's labels already carry the port off the default one.
        show_port: true,
    })
}

/// Each child's state as the job lists it, for group records and `HOST.json`.
pub fn outcomes(job: &pb::JobInfo) -> Vec<Option<ChildOutcome>> {
    job.children
        .iter()
        .map(|c| {
            let ms = c.ended_at_ms.saturating_sub(c.started_at_ms).max(0);
            Some(ChildOutcome {
                state: State::from_pb(c.state),
                exit_code: c.exit_code,
                signal: c.signal,
                reason: (!c.reason.is_empty()).then(|| c.reason.clone()),
                cause: Cause::parse(&c.cause).unwrap_or(Cause::Unknown),
                duration: Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            })
        })
        .collect()
}
