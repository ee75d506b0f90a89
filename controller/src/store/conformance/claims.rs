//! The conformance cases of several daemons on one store: claims of children under a lease,
//! and a consuming receive's claim.

use super::{chunk, create};
use crate::state::State;
use crate::store::{ChildEnd, JobStore, Stream};

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
        let claimed = store.claim(id).await.expect("claim").children;
        for child in &claimed {
            assert!(seen.insert(child.idx), "child {} claimed twice", child.idx);
            assert!(!child.state.is_finished(), "a finished child was claimed");
        }
        assert!(
            store.claim(id).await.expect("claim again").children.is_empty(),
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
    let last = store.claim(id).await.expect("claim");
    assert!(
        last.children.is_empty() && !last.more,
        "every child finished: nothing claimed, nothing left ({last:?})"
    );
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
