//! The fan-out tables: wall time and CPU, each tool beside rjob.

use std::fmt::Write as _;

use super::cells::{cell, cpu, ratio_between, ratio_cell, target_cpu, total_cpu, wall};
use crate::stats::{fmt_ratio, fmt_time, Scenario, Tool};

pub fn tables(md: &mut String, fan: &[&Scenario]) {
    let _ = writeln!(md, "## Fan-out: wall time\n");
    let _ = writeln!(
        md,
        "| N | command | throttle | rjob | rjob --session (warm) | dialled-in agents | floor (local spawns) | rjob/floor | session/floor | dialled-in/floor | pdsh -R ssh | rjob/pdsh | ssh, warm masters | rjob/ssh-warm | ansible | rjob/ansible |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in fan {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.script,
            sc.throttle,
            cell(sc.get(Tool::Rjob), wall, fmt_time),
            cell(sc.get(Tool::Session), wall, fmt_time),
            cell(sc.get(Tool::DialledIn), wall, fmt_time),
            cell(sc.get(Tool::Floor), wall, fmt_time),
            ratio_cell(sc, Tool::Floor, wall),
            fmt_ratio(ratio_between(sc, Tool::Session, Tool::Floor, wall)),
            fmt_ratio(ratio_between(sc, Tool::DialledIn, Tool::Floor, wall)),
            cell(sc.get(Tool::Pdsh), wall, fmt_time),
            ratio_cell(sc, Tool::Pdsh, wall),
            cell(sc.get(Tool::SshWarm), wall, fmt_time),
            ratio_cell(sc, Tool::SshWarm, wall),
            cell(sc.get(Tool::Ansible), wall, fmt_time),
            ratio_cell(sc, Tool::Ansible, wall),
        );
    }
    let _ = writeln!(md, "\n## Fan-out: CPU (user+sys)\n");
    let _ = writeln!(
        md,
        "| N | command | throttle | rjob | agents | pdsh+ssh | sshd | rjob/pdsh | ssh-warm | sshd | rjob/ssh-warm | ansible | sshd | rjob/ansible | rjob+agents / pdsh+sshd | floor |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in fan {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.script,
            sc.throttle,
            cell(sc.get(Tool::Rjob), cpu, fmt_time),
            cell(sc.get(Tool::Rjob), target_cpu, fmt_time),
            cell(sc.get(Tool::Pdsh), cpu, fmt_time),
            cell(sc.get(Tool::Pdsh), target_cpu, fmt_time),
            ratio_cell(sc, Tool::Pdsh, cpu),
            cell(sc.get(Tool::SshWarm), cpu, fmt_time),
            cell(sc.get(Tool::SshWarm), target_cpu, fmt_time),
            ratio_cell(sc, Tool::SshWarm, cpu),
            cell(sc.get(Tool::Ansible), cpu, fmt_time),
            cell(sc.get(Tool::Ansible), target_cpu, fmt_time),
            ratio_cell(sc, Tool::Ansible, cpu),
            ratio_cell(sc, Tool::Pdsh, total_cpu),
            cell(sc.get(Tool::Floor), cpu, fmt_time),
        );
    }
}
