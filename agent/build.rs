//! With the `pam` feature (the default), stops the build with one line when libpam cannot be
//! linked, instead of a raw linker error much later.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=LIBRARY_PATH");
    if std::env::var_os("CARGO_FEATURE_PAM").is_none() {
        return;
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux") {
        return; // only Linux is probed; elsewhere the linker has the last word
    }
    if !lib_dirs(&target).iter().any(|d| has_libpam(d)) {
        println!(
            "cargo::error=libpam is missing: install libpam0g-dev (Debian, Ubuntu; pam-devel on Fedora), or build without password checks: cargo build --no-default-features"
        );
    }
}

fn has_libpam(dir: &Path) -> bool {
    // A file (a symlink to one counts): what the linker can open.
    dir.join("libpam.so").is_file() || dir.join("libpam.a").is_file()
}

/// Where the linker looks for libraries: LIBRARY_PATH, then the usual and multiarch places.
fn lib_dirs(target: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let arch = target.split('-').next().unwrap_or("");
    let multiarch = match arch {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "i686" | "i586" => "i386-linux-gnu",
        "armv7" => "arm-linux-gnueabihf",
        "riscv64gc" => "riscv64-linux-gnu",
        "powerpc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => "",
    };
    for base in ["/lib", "/usr/lib", "/usr/local/lib"] {
        if !multiarch.is_empty() {
            dirs.push(Path::new(base).join(multiarch));
        }
        dirs.push(PathBuf::from(base));
        dirs.push(PathBuf::from(format!("{base}64")));
    }
    dirs
}
