//! `rjob receive -b` and `--output-dir`: the job's output read whole first (as `--keep`
//! reads it), then shown in groups or written to files.

use std::io::BufWriter;

use rjob_proto::v1 as pb;
use rjob_proto::v1::Stream;
use tokio::sync::mpsc;

use super::from_status;
use super::stdout::EXIT_PIPE_CLOSED;
use crate::present::{Presentation, Presenter};

/// `-b` and `--output-dir`: everything first (read as --keep), then the groups or the files.
pub(super) async fn at_the_end(
    client: &mut crate::daemon::client::DaemonClient,
    stream: &mut tonic::Streaming<pb::JobOutput>,
    job: pb::JobInfo,
    how: Presentation,
    to_daemon: mpsc::UnboundedSender<pb::ReceiveJobMessage>,
) -> anyhow::Result<u8> {
    let stdout = std::io::stdout();
    let mut printer = Presenter::new(BufWriter::new(stdout.lock()), how);
    while let Some(out) = stream.message().await.map_err(from_status)? {
        if out.end {
            break;
        }
        let s = Stream::try_from(out.stream).unwrap_or(Stream::Stdout);
        printer.output(out.child as usize, s, out.seq, &out.data)?;
    }
    drop(to_daemon);
    // Each child's state as it is now.
    let job = client
        .list_jobs(pb::ListJobsRequest {
            jobs: vec![job.instance_id.clone()],
        })
        .await
        .map_err(from_status)?
        .into_inner()
        .jobs
        .into_iter()
        .next()
        .unwrap_or(job);
    match printer.finish(&crate::receive_view::outcomes(&job)) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_PIPE_CLOSED),
        other => other?,
    }
    Ok(if printer.file_errors() {
        crate::EXIT_FAILED
    } else {
        0
    })
}
