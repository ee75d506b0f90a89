//! `rjob daemon status` and `rjob daemon stop`.

use rjob_proto::v1 as pb;
use serde_json::json;

use super::{from_status, DaemonAddr};
use crate::choices::OutputFormat;
use crate::cli::DaemonCommand;
use crate::state::State;

/// Neither subcommand starts a daemon: with none running, status says so (exit 1) and stop
/// has nothing to do (exit 0).
pub async fn run(command: &DaemonCommand, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let Some(mut client) = crate::daemon::client::connect_running(&daemon.state_dir).await? else {
        let dir = crate::escape::text(&daemon.state_dir.display().to_string()).into_owned();
        eprintln!("rjob: no daemon runs for {dir} (rjob serve starts one)");
        return Ok(match command {
            DaemonCommand::Status(_) => crate::EXIT_FAILED,
            DaemonCommand::Stop => 0,
        });
    };
    let mut out = super::stdout::Out::new();
    match command {
        DaemonCommand::Status(args) => {
            let s = client
                .daemon_status(pb::DaemonStatusRequest {})
                .await
                .map_err(from_status)?
                .into_inner();
            let jobs: Vec<(State, u32)> = s.jobs.iter().map(|c| (State::from_pb(c.state), c.jobs)).collect();
            let health = (!s.store_health.is_empty()).then_some(s.store_health.as_str());
            match args.output {
                OutputFormat::Json => out.line(
                    &json!({
                        "pid": s.pid,
                        "started_at": crate::timestamp::time_text(s.started_at_ms),
                        "uptime_ms": s.uptime_ms,
                        "store_path": s.store_path,
                        "store_bytes": s.store_bytes,
                        "jobs": jobs.iter().map(|(st, n)| (st.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                        "identity_loaded": s.identity_loaded,
                        "store_health": health,
                        "agent_listen": (!s.agent_listen.is_empty()).then_some(&s.agent_listen),
                        "connected": s.connected.iter().map(|c| json!({
                            "host": c.name,
                            "since": crate::timestamp::time_text(c.since_ms),
                            "peer": c.peer,
                        })).collect::<Vec<_>>(),
                    })
                    .to_string(),
                )?,
                OutputFormat::Text => {
                    let uptime = humantime::format_duration(std::time::Duration::from_secs(s.uptime_ms / 1000));
                    let counts: Vec<String> = jobs.iter().map(|(st, n)| format!("{n} {st}")).collect();
                    let lines = [
                        format!("pid        {}", s.pid),
                        format!("uptime     {uptime} (since {})", crate::timestamp::time_text(s.started_at_ms)),
                        format!("store      {} ({} bytes)", crate::escape::text(&s.store_path), s.store_bytes),
                        format!("jobs       {}", if counts.is_empty() { "none".to_string() } else { counts.join(", ") }),
                        format!(
                            "identity   {}",
                            if s.identity_loaded { "loaded" } else { "none (remote jobs need one: rjob pki init)" }
                        ),
                        format!("health     {}", crate::escape::text(health.unwrap_or("ok"))),
                    ];
                    for line in lines {
                        out.line(&line)?;
                    }
                    if !s.agent_listen.is_empty() {
                        out.line(&format!(
                            "agents     {} dialled in, on {}",
                            s.connected.len(),
                            crate::escape::text(&s.agent_listen)
                        ))?;
                        for c in &s.connected {
                            out.line(&format!(
                                "           {} from {} since {}",
                                crate::escape::text(&c.name),
                                crate::escape::text(&c.peer),
                                crate::timestamp::time_text(c.since_ms)
                            ))?;
                        }
                    }
                }
            }
        }
        DaemonCommand::Stop => {
            let r = client
                .stop_daemon(pb::StopDaemonRequest {})
                .await
                .map_err(from_status)?
                .into_inner();
            out.line(&format!(
                "rjob: the daemon is stopping; {} running child job(s) go on on their agents (rjob serve picks them up)",
                r.running_children
            ))?;
        }
    }
    Ok(out.status(0))
}
