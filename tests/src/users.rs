//! Real users and PAM services for the tests that run scripts as another user or check
//! passwords. Everything here needs root (CI has it) and is idempotent: a user or service
//! left by an earlier run is reused.

use std::path::Path;
use std::process::Command;

use crate::ran;

/// Fails the test at once, saying why, unless it runs as root.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{why}: run these tests as root (CI does)"
    );
}

/// Runs `script` with `sh -c`; it must succeed.
pub fn sh(script: &str) {
    let out = ran(Command::new("sh").args(["-c", script]));
    assert_eq!(out.code, 0, "{script}: {out}");
}

/// A user with a home and `/bin/sh`, created when missing; its password set when given.
pub fn ensure_user(user: &str, password: Option<&str>) {
    sh(&format!(
        "id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}"
    ));
    if let Some(password) = password {
        sh(&format!("echo '{user}:{password}' | chpasswd"));
    }
}

/// `/etc/pam.d/SERVICE`: passwords checked by `pam_unix` with no delay after a failure (the
/// agent's own slow-down is what the tests measure). `tests` names the tests that use it.
pub fn pam_service(service: &str, tests: &str) {
    std::fs::write(
        Path::new("/etc/pam.d").join(service),
        format!("# rjob integration tests ({tests})\nauth required pam_unix.so nodelay\naccount required pam_unix.so\n"),
    )
    .expect("write the PAM service file");
}
