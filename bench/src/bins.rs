//! The binaries under test: rjob and rjob-agent, built with the benchmark's own profile.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The workspace's root directory (where `cargo build` runs).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `bin_dir`, or rjob and rjob-agent built with the same profile and target directory.
pub fn build_bins(bin_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = bin_dir {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .context("no directory of the executable")?
        .to_path_buf();
    let target_dir = profile_dir.parent().context("no target directory")?.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!("rjob-bench: WARNING: not a release build; run with `cargo run --release -p rjob-bench`");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "rjob", "-p", "rjob-agent"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "==> building rjob and rjob-agent ({})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of rjob and rjob-agent failed");
    }
    Ok(profile_dir)
}
