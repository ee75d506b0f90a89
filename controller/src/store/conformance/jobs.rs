//! The conformance cases of jobs and their children: creating and reading them, Ids, a
//! child's states, a job's flags, and calls about a job that is not there.

use super::{create, new_job};
use crate::state::State;
use crate::store::{ChildEnd, JobStore};

pub async fn jobs_and_children(store: &dyn JobStore) {
    let a = create(store, "named", 2).await;
    let b = create(store, "", 1).await;
    assert!(b > a, "Ids grow: {a} then {b}");
    let jobs = store.jobs().await.expect("jobs");
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [a, b]);
    let job = store.job(a).await.expect("job").expect("job a is there");
    let want = new_job("named", 2);
    assert_eq!(
        (job.name.as_str(), job.command.as_str(), job.location.as_str()),
        ("named", want.command.as_str(), "remote")
    );
    assert_eq!(
        (job.throttle_limit, job.connect_timeout_ms, job.created_at_ms),
        (2, 1500, 1_000)
    );
    assert_eq!(job.max_errors, Some(3), "the error budget is kept with the job");
    assert_eq!(
        (job.ended_at_ms, job.stop_requested, job.suspended),
        (None, false, false)
    );
    assert_eq!(
        store.job(b).await.expect("job").expect("job b").name,
        format!("Job{b}")
    );
    assert!(store.job(b + 100).await.expect("job").is_none());
    let children = store.children(a).await.expect("children");
    assert_eq!(children.len(), 2);
    for (i, c) in children.iter().enumerate() {
        assert_eq!(
            (c.idx, c.host.clone(), c.port),
            (i as u32, format!("h{i}"), 9000 + i as u16)
        );
        assert_eq!(c.state, State::NotStarted);
        assert_eq!(
            (c.run_id.clone(), c.reason.clone(), c.cause.clone()),
            (None, None, None)
        );
        assert_eq!((c.exit_code, c.signal), (None, None));
        assert_eq!((c.started_at_ms, c.ended_at_ms), (None, None));
        assert_eq!((c.last_seq, c.received_seq), (0, 0));
        let user = (i == 0).then(|| "deploy".to_string());
        assert_eq!(c.run_as, user, "child {i}'s own run-as user is kept");
    }
    assert!(store.children(b + 100).await.expect("children").is_empty());
}

pub async fn request_bytes_round_trip(store: &dyn JobStore) {
    for bytes in [vec![], vec![0u8, 0xff, 0, 7], (0..=255u8).collect::<Vec<_>>()] {
        let mut job = new_job("r", 1);
        job.request = bytes.clone();
        let id = store.create_job(&job).await.expect("create_job");
        assert_eq!(store.job_request(id).await.expect("job_request"), bytes);
    }
}

pub async fn ids_are_never_reused(store: &dyn JobStore) {
    let ids = [
        create(store, "", 1).await,
        create(store, "", 1).await,
        create(store, "", 1).await,
    ];
    store.remove_job(ids[2]).await.expect("remove");
    store.remove_job(ids[1]).await.expect("remove");
    let next = create(store, "", 1).await;
    assert!(next > ids[2], "Id {next} handed out again (had {ids:?})");
    assert!(store.job(ids[2]).await.expect("job").is_none());
}

pub async fn child_transitions(store: &dyn JobStore) {
    let id = create(store, "t", 3).await;
    store.mark_starting(id, 0, 10).await.expect("mark_starting");
    store.mark_starting(id, 0, 11).await.expect("mark_starting again");
    store
        .set_child_run(id, 0, "run-0", 12)
        .await
        .expect("set_child_run");
    store
        .set_child_run(id, 1, "run-1", 13)
        .await
        .expect("set_child_run unmarked");
    store
        .set_child_state(id, 0, State::Running, None)
        .await
        .expect("set_child_state");
    store
        .set_child_state(id, 1, State::Disconnected, Some("agent lost"))
        .await
        .expect("set_child_state");
    let c = store.children(id).await.expect("children");
    assert_eq!(
        (c[0].started_at_ms, c[0].run_id.as_deref()),
        (Some(10), Some("run-0"))
    );
    assert_eq!(
        (c[1].started_at_ms, c[1].run_id.as_deref()),
        (Some(13), Some("run-1"))
    );
    assert_eq!((c[0].state, c[0].reason.as_deref()), (State::Running, None));
    assert_eq!(
        (c[1].state, c[1].reason.as_deref()),
        (State::Disconnected, Some("agent lost"))
    );
    let states = store.child_states(id).await.expect("child_states");
    assert_eq!(states, [State::Running, State::Disconnected, State::NotStarted]);
    let done = ChildEnd {
        state: State::Completed,
        exit_code: Some(0),
        signal: None,
        reason: None,
        cause: Some("exited".into()),
        ended_at_ms: 20,
    };
    store.finish_child(id, 0, &done).await.expect("finish_child");
    let killed = ChildEnd {
        state: State::Failed,
        exit_code: None,
        signal: Some(9),
        reason: Some("killed by signal 9".into()),
        cause: Some("signal".into()),
        ended_at_ms: 21,
    };
    store.finish_child(id, 1, &killed).await.expect("finish_child");
    assert_eq!(store.job(id).await.expect("job").expect("job").ended_at_ms, None);
    // A finished child keeps its end.
    store
        .set_child_state(id, 0, State::Running, Some("late"))
        .await
        .expect("set_child_state");
    let stopped = ChildEnd {
        state: State::Stopped,
        exit_code: None,
        signal: None,
        reason: Some("stopped before it started".into()),
        cause: None,
        ended_at_ms: 22,
    };
    store.finish_child(id, 2, &stopped).await.expect("finish_child");
    let c = store.children(id).await.expect("children");
    let ends: Vec<ChildEnd> = c
        .iter()
        .map(|c| ChildEnd {
            state: c.state,
            exit_code: c.exit_code,
            signal: c.signal,
            reason: c.reason.clone(),
            cause: c.cause.clone(),
            ended_at_ms: c.ended_at_ms.unwrap_or(-1),
        })
        .collect();
    assert_eq!(ends, [done, killed, stopped]);
    let states = store.child_states(id).await.expect("child_states");
    assert_eq!(states, [State::Completed, State::Failed, State::Stopped]);
    assert_eq!(c[2].started_at_ms, None, "never started");
    assert_eq!(
        store.job(id).await.expect("job").expect("job").ended_at_ms,
        Some(22)
    );
}

pub async fn job_flags(store: &dyn JobStore) {
    let id = create(store, "f", 1).await;
    let flags = async |store: &dyn JobStore| {
        let job = store.job(id).await.expect("job").expect("job");
        (job.stop_requested, job.suspended)
    };
    store.set_job_flags(id, None, Some(true)).await.expect("flags");
    assert_eq!(flags(store).await, (false, true));
    store.set_job_flags(id, Some(true), None).await.expect("flags");
    assert_eq!(flags(store).await, (true, true));
    store.set_job_flags(id, None, Some(false)).await.expect("flags");
    assert_eq!(flags(store).await, (true, false));
    store.set_job_flags(id, None, None).await.expect("flags");
    assert_eq!(flags(store).await, (true, false));
}

pub async fn a_missing_job_changes_nothing(store: &dyn JobStore) {
    let id = create(store, "x", 1).await;
    let missing = id + 100;
    assert!(
        store.job_request(missing).await.is_err(),
        "no request for a missing job"
    );
    store.mark_starting(missing, 0, 1).await.expect("mark_starting");
    store
        .set_child_run(missing, 0, "r", 1)
        .await
        .expect("set_child_run");
    store
        .set_child_state(missing, 0, State::Running, None)
        .await
        .expect("set_child_state");
    store
        .set_job_flags(missing, Some(true), Some(true))
        .await
        .expect("flags");
    store.remove_job(missing).await.expect("remove a missing job");
    assert_eq!(store.jobs().await.expect("jobs").len(), 1);
    let c = &store.children(id).await.expect("children")[0];
    assert_eq!(
        (c.state, c.started_at_ms, c.run_id.as_deref()),
        (State::NotStarted, None, None)
    );
    assert!(store.children(missing).await.expect("children").is_empty());
    assert!(store.child_states(missing).await.expect("states").is_empty());
}
