//! `rjob receive` (Receive-Job): output labelled by host, the same formats as `rjob invoke`.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::ReceiveArgs;
use crate::present::Presenter;

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
    let how = crate::receive_view::presentation(args, &job)?;
    let at_end = args.gather || args.output_dir.is_some();
    let request = pb::ReceiveJobRequest {
        job: job.instance_id.clone(),
        keep: args.keep,
        host: args.host.clone().unwrap_or_default(),
        follow: args.follow,
    };
    let mut stream = client
        .receive_job(request)
        .await
        .map_err(from_status)?
        .into_inner();
    let stdout = std::io::stdout();
    let mut printer = Presenter::new(std::io::BufWriter::new(stdout.lock()), how);
    while let Some(out) = stream.message().await.map_err(from_status)? {
        let stream = pb::Stream::try_from(out.stream).unwrap_or(pb::Stream::Stdout);
        printer.output(out.child as usize, stream, out.seq, &out.data)?;
        if args.follow {
            printer.flush()?;
        }
    }
    // -b and --output-dir show each child's state as it is now.
    let job = match at_end {
        true => client
            .list_jobs(pb::ListJobsRequest {
                jobs: vec![job.instance_id.clone()],
            })
            .await
            .map_err(from_status)?
            .into_inner()
            .jobs
            .into_iter()
            .next()
            .unwrap_or(job),
        false => job,
    };
    printer.finish(&crate::receive_view::outcomes(&job))?;
    Ok(if printer.file_errors() {
        crate::EXIT_FAILED
    } else {
        0
    })
}
