//! Output in PostgreSQL: a batch of chunks in one multi-row INSERT (arrays unnested: one
//! statement whatever the batch's size), each chunk kept once (`ON CONFLICT DO NOTHING`),
//! read back by sequence number, and one NOTIFY per batch ([`super::listen`]); and the
//! received marks of each child.

use super::error::DbError;
use super::lease::fence;
use super::listen::{payloads, Kind, CHANNEL};
use super::{to_i64, to_u64, PgStore};
use crate::store::{Chunk, Mark, Output, Stream};

/// The columns of each stream's mark.
fn columns(stream: Stream) -> (&'static str, &'static str) {
    match stream {
        Stream::Stderr => ("received_err_seq", "received_err_off"),
        Stream::Stdout => ("received_out_seq", "received_out_off"),
    }
}

fn mark(seq: i64, off: i32) -> Mark {
    Mark {
        seq: to_u64(seq),
        off: u32::try_from(off).unwrap_or(0),
    }
}

impl PgStore {
    /// Stores the chunks of the children this daemon owns and advances their `last_seq`,
    /// in one transaction; [`DbError::Fenced`] (after storing the others) when some child's
    /// lease is lost, whose chunks are not stored.
    pub(super) async fn try_append_output(&self, chunks: &[Chunk]) -> Result<(), DbError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let idx_of = |c: &Chunk| i32::try_from(c.idx).unwrap_or(i32::MAX);
        let mut keys: Vec<(i64, i32)> = chunks.iter().map(|c| (c.job_id, idx_of(c))).collect();
        keys.sort_unstable();
        keys.dedup();
        let (kj, ki): (Vec<i64>, Vec<i32>) = keys.iter().copied().unzip();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let epoch = self.lease_epoch();
        let owned = fence(&tx, epoch, &kj, &ki).await?;
        let kept: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| owned.binary_search(&(c.job_id, idx_of(c))).is_ok())
            .collect();
        let jobs: Vec<i64> = kept.iter().map(|c| c.job_id).collect();
        let idxs: Vec<i32> = kept.iter().map(|c| idx_of(c)).collect();
        let seqs: Vec<i64> = kept.iter().map(|c| to_i64(c.seq)).collect();
        let streams: Vec<i16> = kept.iter().map(|c| i16::from(c.stream.code())).collect();
        let data: Vec<&[u8]> = kept.iter().map(|c| c.data.as_slice()).collect();
        let writer = (epoch != 0).then_some(epoch);
        let insert = tx
            .prepare_cached(
                "INSERT INTO output (job_id, idx, seq, stream, data, written_by)
                 SELECT j, i, s, st, d, $6::bigint FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::smallint[], $5::bytea[])
                     AS t (j, i, s, st, d)
                 WHERE EXISTS (SELECT 1 FROM children c WHERE c.job_id = t.j AND c.idx = t.i)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&insert, &[&jobs, &idxs, &seqs, &streams, &data, &writer])
            .await?;
        let advance = tx
            .prepare_cached(
                "UPDATE children c SET last_seq = m.seq, written_by = coalesce($4, c.written_by)
                 FROM (SELECT j, i, max(s) AS seq FROM unnest($1::bigint[], $2::integer[], $3::bigint[]) AS t (j, i, s)
                       GROUP BY j, i) m
                 WHERE c.job_id = m.j AND c.idx = m.i AND c.last_seq < m.seq",
            )
            .await?;
        tx.execute(&advance, &[&jobs, &idxs, &seqs, &writer]).await?;
        // One notice for the whole batch, sent when it commits (the other daemons' followers).
        for payload in payloads(&self.origin, Kind::Changed, &jobs) {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
        }
        tx.commit().await?;
        if owned.len() < keys.len() {
            return Err(DbError::Fenced);
        }
        Ok(())
    }

    pub(super) async fn try_output(
        &self,
        job_id: i64,
        idx: u32,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Output>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, stream, data FROM output
                 WHERE job_id = $1 AND idx = $2 AND seq > $3 AND seq <= $4 ORDER BY seq LIMIT $5",
            )
            .await?;
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&job_id, &idx, &to_i64(after), &to_i64(upto), &limit])
            .await?;
        Ok(rows
            .iter()
            .map(|r| Output {
                seq: to_u64(r.get(0)),
                stream: Stream::from_code(i64::from(r.get::<_, i16>(1))),
                data: r.get(2),
            })
            .collect())
    }

    pub(super) async fn try_received_marks(&self, job_id: i64, idx: u32) -> Result<[Mark; 2], DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT received_out_seq, received_out_off, received_err_seq, received_err_off
                 FROM children WHERE job_id = $1 AND idx = $2",
            )
            .await?;
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        Ok(match client.query_opt(&stmt, &[&job_id, &idx]).await? {
            Some(r) => [mark(r.get(0), r.get(1)), mark(r.get(2), r.get(3))],
            None => [Mark::default(); 2],
        })
    }

    /// Moves one stream's mark forward (never back), then the child's received prefix:
    /// everything before the first chunk that either stream has not delivered whole.
    pub(super) async fn try_mark_received(
        &self,
        job_id: i64,
        idx: u32,
        stream: Stream,
        to: Mark,
    ) -> Result<(), DbError> {
        let (seq, off) = columns(stream);
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        let (to_seq, to_off) = (to_i64(to.seq), i32::try_from(to.off).unwrap_or(i32::MAX));
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Locks the row (the mark and the prefix move together), moving the mark if ahead.
        let moved = tx
            .prepare_cached(&format!(
                "UPDATE children SET
                     {off} = CASE WHEN ({seq}, {off}) < ($3, $4) THEN $4 ELSE {off} END,
                     {seq} = CASE WHEN ({seq}, {off}) < ($3, $4) THEN $3 ELSE {seq} END
                 WHERE job_id = $1 AND idx = $2
                 RETURNING last_seq, received_out_seq, received_err_seq"
            ))
            .await?;
        let Some(row) = tx.query_opt(&moved, &[&job_id, &idx, &to_seq, &to_off]).await? else {
            return Ok(()); // no such child (removed meanwhile)
        };
        let (last_seq, out_seq, err_seq): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let next = tx
            .prepare_cached(
                "SELECT (SELECT min(seq) FROM output WHERE job_id = $1 AND idx = $2 AND stream = 1 AND seq > $3),
                        (SELECT min(seq) FROM output WHERE job_id = $1 AND idx = $2 AND stream = 2 AND seq > $4)",
            )
            .await?;
        let row = tx.query_one(&next, &[&job_id, &idx, &out_seq, &err_seq]).await?;
        let prefix = [row.get::<_, Option<i64>>(0), row.get(1)]
            .into_iter()
            .flatten()
            .fold(last_seq, |p, next| p.min(next - 1));
        tx.execute(
            "UPDATE children SET received_seq = $3 WHERE job_id = $1 AND idx = $2 AND received_seq < $3",
            &[&job_id, &idx, &prefix],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
