//! The store conformance suite: what every [`JobStore`] must do, checked through the trait
//! alone, so that a new backend runs the same cases as SQLite. [`run_all`] runs every case,
//! each on a fresh, empty store from `new_store`. A failed check panics with what differed.

use std::future::Future;
use std::sync::Arc;

use super::{ChildEnd, Chunk, JobStore, Mark, NewJob, Output, Stream};
use crate::state::State;

/// Runs every case, each on a fresh, empty store from `new_store` (async: a network backend
/// connects, and makes a fresh database or schema).
pub async fn run_all<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    jobs_and_children(&*new_store().await).await;
    request_bytes_round_trip(&*new_store().await).await;
    ids_are_never_reused(&*new_store().await).await;
    child_transitions(&*new_store().await).await;
    job_flags(&*new_store().await).await;
    output_in_order_and_idempotent(&*new_store().await).await;
    received_marks_move_forward_per_stream(&*new_store().await).await;
    remove_takes_everything_of_the_job(&*new_store().await).await;
    has_more_data_follows_last_and_received_seq(&*new_store().await).await;
    a_missing_job_changes_nothing(&*new_store().await).await;
    claims_hand_out_each_unfinished_child_once(&*new_store().await).await;
    a_receive_claim_is_let_go(&*new_store().await).await;
    super::conformance_retention::retention_rows_say_finished_and_unreceived(&*new_store().await).await;
    super::conformance_retention::sizes_grow_with_output_and_fall_with_removal(&*new_store().await).await;
}

/// A job to create, on `hosts` hosts.
pub fn new_job(name: &str, hosts: usize) -> NewJob {
    NewJob {
        instance_id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        command: "echo hi".into(),
        location: "remote".into(),
        request: vec![1, 2, 3],
        throttle_limit: 2,
        max_errors: Some(3),
        connect_timeout_ms: 1500,
        created_at_ms: 1_000,
        hosts: (0..hosts).map(|i| (format!("h{i}"), 9000 + i as u16)).collect(),
        // The first child runs as a user of its own; the others as the request says.
        run_as: vec![Some("deploy".to_string())],
    }
}

async fn create(store: &dyn JobStore, name: &str, hosts: usize) -> i64 {
    store.create_job(&new_job(name, hosts)).await.expect("create_job")
}

fn chunk(job_id: i64, idx: u32, seq: u64, stream: Stream, data: &[u8]) -> Chunk {
    Chunk {
        job_id,
        idx,
        seq,
        stream,
        data: data.to_vec(),
    }
}

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

pub async fn output_in_order_and_idempotent(store: &dyn JobStore) {
    let id = create(store, "o", 2).await;
    let first = [
        chunk(id, 0, 1, Stream::Stdout, b"one\n"),
        chunk(id, 0, 2, Stream::Stderr, b"two\n"),
        chunk(id, 1, 1, Stream::Stdout, b"other child\n"),
    ];
    store.append_output(&first).await.expect("append");
    // Stored again (a batch retried, a run followed again after a restart): kept once, the
    // first one, whatever the stream or data now.
    let again = [
        chunk(id, 0, 2, Stream::Stdout, b"changed\n"),
        chunk(id, 0, 1, Stream::Stdout, b"one\n"),
        chunk(id, 0, 3, Stream::Stdout, b"three\n"),
    ];
    store.append_output(&again).await.expect("append again");
    store.append_output(&again[..1]).await.expect("append older");
    let out = store.output(id, 0, 0, u64::MAX, 100).await.expect("output");
    let want = |seq, stream, data: &[u8]| Output {
        seq,
        stream,
        data: data.to_vec(),
    };
    assert_eq!(
        out,
        [
            want(1, Stream::Stdout, b"one\n"),
            want(2, Stream::Stderr, b"two\n"),
            want(3, Stream::Stdout, b"three\n")
        ]
    );
    assert_eq!(store.output(id, 0, 1, 2, 100).await.expect("output"), out[1..2]);
    assert_eq!(
        store.output(id, 0, 0, u64::MAX, 2).await.expect("output"),
        out[..2]
    );
    assert_eq!(store.output(id, 0, 3, u64::MAX, 100).await.expect("output"), []);
    let c = store.children(id).await.expect("children");
    assert_eq!((c[0].last_seq, c[1].last_seq), (3, 1), "last_seq never goes back");
}

pub async fn received_marks_move_forward_per_stream(store: &dyn JobStore) {
    let id = create(store, "m", 1).await;
    // Output 1..=6: stdout 1, 2, 4, 6; stderr 3, 5.
    let chunks: Vec<Chunk> = (1..=6)
        .map(|seq| {
            let stream = if seq == 3 || seq == 5 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            chunk(id, 0, seq, stream, b"abc")
        })
        .collect();
    store.append_output(&chunks).await.expect("append");
    let (out, err) = (Stream::Stdout, Stream::Stderr);
    let mark = |seq, off| Mark { seq, off };
    let received = async |store: &dyn JobStore| store.children(id).await.expect("children")[0].received_seq;
    assert_eq!(
        store.received_marks(id, 0).await.expect("marks"),
        [Mark::default(); 2]
    );
    for m in [mark(3, 2), mark(3, 1), mark(2, 0)] {
        store.mark_received(id, 0, out, m).await.expect("mark");
    }
    assert_eq!(
        store.received_marks(id, 0).await.expect("marks"),
        [mark(3, 2), Mark::default()]
    );
    // stderr's 3 is not delivered: nothing before it is the prefix.
    assert_eq!(received(store).await, 2);
    store.mark_received(id, 0, err, mark(5, 0)).await.expect("mark");
    assert_eq!(received(store).await, 3, "stdout's 4 is partly out");
    store.mark_received(id, 0, out, mark(6, 0)).await.expect("mark");
    assert_eq!(
        store.received_marks(id, 0).await.expect("marks"),
        [mark(6, 0), mark(5, 0)]
    );
    assert_eq!(received(store).await, 6);
    // No such child: default marks, and marking it is no error.
    assert_eq!(
        store.received_marks(id, 7).await.expect("marks"),
        [Mark::default(); 2]
    );
    store
        .mark_received(id, 7, out, mark(1, 0))
        .await
        .expect("mark a missing child");
}

pub async fn remove_takes_everything_of_the_job(store: &dyn JobStore) {
    let gone = create(store, "gone", 2).await;
    let kept = create(store, "kept", 1).await;
    for job in [gone, kept] {
        let chunks = [
            chunk(job, 0, 1, Stream::Stdout, b"x"),
            chunk(job, 0, 2, Stream::Stderr, b"y"),
        ];
        store.append_output(&chunks).await.expect("append");
        store
            .mark_received(job, 0, Stream::Stdout, Mark { seq: 1, off: 0 })
            .await
            .expect("mark");
    }
    store.remove_job(gone).await.expect("remove");
    assert!(store.job(gone).await.expect("job").is_none());
    assert!(store.children(gone).await.expect("children").is_empty());
    assert_eq!(store.output(gone, 0, 0, u64::MAX, 10).await.expect("output"), []);
    assert_eq!(
        store.received_marks(gone, 0).await.expect("marks"),
        [Mark::default(); 2]
    );
    assert_eq!(
        store
            .jobs()
            .await
            .expect("jobs")
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [kept]
    );
    assert_eq!(
        store
            .output(kept, 0, 0, u64::MAX, 10)
            .await
            .expect("output")
            .len(),
        2
    );
    assert_eq!(
        store.received_marks(kept, 0).await.expect("marks")[0],
        Mark { seq: 1, off: 0 }
    );
}

pub async fn has_more_data_follows_last_and_received_seq(store: &dyn JobStore) {
    let id = create(store, "h", 1).await;
    let more = async |store: &dyn JobStore| store.children(id).await.expect("children")[0].has_more_data();
    assert!(more(store).await, "not finished: it may write more");
    store
        .append_output(&[chunk(id, 0, 1, Stream::Stdout, b"x")])
        .await
        .expect("append");
    let end = ChildEnd {
        state: State::Completed,
        exit_code: Some(0),
        signal: None,
        reason: None,
        cause: None,
        ended_at_ms: 5,
    };
    store.finish_child(id, 0, &end).await.expect("finish");
    let c = &store.children(id).await.expect("children")[0];
    assert_eq!((c.last_seq, c.received_seq), (1, 0));
    assert!(more(store).await, "finished with output not received");
    store
        .mark_received(id, 0, Stream::Stdout, Mark { seq: 1, off: 0 })
        .await
        .expect("mark");
    assert!(!more(store).await, "finished and all received");
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

/// A registered daemon claims a job's children: each unfinished one exactly once while its
/// lease lives (in batches within the throttle limit, or all at once for a store of one
/// daemon's own), never a finished one; the job is claimable until every child is claimed.
pub async fn claims_hand_out_each_unfinished_child_once(store: &dyn JobStore) {
    let epoch = store.register().await.expect("register");
    assert_eq!(store.epoch(), epoch, "the epoch is the registration's");
    store.heartbeat().await.expect("a live lease is renewed");
    let id = create(store, "claims", 3).await;
    assert!(store.claimable().await.expect("claimable").contains(&id));
    let completed = ChildEnd {
        state: State::Completed,
        exit_code: Some(0),
        signal: None,
        reason: None,
        cause: Some("exited".into()),
        ended_at_ms: 9,
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let claimed = store.claim(id).await.expect("claim");
        for child in &claimed {
            assert!(seen.insert(child.idx), "child {} claimed twice", child.idx);
            assert!(!child.state.is_finished(), "a finished child was claimed");
        }
        assert!(
            store.claim(id).await.expect("claim again").is_empty(),
            "children held by a live daemon are handed out again"
        );
        // Owned now: their owner's writes go through, and finish them.
        for child in claimed {
            store
                .mark_starting(id, child.idx, 5)
                .await
                .expect("an owner's write");
            store
                .append_output(&[chunk(id, child.idx, 1, Stream::Stdout, b"x")])
                .await
                .expect("an owner's output");
            store
                .finish_child(id, child.idx, &completed)
                .await
                .expect("an owner's end");
        }
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(store.claim(id).await.expect("claim").is_empty());
    assert!(
        !store.claimable().await.expect("claimable").contains(&id),
        "a finished job has nothing to claim"
    );
    for child in store.children(id).await.expect("children") {
        assert_eq!((child.state, child.last_seq), (State::Completed, 1));
    }
}

/// A consuming receive's claim: taken, let go, taken again (exclusivity across daemons is
/// a shared store's own test: one daemon keeps its receives exclusive itself).
pub async fn a_receive_claim_is_let_go(store: &dyn JobStore) {
    let id = create(store, "r", 1).await;
    let claim = store.claim_receive(id).await.expect("claim_receive");
    claim.expect("a free job is claimed").release().await;
    let again = store.claim_receive(id).await.expect("claim_receive");
    assert!(again.is_some(), "a claim let go is free again");
}
