//! Retention's SQL: the day partitions, their rows, the retained leaves and the guarded drop
//! (`agentmon_retention_drop`, see the migrations). The steps are in `daemon/retention.rs`.

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    chain::{self, RetainedLeaf},
    retention::{day_start, parse_partition, time_column, TABLES},
};

/// The day partitions of the evidence tables.
pub async fn partitions(pool: &PgPool) -> Result<Vec<(&'static str, NaiveDate)>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relnamespace = current_schema()::regnamespace AND p.relname::text = ANY($1)",
    )
    .bind(TABLES.iter().map(|(t, _)| (*t).to_owned()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|n| parse_partition(n)).collect())
}

/// The rows of `table` on `day`.
pub async fn count(pool: &PgPool, table: &str, day: NaiveDate) -> Result<u64, sqlx::Error> {
    let col = time_column(table).unwrap_or("ts");
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {col} >= $1 AND {col} < $2"))
        .bind(day_start(day))
        .bind(day_start(day) + chrono::Duration::days(1))
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

pub type DayRow = (String, Option<i64>, Option<Vec<u8>>, Value);

/// The rows of one day of `table`: (host, `chain_seq`, `chain_hash`, row object), chained rows in
/// (host, `chain_seq`) order, then the unchained. Bind the day's start and end.
pub fn day_rows_sql(table: &str) -> String {
    let col = time_column(table).unwrap_or("ts");
    let row = chain::ROW_SQL.iter().find(|(t, _, _)| *t == table).map_or("NULL", |(_, r, _)| *r);
    format!("SELECT host, chain_seq, chain_hash, {row} FROM {table} WHERE {col} >= $1 AND {col} < $2 ORDER BY host, chain_seq NULLS LAST")
}

pub fn day_rows<'a>(
    pool: &'a PgPool,
    sql: &'a str,
    day: NaiveDate,
) -> impl futures_util::Stream<Item = Result<DayRow, sqlx::Error>> + 'a {
    sqlx::query_as::<_, DayRow>(sql).bind(day_start(day)).bind(day_start(day) + chrono::Duration::days(1)).fetch(pool)
}

/// Insert a cut's retained leaves, in the transaction that drops the partition.
pub async fn insert_leaves(
    db: &mut sqlx::PgConnection,
    cut: Uuid,
    table: &str,
    leaves: &[RetainedLeaf],
) -> Result<(), sqlx::Error> {
    if leaves.is_empty() {
        return Ok(());
    }
    let mut q =
        sqlx::QueryBuilder::new("INSERT INTO retained_leaves (cut_id, host, chain_seq, table_name, leaf, chain_hash) ");
    q.push_values(leaves, |mut b, l| {
        b.push_bind(cut)
            .push_bind(&l.host)
            .push_bind(l.seq as i64)
            .push_bind(table)
            .push_bind(l.leaf.to_vec())
            .push_bind(l.chain_hash.map(|h| h.to_vec()));
    });
    q.build().execute(db).await?;
    Ok(())
}

/// Drop a day partition under its stored cut; the database checks the cut counts exactly its
/// rows and every chained row has its leaf. Returns the rows dropped.
pub async fn drop_partition(
    db: &mut sqlx::PgConnection,
    table: &str,
    day: NaiveDate,
    cut: Uuid,
) -> Result<u64, sqlx::Error> {
    let dropped: i64 = sqlx::query_scalar("SELECT agentmon_retention_drop($1, $2, $3)")
        .bind(table)
        .bind(day)
        .bind(cut)
        .fetch_one(db)
        .await?;
    Ok(dropped as u64)
}

/// Whether the cut `id` is stored (and chained).
pub async fn cut_stored(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let stored: Option<i64> = sqlx::query_scalar("SELECT chain_seq FROM retention_cuts WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .flatten();
    Ok(stored.is_some())
}

/// The retention cut row (as `chain::ROW_SQL` makes it) of an archive: the one that recorded
/// this SHA-256, else the newest cut of the partition its name gives.
pub async fn archive_cut(pool: &PgPool, sha256: &str, partition: &str) -> Result<Option<Value>, sqlx::Error> {
    let cut_sql = chain::ROW_SQL.iter().find(|t| t.0 == "retention_cuts").map_or("NULL", |t| t.1);
    sqlx::query_scalar(&format!(
        "SELECT {cut_sql} FROM retention_cuts WHERE archive_sha256 = $1 OR partition_name = $2 ORDER BY (archive_sha256 = $1) DESC, at DESC LIMIT 1"
    ))
    .bind(sha256)
    .bind(partition)
    .fetch_optional(pool)
    .await
}
