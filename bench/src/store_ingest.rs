//! `rjob-bench store`: store ingest in MB/s, SQLite and PostgreSQL side by side, through
//! the real backends behind the `JobStore` trait, appending batches of chunks as the
//! daemon's output writer does (one `append_output` per batch, each chunk once, a child's
//! `last_seq` advanced with it).
//!
//! Each run makes a fresh store of each kind (SQLite in a temp dir; PostgreSQL a fresh
//! database of one throwaway cluster, `initdb` on a Unix socket, as the tests' harness
//! makes it) and writes `--mb` MB of one payload into one job of `--hosts` hosts, the chunks
//! of the hosts interleaved. Backends alternate run by run, so that a slow moment of a
//! shared machine falls on both; medians of `--runs` are reported.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Parser;
use rjob::store::{conformance::new_job, Chunk, JobStore, Stream};
use serde::Serialize;

use crate::stats::median;

/// rjob-bench store: job store ingest, MB/s, SQLite and PostgreSQL side by side.
#[derive(Debug, Parser, Serialize)]
#[command(name = "rjob-bench store")]
pub struct StoreOpts {
    /// Output written per run and store, MB (10^6 bytes)
    #[arg(long, default_value_t = 64)]
    pub mb: u64,
    /// Runs per store and payload; medians are reported
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Bytes of each chunk, KiB
    #[arg(long, default_value_t = 32)]
    pub chunk_kib: usize,
    /// Chunks per `append_output` call
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Children of the job, whose chunks interleave
    #[arg(long, default_value_t = 1)]
    pub hosts: usize,
    /// Where store.md and store.json go [default: bench/results]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Payload {
    /// Log-like lines (`line N: …`), as most jobs write: compressible.
    Text,
    /// Pseudo-random bytes: nothing compresses them.
    Noise,
}

#[derive(Debug, Serialize)]
struct Row {
    store: &'static str,
    payload: Payload,
    mb_per_s: Vec<f64>,
    median_mb_per_s: Option<f64>,
    /// The store's size after the run (`JobStore::store_size`), MB.
    median_stored_mb: Option<f64>,
}

fn payload(kind: Payload, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        Payload::Text => {
            let mut out = Vec::with_capacity(len + 80);
            let mut n = seed * 1_000_000;
            while out.len() < len {
                out.extend_from_slice(
                    format!("line {n}: GET /api/v1/items/{} 200 {}ms\n", n % 9973, n % 97).as_bytes(),
                );
                n += 1;
            }
            out.truncate(len);
            out
        }
        Payload::Noise => {
            let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
            (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (x >> 56) as u8
                })
                .collect()
        }
    }
}

/// The batches of one run, made before the timing.
fn batches(opts: &StoreOpts, job_id: i64, kind: Payload) -> Vec<Vec<Chunk>> {
    let chunk = opts.chunk_kib.max(1) * 1024;
    let total = usize::try_from(opts.mb * 1_000_000).unwrap_or(usize::MAX);
    let hosts = opts.hosts.max(1);
    let count = total.div_ceil(chunk);
    let chunks: Vec<Chunk> = (0..count)
        .map(|i| Chunk {
            job_id,
            idx: u32::try_from(i % hosts).unwrap_or(0),
            seq: (i / hosts + 1) as u64,
            stream: Stream::Stdout,
            data: payload(kind, chunk, i as u64),
        })
        .collect();
    chunks.chunks(opts.batch.max(1)).map(<[Chunk]>::to_vec).collect()
}

/// One run into `store`: (MB/s, MB stored).
async fn ingest(store: Arc<dyn JobStore>, opts: &StoreOpts, kind: Payload) -> Result<(f64, f64)> {
    let id = store.create_job(&new_job("bench", opts.hosts.max(1))).await?;
    let batches = batches(opts, id, kind);
    let bytes: usize = batches.iter().flatten().map(|c| c.data.len()).sum();
    let started = Instant::now();
    for batch in &batches {
        store.append_output(batch).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let stored = store.store_size().await? as f64 / 1e6;
    Ok((bytes as f64 / 1e6 / secs, stored))
}

pub fn main(args: &[String]) -> std::process::ExitCode {
    let opts = StoreOpts::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rjob-bench store: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-bench store: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(opts: &StoreOpts) -> Result<()> {
    let cluster = rjob_tests::pg::Cluster::start().context("a throwaway PostgreSQL cluster")?;
    let tmp = tempfile::Builder::new().prefix("rjt-retain-bench-").tempdir()?;
    let mut rows = Vec::new();
    for kind in [Payload::Text, Payload::Noise] {
        let mut sqlite = (Vec::new(), Vec::new());
        let mut pg = (Vec::new(), Vec::new());
        for run in 0..opts.runs {
            let db = cluster.database()?;
            let file = tmp.path().join(format!("{kind:?}-{run}.db"));
            // Alternating which goes first.
            for first in [run % 2 == 0, run % 2 != 0] {
                if first {
                    let store = Arc::new(rjob::store::sqlite::SqliteStore::open(&file)?);
                    let (rate, size) = ingest(store, opts, kind).await?;
                    eprintln!("==> {kind:?} run {run}: sqlite {rate:.1} MB/s ({size:.1} MB stored)");
                    sqlite.0.push(rate);
                    sqlite.1.push(size);
                } else {
                    let store = Arc::new(rjob::store::postgres::PgStore::open(&db.url()).await?);
                    let (rate, size) = ingest(store, opts, kind).await?;
                    eprintln!("==> {kind:?} run {run}: postgres {rate:.1} MB/s ({size:.1} MB stored)");
                    pg.0.push(rate);
                    pg.1.push(size);
                }
            }
            let _ = std::fs::remove_file(&file);
        }
        for (store, (rates, sizes)) in [("sqlite", sqlite), ("postgres", pg)] {
            rows.push(Row {
                store,
                payload: kind,
                median_mb_per_s: median(rates.clone()),
                median_stored_mb: median(sizes),
                mb_per_s: rates,
            });
        }
    }
    report(opts, &rows)
}

fn report(opts: &StoreOpts, rows: &[Row]) -> Result<()> {
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir)?;
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut md = format!(
        "# rjob-bench store\n\n{} MB per run, chunks of {} KiB, {} chunks per append, {} host(s), median of {} runs; load average at the end {}.\n\n| store | payload | MB/s (median) | runs, MB/s | stored, MB |\n|---|---|---|---|---|\n",
        opts.mb,
        opts.chunk_kib,
        opts.batch,
        opts.hosts,
        opts.runs,
        crate::bench::loadavg()
    );
    for r in rows {
        let runs: Vec<String> = r.mb_per_s.iter().map(|v| format!("{v:.1}")).collect();
        md.push_str(&format!(
            "| {} | {:?} | {} | {} | {} |\n",
            r.store,
            r.payload,
            show(r.median_mb_per_s),
            runs.join(", "),
            show(r.median_stored_mb)
        ));
    }
    print!("{md}");
    std::fs::write(out_dir.join("store.md"), &md)?;
    let json = serde_json::json!({ "opts": opts, "rows": rows });
    std::fs::write(out_dir.join("store.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!("==> wrote {}", out_dir.join("store.md").display());
    Ok(())
}
