//! The throwaway PostgreSQL cluster of the harness: a database per test, a restart that
//! keeps what was committed, and a cluster that is gone once dropped.

use anyhow::Result;
use rjob_tests::pg::Cluster;

#[test]
fn each_test_gets_its_own_empty_database_on_the_shared_cluster() -> Result<()> {
    let cluster = Cluster::shared();
    let a = cluster.database()?;
    let b = cluster.database()?;
    assert_ne!(a.name, b.name);
    a.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")?;
    assert_eq!(a.psql("SELECT count(*) FROM t")?, "1");
    assert!(b.psql("SELECT count(*) FROM t").is_err(), "b is empty");
    assert!(a.url().starts_with(&format!("postgres:///{}?host=/", a.name)));
    // Unix socket only.
    assert_eq!(a.psql("SHOW listen_addresses")?, "");
    let name = a.name.clone();
    drop(a);
    let left = cluster.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    )?;
    assert_eq!(left, "0", "the guard dropped its database");
    Ok(())
}

#[test]
fn an_immediate_restart_keeps_what_was_committed_and_a_dropped_cluster_is_gone() -> Result<()> {
    let cluster = Cluster::start()?;
    let db = cluster.database()?;
    db.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")?;
    cluster.restart(true)?;
    assert_eq!(
        db.psql("SELECT count(*) FROM t")?,
        "1000",
        "{}",
        cluster.log_text()
    );
    cluster.stop(true)?;
    assert!(db.psql("SELECT 1").is_err(), "the server is down");
    cluster.start_again()?;
    assert_eq!(db.psql("SELECT sum(x) FROM t")?, "500500");
    let socket = cluster.socket_dir();
    drop(db);
    drop(cluster);
    assert!(!socket.exists(), "the cluster's dir is removed with it");
    Ok(())
}
