//! `--serve-only DIR`: a fleet to point `rjob` (or perf) at by hand.

use std::path::Path;

use anyhow::Result;

use crate::fleet::{self, Agents};

/// Starts `n` agents, writes where they are into `dir`, and waits for stdin to close.
pub fn serve_only(bin: &Path, dir: &Path, n: usize, port: u16) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("rjob-bench-serve-")
        .tempdir_in("/tmp")?;
    let agents = Agents::start(bin, &tmp.path().join("agents"), &fleet::loopback_addrs(n), port)?;
    std::fs::write(dir.join("hosts.txt"), agents.hosts(n).replace(',', "\n") + "\n")?;
    std::fs::write(
        dir.join("env"),
        format!("export RJOB_IDENTITY={}\n", agents.pki.display()),
    )?;
    let pids: Vec<String> = agents.pids(n).iter().map(ToString::to_string).collect();
    std::fs::write(dir.join("agent-pids"), pids.join("\n") + "\n")?;
    eprintln!(
        "==> {n} agents up; hosts in {0}/hosts.txt, `. {0}/env` for RJOB_IDENTITY, pids in {0}/agent-pids; close stdin (Ctrl-D) or Ctrl-C to stop",
        dir.display()
    );
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
    drop(agents);
    Ok(())
}
