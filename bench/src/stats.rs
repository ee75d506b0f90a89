//! Medians, paired ratios and the shapes of the results (JSON and markdown).

use serde::Serialize;

use crate::procs::Sample;

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Rjob,
    /// `rjob invoke --as-job` into the daemon's store, then `rjob wait`, then `rjob receive`.
    AsJob,
    /// `rjob invoke --session`: over connections the daemon opened before the timing.
    Session,
    /// `rjob invoke -H` of agents that dialled out to the daemon (`rjob-agent --connect`):
    /// routed through the daemon, over the connections the agents opened.
    DialledIn,
    /// N local spawns of `sh -c SCRIPT` (fan-out).
    Floor,
    /// N local runs of the script with its output through a pipe to /dev/null (throughput).
    PipeFloor,
    Pdsh,
    /// pdsh -R exec over ssh connections opened before the timing (ControlMaster).
    SshWarm,
    Ansible,
}

impl Tool {
    /// Talks to the rjob agents.
    pub fn is_rjob(self) -> bool {
        matches!(self, Tool::Rjob | Tool::AsJob | Tool::Session | Tool::DialledIn)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Rjob => "rjob",
            Tool::AsJob => "as-job",
            Tool::Session => "session",
            Tool::DialledIn => "dialled-in",
            Tool::Floor => "floor",
            Tool::PipeFloor => "pipe-floor",
            Tool::Pdsh => "pdsh",
            Tool::SshWarm => "ssh-warm",
            Tool::Ansible => "ansible",
        }
    }
}

/// One tool's runs of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub tool: Tool,
    /// What exactly ran (without the host list).
    pub command: String,
    pub samples: Vec<Sample>,
    /// Why this tool was not measured, when it was not.
    pub skipped: Option<String>,
    /// Per run, the agents' peak RSS during the run (KiB): max and median over the agents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_peak_max_kib: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_peak_median_kib: Vec<u64>,
    /// --as-job: per run, the wall time of `rjob receive > /dev/null` (seconds) and the
    /// daemon's peak RSS while it ingested the job (KiB).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receive_s: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub daemon_peak_kib: Vec<u64>,
}

impl Series {
    pub fn new(tool: Tool, command: String) -> Series {
        Series {
            tool,
            command,
            samples: Vec::new(),
            skipped: None,
            agent_peak_max_kib: Vec::new(),
            agent_peak_median_kib: Vec::new(),
            receive_s: Vec::new(),
            daemon_peak_kib: Vec::new(),
        }
    }

    pub fn ok(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.ok)
    }

    pub fn median_of(&self, f: impl Fn(&Sample) -> f64) -> Option<f64> {
        median(self.ok().map(f).collect())
    }

    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok).count()
    }
}

/// Median over runs i of f(a_i) / f(b_i), only pairs where both runs succeeded.
pub fn paired_ratio(a: &Series, b: &Series, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let ratios = a
        .samples
        .iter()
        .zip(b.samples.iter())
        .filter(|(x, y)| x.ok && y.ok)
        .map(|(x, y)| f(x) / f(y))
        .collect();
    median(ratios)
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub id: String,
    /// "fanout" or "throughput"
    pub kind: String,
    pub hosts: usize,
    pub script: String,
    pub throttle: usize,
    /// Script output per host, bytes (throughput scenarios).
    pub bytes_per_host: u64,
    pub series: Vec<Series>,
}

impl Scenario {
    pub fn get(&self, tool: Tool) -> Option<&Series> {
        self.series.iter().find(|s| s.tool == tool)
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes_per_host * self.hosts as u64
    }
}

pub fn fmt_time(s: Option<f64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s < 0.01 => format!("{:.2} ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1e3),
        Some(s) if s < 100.0 => format!("{s:.2} s"),
        Some(s) => format!("{s:.0} s"),
    }
}

pub fn fmt_mib(kib: Option<f64>) -> String {
    match kib {
        None => "–".into(),
        Some(k) => format!("{:.1} MiB", k / 1024.0),
    }
}

/// rjob/peer, for times: below 1 rjob is faster.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) if r <= 1.0 => format!("{r:.3} ({:.1}x faster)", 1.0 / r),
        Some(r) => format!("{r:.2} ({r:.1}x slower)"),
    }
}

/// rjob/peer, for throughputs: above 1 rjob is faster.
pub fn fmt_tp_ratio(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) => format!("{r:.2}"),
    }
}
