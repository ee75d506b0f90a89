//! The conformance cases of what retention reads: [`JobStore::retention_rows`],
//! [`JobStore::store_size`] and [`JobStore::job_size`] (run by [`super::run_all`]).

use super::new_job;
use crate::state::State;
use crate::store::{ChildEnd, Chunk, JobStore, Mark, RetentionRow, Stream};

fn end(at: i64) -> ChildEnd {
    ChildEnd {
        state: State::Completed,
        exit_code: Some(0),
        signal: None,
        reason: None,
        cause: None,
        ended_at_ms: at,
    }
}

/// Bytes no compression shrinks (PostgreSQL may compress output), from a small LCG.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

pub async fn retention_rows_say_finished_and_unreceived(store: &dyn JobStore) {
    let done = store.create_job(&new_job("done", 2)).await.expect("create");
    let going = store.create_job(&new_job("going", 1)).await.expect("create");
    let row = async |id: i64| -> RetentionRow {
        let rows = store.retention_rows().await.expect("retention_rows");
        rows.into_iter().find(|r| r.id == id).expect("a row per job")
    };
    assert_eq!(
        store
            .retention_rows()
            .await
            .expect("rows")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [done, going],
        "every job, by Id"
    );
    let fresh = row(done).await;
    assert_eq!(
        (
            fresh.created_at_ms,
            fresh.ended_at_ms,
            fresh.finished,
            fresh.unreceived
        ),
        (1_000, None, false, false)
    );
    let out = Chunk {
        job_id: done,
        idx: 1,
        seq: 1,
        stream: Stream::Stderr,
        data: b"e".to_vec(),
    };
    store.append_output(&[out]).await.expect("append");
    store.finish_child(done, 0, &end(7_000)).await.expect("finish");
    let half = row(done).await;
    assert!(
        !half.finished && half.unreceived,
        "one child still going: {half:?}"
    );
    store.finish_child(done, 1, &end(8_000)).await.expect("finish");
    let ended = row(done).await;
    assert_eq!(
        (ended.ended_at_ms, ended.finished, ended.unreceived),
        (Some(8_000), true, true),
        "finished, its output not received"
    );
    store
        .mark_received(done, 1, Stream::Stderr, Mark { seq: 1, off: 0 })
        .await
        .expect("mark");
    assert!(!row(done).await.unreceived, "all received");
    let other = row(going).await;
    assert!(!other.finished && !other.unreceived, "{other:?}");
}

pub async fn sizes_grow_with_output_and_fall_with_removal(store: &dyn JobStore) {
    const MIB: usize = 1 << 20;
    let empty = store.store_size().await.expect("store_size");
    let big = store.create_job(&new_job("big", 1)).await.expect("create");
    let small = store.create_job(&new_job("small", 1)).await.expect("create");
    let bare = store.job_size(big).await.expect("job_size");
    assert!(bare < 64 * 1024, "no output, at most a few pages: {bare}");
    let chunks: Vec<Chunk> = (1..=16u64)
        .map(|seq| Chunk {
            job_id: big,
            idx: 0,
            seq,
            stream: Stream::Stdout,
            data: noise(MIB / 16, seq),
        })
        .collect();
    store.append_output(&chunks).await.expect("append");
    let tiny = Chunk {
        job_id: small,
        idx: 0,
        seq: 1,
        stream: Stream::Stdout,
        data: b"x".to_vec(),
    };
    store.append_output(&[tiny]).await.expect("append");
    let big_size = store.job_size(big).await.expect("job_size");
    let small_size = store.job_size(small).await.expect("job_size");
    assert!(
        big_size >= MIB as u64 && big_size < 2 * MIB as u64,
        "a job's size is about its output: {big_size}"
    );
    assert!(small_size < 64 * 1024, "{small_size} against {big_size}");
    let full = store.store_size().await.expect("store_size");
    assert!(
        full >= empty + MIB as u64,
        "the store grew by the output: {empty} -> {full}"
    );
    store.remove_job(big).await.expect("remove");
    let after = store.store_size().await.expect("store_size");
    assert!(
        after + (MIB as u64) * 9 / 10 <= full,
        "removing a job gives its space back: {full} -> {after}"
    );
    assert_eq!(store.job_size(big).await.expect("job_size"), 0, "no such job");
    assert_eq!(store.job_size(small).await.expect("job_size"), small_size);
}
