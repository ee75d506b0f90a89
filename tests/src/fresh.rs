//! The binaries the tests run are the sources' own: once per test process, `rjob` and
//! `rjob-agent` in the target directory are checked to be newer than every source file of the
//! crates they come from, and built when they are not (or are missing), as the benchmark
//! builds its binaries. Concurrent test processes build one at a time (a file lock); the
//! second finds the first one's binaries fresh. A failed build fails every test that needs
//! the binaries, with cargo's output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The binaries the harness runs.
const BINARIES: [&str; 2] = ["rjob", "rjob-agent"];
/// The crates they are built from (with what those depend on in the workspace).
const SOURCE_CRATES: [&str; 3] = ["agent", "controller", "proto"];

/// The directory of fresh `rjob` and `rjob-agent` binaries (`target/debug` for a debug test
/// build); panics with cargo's output when they could not be built.
pub fn bin_dir() -> &'static Path {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CHECKED.get_or_init(ensure_fresh) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// The profile directory next to the test executable's `deps/` directory.
fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not in a target directory", exe.display()))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ensure_fresh() -> Result<PathBuf, String> {
    let dir = profile_dir()?;
    let root = workspace_root();
    if fresh(&dir, &root) {
        return Ok(dir);
    }
    // One build at a time across test processes; the ones that waited find fresh binaries.
    let lock_path = dir.join(".rjob-tests-build.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    if fresh(&dir, &root) {
        return Ok(dir);
    }
    build(&dir, &root)?;
    Ok(dir)
}

/// Whether every binary exists and is newer than every source file.
fn fresh(dir: &Path, root: &Path) -> bool {
    let Some(oldest_binary) = BINARIES
        .iter()
        .map(|b| modified(&dir.join(b)))
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().min())
    else {
        return false;
    };
    newest_source(root).is_some_and(|newest| newest < oldest_binary)
}

/// The newest modification time of the source crates' `src/**`, `Cargo.toml`, `build.rs` and
/// `.proto` files, and of the workspace's `Cargo.toml` and `Cargo.lock`.
fn newest_source(root: &Path) -> Option<SystemTime> {
    let mut files = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    for krate in SOURCE_CRATES {
        let dir = root.join(krate);
        files.push(dir.join("Cargo.toml"));
        files.push(dir.join("build.rs"));
        walk(&dir.join("src"), &mut |_| true, &mut files);
        walk(
            &dir,
            &mut |p| p.extension().is_some_and(|e| e == "proto"),
            &mut files,
        );
    }
    files.iter().filter_map(|f| modified(f)).max()
}

/// Every file below `dir` that `keep` accepts (not following links; `target` left out).
fn walk(dir: &Path, keep: &mut impl FnMut(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() && entry.file_name() != "target" => walk(&path, keep, out),
            Ok(t) if t.is_file() && keep(&path) => out.push(path),
            _ => {}
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `cargo build --bins -p rjob -p rjob-agent` into this target directory and profile.
fn build(dir: &Path, root: &Path) -> Result<(), String> {
    let target = dir
        .parent()
        .ok_or_else(|| format!("{} has no target directory", dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--bins", "-p", "rjob", "-p", "rjob-agent"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(root);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!(
        "rjob-tests: the binaries in {} are missing or older than the sources: building them",
        dir.display()
    );
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the binaries the tests run failed ({cmd:?}, {}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
