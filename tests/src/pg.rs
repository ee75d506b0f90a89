//! Throwaway PostgreSQL clusters for the tests: `initdb` into a temp dir, then `pg_ctl start`,
//! listening on a Unix socket in that dir only (no TCP port to collide on), with trust
//! authentication for the `postgres` superuser.
//!
//! - [`Cluster::shared`]: one cluster per test process, started on first use and shared by its
//!   tests; each test takes its own database with [`Cluster::database`].
//! - [`Cluster::start`]: a cluster of the test's own, for a test that stops or restarts it
//!   ([`Cluster::restart`]) and must not disturb the others. Dropping it stops it.
//!
//! initdb refuses to run as root: as root, the cluster runs as the `postgres` system user and
//! its temp dir is theirs. Every cluster is also stopped when the test process ends, however it
//! ends (a panic, `exit`, even `kill -9`): a watchdog process of the cluster's own waits for its
//! pipe from the test process to close, then stops the cluster and removes its dir.
//!
//! The binaries are found under `/usr/lib/postgresql/*/bin` (the newest), or in
//! `$RJOB_PG_BIN`, or on `PATH`. Without them every test that needs PostgreSQL fails with
//! the line that installs it.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context as _, Result};
use nix::unistd::{Gid, Uid};

/// What to run when PostgreSQL is missing.
pub const INSTALL: &str = "apt-get install -y postgresql";

/// A running throwaway cluster.
pub struct Cluster {
    bin: PathBuf,
    /// The temp dir: `data/` (the cluster), `socket/`, `postgres.log`.
    dir: PathBuf,
    /// The user the cluster runs as, when not the test's own (root's tests).
    owner: Option<(Uid, Gid)>,
    /// Its write end closes when the test process ends or the cluster is dropped.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

/// One database of a cluster, dropped with the guard.
pub struct Database<'c> {
    cluster: &'c Cluster,
    pub name: String,
}

impl Database<'_> {
    /// The connection URL (`postgres:///NAME?host=SOCKET_DIR&user=postgres`), as
    /// `rjob serve --store` takes it.
    pub fn url(&self) -> String {
        format!(
            "postgres:///{}?host={}&user=postgres",
            self.name,
            self.cluster.socket_dir().display()
        )
    }

    /// Runs SQL in this database with `psql`; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.cluster.psql(&self.name, sql)
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
    }
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

impl Cluster {
    /// The test process's shared cluster, started on first use.
    ///
    /// # Panics
    /// When it cannot be started: PostgreSQL missing (with the line that installs it), or
    /// initdb or the server failing (with their log).
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| match Cluster::start() {
            Ok(c) => c,
            Err(e) => panic!("cannot start a throwaway PostgreSQL cluster: {e:#}"),
        })
    }

    /// Starts a cluster of its own (stopped when dropped).
    pub fn start() -> Result<Cluster> {
        let bin = bin_dir()?;
        let owner = if Uid::effective().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .context("looking up the postgres user")?
                .with_context(|| {
                    format!("the tests run as root, and initdb refuses root, but there is no `postgres` user: {INSTALL}")
                })?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let template = std::env::temp_dir().join("rjob-pg-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).context("making the cluster's temp dir")?;
        let mut cluster = Cluster {
            bin,
            dir,
            owner,
            watchdog: Mutex::new(None),
        };
        std::fs::create_dir(cluster.socket_dir())?;
        if let Some((uid, gid)) = owner {
            for d in [cluster.dir.clone(), cluster.socket_dir()] {
                nix::unistd::chown(&d, Some(uid), Some(gid))
                    .with_context(|| format!("giving {} to postgres", d.display()))?;
            }
        }
        // The watchdog first, so that a failure below is cleaned up too.
        cluster.watchdog = Mutex::new(Some(cluster.spawn_watchdog()?));
        cluster.init()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The directory of the server's Unix socket (`host=` in a connection string).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A PostgreSQL binary, run as the cluster's owner, in its dir.
    fn as_owner(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin)> {
        // Reads its stdin to the end (the test process gone, or the cluster dropped), then
        // stops the server and removes the dir. Deaf to the terminal's signals, in a process
        // group of its own, so that a Ctrl-C of `cargo test` still cleans up.
        let script = r#"trap '' INT TERM HUP QUIT
cat >/dev/null
"$0/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1
rm -rf "$1""#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(&self.bin)
            .arg(&self.dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let mut child = cmd.spawn().context("starting the cluster's watchdog")?;
        let stdin = child.stdin.take().context("the watchdog's stdin")?;
        Ok((child, stdin))
    }

    fn init(&self) -> Result<()> {
        let out = self
            .as_owner("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A Unix socket only. fsync off: a test cluster outlives no machine crash, and an
        // immediate stop (a server crash) loses nothing committed without it.
        let conf = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             max_connections = 300\nshared_buffers = 32MB\n",
            self.socket_dir().display()
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))?;
        std::io::Write::write_all(&mut file, conf.as_bytes())?;
        Ok(())
    }

    fn start_server(&self) -> Result<()> {
        let out = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n--- server log\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
        Ok(())
    }

    /// Stops the server (`pg_ctl -m immediate stop` when `immediate`, as a crash would;
    /// else a fast shutdown).
    pub fn stop(&self, immediate: bool) -> Result<()> {
        let mode = if immediate { "immediate" } else { "fast" };
        let out = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", mode, "stop"])
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn start_again(&self) -> Result<()> {
        self.start_server()
    }

    /// Stops the server and starts it again: `pg_ctl -m immediate stop` when `immediate`.
    pub fn restart(&self, immediate: bool) -> Result<()> {
        self.stop(immediate)?;
        self.start_server()
    }

    /// A new, empty database of its own for one test (dropped with the guard).
    pub fn database(&self) -> Result<Database<'_>> {
        let name = format!("rjob_test_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(Database { cluster: self, name })
    }

    /// Runs SQL in database `db` with `psql`; its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let watchdog = self.watchdog.get_mut().map(Option::take);
        if let Ok(Some((mut child, stdin))) = watchdog {
            drop(stdin); // the watchdog stops the server and removes the dir
            let _ = child.wait();
        }
    }
}

/// The directory of PostgreSQL's server binaries.
fn bin_dir() -> Result<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("RJOB_PG_BIN").map(PathBuf::from) {
        if has_initdb(&dir) {
            return Ok(dir);
        }
        bail!("RJOB_PG_BIN={} holds no initdb and pg_ctl", dir.display());
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin, newest major first.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((major, bin))
        })
        .collect();
    found.sort();
    if let Some((_, dir)) = found.pop() {
        return Ok(dir);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_initdb(d));
    on_path.with_context(|| {
        format!("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `{INSTALL}` (or set RJOB_PG_BIN to their directory)")
    })
}
