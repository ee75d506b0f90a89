//! The command line of each tool for one measured run, and how the report shows it.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::bench::Bench;

impl Bench {
    pub fn rjob_cmd(&self, n: usize, throttle: usize, script: &str) -> (Command, String) {
        let mut cmd = Command::new(self.bin.join("rjob"));
        // A state directory with no daemon: a cold invoke dials every agent itself (with the
        // job daemon's, it would go through it, the agents having dialled in to it).
        cmd.env("RJOB_IDENTITY", &self.agents.pki)
            .env("RJOB_STATE_DIR", self.work.join("no-daemon"))
            .arg("invoke")
            .arg("-H")
            .arg(self.agents.hosts(n))
            .arg("--throttle-limit")
            .arg(throttle.to_string())
            .arg("--script")
            .arg(script);
        let shown = format!("rjob invoke -H <{n} agents> --throttle-limit {throttle} --script '{script}'");
        (cmd, shown)
    }

    pub fn floor_cmd(&self, n: usize, k: usize, script: &str) -> (Command, String) {
        let mut cmd = Command::new(&self.self_exe);
        cmd.arg("__floor")
            .arg(n.to_string())
            .arg(k.to_string())
            .arg(script);
        (
            cmd,
            format!("{n} local spawns of sh -c '{script}', {k} at a time"),
        )
    }

    /// The same script run locally `n` times at once, its output through a pipe to /dev/null:
    /// what moving the output costs without the network (the agent, too, reads a pipe).
    pub fn pipe_floor_cmd(&self, n: usize, script: &str) -> (Command, String) {
        let piped = format!("{script} | cat");
        let mut cmd = Command::new(&self.self_exe);
        cmd.arg("__floor")
            .arg(n.to_string())
            .arg(n.to_string())
            .arg(&piped);
        (
            cmd,
            format!("{n} local runs at once of sh -c '{piped}' > /dev/null"),
        )
    }

    pub fn pdsh_cmd(&self, n: usize, k: usize, script: &str) -> Option<(Command, String)> {
        let s = self.sshds.as_ref()?;
        let mut cmd = Command::new("pdsh");
        cmd.env("PDSH_SSH_ARGS", format!("-F {} %h", s.ssh_config.display()))
            .env_remove("PDSH_SSH_ARGS_APPEND")
            .args(["-R", "ssh", "-S", "-t", "60", "-f", &k.to_string(), "-w"])
            .arg(s.host_list(n))
            .arg(script);
        let shown = format!("pdsh -R ssh -S -t 60 -f {k} -w <{n} sshd addresses> '{script}'");
        Some((cmd, shown))
    }

    pub fn ansible_cmd(
        &self,
        n: usize,
        k: usize,
        module: &str,
        script: &str,
        run_dir: &Path,
    ) -> Result<Option<(Command, String)>> {
        let (Some(s), Ok(ansible)) = (self.sshds.as_ref(), self.peers.ansible.as_ref()) else {
            return Ok(None);
        };
        let inv = s.inventory(n)?;
        let home = s.dir.join("ansible-home");
        std::fs::create_dir_all(&home)?;
        let cfg = s.dir.join("ansible.cfg");
        if !cfg.is_file() {
            std::fs::write(&cfg, "[defaults]\nhost_key_checking = False\n")?;
        }
        let mut cmd = Command::new(ansible);
        cmd.env("ANSIBLE_CONFIG", &cfg)
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            // A fresh ControlPersist directory per run: every run starts cold, like rjob's.
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", run_dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
            .env("LC_ALL", "C.UTF-8")
            .arg("all")
            .arg("-i")
            .arg(&inv)
            .args(["-m", module, "-a", script, "-f", &k.to_string()]);
        let shown = format!("ansible all -i <{n} sshd addresses> -m {module} -a '{script}' -f {k}");
        Ok(Some((cmd, shown)))
    }
}
