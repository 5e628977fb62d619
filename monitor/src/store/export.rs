//! The SQL of `agentmon export`: which sessions, the stretch of chain their rows span, and the
//! checkpoint and key that close the proof. The packet format is `crate::packet`.

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::{chain::ROW_SQL, packet::SESSION_TABLES};

/// Which sessions to export: any of `sessions` (id prefixes or suffixes), within the filters.
pub struct Selection<'a> {
    pub sessions: &'a [String],
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub agent: Option<&'a str>,
}

/// (id, host, ended) of the selected sessions, oldest first: those matching any `--session`
/// (by prefix or suffix, as every id argument), within the time and agent filters.
pub async fn select_sessions(pool: &PgPool, args: &Selection<'_>) -> anyhow::Result<Vec<(String, String, bool)>> {
    let query = |part: Option<&str>| {
        let mut q: sqlx::QueryBuilder<sqlx::Postgres> =
            sqlx::QueryBuilder::new("SELECT s.started_at, s.id::text, s.host, e.session_id IS NOT NULL FROM sessions s LEFT JOIN session_ends e ON e.session_id = s.id WHERE true");
        if let Some(p) = part {
            crate::store::query::push_id_match(&mut q, "s.id", p);
        }
        if let Some(t) = args.since {
            q.push(" AND s.started_at >= ").push_bind(t);
        }
        if let Some(t) = args.until {
            q.push(" AND s.started_at < ").push_bind(t);
        }
        if let Some(a) = args.agent {
            q.push(" AND s.agent = ").push_bind(a.to_owned());
        }
        q.push(" ORDER BY s.started_at, s.id");
        q
    };
    let mut rows: Vec<(DateTime<Utc>, String, String, bool)> = Vec::new();
    if args.sessions.is_empty() {
        rows = query(None).build_query_as().fetch_all(pool).await.context("selecting the sessions")?;
    }
    for p in args.sessions {
        let found: Vec<(DateTime<Utc>, String, String, bool)> =
            query(Some(p)).build_query_as().fetch_all(pool).await.context("selecting the sessions")?;
        if found.is_empty() {
            bail!("no session matches `{p}`");
        }
        if found.len() > 1 && args.since.is_none() && args.until.is_none() && args.agent.is_none() {
            bail!("`{p}` matches {} sessions; give more of the id", found.len());
        }
        rows.extend(found);
    }
    // Oldest first, each once (two `--session` may name the same one).
    rows.sort();
    rows.dedup();
    Ok(rows.into_iter().map(|(_, id, host, ended)| (id, host, ended)).collect())
}

/// The first stored checkpoint of `host` that covers chain position `hi`.
pub async fn covering_checkpoint(pool: &PgPool, host: &str, hi: i64) -> Result<Option<Value>, sqlx::Error> {
    let cp_row = ROW_SQL.iter().find(|t| t.0 == "checkpoints").map_or("NULL", |t| t.1);
    let cp: Option<(i64, Value)> = sqlx::query_as(&format!(
        "SELECT chain_seq, {cp_row} FROM checkpoints WHERE host = $1 AND covers_seq >= $2 AND chain_seq IS NOT NULL ORDER BY covers_seq LIMIT 1"
    ))
    .bind(host)
    .bind(hi)
    .fetch_optional(pool)
    .await?;
    Ok(cp.map(|(_, v)| v))
}

/// The first and last chain position of the sessions' rows on `host`.
pub async fn session_span(
    pool: &PgPool,
    host: &str,
    ids: &[String],
) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
    let span: Vec<String> = SESSION_TABLES
        .iter()
        .map(|(t, k)| {
            format!(
                "SELECT min(chain_seq) AS lo, max(chain_seq) AS hi FROM {t} WHERE host = $1 AND {k}::text = ANY($2)"
            )
        })
        .collect();
    let sql = format!("SELECT min(lo), max(hi) FROM ({}) s", span.join(" UNION ALL "));
    sqlx::query_as(&sql).bind(host).bind(ids).fetch_one(pool).await
}

/// The public key (hex) of `host`'s key `fingerprint`, if registered.
pub async fn public_key(pool: &PgPool, host: &str, fingerprint: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT public_key FROM signing_keys WHERE host = $1 AND fingerprint = $2")
        .bind(host)
        .bind(fingerprint)
        .fetch_optional(pool)
        .await
}

/// The stored chain hash of `host`'s row `seq` (a row, or a leaf retention kept).
pub async fn chain_hash_at(pool: &PgPool, host: &str, seq: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let parts: Vec<String> = ROW_SQL
        .iter()
        .map(|(t, _, _)| format!("SELECT chain_hash FROM {t} WHERE host = $1 AND chain_seq = $2"))
        .collect();
    let sql = format!(
        "{} UNION ALL SELECT chain_hash FROM retained_leaves WHERE host = $1 AND chain_seq = $2",
        parts.join(" UNION ALL ")
    );
    sqlx::query_scalar(&sql).bind(host).bind(seq).fetch_optional(pool).await
}
