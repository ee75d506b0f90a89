//! `rjob receive` (Receive-Job): output labelled by host, the same formats as `rjob invoke`.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::ReceiveArgs;
use crate::output::Printer;

pub async fn run(args: &ReceiveArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let job = client
        .list_jobs(pb::ListJobsRequest {
            jobs: vec![args.job.clone()],
        })
        .await
        .map_err(from_status)?
        .into_inner()
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no job {:?}", args.job))?;
    let labels: Vec<String> = job.children.iter().map(|c| c.host.clone()).collect();
    let request = pb::ReceiveJobRequest {
        job: job.instance_id.clone(),
        keep: args.keep,
        host: args.host.clone().unwrap_or_default(),
        follow: args.follow,
        after_seq: 0,
    };
    let mut stream = client
        .receive_job(request)
        .await
        .map_err(from_status)?
        .into_inner();
    let stdout = std::io::stdout();
    let progress = super::wait::ProgressPoller::start(
        &client,
        std::slice::from_ref(&job.instance_id),
        args.follow && crate::progress::wanted_beside_output(args.quiet, args.output),
    );
    let out = crate::progress::Guarded::new(stdout.lock());
    let mut printer = Printer::new(std::io::BufWriter::new(out), args.output, labels)
        .escape_controls(crate::escape::for_stdout(args.raw));
    while let Some(out) = stream.message().await.map_err(from_status)? {
        let stream = pb::Stream::try_from(out.stream).unwrap_or(pb::Stream::Stdout);
        printer.output(out.child as usize, stream, out.seq, &out.data)?;
        if args.follow {
            printer.flush()?;
        }
    }
    printer.finish()?;
    drop(progress);
    Ok(0)
}
