//! Table cells: a tool's median, or a ratio paired run by run, or why there is none.

use crate::procs::Sample;
use crate::stats::{fmt_ratio, median, paired_ratio, Scenario, Series, Tool};

pub fn med_u64(v: &[u64]) -> Option<f64> {
    median(v.iter().map(|x| *x as f64).collect())
}

pub fn max_u64(v: &[u64]) -> Option<f64> {
    v.iter().max().map(|x| *x as f64)
}

/// A cell for one tool's median (or why there is none).
pub fn cell(s: Option<&Series>, f: impl Fn(&Sample) -> f64, fmt: impl Fn(Option<f64>) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.skipped.is_some() => "skipped".into(),
        Some(s) if s.samples.is_empty() => "–".into(),
        Some(s) => {
            let m = s.median_of(&f);
            let mut text = fmt(m);
            let failed = s.failed();
            if failed > 0 && m.is_none() {
                text = format!("FAILED ({})", s.samples[0].status);
            } else if failed > 0 {
                text.push_str(&format!(" ⚠{failed}/{} failed", s.samples.len()));
            }
            if s.samples.len() < 3 {
                text.push_str(&format!(
                    " ({} run{})",
                    s.samples.len(),
                    if s.samples.len() == 1 { "" } else { "s" }
                ));
            }
            text
        }
    }
}

/// `a`/`b` paired run by run (medians of the per-run ratios).
pub fn ratio_between(sc: &Scenario, a: Tool, b: Tool, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let (a, b) = (sc.get(a)?, sc.get(b)?);
    if a.skipped.is_some() || b.skipped.is_some() {
        return None;
    }
    paired_ratio(a, b, f)
}

pub fn ratio_of(sc: &Scenario, peer: Tool, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    ratio_between(sc, Tool::Rjob, peer, f)
}

pub fn ratio_cell(sc: &Scenario, peer: Tool, f: impl Fn(&Sample) -> f64) -> String {
    match sc.get(peer) {
        Some(s) if s.skipped.is_some() => "skipped".into(),
        _ => fmt_ratio(ratio_of(sc, peer, f)),
    }
}

pub fn wall(s: &Sample) -> f64 {
    s.wall_s
}
pub fn cpu(s: &Sample) -> f64 {
    s.cpu_s
}
pub fn total_cpu(s: &Sample) -> f64 {
    s.cpu_s + s.target_cpu_s.unwrap_or(0.0)
}
pub fn target_cpu(s: &Sample) -> f64 {
    s.target_cpu_s.unwrap_or(f64::NAN)
}
pub fn rss(s: &Sample) -> f64 {
    s.maxrss_kib as f64
}

/// MB/s of a scenario's whole output over a sample's wall time.
pub fn mbps(sc: &Scenario) -> impl Fn(&Sample) -> f64 {
    let bytes = sc.total_bytes() as f64;
    move |x: &Sample| bytes / 1e6 / x.wall_s
}

pub fn fmt_mbps(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}
