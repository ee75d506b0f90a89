//! Which jobs a command acts on: job references with glob patterns in names (`patch-*`) and
//! `--state S` (every job in that state), expanded on the CLI side to job Ids.

use rjob_proto::v1 as pb;

use super::from_status;
use crate::daemon::client::DaemonClient;
use crate::state::State;
use crate::UsageError;

/// The state `--state NAME` names; unknown names are a usage error listing the states.
pub fn parse_state(name: &str) -> Result<State, UsageError> {
    State::parse(name).ok_or_else(|| {
        let names: Vec<String> = State::ALL.iter().map(ToString::to_string).collect();
        UsageError(format!("unknown state {name:?}: use one of {}", names.join(", ")))
    })
}

/// Does `reference` hold a glob pattern (`*`, `?` or `[`)?
pub fn is_glob(reference: &str) -> bool {
    reference.contains(['*', '?', '['])
}

/// Does `text` match the glob `pattern`: `*` any run of characters, `?` one character,
/// `[abc]` / `[a-z]` / `[!abc]` one of a set; everything else stands for itself.
/// Case-sensitive, as job names are.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(&p[pi..], t[ti]),
            Some(c) if *c == t[ti] => Some(1),
            _ => None,
        };
        match step {
            Some(len) => {
                pi += if p[pi] == '[' { len } else { 1 };
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// At `p[0] == '['`: when `c` is in the class, the class's length in pattern characters.
/// An unclosed `[` stands for itself.
fn class(p: &[char], c: char) -> Option<usize> {
    let Some(end) = p.iter().skip(2).position(|x| *x == ']').map(|i| i + 2) else {
        return (c == '[').then_some(1);
    };
    let body = &p[1..end];
    let (negate, body) = match body.first() {
        Some('!') | Some('^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            hit |= body[i] <= c && c <= body[i + 2];
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(end + 1)
}

/// The jobs that `refs` (Ids, names, InstanceIds or name globs) and `state` select, as
/// Ids, in Id order, each once. No refs with a state: every job in that state. A glob that
/// matches no job is a usage error; a state no job is in selects nothing.
pub async fn select(
    client: &mut DaemonClient,
    refs: &[String],
    state: Option<State>,
) -> anyhow::Result<Vec<String>> {
    let jobs = expand(client, refs).await?;
    let mut ids: Vec<u32> = jobs
        .iter()
        .filter(|j| state.is_none_or(|s| State::from_pb(j.state) == s))
        .map(|j| j.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids.into_iter().map(|id| id.to_string()).collect())
}

/// What a command acting on jobs sends the daemon: `refs` as they are when they hold no glob
/// and no `--state` was given (the daemon resolves them), else the Ids [`select`] finds.
/// `Ok(None)`: the selection is empty (a state no job is in), said on stderr.
pub async fn targets(
    client: &mut DaemonClient,
    refs: &[String],
    state: Option<&str>,
) -> anyhow::Result<Option<Vec<String>>> {
    let state = state.map(parse_state).transpose()?;
    if state.is_none() && !refs.iter().any(|r| is_glob(r)) {
        return Ok(Some(refs.to_vec()));
    }
    let ids = select(client, refs, state).await?;
    if ids.is_empty() {
        if let Some(state) = state {
            eprintln!("rjob: no job is {state}");
        }
        return Ok(None);
    }
    Ok(Some(ids))
}

/// The jobs `refs` name, globs expanded (every job when `refs` is empty). Plain references
/// go to the daemon as they are, so an unknown or ambiguous one is its error.
pub async fn expand(client: &mut DaemonClient, refs: &[String]) -> anyhow::Result<Vec<pb::JobInfo>> {
    let (globs, plain): (Vec<&String>, Vec<&String>) = refs.iter().partition(|r| is_glob(r));
    let mut jobs = Vec::new();
    if !plain.is_empty() || globs.is_empty() {
        jobs = list(client, plain.into_iter().cloned().collect()).await?;
    }
    if !globs.is_empty() {
        let all = list(client, Vec::new()).await?;
        for glob in globs {
            let matched: Vec<&pb::JobInfo> = all.iter().filter(|j| glob_match(glob, &j.name)).collect();
            if matched.is_empty() {
                return Err(UsageError(format!(
                    "no job has a name matching {:?}: `rjob jobs` lists them",
                    crate::escape::text(glob)
                ))
                .into());
            }
            jobs.extend(matched.into_iter().cloned());
        }
        jobs.sort_by_key(|j| j.id);
        jobs.dedup_by_key(|j| j.id);
    }
    Ok(jobs)
}

async fn list(client: &mut DaemonClient, jobs: Vec<String>) -> anyhow::Result<Vec<pb::JobInfo>> {
    Ok(client
        .list_jobs(pb::ListJobsRequest { jobs })
        .await
        .map_err(from_status)?
        .into_inner()
        .jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("patch-*", "patch-check"));
        assert!(glob_match("patch-*", "patch-"));
        assert!(!glob_match("patch-*", "patc"));
        assert!(glob_match("*-check", "patch-check"));
        assert!(glob_match("p?tch*k", "patch-check"));
        assert!(glob_match("web[0-9]", "web7"));
        assert!(!glob_match("web[!0-9]", "web7"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("[", "["));
        assert!(glob_match("*", ""));
        assert!(!glob_match("Patch-*", "patch-check"));
        assert!(glob_match("パ*", "パッチ確認"));
    }
}
