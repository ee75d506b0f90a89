//! The peers rjob is compared with (pdsh over ssh, ansible): whether they can run here, and
//! cleaning up after ansible.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::opts::Opts;

/// Whether each peer can run, and if not why.
pub struct Peers {
    pub pdsh: std::result::Result<(), String>,
    pub ansible: std::result::Result<PathBuf, String>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

pub fn detect_peers(opts: &Opts) -> Peers {
    const HOW: &str = "install with `bench/setup-peers.sh` or pass --install-peers";
    if opts.no_peers {
        let why = "not measured: --no-peers".to_string();
        return Peers {
            pdsh: Err(why.clone()),
            ansible: Err(why),
        };
    }
    let mut ssh_missing = Vec::new();
    if !Path::new(crate::fleet::SSHD).is_file() {
        ssh_missing.push("sshd (openssh-server)");
    }
    if on_path("ssh").is_none() || on_path("ssh-keygen").is_none() {
        ssh_missing.push("ssh (openssh-client)");
    }
    let ssh_ok = if ssh_missing.is_empty() {
        Ok(())
    } else {
        Err(format!("SKIPPED: {} missing; {HOW}", ssh_missing.join(", ")))
    };
    let pdsh = match (&ssh_ok, on_path("pdsh")) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), None) => Err(format!("SKIPPED: pdsh is not installed; {HOW}")),
        (Ok(()), Some(_)) => Ok(()),
    };
    let ansible_path = opts
        .ansible
        .clone()
        .or_else(|| Some(PathBuf::from("/tmp/bench-venv/bin/ansible")).filter(|p| p.is_file()))
        .or_else(|| on_path("ansible"));
    let ansible = match (&ssh_ok, ansible_path) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), None) => Err(format!("SKIPPED: ansible is not installed; {HOW}")),
        (Ok(()), Some(p)) if !p.is_file() => Err(format!("SKIPPED: {} does not exist; {HOW}", p.display())),
        (Ok(()), Some(p)) => Ok(p),
    };
    Peers { pdsh, ansible }
}

/// Closes ansible's ControlPersist ssh masters (they detach, and would outlive the run).
pub fn close_ssh_masters(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            close_ssh_masters(&path);
            continue;
        }
        if let Ok(c) = Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", path.display()))
            .args(["-O", "exit", "rjob-bench-target"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            children.push(c);
        }
    }
    for mut c in children {
        let _ = c.wait();
    }
}
