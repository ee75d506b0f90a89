//! `rjob session new|list|remove` and `rjob invoke --session NAME`, CLI side. A synchronous
//! invoke over a session is run by the daemon ([`crate::daemon::invoke`]): [`relay`] hands
//! its events to the same printer as a direct `rjob invoke`, and Ctrl-C's stop to the daemon.

use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use super::{from_status, DaemonAddr};
use crate::child::Desired;
use crate::cli::{InvokeArgs, OutputFormat, SessionCommand, SessionListArgs, SessionNewArgs};
use crate::daemon::client::DaemonClient;
use crate::hosts::{self, Host};
use crate::invoke::{ChildEvent, Invocation};
use crate::records::{SessionHostRecord, SessionRecord, SessionTag};
use crate::UsageError;

pub async fn run(command: &SessionCommand, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    match command {
        SessionCommand::New(args) => new(args, daemon).await,
        SessionCommand::List(args) => list(args, daemon).await,
        SessionCommand::Remove { name } => {
            let mut client = daemon.connect().await?;
            let request = pb::RemoveSessionRequest { name: name.clone() };
            let removed = client
                .remove_session(request)
                .await
                .map_err(from_status)?
                .into_inner();
            let mut out = super::stdout::Out::new();
            out.line(&format!(
                "Removed session {} ({} hosts)",
                crate::escape::text(&removed.name),
                removed.hosts.len()
            ))?;
            Ok(out.status(0))
        }
    }
}

async fn new(args: &SessionNewArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut specs = args.hosts.clone();
    if let Some(path) = &args.hosts_file {
        specs.extend(hosts::parse_hosts_file(path).map_err(|e| UsageError(e.to_string()))?);
    }
    let hosts = crate::inventory::select::hosts(&specs, &args.exclude)?;
    crate::pool::check_name(&args.name).map_err(|e| UsageError(e.to_string()))?;
    if args.connect_timeout.is_zero() {
        return Err(
            UsageError("--connect-timeout must be more than 0: write a duration like 5s".into()).into(),
        );
    }
    let mut client = daemon.connect().await?;
    let request = pb::NewSessionRequest {
        name: args.name.clone(),
        hosts: hosts
            .iter()
            .map(|h| pb::HostAddr {
                name: h.name.clone(),
                port: u32::from(h.port),
                user: String::new(),
            })
            .collect(),
        throttle_limit: args.throttle_limit,
        connect_timeout_ms: u64::try_from(args.connect_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let info = client
        .new_session(request)
        .await
        .map_err(from_status)?
        .into_inner();
    let record = record(&info, crate::clock::now_ms());
    let mut out = super::stdout::Out::new();
    match args.output {
        OutputFormat::Json => out.line(&serde_json::to_string(&record)?)?,
        OutputFormat::Text => out.line(&format!(
            "Session {}: {} hosts, {} connected",
            crate::escape::text(&record.name),
            record.hosts.len(),
            record.connected
        ))?,
    }
    for host in record.hosts.iter().filter(|h| !h.connected) {
        let reason = host.reason.as_deref().unwrap_or("not connected");
        crate::progress::eprintln(&format!("rjob: {}: {}", host.host, crate::escape::text(reason)));
    }
    // Hosts that could not be reached are kept (and redialled): exit 4 says so.
    let code = if record.disconnected > 0 {
        crate::status::EXIT_UNREACHABLE
    } else {
        0
    };
    Ok(out.status(code))
}

async fn list(args: &SessionListArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let request = pb::ListSessionsRequest {
        names: args.names.clone(),
    };
    let sessions = client
        .list_sessions(request)
        .await
        .map_err(from_status)?
        .into_inner()
        .sessions;
    let now = crate::clock::now_ms();
    let records: Vec<SessionRecord> = sessions.iter().map(|s| record(s, now)).collect();
    let mut out = super::stdout::Out::new();
    match args.output {
        OutputFormat::Json => {
            for r in &records {
                out.line(&serde_json::to_string(r)?)?;
            }
        }
        OutputFormat::Text => out.print(&table(&sessions, &records, args.hosts))?,
    }
    Ok(out.status(0))
}

/// `rjob session list`'s table: a row per session, its hosts folded; with `hosts`, a line
/// per host under it.
fn table(sessions: &[pb::SessionInfo], records: &[SessionRecord], per_host: bool) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "HOSTS".to_string(),
        "CONNECTED".to_string(),
        "DISCONNECTED".to_string(),
        "AGE".to_string(),
    ]];
    for r in records {
        rows.push([
            crate::escape::text(&r.name).into_owned(),
            r.hosts.len().to_string(),
            r.connected.to_string(),
            r.disconnected.to_string(),
            age_text(Duration::from_millis(r.age_ms)),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for (i, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            text.push_str(&format!("{cell:<w$}  ", w = widths[c]));
        }
        if let Some(session) = i.checked_sub(1).and_then(|i| sessions.get(i)) {
            let hosts = hosts_of_info(session);
            text.push_str(&hosts::fold::fold_hosts(&hosts, true));
        } else {
            text.push_str("HOST LIST");
        }
        text = text.trim_end().to_string();
        text.push('\n');
        if per_host {
            if let Some(r) = i.checked_sub(1).and_then(|i| records.get(i)) {
                for h in &r.hosts {
                    let state = match &h.reason {
                        None => "connected".to_string(),
                        Some(why) => format!("disconnected: {}", crate::escape::text(why)),
                    };
                    text.push_str(&format!("  {}  {state}\n", h.host));
                }
            }
        }
    }
    text
}

/// An age to the second, its largest two units (`3m 12s`, `2h 5m`).
fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    let parts = humantime::format_duration(Duration::from_secs(secs)).to_string();
    parts.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

fn hosts_of_info(info: &pb::SessionInfo) -> Vec<Host> {
    info.hosts
        .iter()
        .filter_map(|h| h.host.as_ref())
        .map(|h| Host {
            name: h.name.clone(),
            port: u16::try_from(h.port).unwrap_or(0),
        })
        .collect()
}

/// A session as `--output json` prints it.
fn record(info: &pb::SessionInfo, now_ms: i64) -> SessionRecord {
    let hosts: Vec<SessionHostRecord> = hosts_of_info(info)
        .iter()
        .zip(&info.hosts)
        .map(|(host, h)| SessionHostRecord {
            host: host.label(),
            connected: h.connected,
            reason: (!h.connected).then(|| {
                if h.reason.is_empty() {
                    "not connected".to_string()
                } else {
                    h.reason.clone()
                }
            }),
        })
        .collect();
    let connected = hosts.iter().filter(|h| h.connected).count();
    SessionRecord {
        kind: SessionTag::Tag,
        name: info.name.clone(),
        builtin: info.builtin,
        connected,
        disconnected: hosts.len() - connected,
        throttle_limit: info.throttle_limit,
        created_at: crate::records::non_empty(&crate::timestamp::time_text(info.created_at_ms)),
        age_ms: u64::try_from(now_ms.saturating_sub(info.created_at_ms)).unwrap_or(0),
        hosts,
    }
}

/// The hosts of session `name`, as the daemon lists them; an unknown session is a usage
/// error naming it (and `rjob session list`).
pub async fn session_hosts(client: &mut DaemonClient, name: &str) -> anyhow::Result<Vec<Host>> {
    let request = pb::ListSessionsRequest {
        names: vec![name.to_string()],
    };
    let sessions = client
        .list_sessions(request)
        .await
        .map_err(from_status)?
        .into_inner()
        .sessions;
    match sessions.first() {
        Some(info) => Ok(hosts_of_info(info)),
        None => Err(UsageError(format!("no session {name:?}: `rjob session list` lists them")).into()),
    }
}

/// `rjob invoke --session NAME`, synchronous or `--as-job`.
pub async fn invoke(args: &InvokeArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let name = args.session.clone().unwrap_or_default();
    let mut client = daemon.connect().await?;
    let hosts = session_hosts(&mut client, &name).await?;
    if args.as_job {
        return super::start::invoke_as_job_over(args, &mut client, &name, &hosts).await;
    }
    let via = crate::invoke::Via::Daemon {
        client,
        session: name,
    };
    // A session's hosts run as the invoke's --user (or the agents' default).
    let users = vec![None; hosts.len()];
    Ok(crate::invoke::run_via(args, hosts, users, via).await?)
}

/// Runs `invocation` in the daemon over `session` (none: to the invocation's hosts), its
/// events to `events` (the printer);
/// a stop in `desired` (Ctrl-C) goes to the daemon, which stops the runs. Returns once the
/// daemon has sent every host's end, or with why the stream broke.
pub async fn relay(
    mut client: DaemonClient,
    session: &str,
    invocation: Invocation,
    events: mpsc::Sender<ChildEvent>,
    mut desired: watch::Receiver<Desired>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(4);
    // With no session, the hosts themselves (a routed `rjob invoke -H ...`).
    let targets = if session.is_empty() {
        invocation
            .hosts
            .iter()
            .zip(invocation.users.iter().chain(std::iter::repeat(&None)))
            .map(|(h, user)| pb::HostAddr {
                name: h.name.clone(),
                port: u32::from(h.port),
                user: user.clone().unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let request = pb::InvokeRequest {
        session: session.to_string(),
        targets,
        hosts: u32::try_from(invocation.hosts.len()).unwrap_or(u32::MAX),
        run: Some(invocation.request),
        throttle_limit: u32::try_from(invocation.throttle_limit).unwrap_or(u32::MAX),
        max_errors: invocation.max_errors,
        connect_timeout_ms: u64::try_from(invocation.connect_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let first = pb::InvokeMessage {
        message: Some(pb::invoke_message::Message::Request(request)),
    };
    tx.send(first)
        .await
        .map_err(|_| anyhow::anyhow!("the request could not be sent"))?;
    let mut stream = client
        .invoke_session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(from_status)?
        .into_inner();
    let mut watching = true;
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    if let Some(event) = crate::daemon::invoke::from_pb(event) {
                        if events.send(event).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(status) => {
                    return Err(anyhow::anyhow!(
                        "the daemon's stream broke: {}",
                        crate::connect::describe_status(&status)
                    ))
                }
            },
            changed = desired.changed(), if watching => match changed {
                Ok(()) if desired.borrow().stop => {
                    let stop = pb::InvokeMessage {
                        message: Some(pb::invoke_message::Message::Stop(pb::InvokeStop {})),
                    };
                    let _ = tx.send(stop).await;
                    watching = false;
                }
                Ok(()) => {}
                Err(_) => watching = false,
            },
        }
    }
}
