//! `rjob completions SHELL` (clap_complete) and `rjob man DIR` (clap_mangen).
//!
//! The bash and fish scripts complete job names (`rjob wait <TAB>`) and inventory groups
//! (`-H @<TAB>`) as they are now: they call the hidden `rjob __complete-jobs` (which asks a
//! running daemon, and never starts one) and `rjob __complete-groups`.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// The subcommands whose operands are jobs.
const JOB_COMMANDS: &str = "jobs wait receive watch stop suspend resume remove";

const BASH_DYNAMIC: &str = r#"
# Job names and inventory groups, as they are now.
_rjob_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    if [[ "$cur" == @* ]]; then
        COMPREPLY=( $(compgen -W "$(rjob __complete-groups 2>/dev/null | sed 's/^/@/')" -- "$cur") )
        return 0
    fi
    if [[ "$cur" != -* && " JOB_COMMANDS " == *" ${COMP_WORDS[1]} "* && $COMP_CWORD -ge 2 ]]; then
        local prev="${COMP_WORDS[COMP_CWORD-1]}"
        if [[ "$prev" != -* || "$prev" == --* && "$prev" == *=* ]]; then
            COMPREPLY=( $(compgen -W "$(rjob __complete-jobs 2>/dev/null)" -- "$cur") )
            return 0
        fi
    fi
    _rjob "$@"
}
complete -F _rjob_dynamic -o bashdefault -o default rjob
"#;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rjob", &mut script);
    match shell {
        Shell::Bash => {
            script.extend_from_slice(BASH_DYNAMIC.replace("JOB_COMMANDS", JOB_COMMANDS).as_bytes())
        }
        Shell::Fish => {
            let mut extra = String::from("\n# Job names and inventory groups, as they are now.\n");
            extra.push_str(&format!(
                "complete -c rjob -n '__fish_seen_subcommand_from {JOB_COMMANDS}' -f -a '(rjob __complete-jobs 2>/dev/null)'\n"
            ));
            extra.push_str(
                "complete -c rjob -s H -l hosts -f -a '(rjob __complete-groups 2>/dev/null | sed \"s/^/@/\")'\n",
            );
            script.extend_from_slice(extra.as_bytes());
        }
        _ => {}
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&script).and_then(|()| out.flush());
    Ok(0)
}

/// Writes `rjob.1` and one page per subcommand (`rjob-invoke.1`, ...) into `dir`.
pub fn man(dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
    println!("wrote man pages to {}", dir.display());
    Ok(0)
}

/// `rjob __complete-groups`: the inventory's groups, one a line; nothing when there is none.
pub fn groups() -> u8 {
    if let Some((path, _)) = &crate::config::get().inventory {
        if let Ok(inventory) = crate::inventory::Inventory::load(path) {
            let mut out = std::io::stdout().lock();
            for name in inventory.groups.keys() {
                let _ = writeln!(out, "{name}");
            }
        }
    }
    0
}

/// `rjob __complete-jobs`: the names of the jobs a running daemon keeps, one a line.
pub async fn jobs(state_dir: &Path) -> u8 {
    let Ok(Some(mut client)) = crate::daemon::client::connect_running(state_dir).await else {
        return 0;
    };
    let Ok(jobs) = super::select::expand(&mut client, &[]).await else {
        return 0;
    };
    let mut names: Vec<String> = jobs
        .into_iter()
        .map(|j| j.name)
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    let mut out = std::io::stdout().lock();
    for name in names {
        let _ = writeln!(out, "{name}");
    }
    0
}
