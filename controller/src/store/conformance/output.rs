//! The conformance cases of output: stored in order and once, received marks, HasMoreData,
//! and a removal that takes all of a job.

use super::{chunk, create};
use crate::state::State;
use crate::store::{ChildEnd, Chunk, JobStore, Mark, Output, Stream};

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
