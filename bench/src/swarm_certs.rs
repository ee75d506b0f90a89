//! The swarm's certificates, made in-process with the controller's pki library (`rjob pki`'s
//! own code): a CA with the controller's client certificate (`pki/`), and one agent
//! certificate per agent (`agents/NAME/`, NAME its only SAN), issued on every core at once.
//! They are kept in the directory across runs: only the ones missing are issued.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

/// The controller's certificate name; the agents' policy lets it run as the bench's user.
pub const CONTROLLER: &str = "rjob-controller";

/// The name of agent `i` (from 1): `swarm00001`, ...
pub fn agent_name(i: usize) -> String {
    format!("swarm{i:05}")
}

/// All `n` agents as one `-H` range.
pub fn host_range(n: usize) -> String {
    if n == 1 {
        agent_name(1)
    } else {
        format!("swarm[{}-{}]", &agent_name(1)[5..], &agent_name(n)[5..])
    }
}

/// The controller's identity directory (`RJOB_IDENTITY`, `rjob serve --identity`).
pub fn pki_dir(dir: &Path) -> PathBuf {
    dir.join("pki")
}

/// Agent `name`'s certificate directory (`agent.crt`, `agent.key`, `ca.crt`).
pub fn agent_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("agents").join(name)
}

/// Makes the CA when missing and issues the agent certificates that are missing; answers how
/// many were issued and how long that took.
pub fn ensure(dir: &Path, n: usize) -> Result<(usize, f64)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = pki_dir(dir);
    if !pki.join(rjob::pki::CA_KEY).is_file() {
        rjob::pki::init(&pki, CONTROLLER).context("making the swarm's CA")?;
    }
    let missing: Vec<String> = (1..=n)
        .map(agent_name)
        .filter(|name| !agent_dir(dir, name).join(rjob::pki::AGENT_KEY).is_file())
        .collect();
    let started = Instant::now();
    if missing.is_empty() {
        return Ok((0, 0.0));
    }
    eprintln!(
        "==> issuing {} agent certificates in {}",
        missing.len(),
        dir.display()
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = missing.get(i) else {
                            return failed;
                        };
                        let out = agent_dir(dir, name);
                        if let Err(e) = rjob::pki::issue_agent(&pki, name, std::slice::from_ref(name), &out) {
                            failed.push(format!("{name}: {e}"));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if let Some(first) = failures.first() {
        bail!(
            "{} agent certificates could not be issued; the first: {first}",
            failures.len()
        );
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!("    issued {} in {took:.1}s", missing.len());
    Ok((missing.len(), took))
}

/// The policy every swarm agent loads: the controller may run as the bench's own user.
pub fn write_policy(dir: &Path) -> Result<PathBuf> {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!("[[allow]]\nidentity = \"{CONTROLLER}\"\nusers = [\"{me}\"]\ndefault = \"{me}\"\n"),
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_names_every_agent() {
        assert_eq!(agent_name(7), "swarm00007");
        assert_eq!(host_range(10000), "swarm[00001-10000]");
        assert_eq!(host_range(1), "swarm00001");
    }
}
