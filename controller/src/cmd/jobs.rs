//! `rjob jobs` (Get-Job): a table of jobs, or JSON.

use rjob_proto::v1 as pb;

use super::{cells, DaemonAddr};
use crate::cli::{JobsArgs, OutputFormat};
use crate::records::{ChildRecord, JobRecord};
use crate::state::State;
use crate::timestamp::time_text;

pub async fn run(args: &JobsArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let state_filter = args
        .state
        .as_deref()
        .map(super::select::parse_state)
        .transpose()?;
    let child_state = args
        .child_state
        .as_deref()
        .map(super::select::parse_state)
        .transpose()?;
    let mut client = daemon.connect().await?;
    let jobs = super::select::expand(&mut client, &args.jobs).await?;
    let mut jobs: Vec<pb::JobInfo> = jobs
        .into_iter()
        .filter(|j| {
            args.name.as_ref().is_none_or(|n| {
                if super::select::is_glob(n) {
                    super::select::glob_match(n, &j.name)
                } else {
                    &j.name == n
                }
            })
        })
        .filter(|j| args.id.is_none_or(|id| j.id == id))
        .filter(|j| state_filter.is_none_or(|s| State::from_pb(j.state) == s))
        .filter(|j| args.has_more_data.is_none_or(|m| j.has_more_data == m))
        .filter(|j| child_state.is_none_or(|s| j.children.iter().any(|c| State::from_pb(c.state) == s)))
        .collect();
    if let Some(n) = args.newest {
        jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at_ms, j.id)));
        jobs.truncate(n);
        jobs.sort_by_key(|j| j.id);
    }
    if let Some(lost) = crate::daemon::client::lost_notice() {
        eprintln!("rjob: warning: {lost}");
    }
    let mut out = super::stdout::Out::new();
    match args.output {
        OutputFormat::Json => {
            let shown: Vec<JobRecord> = jobs
                .iter()
                .map(|j| {
                    let mut record = job_record(j);
                    if let Some(s) = child_state {
                        record.children.retain(|c| c.state == s);
                    }
                    record
                })
                .collect();
            out.line(&serde_json::to_string(&shown)?)?;
        }
        OutputFormat::Text => out.print(&table_of(
            &jobs,
            args.children || child_state.is_some(),
            child_state,
        ))?,
    }
    Ok(out.status(0))
}

/// `12/40 done`.
pub fn progress(job: &pb::JobInfo) -> String {
    let done = job
        .children
        .iter()
        .filter(|c| State::from_pb(c.state).is_finished())
        .count();
    format!("{done}/{} done", job.children.len())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// Widest a name, location or host cell gets (in terminal columns); longer ones end with `…`.
const MAX_NAME: usize = 40;
/// Widest a command gets.
const MAX_COMMAND: usize = 60;
/// Widest a child's reason gets (the last column: it is cut only so one line stays one line).
const MAX_DETAIL: usize = 200;

/// The jobs as a table lined up by display width (`パッチ確認` takes ten columns), every cell
/// escaped and long ones cut with `…`; `rjob jobs --output json` has them whole.
pub fn table(jobs: &[pb::JobInfo], children: bool) -> String {
    table_of(jobs, children, None)
}

/// [`table`], with child rows only of children in `child_state` when given.
fn table_of(jobs: &[pb::JobInfo], children: bool, child_state: Option<State>) -> String {
    let mut rows = vec![[
        "Id".to_string(),
        "Name".to_string(),
        "State".to_string(),
        "HasMoreData".to_string(),
        "Location".to_string(),
        "Hosts".to_string(),
        "Progress".to_string(),
        "Command".to_string(),
    ]];
    // Lines printed under a row (after its index in `rows`): why a job still going is held up.
    let mut notes: Vec<(usize, String)> = Vec::new();
    for job in jobs {
        if let Some(why) = waiting_reason(job).filter(|_| !children) {
            notes.push((rows.len(), format!("  reason: {}", shown(why))));
        }
        rows.push([
            job.id.to_string(),
            cells::cut(&shown(&job.name), MAX_NAME),
            State::from_pb(job.state).to_string(),
            yes_no(job.has_more_data).to_string(),
            cells::cut(&shown(&location(job)), MAX_NAME),
            job.children.len().to_string(),
            progress(job),
            cells::cut(&shown(&job.command), MAX_COMMAND),
        ]);
        if children {
            for c in job
                .children
                .iter()
                .filter(|c| child_state.is_none_or(|s| State::from_pb(c.state) == s))
            {
                let mut detail = c.reason.clone();
                if let Some(code) = c.exit_code.filter(|_| detail.is_empty()) {
                    detail = format!("exit {code}");
                }
                rows.push([
                    String::new(),
                    format!("  {}", cells::cut(&shown(&c.host), MAX_NAME)),
                    State::from_pb(c.state).to_string(),
                    yes_no(c.has_more_data).to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    cells::cut(&shown(&detail), MAX_DETAIL),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| cells::width(&r[i])).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == 7 {
                    cell.clone()
                } else {
                    cells::pad(cell, widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        for (_, note) in notes.iter().filter(|(at, _)| *at == i) {
            out.push_str(note);
            out.push('\n');
        }
    }
    out
}

/// Where a job runs, as Get-Job's Location says it: `localhost`, or its hosts folded
/// (`web[01-40]`), without the port when it is the default or the same for all.
fn location(job: &pb::JobInfo) -> String {
    if job.location == "local" {
        return "localhost".to_string();
    }
    let hosts = crate::receive_view::hosts_of(job);
    let show_port = hosts.len() < 2 || !crate::hosts::fold::same_port(&hosts);
    crate::hosts::fold::fold_hosts(&hosts, show_port)
}

/// A name, host or message as the table shows it: control characters escaped.
fn shown(text: &str) -> String {
    crate::escape::text(text).into_owned()
}

/// Why a job still going is held up: the reason of its first unfinished child that has one
/// (its store cannot be written, its host is out of reach).
fn waiting_reason(job: &pb::JobInfo) -> Option<&str> {
    if State::from_pb(job.state).is_finished() {
        return None;
    }
    job.children
        .iter()
        .find(|c| !State::from_pb(c.state).is_finished() && !c.reason.is_empty())
        .map(|c| c.reason.as_str())
}

pub fn job_json(job: &pb::JobInfo) -> serde_json::Value {
    serde_json::to_value(job_record(job)).unwrap_or_default()
}

/// A job as `--output json` gives it.
pub fn job_record(job: &pb::JobInfo) -> JobRecord {
    use crate::records::non_empty;
    let stamp = |ms: i64| non_empty(&time_text(ms));
    JobRecord {
        id: job.id,
        instance_id: job.instance_id.clone(),
        name: job.name.clone(),
        state: State::from_pb(job.state),
        has_more_data: job.has_more_data,
        location: non_empty(&job.location),
        command: job.command.clone(),
        throttle_limit: job.throttle_limit,
        max_errors: job.max_errors,
        created_at: stamp(job.created_at_ms),
        ended_at: stamp(job.ended_at_ms),
        done: job
            .children
            .iter()
            .filter(|c| State::from_pb(c.state).is_finished())
            .count(),
        total: job.children.len(),
        children: job
            .children
            .iter()
            .map(|c| ChildRecord {
                host: c.host.clone(),
                state: State::from_pb(c.state),
                exit_code: c.exit_code,
                signal: c.signal,
                reason: non_empty(&c.reason),
                cause: non_empty(&c.cause),
                has_more_data: c.has_more_data,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hosts_of_any_length_are_shown_escaped_without_panicking() {
        // A name or host of more than 65,535 characters once panicked the padding.
        let job = pb::JobInfo {
            id: 1,
            name: format!("evil\u{1b}]0;pwned\u{7}{}", "n".repeat(70_000)),
            command: "echo\rhi".into(),
            children: vec![pb::ChildInfo {
                host: format!("h{}", "x".repeat(70_000)),
                reason: "bad\u{1b}[2J".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = table(&[job], true);
        assert!(text.contains("evil\\e]0;pwned\\x07nnn"), "{}", &text[..200]);
        assert!(text.contains("echo\\rhi"));
        assert!(text.contains("bad\\e[2J"));
        assert!(!text.contains('\u{1b}') && !text.contains('\r'));
        assert_eq!(text.lines().count(), 3);
    }

    fn job(id: u32, name: &str, hosts: &[&str]) -> pb::JobInfo {
        pb::JobInfo {
            id,
            name: name.into(),
            state: pb::JobState::Completed as i32,
            location: "remote".into(),
            command: "uptime".into(),
            children: hosts
                .iter()
                .map(|h| pb::ChildInfo {
                    host: (*h).into(),
                    state: pb::JobState::Completed as i32,
                    exit_code: Some(0),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_wide_name_does_not_misalign_its_row() {
        let jobs = [
            job(1, "パッチ確認", &["web01", "web02"]),
            job(2, "patch-check", &["db1"]),
            job(3, &"x".repeat(100), &["db2"]),
        ];
        let text = table(&jobs, false);
        let expected = "\
Id  Name                                      State      HasMoreData  Location    Hosts  Progress  Command
1   パッチ確認                                Completed  False        web[01-02]  2      2/2 done  uptime
2   patch-check                               Completed  False        db1         1      1/1 done  uptime
3   xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…  Completed  False        db2         1      1/1 done  uptime
";
        assert_eq!(text, expected, "\n{text}");
        // Every row's State column starts at the same terminal column.
        let at: Vec<usize> = text
            .lines()
            .map(|l| cells::width(&l[..l.find("Complet").or_else(|| l.find("State")).unwrap_or(0)]))
            .collect();
        assert!(at.iter().all(|c| *c == at[0]), "{at:?}\n{text}");
    }

    #[test]
    fn child_rows_line_up_under_wide_host_names() {
        let text = table(&[job(7, "確認", &["ホスト1", "web01"])], true);
        let expected = "\
Id  Name       State      HasMoreData  Location       Hosts  Progress  Command
7   確認       Completed  False        web01,ホスト1  2      2/2 done  uptime
      ホスト1  Completed  False                                        exit 0
      web01    Completed  False                                        exit 0
";
        assert_eq!(text, expected, "\n{text}");
    }
}
