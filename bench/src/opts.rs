//! The command line and the settings derived from it.

use std::path::PathBuf;

use clap::Parser;

/// rjob fan-out, throughput and memory against N real agents on loopback addresses, with
/// pdsh over ssh, ansible ad-hoc and N local spawns (the floor) side by side. The handshake
/// flood of issue 11 is a mode of its own: `rjob-bench handshake-flood --help`.
#[derive(Debug, Parser)]
#[command(name = "rjob-bench")]
pub struct Opts {
    /// Fleet sizes N [default: 16,64,256; --quick: 16]
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Runs per measurement; medians are reported [default: 5; --quick: 2]
    #[arg(long)]
    pub runs: Option<usize>,
    /// Runs of pdsh [default: --runs]
    #[arg(long)]
    pub pdsh_runs: Option<usize>,
    /// Runs of ansible, the slowest peer, for every N [default: min(--runs, 3) for N <= 16,
    /// min(--runs, 2) for N <= 64, 1 above; --quick: 1]
    #[arg(long)]
    pub ansible_runs: Option<usize>,
    /// A small version for developers: N=16, 2 runs, 20 MB / 200 MB single-host output
    #[arg(long)]
    pub quick: bool,
    /// Install the peers first (runs bench/setup-peers.sh: apt pdsh, openssh; ansible-core in a venv)
    #[arg(long)]
    pub install_peers: bool,
    /// Measure rjob and the floor only
    #[arg(long)]
    pub no_peers: bool,
    /// Output of the single-host throughput run, MB (10^6 bytes) [default: 100; --quick: 20]
    #[arg(long)]
    pub big_mb: Option<u64>,
    /// Output of the single-host run that checks the controller's RSS stays flat, MB
    /// [default: 1000; --quick: 200]; 0 skips it
    #[arg(long)]
    pub huge_mb: Option<u64>,
    /// Output per host in the all-hosts throughput run, MB
    #[arg(long, default_value_t = 1)]
    pub per_host_mb: u64,
    /// Port of every agent
    #[arg(long, default_value_t = 17443)]
    pub port: u16,
    /// Port of every sshd endpoint
    #[arg(long, default_value_t = 17022)]
    pub ssh_port: u16,
    /// Addresses each sshd process listens on: 1 is one sshd per host, as on a real fleet;
    /// OpenSSH takes at most 16
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub addrs_per_sshd: u16,
    /// The user the ssh peers log in as, made (useradd, home /var/tmp/USER-home, a stock
    /// ~/.bashrc) when missing: the benchmark's own user's rc files would run at every login,
    /// and the N "hosts" would share one home directory (and its locks)
    #[arg(long, default_value = "rjob-bench")]
    pub ssh_user: String,
    /// Before each run, wait at most this long for the machine to be quiet (under 5% CPU
    /// over 100 ms); on a machine shared with other work, lower it
    #[arg(long, default_value_t = 20)]
    pub quiet_max_s: u64,
    /// Sizes N at which ansible runs, the slowest peer by far [default: every --sizes]
    #[arg(long, value_delimiter = ',')]
    pub ansible_sizes: Option<Vec<usize>>,
    /// Directory with the rjob and rjob-agent binaries [default: build them with cargo, same
    /// profile and target directory as this benchmark]
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The ansible executable [default: /tmp/bench-venv/bin/ansible, then ansible on PATH]
    #[arg(long)]
    pub ansible: Option<PathBuf>,
    /// Where latest.md and latest.json go [default: bench/results]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep the temporary directory (certificates, logs, agent spools) for inspection
    #[arg(long)]
    pub keep: bool,
    /// Measure nothing: start the largest fleet of agents, write DIR/hosts.txt and DIR/env
    /// (RJOB_IDENTITY), and wait until standard input closes or a signal comes (for profiling)
    #[arg(long, value_name = "DIR")]
    pub serve_only: Option<PathBuf>,
    /// Leave out the dialled-in column (agents that also dial out to the job daemon,
    /// `rjob-agent --connect`, reached through it by a plain `rjob invoke -H`)
    #[arg(long)]
    pub no_dial_in: bool,
}

/// Settings after --quick and the defaults are applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub pdsh_runs: usize,
    /// None: by N (see --ansible-runs).
    pub ansible_runs: Option<usize>,
    pub big_bytes: u64,
    pub huge_bytes: u64,
    pub per_host_bytes: u64,
    pub quick: bool,
    pub addrs_per_sshd: usize,
    pub ssh_user: String,
    pub quiet_max_s: u64,
    /// None: every size.
    pub ansible_sizes: Option<Vec<usize>>,
    pub dial_in: bool,
}

impl Settings {
    pub fn ansible_runs_for(&self, n: usize) -> usize {
        if self.ansible_sizes.as_ref().is_some_and(|s| !s.contains(&n)) {
            return 0;
        }
        self.ansible_runs.unwrap_or(match n {
            0..=16 => self.runs.min(3),
            17..=64 => self.runs.min(2),
            _ => 1,
        })
    }

    pub fn from(o: &Opts) -> Settings {
        let q = o.quick;
        let runs = o.runs.unwrap_or(if q { 2 } else { 5 }).max(1);
        let mut sizes = o
            .sizes
            .clone()
            .unwrap_or(if q { vec![16] } else { vec![16, 64, 256] });
        sizes.retain(|n| *n > 0);
        sizes.dedup();
        Settings {
            sizes,
            runs,
            pdsh_runs: o.pdsh_runs.unwrap_or(runs).min(runs),
            ansible_runs: o
                .ansible_runs
                .or(if q { Some(1) } else { None })
                .map(|r| r.min(runs)),
            big_bytes: o.big_mb.unwrap_or(if q { 20 } else { 100 }) * 1_000_000,
            huge_bytes: o.huge_mb.unwrap_or(if q { 200 } else { 1000 }) * 1_000_000,
            per_host_bytes: o.per_host_mb * 1_000_000,
            quick: q,
            addrs_per_sshd: usize::from(o.addrs_per_sshd),
            ssh_user: o.ssh_user.clone(),
            quiet_max_s: o.quiet_max_s,
            ansible_sizes: o.ansible_sizes.clone(),
            dial_in: !o.no_dial_in,
        }
    }
}
