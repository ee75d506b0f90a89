//! The throughput table: rjob (live and --as-job), the pipe floor and the ssh peers.

use std::fmt::Write as _;

use super::cells::{cell, cpu, fmt_mbps, mbps, med_u64, ratio_between, ratio_of, rss, wall};
use crate::stats::{fmt_mib, fmt_time, fmt_tp_ratio, median, Scenario, Tool};

/// Median MB/s of `rjob receive > /dev/null` in the --as-job column.
pub fn receive_mbps(sc: &Scenario) -> Option<f64> {
    let s = sc.get(Tool::AsJob)?;
    let bytes = sc.total_bytes() as f64;
    median(
        s.samples
            .iter()
            .zip(&s.receive_s)
            .filter(|(x, _)| x.ok)
            .map(|(_, r)| bytes / 1e6 / r)
            .collect(),
    )
}

pub fn table(md: &mut String, tp: &[&Scenario]) {
    let _ = writeln!(
        md,
        "\n## Output throughput at the controller (MB = 10^6 bytes of script output; stdout to /dev/null)\n"
    );
    let _ = writeln!(
        md,
        "`rjob` is `rjob invoke` (live output). `--as-job` ingest is `rjob invoke --as-job` plus `rjob wait` (until the daemon's SQLite store holds every host's output), receive is `rjob receive > /dev/null` afterwards; its peak RSS is the daemon's (`rjob serve`). The pipe floor is the same script run locally, N at once, its output through a pipe (`| cat`) to /dev/null. Throughput ratios: above 1, rjob is faster.\n"
    );
    let _ = writeln!(
        md,
        "| hosts × output | rjob MB/s | rjob wall | rjob CPU | rjob peak RSS | agent peak RSS (max) | pipe floor MB/s | rjob/pipe floor | --as-job ingest MB/s | receive MB/s | ingest/pipe floor | daemon peak RSS | pdsh MB/s | rjob/pdsh | ssh-warm MB/s | rjob/ssh-warm | ansible MB/s | rjob/ansible |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in tp {
        let f = mbps(sc);
        let tpr = |peer: Tool| match sc.get(peer) {
            None => "–".to_string(),
            Some(p) if p.skipped.is_some() => "skipped".into(),
            _ => fmt_tp_ratio(ratio_of(sc, peer, &f)),
        };
        let agent_peak = sc
            .get(Tool::Rjob)
            .map(|s| fmt_mib(med_u64(&s.agent_peak_max_kib)))
            .unwrap_or_default();
        let ingest_ratio = fmt_tp_ratio(ratio_between(sc, Tool::AsJob, Tool::PipeFloor, &f));
        let _ = writeln!(
            md,
            "| {} × {} MB | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.bytes_per_host / 1_000_000,
            cell(sc.get(Tool::Rjob), &f, fmt_mbps),
            cell(sc.get(Tool::Rjob), wall, fmt_time),
            cell(sc.get(Tool::Rjob), cpu, fmt_time),
            cell(sc.get(Tool::Rjob), rss, fmt_mib),
            agent_peak,
            cell(sc.get(Tool::PipeFloor), &f, fmt_mbps),
            tpr(Tool::PipeFloor),
            cell(sc.get(Tool::AsJob), &f, fmt_mbps),
            fmt_mbps(receive_mbps(sc)),
            ingest_ratio,
            cell(sc.get(Tool::AsJob), rss, fmt_mib),
            cell(sc.get(Tool::Pdsh), &f, fmt_mbps),
            tpr(Tool::Pdsh),
            cell(sc.get(Tool::SshWarm), &f, fmt_mbps),
            tpr(Tool::SshWarm),
            cell(sc.get(Tool::Ansible), &f, fmt_mbps),
            tpr(Tool::Ansible),
        );
    }
}
