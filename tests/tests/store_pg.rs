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
        "5",
        "migrated once, to the latest version (5: the registry of dialled-in agents)"
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

/// Two daemons' stores on one database: the first one's lease lapses (no heartbeat past its
/// TTL), and from then on every write of its children is refused, `Fenced`, and stores
/// nothing; the second one adopts the children that had started, with their run Id and
/// start mark, and its own writes go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_fences_every_write_and_its_children_are_adopted() {
    use std::time::Duration;

    use rjob::store::lease::Timing;
    use rjob::store::StoreError;
    let cluster = Cluster::shared();
    let db = cluster.database().expect("database");
    let timing = Timing::new(Duration::from_millis(200), Duration::from_millis(3000));
    let a = PgStore::open_as(&db.url(), "a", timing).await.expect("open a");
    let b = PgStore::open_as(&db.url(), "b", timing).await.expect("open b");
    let ea = a.register().await.expect("register a");
    let eb = b.register().await.expect("register b");
    assert!(eb > ea, "epochs from a sequence: {ea}, {eb}");
    let id = a
        .create_job(&conformance::new_job("lease", 4))
        .await
        .expect("create");
    // Throttle 2 over two live daemons: a share of one each.
    let first = a.claim(id).await.expect("claim");
    assert_eq!(first.children.iter().map(|c| c.idx).collect::<Vec<_>>(), vec![0]);
    assert!(first.more, "three children are left for a slot");
    a.mark_starting(id, 0, 7).await.expect("a's start mark");
    a.set_child_run(id, 0, "run-0", 8).await.expect("a's run id");
    let chunk = |seq: u64| Chunk {
        job_id: id,
        idx: 0,
        seq,
        stream: Stream::Stdout,
        data: format!("{seq}\n").into_bytes(),
    };
    a.append_output(&[chunk(1)]).await.expect("a's output");
    // b may not write a's child.
    assert!(matches!(b.mark_starting(id, 0, 9).await, Err(StoreError::Fenced)));
    let second = b.claim(id).await.expect("b claims");
    assert_eq!(second.children.iter().map(|c| c.idx).collect::<Vec<_>>(), vec![1]);

    // a's lease lapses; b keeps heartbeating.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a.heartbeat().await.is_ok() {
        // Renewed while live: stop renewing, and wait past the TTL.
        for _ in 0..18 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            b.heartbeat().await.expect("b lives");
        }
        assert!(tokio::time::Instant::now() < deadline, "a's lease never lapsed");
    }
    assert!(
        matches!(a.heartbeat().await, Err(StoreError::Fenced)),
        "never renewed again"
    );
    assert!(matches!(
        a.append_output(&[chunk(2)]).await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        a.set_child_state(id, 0, rjob::state::State::Running, None).await,
        Err(StoreError::Fenced)
    ));
    assert!(
        matches!(a.claim(id).await, Err(StoreError::Fenced)),
        "a lapsed daemon claims nothing"
    );
    assert_eq!(
        db.psql(&format!("SELECT count(*) FROM output WHERE job_id = {id}"))
            .expect("psql"),
        "1",
        "nothing stored after the lease lapsed"
    );
    // b adopts a's started child first, as it was left.
    b.heartbeat().await.expect("b lives");
    let adopted = b.claim(id).await.expect("b adopts").children;
    let child = adopted.first().expect("a's child adopted");
    assert_eq!(
        (
            child.idx,
            child.run_id.as_deref(),
            child.started_at_ms,
            child.last_seq
        ),
        (0, Some("run-0"), Some(7), 1)
    );
    b.append_output(&[chunk(2)])
        .await
        .expect("b writes its adopted child");
    assert_eq!(b.children(id).await.expect("children")[0].last_seq, 2);
    assert_eq!(
        db.psql(&format!(
            "SELECT written_by FROM output WHERE job_id = {id} ORDER BY seq"
        ))
        .expect("psql"),
        format!("{ea}\n{eb}")
    );
    // a registers again: a new epoch, which owns nothing it had.
    let again = a.register().await.expect("register again");
    assert!(again > eb);
    assert!(matches!(a.mark_starting(id, 0, 9).await, Err(StoreError::Fenced)));
}
