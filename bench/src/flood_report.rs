//! The report of `rjob-bench handshake-flood`: the figures it measured, as markdown with the
//! targets of issue 11.

use std::path::Path;

use crate::flood_opts::FloodOpts;
use crate::stats::median;

/// The targets of issue 11.
pub const INVOKE_TARGET_S: f64 = 1.0;
pub const RSS_TARGET_KIB: u64 = 64 * 1024;

#[derive(Debug, Default, serde::Serialize)]
pub struct Figures {
    pub baseline_invoke_s: Vec<f64>,
    pub flood_invoke_s: Vec<f64>,
    pub flood_invoke_failures: Vec<String>,
    pub agent_rss_idle_kib: u64,
    pub agent_rss_max_kib: u64,
    pub agent_hwm_kib: u64,
    pub agent_fds_idle: usize,
    pub agent_fds_max: usize,
    pub flood_open_min: u64,
    pub flood_open_at_invokes: Vec<u64>,
    pub flood_connects: u64,
    pub flood_closed_by_peer: u64,
    pub flood_connect_errors: u64,
    pub flood_seconds: f64,
    pub log_lines: usize,
    pub log_handshake_lines: usize,
    pub log_audit_lines: usize,
    pub recovered_invoke_ok: bool,
    /// Peak of the machine's connection tracking table during the flood, and its size.
    pub conntrack_peak: Option<(u64, u64)>,
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn ms(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn render(opts: &FloodOpts, f: &Figures, nofile: u64, log: &Path) -> (String, bool) {
    let flood_median = median(f.flood_invoke_s.clone());
    let invoke_ok = f.flood_invoke_failures.is_empty() && flood_median.is_some_and(|m| m < INVOKE_TARGET_S);
    let rss_peak = f.agent_hwm_kib.max(f.agent_rss_max_kib);
    let rss_ok = rss_peak < RSS_TARGET_KIB;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let max = |v: &[f64]| {
        v.iter()
            .copied()
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))))
    };
    let min = |v: &[f64]| {
        v.iter()
            .copied()
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))))
    };
    let last_aggregate = read_lines(log)
        .into_iter()
        .rev()
        .find(|l| l.contains("TLS handshakes that did not complete"))
        .unwrap_or_default();
    let mut md = String::new();
    md.push_str("# Handshake flood (issue 11, point 11)\n\n");
    md.push_str(&format!(
        "`{}`\n\n",
        std::iter::once("rjob-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    md.push_str(&format!(
        "One agent (defaults: max_handshakes 512, max_handshakes_per_source 32, handshake_timeout 3s) on 127.0.0.2; \
         {} flood connections ({}) from {} sources (127.0.1.1, …), {}; open-file limit {nofile}; load {}.\n\n",
        opts.connections,
        opts.payload.name(),
        opts.sources,
        if opts.no_reconnect { "not reopened".to_string() } else { format!("each reopened {} ms after the agent closes it", opts.reconnect_ms) },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    ));
    md.push_str("| figure | value | target |\n| --- | --- | --- |\n");
    md.push_str(&format!(
        "| `rjob invoke` under the flood, median of {} | **{}** (min {}, max {}; {} failed) | < 1 s: {} |\n",
        f.flood_invoke_s.len() + f.flood_invoke_failures.len(),
        ms(flood_median),
        ms(min(&f.flood_invoke_s)),
        ms(max(&f.flood_invoke_s)),
        f.flood_invoke_failures.len(),
        verdict(invoke_ok)
    ));
    md.push_str(&format!(
        "| `rjob invoke` without the flood, median of {} | {} | |\n",
        f.baseline_invoke_s.len(),
        ms(median(f.baseline_invoke_s.clone()))
    ));
    md.push_str(&format!(
        "| agent RSS under the flood (max VmRSS sampled every 50 ms / VmHWM) | **{}** / {} (idle before: {}) | < 64 MiB: {} |\n",
        mib(f.agent_rss_max_kib),
        mib(f.agent_hwm_kib),
        mib(f.agent_rss_idle_kib),
        verdict(rss_ok)
    ));
    md.push_str(&format!(
        "| agent descriptors under the flood (max) | {} (idle: {}) | |\n",
        f.agent_fds_max, f.agent_fds_idle
    ));
    let open_med = median(f.flood_open_at_invokes.iter().map(|v| *v as f64).collect());
    md.push_str(&format!(
        "| flood connections open at the invokes (client side) | median {:.0}, min {} | {} |\n",
        open_med.unwrap_or(0.0),
        if f.flood_open_min == u64::MAX {
            0
        } else {
            f.flood_open_min
        },
        opts.connections
    ));
    md.push_str(&format!(
        "| flood connects / closed by the agent / connect errors, in {:.0} s | {} / {} / {} | |\n",
        f.flood_seconds, f.flood_connects, f.flood_closed_by_peer, f.flood_connect_errors
    ));
    md.push_str(&format!(
        "| agent log lines from the flood's start to 11 s after its end | {} ({} handshake counts, {} audit) | |\n",
        f.log_lines, f.log_handshake_lines, f.log_audit_lines
    ));
    if let Some((peak, max)) = f.conntrack_peak {
        md.push_str(&format!(
            "| the machine's connection-tracking table at its fullest | {peak} of {max} | < half (else the flood stops) |\n"
        ));
    }
    md.push_str(&format!(
        "| `rjob invoke` 1 s after the flood | {} | |\n\n",
        if f.recovered_invoke_ok { "ok" } else { "FAILED" }
    ));
    if !f.flood_invoke_failures.is_empty() {
        md.push_str("Failed invokes:\n\n");
        for e in &f.flood_invoke_failures {
            md.push_str(&format!("- {e}\n"));
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "The agent's last handshake count line:\n\n```\n{last_aggregate}\n```\n"
    ));
    (md, invoke_ok && rss_ok && f.recovered_invoke_ok)
}
