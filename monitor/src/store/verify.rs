//! The SQL `agentmon verify` (and `export`, `retention --verify-archive`) read: hosts, keys,
//! checkpoints, retained leaves and each host's rows in chain order. The checks are in
//! `crate::verify`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt as _};
use serde_json::Value;

use crate::{
    chain::{self, ROW_SQL},
    verify::{ChainRow, RETAINED},
};

/// The chained retention cuts of the database (any host's).
pub async fn known_cuts(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id::text FROM retention_cuts WHERE chain_seq IS NOT NULL").fetch_all(pool).await
}

/// A `retained_leaves` row: host, `chain_seq`, leaf, `chain_hash`.
type LeafRow = (String, i64, Vec<u8>, Option<Vec<u8>>);

/// The leaves a cut kept, in (host, `chain_seq`) order.
pub async fn cut_leaves(pool: &sqlx::PgPool, cut: uuid::Uuid) -> Result<Vec<chain::RetainedLeaf>, sqlx::Error> {
    let rows: Vec<LeafRow> = sqlx::query_as(
        "SELECT host, chain_seq, leaf, chain_hash FROM retained_leaves WHERE cut_id = $1 ORDER BY host, chain_seq",
    )
    .bind(cut)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(host, seq, leaf, h)| chain::RetainedLeaf {
            host,
            seq: seq as u64,
            leaf: leaf.try_into().unwrap_or([0; 32]),
            chain_hash: h.and_then(|h| h.try_into().ok()),
        })
        .collect())
}

/// Hosts with a chain in this database.
pub async fn hosts(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT host FROM signing_keys UNION SELECT DISTINCT host FROM sessions ORDER BY 1")
        .fetch_all(pool)
        .await
}

/// A host's signing keys: fingerprint → public key (hex).
pub async fn keys(pool: &sqlx::PgPool, host: &str) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT fingerprint, public_key FROM signing_keys WHERE host = $1")
            .bind(host)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The row of the newest checkpoint of `host` at or before `since` (see `verify::start_at`).
pub async fn checkpoint_before(
    pool: &sqlx::PgPool,
    host: &str,
    since: DateTime<Utc>,
) -> Result<Option<Value>, sqlx::Error> {
    let sql = format!(
        "SELECT row FROM (SELECT {} AS row, chain_seq FROM checkpoints WHERE host = $1 AND at <= $2) c ORDER BY chain_seq DESC LIMIT 1",
        ROW_SQL.iter().find(|t| t.0 == "checkpoints").map_or("NULL", |t| t.1)
    );
    sqlx::query_scalar(&sql).bind(host).bind(since).fetch_optional(pool).await
}

/// Every row of a host's chain from `start` on, in chain order, streamed (the database merges
/// the tables' `(host, chain_seq)` indexes).
pub fn chain_rows<'a>(
    pool: &'a sqlx::PgPool,
    host: &'a str,
    start: u64,
) -> impl Stream<Item = Result<ChainRow, sqlx::Error>> + 'a {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let parts: Vec<String> = ROW_SQL
            .iter()
            .map(|(table, row, id)| format!("SELECT '{table}'::text AS t, {id} AS id, chain_seq, chain_hash, {row} AS row FROM {table} WHERE host = $1 AND chain_seq >= $2"))
            .collect();
        format!(
            "{} UNION ALL SELECT '{RETAINED}', cut_id::text, chain_seq, chain_hash, jsonb_build_object('table', table_name, 'leaf', encode(leaf, 'hex')) \
             FROM retained_leaves WHERE host = $1 AND chain_seq >= $2 ORDER BY chain_seq",
            parts.join(" UNION ALL ")
        )
    });
    sqlx::query_as::<_, (String, String, i64, Option<Vec<u8>>, Value)>(sql)
        .bind(host)
        .bind(start as i64)
        .fetch(pool)
        .map(|r| {
            r.map(|(table, id, seq, hash, row)| ChainRow {
                table,
                id,
                seq: seq as u64,
                hash: hash.and_then(|h| h.try_into().ok()),
                row,
            })
        })
}

/// Rows of a host that have no place in the chain (inserted by hand, or written before the
/// chain existed).
pub async fn unchained(pool: &sqlx::PgPool, host: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let parts: Vec<String> = ROW_SQL
        .iter()
        .map(|(table, _, id)| {
            format!("(SELECT '{table}'::text, {id} FROM {table} WHERE host = $1 AND chain_seq IS NULL LIMIT 1000)")
        })
        .collect();
    sqlx::query_as(&parts.join(" UNION ALL ")).bind(host).fetch_all(pool).await
}
