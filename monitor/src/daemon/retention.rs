//! Retention with proof (README "Retention"): once a day, and on `agentmon retention`, the
//! daemon removes whole day partitions past their tier.
//!
//! - hot (`hot`): everything is kept.
//! - warm (past `hot`): the raw `events` partition of the day is dropped; sessions, actions,
//!   processes, session ends and alerts stay.
//! - cold (past `warm`): every partition of the day is written to a gzip JSON-lines archive
//!   (one row object of `chain::ROW_SQL` per line) with a SHA-256, then dropped.
//! - archives past `cold` are deleted from the archive directory (their cuts stay).
//!
//! Each partition is removed in three steps: read it and compute each chained row's leaf (and
//! the archive); have the main loop sign and chain a [`RetentionCut`] naming it, and wait until
//! the cut is stored; then, in one transaction, insert the leaves into `retained_leaves` and
//! call `agentmon_retention_drop`, which drops the partition only if the cut counts exactly its
//! rows and every chained row has its leaf. `verify` links through the leaves.

use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    chain::{self, LeavesHasher, RetainedLeaf},
    control::Response,
    record::RetentionCut,
    text::hex,
};

/// `[retention]` in the config file. Unset: nothing is ever removed.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep everything this long (e.g. `7d`); then raw events are dropped.
    pub hot: Option<String>,
    /// Keep the rest this long (e.g. `30d`); then archive and drop. Unset: never.
    pub warm: Option<String>,
    /// Keep archives this long (e.g. `365d`); then delete them. Unset: forever.
    pub cold: Option<String>,
    /// Where cold archives go (default `<state dir>/archive`).
    pub archive_dir: Option<PathBuf>,
}

/// The tiers, as durations.
#[derive(Debug, Clone)]
pub struct Policy {
    pub hot: chrono::Duration,
    pub warm: Option<chrono::Duration>,
    pub cold: Option<chrono::Duration>,
    pub archive_dir: PathBuf,
}

impl Policy {
    /// None when retention is not configured. Errors name the key.
    pub fn new(c: &RetentionConfig, state_dir: &Path) -> Result<Option<Self>, (String, String)> {
        let parse = |k: &str, v: &Option<String>| {
            v.as_deref().map(crate::alerts::parse_duration).transpose().map_err(|m| (format!("retention.{k}"), m))
        };
        let (hot, warm, cold) = (parse("hot", &c.hot)?, parse("warm", &c.warm)?, parse("cold", &c.cold)?);
        let Some(hot) = hot else {
            if warm.is_some() || cold.is_some() || c.archive_dir.is_some() {
                return Err(("retention.hot".into(), "missing: set hot (e.g. \"7d\") to turn retention on".into()));
            }
            return Ok(None);
        };
        if hot < chrono::Duration::days(1) {
            return Err(("retention.hot".into(), "must be at least 1d: retention removes whole UTC days".into()));
        }
        if let Some(w) = warm.filter(|w| *w < hot) {
            return Err((
                "retention.warm".into(),
                format!("{}d is shorter than hot; expected hot <= warm <= cold", w.num_days()),
            ));
        }
        if let Some(cold) = cold {
            match warm {
                None => {
                    return Err(("retention.cold".into(), "needs warm: archives are made when rows leave warm".into()))
                }
                Some(w) if cold < w => {
                    return Err((
                        "retention.cold".into(),
                        format!("{}d is shorter than warm; expected hot <= warm <= cold", cold.num_days()),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(Some(Self {
            hot,
            warm,
            cold,
            archive_dir: c.archive_dir.clone().unwrap_or_else(|| state_dir.join("archive")),
        }))
    }
}

/// The day-partitioned tables and their time column, children before parents.
pub const TABLES: &[(&str, &str)] = &[
    ("events", "ts"),
    ("alerts", "first_at"),
    ("processes", "started_at"),
    ("actions", "started_at"),
    ("session_ends", "ended_at"),
    ("sessions", "started_at"),
];

fn time_column(table: &str) -> Option<&'static str> {
    TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c)
}

pub fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

/// `<table>_pYYYYMMDD` → (table, day).
pub fn parse_partition(name: &str) -> Option<(&'static str, NaiveDate)> {
    let (table, day) = name.rsplit_once("_p")?;
    let table = TABLES.iter().find(|(t, _)| *t == table)?.0;
    (day.len() == 8).then(|| NaiveDate::parse_from_str(day, "%Y%m%d").ok()).flatten().map(|d| (table, d))
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// What to do with each partition at `as_of`: a day is past a tier once its whole day is.
pub fn plan(
    parts: &[(&'static str, NaiveDate)],
    p: &Policy,
    as_of: DateTime<Utc>,
) -> Vec<(&'static str, NaiveDate, &'static str)> {
    let mut out: Vec<_> = parts
        .iter()
        .filter_map(|&(table, day)| {
            let end = day_start(day) + chrono::Duration::days(1);
            if p.warm.is_some_and(|w| end <= as_of - w) {
                Some((table, day, "cold"))
            } else if table == "events" && end <= as_of - p.hot {
                Some((table, day, "warm"))
            } else {
                None
            }
        })
        .collect();
    let order = |t: &str| TABLES.iter().position(|(x, _)| *x == t).unwrap_or(usize::MAX);
    out.sort_by_key(|(t, d, _)| (*d, order(t)));
    out
}

/// One partition in a retention run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub table: String,
    pub partition: String,
    pub day: NaiveDate,
    /// `warm` (raw events dropped) or `cold` (archived, then dropped).
    pub tier: String,
    pub rows: u64,
    /// `planned` (dry run), `dropped`, or `failed`.
    pub status: String,
    pub cut_id: Option<Uuid>,
    pub archive_file: Option<String>,
    pub archive_sha256: Option<String>,
    pub error: Option<String>,
}

/// What `agentmon retention` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub as_of: DateTime<Utc>,
    pub dry_run: bool,
    pub items: Vec<Item>,
    /// Archives past `cold`, deleted (or, in a dry run, to be deleted).
    pub expired_archives: Vec<String>,
}

/// A request of `agentmon retention`, from the control socket.
pub struct RunRequest {
    pub dry_run: bool,
    pub as_of: Option<DateTime<Utc>>,
    pub reply: oneshot::Sender<Response>,
}

/// A cut for the main loop to sign, chain and queue.
pub struct CutRequest {
    pub cut: RetentionCut,
    pub queued: oneshot::Sender<()>,
}

/// The retention task: daily, and on request.
pub async fn run(
    pool: PgPool,
    policy: Policy,
    mut requests: mpsc::Receiver<RunRequest>,
    cuts: mpsc::Sender<CutRequest>,
) {
    let mut daily =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(300), Duration::from_secs(86_400));
    loop {
        tokio::select! {
            _ = daily.tick() => {
                let r = apply(&pool, &policy, Utc::now(), false, &cuts).await;
                log(&r);
            }
            req = requests.recv() => {
                let Some(req) = req else { return };
                let r = apply(&pool, &policy, req.as_of.unwrap_or_else(Utc::now), req.dry_run, &cuts).await;
                if !req.dry_run {
                    log(&r);
                }
                let _ = req.reply.send(Response::Retention(Box::new(r)));
            }
        }
    }
}

fn log(r: &Report) {
    for i in &r.items {
        match &i.error {
            None => {
                info!(partition = %i.partition, tier = %i.tier, rows = i.rows, cut = ?i.cut_id, archive = ?i.archive_file, "retention: partition removed under a signed cut")
            }
            Some(e) => {
                warn!(partition = %i.partition, tier = %i.tier, error = %e, "retention: partition kept (retried at the next run)")
            }
        }
    }
    for f in &r.expired_archives {
        info!(archive = %f, "retention: archive past the cold tier deleted");
    }
}

/// The day partitions of the evidence tables.
async fn partitions(pool: &PgPool) -> Result<Vec<(&'static str, NaiveDate)>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relnamespace = current_schema()::regnamespace AND p.relname::text = ANY($1)",
    )
    .bind(TABLES.iter().map(|(t, _)| (*t).to_owned()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|n| parse_partition(n)).collect())
}

/// Plan, and unless `dry_run` apply, retention at `as_of`.
pub async fn apply(
    pool: &PgPool,
    p: &Policy,
    as_of: DateTime<Utc>,
    dry_run: bool,
    cuts: &mpsc::Sender<CutRequest>,
) -> Report {
    let mut report = Report { as_of, dry_run, items: Vec::new(), expired_archives: Vec::new() };
    let parts = match partitions(pool).await {
        Ok(p) => p,
        Err(e) => {
            report.items.push(Item {
                table: "-".into(),
                partition: "-".into(),
                day: as_of.date_naive(),
                tier: "-".into(),
                rows: 0,
                status: "failed".into(),
                cut_id: None,
                archive_file: None,
                archive_sha256: None,
                error: Some(format!("listing the partitions: {e}")),
            });
            return report;
        }
    };
    for (table, day, tier) in plan(&parts, p, as_of) {
        let mut item = Item {
            table: table.into(),
            partition: partition_name(table, day),
            day,
            tier: tier.into(),
            rows: 0,
            status: "planned".into(),
            cut_id: None,
            archive_file: None,
            archive_sha256: None,
            error: None,
        };
        let result = if dry_run {
            count(pool, table, day).await.map(|n| item.rows = n).map_err(anyhow::Error::from)
        } else {
            cut_partition(pool, p, &mut item, cuts).await
        };
        if let Err(e) = result {
            item.status = "failed".into();
            item.error = Some(format!("{e:#}"));
        }
        report.items.push(item);
    }
    if let Some(cold) = p.cold {
        report.expired_archives = expire_archives(&p.archive_dir, as_of - cold, dry_run);
    }
    report
}

async fn count(pool: &PgPool, table: &str, day: NaiveDate) -> Result<u64, sqlx::Error> {
    let col = time_column(table).unwrap_or("ts");
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {col} >= $1 AND {col} < $2"))
        .bind(day_start(day))
        .bind(day_start(day) + chrono::Duration::days(1))
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

type DayRow = (String, Option<i64>, Option<Vec<u8>>, Value);

/// The rows of one day of `table`: (host, chain_seq, chain_hash, row object), chained rows in
/// (host, chain_seq) order, then the unchained. Bind the day's start and end.
fn day_rows_sql(table: &str) -> String {
    let col = time_column(table).unwrap_or("ts");
    let row = chain::ROW_SQL.iter().find(|(t, _, _)| *t == table).map_or("NULL", |(_, r, _)| *r);
    format!("SELECT host, chain_seq, chain_hash, {row} FROM {table} WHERE {col} >= $1 AND {col} < $2 ORDER BY host, chain_seq NULLS LAST")
}

fn day_rows<'a>(
    pool: &'a PgPool,
    sql: &'a str,
    day: NaiveDate,
) -> impl futures_util::Stream<Item = Result<DayRow, sqlx::Error>> + 'a {
    sqlx::query_as::<_, DayRow>(sql).bind(day_start(day)).bind(day_start(day) + chrono::Duration::days(1)).fetch(pool)
}

fn retained(host: String, seq: i64, hash: Option<Vec<u8>>, row: &Value) -> RetainedLeaf {
    RetainedLeaf { host, seq: seq as u64, leaf: chain::leaf(row), chain_hash: hash.and_then(|h| h.try_into().ok()) }
}

/// Remove one partition under a signed cut (see the module comment).
async fn cut_partition(
    pool: &PgPool,
    p: &Policy,
    item: &mut Item,
    cuts: &mpsc::Sender<CutRequest>,
) -> anyhow::Result<()> {
    let (table, day) = (item.table.clone(), item.day);
    // 1. Read it: the leaves' hash, and the archive for cold.
    let mut archive = if item.tier == "cold" { Some(Archive::create(&p.archive_dir, &item.partition)?) } else { None };
    let (mut rows, mut chained, mut first, mut last) = (0u64, 0u64, None::<u64>, None::<u64>);
    let mut hasher = LeavesHasher::default();
    let sql = day_rows_sql(&table);
    let mut stream = std::pin::pin!(day_rows(pool, &sql, day));
    while let Some(r) = stream.next().await {
        let (host, seq, hash, row) = r.context("reading the partition")?;
        rows += 1;
        if let Some(a) = archive.as_mut() {
            a.line(&row)?;
        }
        if let Some(seq) = seq {
            chained += 1;
            hasher.add(&retained(host, seq, hash, &row));
            first = Some(first.map_or(seq as u64, |f| f.min(seq as u64)));
            last = Some(last.map_or(seq as u64, |l| l.max(seq as u64)));
        }
    }
    item.rows = rows;
    let leaves_hash = hasher.finish();
    if let Some(a) = archive.take() {
        let (file, sha) = a.finish()?;
        item.archive_file = Some(file.display().to_string());
        item.archive_sha256 = Some(sha);
    }
    // 2. The signed cut, chained and stored before anything is dropped.
    let cut = RetentionCut {
        id: Uuid::now_v7(),
        table: table.clone(),
        partition: item.partition.clone(),
        range_from: day_start(day),
        range_to: day_start(day) + chrono::Duration::days(1),
        tier: item.tier.clone(),
        rows,
        chained_rows: chained,
        first_seq: first,
        last_seq: last,
        leaves_hash: leaves_hash.clone(),
        archive_file: item.archive_file.clone(),
        archive_sha256: item.archive_sha256.clone(),
        covers_seq: 0,
        head_hash: String::new(),
        at: Utc::now(),
        key_fingerprint: String::new(),
        signature: String::new(),
        chain: crate::record::ChainLink::default(),
    };
    let id = cut.id;
    item.cut_id = Some(id);
    let (tx, rx) = oneshot::channel();
    cuts.send(CutRequest { cut, queued: tx }).await.map_err(|_| anyhow::anyhow!("the daemon is stopping"))?;
    rx.await.map_err(|_| anyhow::anyhow!("the daemon is stopping"))?;
    wait_stored(pool, id).await?;
    // 3. The leaves and the drop, in one transaction.
    let mut db = pool.begin().await?;
    let mut again = LeavesHasher::default();
    let mut batch: Vec<RetainedLeaf> = Vec::with_capacity(LEAF_CHUNK);
    let mut stream = std::pin::pin!(day_rows(pool, &sql, day));
    while let Some(r) = stream.next().await {
        let (host, seq, hash, row) = r.context("reading the partition again")?;
        let Some(seq) = seq else { continue };
        let l = retained(host, seq, hash, &row);
        again.add(&l);
        batch.push(l);
        if batch.len() == LEAF_CHUNK {
            insert_leaves(&mut db, id, &table, &batch).await?;
            batch.clear();
        }
    }
    insert_leaves(&mut db, id, &table, &batch).await?;
    if again.finish() != leaves_hash {
        bail!("the partition changed while it was being cut; kept (retried at the next run)");
    }
    let dropped: i64 = sqlx::query_scalar("SELECT agentmon_retention_drop($1, $2, $3)")
        .bind(&table)
        .bind(day)
        .bind(id)
        .fetch_one(&mut *db)
        .await?;
    db.commit().await?;
    crate::store::forget_day(day);
    item.rows = dropped as u64;
    item.status = "dropped".into();
    Ok(())
}

const LEAF_CHUNK: usize = 2000;

async fn insert_leaves(
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

/// The cut goes through the queue like any record: wait until the store has written it.
async fn wait_stored(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stored: Option<i64> = sqlx::query_scalar("SELECT chain_seq FROM retention_cuts WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
            .flatten();
        if stored.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the signed cut {id} was not stored within 120 s (is the database writable?); nothing was dropped");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cold archive being written: gzip of one canonical row object per line, to a temporary
/// name renamed into place once synced.
struct Archive {
    tmp: PathBuf,
    path: PathBuf,
    gz: flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>,
}

impl Archive {
    fn create(dir: &Path, partition: &str) -> anyhow::Result<Self> {
        // Directories made here are root only (the default lies in the state directory, 0711).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .with_context(|| format!("creating the archive directory {}", dir.display()))?;
        let path = dir.join(format!("{partition}.jsonl.gz"));
        let tmp = dir.join(format!(".{partition}.jsonl.gz.tmp"));
        let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            tmp,
            path,
            gz: flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default()),
        })
    }

    fn line(&mut self, row: &Value) -> std::io::Result<()> {
        self.gz.write_all(chain::canonical(row).as_bytes())?;
        self.gz.write_all(b"\n")
    }

    fn finish(self) -> anyhow::Result<(PathBuf, String)> {
        let f = self.gz.finish()?.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        let sha = file_sha256(&self.path)?;
        Ok((self.path, sha))
    }
}

pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// The lines of an archive, in order: each the canonical text of a row object, so a row's
/// leaf is the SHA-256 of its line.
pub fn read_archive(path: &Path) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = std::io::BufReader::new(flate2::read::GzDecoder::new(f));
    r.lines().collect::<Result<_, _>>().with_context(|| format!("{}: not a gzip archive, or cut short", path.display()))
}

/// Delete archives of days that ended before `before`.
fn expire_archives(dir: &Path, before: DateTime<Utc>, dry_run: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, day)) = name.strip_suffix(".jsonl.gz").and_then(parse_partition) else { continue };
        if day_start(day) + chrono::Duration::days(1) <= before && (dry_run || std::fs::remove_file(e.path()).is_ok()) {
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hot: i64, warm: Option<i64>) -> Policy {
        Policy {
            hot: chrono::Duration::days(hot),
            warm: warm.map(chrono::Duration::days),
            cold: None,
            archive_dir: PathBuf::from("/nonexistent"),
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn a_day_leaves_a_tier_only_once_all_of_it_is_past() {
        let parts = [
            ("events", d("2026-12-01")),
            ("actions", d("2026-12-01")),
            ("events", d("2026-11-20")),
            ("sessions", d("2026-11-20")),
            ("events", d("2026-12-04")),
        ];
        let p = policy(1, Some(15));
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        // 2026-12-01 ends at 12-02 00:00; hot 1d: warm from 12-03 00:00, not a microsecond before.
        assert_eq!(plan(&parts, &p, at("2026-12-02T23:59:59Z")), vec![("events", d("2026-11-20"), "warm")]);
        assert_eq!(
            plan(&parts, &p, at("2026-12-03T00:00:00Z")),
            vec![("events", d("2026-11-20"), "warm"), ("events", d("2026-12-01"), "warm")]
        );
        // 2026-11-20 ends 11-21; warm 15d: cold from 12-06, every table of the day, events first.
        assert_eq!(
            plan(&parts, &p, at("2026-12-06T00:00:00Z")),
            vec![
                ("events", d("2026-11-20"), "cold"),
                ("sessions", d("2026-11-20"), "cold"),
                ("events", d("2026-12-01"), "warm"),
                ("events", d("2026-12-04"), "warm")
            ]
        );
        assert!(plan(&parts, &policy(1, None), at("2030-01-01T00:00:00Z"))
            .iter()
            .all(|(t, _, tier)| *t == "events" && *tier == "warm"));
    }

    #[test]
    fn partition_names_round_trip_and_others_are_ignored() {
        assert_eq!(
            parse_partition(&partition_name("session_ends", d("2026-01-31"))),
            Some(("session_ends", d("2026-01-31")))
        );
        assert_eq!(parse_partition("events_default"), None);
        assert_eq!(parse_partition("checkpoints_p20260101"), None);
        assert_eq!(parse_partition("events_p2026011"), None);
        assert_eq!(parse_partition("events_p20261341"), None);
    }

    #[test]
    fn tiers_are_checked() {
        let cfg = |hot: Option<&str>, warm: Option<&str>, cold: Option<&str>| RetentionConfig {
            hot: hot.map(Into::into),
            warm: warm.map(Into::into),
            cold: cold.map(Into::into),
            archive_dir: None,
        };
        let st = Path::new("/var/lib/agentmon");
        assert!(Policy::new(&cfg(None, None, None), st).expect("off").is_none());
        let p = Policy::new(&cfg(Some("7d"), Some("30d"), Some("365d")), st).expect("ok").expect("on");
        assert_eq!((p.hot.num_days(), p.warm.map(|w| w.num_days()), p.archive_dir), (7, Some(30), st.join("archive")));
        assert_eq!(Policy::new(&cfg(None, Some("30d"), None), st).expect_err("no hot").0, "retention.hot");
        assert_eq!(Policy::new(&cfg(Some("12h"), None, None), st).expect_err("under a day").0, "retention.hot");
        assert_eq!(Policy::new(&cfg(Some("7d"), Some("3d"), None), st).expect_err("warm < hot").0, "retention.warm");
        assert_eq!(
            Policy::new(&cfg(Some("7d"), None, Some("30d")), st).expect_err("cold without warm").0,
            "retention.cold"
        );
        assert_eq!(Policy::new(&cfg(Some("7d"), Some("30d"), Some("2w")), st).expect_err("unit").0, "retention.cold");
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("agentmon-archive-{}", std::process::id()));
        let rows = [
            serde_json::json!({"table": "actions", "chain_seq": 4, "argv": ["a b", "é\n"]}),
            serde_json::json!({"table": "actions", "chain_seq": 9}),
        ];
        let mut a = Archive::create(&dir, "actions_p20261201").expect("create");
        for r in &rows {
            a.line(r).expect("line");
        }
        let (path, sha) = a.finish().expect("finish");
        assert_eq!(path, dir.join("actions_p20261201.jsonl.gz"));
        assert_eq!(sha, file_sha256(&path).expect("sha"));
        assert_eq!(read_archive(&path).expect("read"), rows.iter().map(chain::canonical).collect::<Vec<_>>());
        assert_eq!(
            expire_archives(&dir, day_start(d("2026-12-02")), true),
            Vec::<String>::new().into_iter().chain([path.display().to_string()]).collect::<Vec<_>>()
        );
        assert!(expire_archives(&dir, day_start(d("2026-12-01")), false).is_empty());
        assert_eq!(expire_archives(&dir, day_start(d("2026-12-02")), false).len(), 1);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
