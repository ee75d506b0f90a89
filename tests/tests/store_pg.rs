//! The store conformance suite against PostgreSQL: the same cases as SQLite's, each on a
//! fresh database of the harness's throwaway cluster; and what only a server store has to
//! survive: the server restarting under it.

use std::sync::{Arc, Mutex};

use rjob::store::postgres::PgStore;
use rjob::store::{conformance, Chunk, JobStore, Stream};
use rjob_tests::pg::{Cluster, Database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    let cluster = Cluster::shared();
    // Each case on a database of its own, kept until the suite ends.
    let keep: Mutex<Vec<Database<'static>>> = Mutex::new(Vec::new());
    conformance::run_all(|| {
        let db = cluster.database().expect("a database of its own");
        let url = db.url();
        keep.lock().unwrap_or_else(|p| p.into_inner()).push(db);
        async move {
            let store = PgStore::open(&url).await.expect("open the PostgreSQL store");
            Arc::new(store) as Arc<dyn JobStore>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_twice_migrates_once_and_removing_a_job_drops_its_partition() {
    let cluster = Cluster::shared();
    let db = cluster.database().expect("database");
    let first = PgStore::open(&db.url()).await.expect("open");
    let id = first
        .create_job(&conformance::new_job("p", 2))
        .await
        .expect("create");
    let part = format!("SELECT count(*) FROM pg_class WHERE relname = 'output_{id}'");
    assert_eq!(db.psql(&part).expect("psql"), "1", "a partition per job");
    // Like its parent: the key, and the output column's compression (lz4 where the server
    // has it, as Debian's does).
    let compression = |table: &str| {
        db.psql(&format!(
            "SELECT attcompression::text FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = 'data'"
        ))
        .expect("psql")
    };
    assert_eq!(compression(&format!("output_{id}")), compression("output"));
    let lz4 = db
        .psql("SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        .expect("psql");
    assert_eq!(compression("output") == "l", lz4 == "t");
    let key =
        format!("SELECT count(*) FROM pg_index WHERE indrelid = 'output_{id}'::regclass AND indisprimary");
    assert_eq!(db.psql(&key).expect("psql"), "1", "the partition has the key");
    drop(first);
    let again = PgStore::open(&db.url()).await.expect("open again");
    assert_eq!(
        db.psql("SELECT version FROM schema_version").expect("psql"),
        "3",
        "migrated once, to the latest version (3: children's run_as)"
    );
    again.remove_job(id).await.expect("remove");
    assert_eq!(db.psql(&part).expect("psql"), "0", "the partition is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_ridden_out_and_nothing_committed_is_lost() {
    // A cluster of its own: the shared one must stay up for the other tests.
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.database().expect("database");
    let store = PgStore::open(&db.url()).await.expect("open");
    let id = store
        .create_job(&conformance::new_job("r", 1))
        .await
        .expect("create");
    let batch = move |from: u64| -> Vec<Chunk> {
        (from..from + 100)
            .map(|seq| Chunk {
                job_id: id,
                idx: 0,
                seq,
                stream: Stream::Stdout,
                data: format!("line {seq}\n").into_bytes(),
            })
            .collect()
    };
    store.append_output(&batch(1)).await.expect("append");
    // The pool's connections all die with the server; the next calls get new ones.
    cluster.restart(true).expect("restart");
    store
        .append_output(&batch(101))
        .await
        .expect("append after the restart");
    assert_eq!(store.children(id).await.expect("children")[0].last_seq, 200);
    // Down for a while: a call waits for the server (retried), and goes through once it is back.
    cluster.stop(true).expect("stop");
    let waiting = {
        let store = Arc::new(store);
        let writer = store.clone();
        let call = tokio::spawn(async move { writer.append_output(&batch(201)).await });
        cluster.start_again().expect("start again");
        call.await.expect("join").expect("append across the outage");
        store
    };
    let out = waiting.output(id, 0, 0, u64::MAX, 1000).await.expect("output");
    assert_eq!(out.len(), 300, "every chunk once");
    assert!(out.iter().zip(1..).all(|(o, seq)| o.seq == seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("postgres:///nothing?host={}&user=postgres", dir.path().display());
    let err = PgStore::open(&url).await.err().expect("no server there");
    assert!(err.retryable(), "{err}");
    assert!(
        err.to_string().contains("check that the database server runs"),
        "{err}"
    );
}
