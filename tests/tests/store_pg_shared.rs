//! Two PostgreSQL stores on one database, as two daemons have them: each hears what the
//! other changes (LISTEN/NOTIFY: one notice per committed batch of output, never one per
//! chunk; none of its own), a consuming receive is claimed by one at a time, output of a job
//! the other removed is let go, and a listener whose server restarted listens again.

use std::time::Duration;

use rjob::state::State;
use rjob::store::postgres::PgStore;
use rjob::store::{conformance, Chunk, JobStore, Notice, Stream};
use rjob_tests::pg::Cluster;
use tokio::sync::mpsc;

/// Generous: the machine may be very loaded.
const HEAR: Duration = Duration::from_secs(30);

fn batch(job_id: i64, from: u64, n: u64) -> Vec<Chunk> {
    (from..from + n)
        .map(|seq| Chunk {
            job_id,
            idx: 0,
            seq,
            stream: Stream::Stdout,
            data: format!("line {seq}\n").into_bytes(),
        })
        .collect()
}

async fn next(heard: &mut mpsc::UnboundedReceiver<Notice>) -> Notice {
    match tokio::time::timeout(HEAR, heard.recv()).await {
        Ok(Some(n)) => n,
        Ok(None) => panic!("the listener ended"),
        Err(_) => panic!("nothing heard within {HEAR:?}"),
    }
}

/// Everything heard until `want` is, skipping resyncs (the listener's start).
async fn until(heard: &mut mpsc::UnboundedReceiver<Notice>, want: &Notice) -> Vec<Notice> {
    let mut got = Vec::new();
    loop {
        let n = next(heard).await;
        if n == Notice::Resync {
            continue;
        }
        let done = n == *want;
        got.push(n);
        if done {
            return got;
        }
    }
}

async fn listening(store: &PgStore) -> mpsc::UnboundedReceiver<Notice> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    store.subscribe(tx);
    assert_eq!(
        next(&mut rx).await,
        Notice::Resync,
        "listening starts with a resync"
    );
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_hears_the_others_changes_once_per_batch_and_never_its_own() {
    let db = Cluster::shared().database().expect("database");
    let a = PgStore::open(&db.url()).await.expect("open a");
    let b = PgStore::open(&db.url()).await.expect("open b");
    let mut heard_a = listening(&a).await;
    let mut heard_b = listening(&b).await;
    let id = b.create_job(&conformance::new_job("n", 1)).await.expect("create");
    assert_eq!(
        next(&mut heard_a).await,
        Notice::Claimable(vec![id]),
        "a new job is told, for the others to claim their share"
    );

    // 300 chunks in one batch: one notice.
    b.append_output(&batch(id, 1, 300)).await.expect("append");
    b.set_job_flags(id, None, Some(true)).await.expect("flags");
    let got = until(&mut heard_a, &Notice::Flags(id)).await;
    assert_eq!(
        got,
        [Notice::Changed(vec![id]), Notice::Flags(id)],
        "one notice per batch"
    );
    b.set_child_run(id, 0, "run-1", 5).await.expect("run");
    b.set_child_state(id, 0, State::Running, None)
        .await
        .expect("state");
    let got = until(&mut heard_a, &Notice::Changed(vec![id])).await;
    assert_eq!(got, [Notice::Changed(vec![id])]);
    let got = until(&mut heard_a, &Notice::Changed(vec![id])).await;
    assert_eq!(got, [Notice::Changed(vec![id])]);

    // A writes: B hears it, A does not hear itself.
    a.append_output(&batch(id, 301, 2)).await.expect("append");
    a.remove_job(id).await.expect("remove");
    let got = until(&mut heard_b, &Notice::Removed(id)).await;
    assert_eq!(got, [Notice::Changed(vec![id]), Notice::Removed(id)]);
    assert!(
        heard_a.try_recv().is_err(),
        "a store hears none of its own notices"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_a_job_another_store_removed_is_let_go() {
    let db = Cluster::shared().database().expect("database");
    let a = PgStore::open(&db.url()).await.expect("open a");
    let b = PgStore::open(&db.url()).await.expect("open b");
    let gone = a
        .create_job(&conformance::new_job("gone", 1))
        .await
        .expect("create");
    let kept = a
        .create_job(&conformance::new_job("kept", 1))
        .await
        .expect("create");
    b.remove_job(gone).await.expect("remove");
    let mut chunks = batch(gone, 1, 3);
    chunks.extend(batch(kept, 1, 3));
    a.append_output(&chunks)
        .await
        .expect("a batch with a removed job's output goes in");
    assert_eq!(a.children(kept).await.expect("children")[0].last_seq, 3);
    assert_eq!(a.output(kept, 0, 0, 10, 10).await.expect("output").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consuming_receive_is_claimed_by_one_store_at_a_time() {
    let db = Cluster::shared().database().expect("database");
    let a = PgStore::open(&db.url()).await.expect("open a");
    let b = PgStore::open(&db.url()).await.expect("open b");
    let id = a.create_job(&conformance::new_job("r", 1)).await.expect("create");
    let other = a.create_job(&conformance::new_job("o", 1)).await.expect("create");
    let held = a.claim_receive(id).await.expect("claim").expect("free");
    assert!(
        b.claim_receive(id).await.expect("claim").is_none(),
        "claimed by the other store"
    );
    assert!(
        a.claim_receive(id).await.expect("claim").is_none(),
        "claimed by another receive of the same store"
    );
    let free = b.claim_receive(other).await.expect("claim");
    assert!(free.is_some(), "another job is free");
    held.release().await;
    let again = b.claim_receive(id).await.expect("claim");
    assert!(again.is_some(), "free once let go");
    // Dropped without a word (a receive's task ended abruptly): free again soon after.
    drop(again);
    let mut free = None;
    for _ in 0..50 {
        free = a.claim_receive(id).await.expect("claim");
        if free.is_some() {
            break;
        }
    }
    assert!(free.is_some(), "a dropped claim is let go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_listens_again_after_the_server_restarted() {
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.database().expect("database");
    let a = PgStore::open(&db.url()).await.expect("open a");
    let b = PgStore::open(&db.url()).await.expect("open b");
    let mut heard = listening(&a).await;
    let id = b.create_job(&conformance::new_job("n", 1)).await.expect("create");
    assert_eq!(next(&mut heard).await, Notice::Claimable(vec![id]), "the new job");
    cluster
        .restart(true)
        .expect("pg_ctl -m immediate stop, then start");
    assert_eq!(
        next(&mut heard).await,
        Notice::Resync,
        "back, and told that notices may have been missed"
    );
    b.append_output(&batch(id, 1, 5)).await.expect("append");
    let got = until(&mut heard, &Notice::Changed(vec![id])).await;
    assert_eq!(got, [Notice::Changed(vec![id])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_claim_is_taken_again_after_the_server_restarted_unless_another_took_it() {
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.database().expect("database");
    let a = PgStore::open(&db.url()).await.expect("open a");
    let b = PgStore::open(&db.url()).await.expect("open b");
    let kept = a
        .create_job(&conformance::new_job("kept", 1))
        .await
        .expect("create");
    let lost = a
        .create_job(&conformance::new_job("lost", 1))
        .await
        .expect("create");
    let mut held = a.claim_receive(kept).await.expect("claim").expect("free");
    let mut taken = a.claim_receive(lost).await.expect("claim").expect("free");
    cluster
        .restart(true)
        .expect("pg_ctl -m immediate stop, then start");
    // The locks went with their connections. B takes one of them first.
    let mut by_b = None;
    for _ in 0..100 {
        if let Ok(Some(claim)) = b.claim_receive(lost).await {
            by_b = Some(claim);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        by_b.is_some(),
        "B claims the job whose lock went with the restart"
    );
    assert!(
        held.keep().await,
        "A takes its other claim again on a new connection"
    );
    assert!(
        b.claim_receive(kept).await.expect("claim").is_none(),
        "and holds it: B cannot claim it"
    );
    assert!(
        !taken.keep().await,
        "A's claim that B took meanwhile is lost, and says so"
    );
}
