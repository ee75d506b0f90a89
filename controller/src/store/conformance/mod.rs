//! The store conformance suite: what every [`JobStore`] must do, checked through the trait
//! alone, so that a new backend runs the same cases as SQLite. [`run_all`] runs every case,
//! each on a fresh, empty store from `new_store`. A failed check panics with what differed.

use std::future::Future;
use std::sync::Arc;

mod claims;
mod jobs;
mod output;
mod retention;

use super::{Chunk, JobStore, NewJob, Stream};

/// Runs every case, each on a fresh, empty store from `new_store` (async: a network backend
/// connects, and makes a fresh database or schema).
pub async fn run_all<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    jobs::jobs_and_children(&*new_store().await).await;
    jobs::request_bytes_round_trip(&*new_store().await).await;
    jobs::ids_are_never_reused(&*new_store().await).await;
    jobs::child_transitions(&*new_store().await).await;
    jobs::job_flags(&*new_store().await).await;
    output::output_in_order_and_idempotent(&*new_store().await).await;
    output::received_marks_move_forward_per_stream(&*new_store().await).await;
    output::remove_takes_everything_of_the_job(&*new_store().await).await;
    output::has_more_data_follows_last_and_received_seq(&*new_store().await).await;
    jobs::a_missing_job_changes_nothing(&*new_store().await).await;
    claims::claims_hand_out_each_unfinished_child_once(&*new_store().await).await;
    claims::a_receive_claim_is_let_go(&*new_store().await).await;
    retention::retention_rows_say_finished_and_unreceived(&*new_store().await).await;
    retention::sizes_grow_with_output_and_fall_with_removal(&*new_store().await).await;
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

pub(crate) async fn create(store: &dyn JobStore, name: &str, hosts: usize) -> i64 {
    store.create_job(&new_job(name, hosts)).await.expect("create_job")
}

pub(crate) fn chunk(job_id: i64, idx: u32, seq: u64, stream: Stream, data: &[u8]) -> Chunk {
    Chunk {
        job_id,
        idx,
        seq,
        stream,
        data: data.to_vec(),
    }
}
