//! Nothing of a run outlives it: how the agent keeps hold of every process a run starts.
//!
//! - **cgroup** ([`crate::cgroup`]): each run in a cgroup v2 of its own, killed with
//!   `cgroup.kill`; chosen where the agent's own cgroup is delegated to it.
//! - **subreaper** ([`crate::subreaper`]): otherwise the agent is a child subreaper and kills
//!   what reparents to it from ended runs.
//!
//! Either way a run also keeps its own process group, signalled as before (stop, suspend).

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::cgroup::{CgroupBase, RunCgroup};
use crate::subreaper;

/// `containment` in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// cgroup where the agent's cgroup is delegated to it, else subreaper.
    #[default]
    Auto,
    /// cgroup or refuse to start.
    Cgroup,
    /// Always the subreaper, even where cgroups would work.
    Subreaper,
}

#[derive(Debug, thiserror::Error)]
#[error("containment = \"cgroup\", but runs cannot have cgroups here: {0}; use containment = \"auto\" or \"subreaper\", or start the agent in a cgroup delegated to it (systemd: Delegate=yes)")]
pub struct Unavailable(String);

/// The mechanism in force, for the whole process.
#[derive(Debug)]
pub enum Containment {
    Cgroup(CgroupBase),
    Subreaper,
}

impl Containment {
    /// Picks the mechanism (and, for the subreaper, makes this process one), and logs which.
    pub fn init(mode: Mode) -> Result<Arc<Containment>, Unavailable> {
        let detected = match mode {
            Mode::Subreaper => Err("containment = \"subreaper\" in the config".to_string()),
            Mode::Auto | Mode::Cgroup => CgroupBase::detect(),
        };
        let containment = match (detected, mode) {
            (Ok(base), _) => {
                tracing::info!(
                    cgroups = %base.dir().display(),
                    "containment: cgroup v2, one cgroup a run (killed with cgroup.kill at its end, stop or timeout)"
                );
                Containment::Cgroup(base)
            }
            (Err(why), Mode::Cgroup) => return Err(Unavailable(why)),
            (Err(why), _) => {
                if let Err(e) = subreaper::enable() {
                    tracing::warn!(error = %e, "cannot become a child subreaper");
                }
                tracing::info!(
                    reason = %why,
                    "containment: child subreaper (what leaves a run's process group is killed once its run has ended)"
                );
                start_periodic_sweep();
                Containment::Subreaper
            }
        };
        Ok(Arc::new(containment))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Containment::Cgroup(_) => "cgroup",
            Containment::Subreaper => "subreaper",
        }
    }

    /// What a new run gets before its process starts.
    pub fn prepare(&self, run_id: &str) -> std::io::Result<Contained> {
        Ok(match self {
            Containment::Cgroup(base) => Contained::Cgroup(base.create(run_id)?),
            Containment::Subreaper => Contained::Subreaper,
        })
    }

    /// At start: kills what is left of a run an earlier agent process had, if it is provably
    /// that run's (in its cgroup). True when the run's cgroup was found (and is now gone).
    pub fn kill_leftovers(&self, run_id: &str) -> bool {
        let Containment::Cgroup(base) = self else {
            return false;
        };
        let Some(cgroup) = base.existing(run_id) else {
            return false;
        };
        let had = cgroup.populated();
        if let Err(e) = cgroup.kill() {
            tracing::warn!(run = run_id, error = %e, "cannot kill what is left of the run");
        }
        let dir = cgroup.dir().to_owned();
        if let Err(e) = cgroup.kill_and_remove(Duration::from_secs(2)) {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove the run's cgroup");
        }
        if had {
            tracing::info!(run = run_id, "killed what was left of the run in its cgroup");
        }
        true
    }
}

/// A run's share of the containment.
#[derive(Debug)]
pub enum Contained {
    Cgroup(RunCgroup),
    Subreaper,
}

impl Contained {
    /// The `cgroup.procs` the child moves itself into before exec.
    pub fn cgroup_procs_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Contained::Cgroup(c) => c.procs_fd(),
            Contained::Subreaper => None,
        }
    }

    pub fn is_subreaper(&self) -> bool {
        matches!(self, Contained::Subreaper)
    }

    /// A stop or timeout: `signal`, sent to the run's process group `pgid`, also reaches the
    /// processes of the run that left it.
    pub fn signal_others(&self, signal: Signal, pgid: u32) {
        if let (Contained::Cgroup(c), Ok(pgid)) = (self, i32::try_from(pgid)) {
            c.signal_others(signal, pgid);
        }
    }

    /// The run must die now (its kill timer fired, or its output cannot be kept): kills
    /// every process of its cgroup. The subreaper has nothing to add to the group's SIGKILL
    /// while the run's main process lives.
    pub fn kill_now(&self) {
        if let Contained::Cgroup(c) = self {
            if let Err(e) = c.kill() {
                tracing::warn!(cgroup = %c.dir().display(), error = %e, "cannot kill the run's cgroup");
            }
        }
    }

    /// The run's main process has exited (and was reaped): kills whatever is left of the run.
    pub fn ended(&self, main_pid: u32) {
        match self {
            Contained::Cgroup(_) => self.kill_now(),
            Contained::Subreaper => {
                subreaper::unregister(main_pid);
                subreaper::sweep();
            }
        }
    }

    /// Waits until nothing is left in the run's cgroup, or `until`. (The subreaper cannot
    /// tell which orphans are this run's before it ends: it has nothing to wait for.)
    pub async fn drain(&self, until: tokio::time::Instant) {
        let Contained::Cgroup(c) = self else {
            return;
        };
        while c.populated() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Looks again for what is left of an ended run (a process reparented late).
    pub fn sweep_again(&self) {
        match self {
            Contained::Cgroup(_) => self.kill_now(),
            Contained::Subreaper => {
                subreaper::sweep();
            }
        }
    }

    /// After the run: its cgroup is removed once empty (in the blocking pool).
    pub fn release(self) {
        let Contained::Cgroup(c) = self else {
            return;
        };
        let dir = c.dir().to_owned();
        let remove = move || {
            if let Err(e) = c.kill_and_remove(Duration::from_secs(10)) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove the run's cgroup");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Orphans that exit on their own, or that were found late, are reaped and judged every few
/// seconds.
fn start_periodic_sweep() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    STARTED.call_once(|| {
        rt.spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                subreaper::sweep();
            }
        });
    });
}
