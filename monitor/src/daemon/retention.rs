//! The retention task (the core is `crate::retention`): daily, and on `agentmon retention`,
//! it removes each day partition past its tier in three steps: read it and compute each
//! chained row's leaf (and the archive); have the main loop sign and chain a `RetentionCut`
//! naming it, and wait until the cut is stored; then, in one transaction, insert the leaves
//! and drop the partition (`store::retention`).

use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    chain::{LeavesHasher, RetainedLeaf},
    control::Response,
    record::RetentionCut,
    retention::{day_start, expire_archives, partition_name, plan, retained, Archive, Item, Policy, Report},
    store::retention as sql,
};

/// A request of `agentmon retention`, from the control socket.
pub struct RunRequest {
    pub dry_run: bool,
    pub reply: oneshot::Sender<Response>,
}

/// A cut for the main loop to sign, chain and queue.
pub struct CutRequest {
    pub cut: RetentionCut,
    pub queued: oneshot::Sender<()>,
}

/// What time it is for retention: the system clock, or for tests only the time written in a
/// root-owned file the daemon was started with (`--retention-clock`, hidden). Never a
/// client's word: `agentmon retention` has no clock of its own.
#[derive(Debug, Clone, Default)]
pub struct Clock(pub Option<std::path::PathBuf>);

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let Some(path) = &self.0 else { return Utc::now() };
        if let Ok(Ok(t)) = std::fs::read_to_string(path).map(|t| DateTime::parse_from_rfc3339(t.trim())) {
            return t.with_timezone(&Utc);
        }
        warn!(file = %path.display(), "retention clock file unreadable or not an RFC 3339 time: using the system clock");
        Utc::now()
    }
}

/// The retention task: daily, and on request.
pub async fn run(
    pool: PgPool,
    policy: Policy,
    clock: Clock,
    mut requests: mpsc::Receiver<RunRequest>,
    cuts: mpsc::Sender<CutRequest>,
) {
    let mut daily =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_mins(5), Duration::from_hours(24));
    loop {
        tokio::select! {
            _ = daily.tick() => {
                let r = apply(&pool, &policy, &clock, false, &cuts).await;
                log(&r);
            }
            req = requests.recv() => {
                let Some(req) = req else { return };
                let r = apply(&pool, &policy, &clock, req.dry_run, &cuts).await;
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
                info!(partition = %i.partition, tier = %i.tier, rows = i.rows, cut = ?i.cut_id, archive = ?i.archive_file, "retention: partition removed under a signed cut");
            }
            Some(e) => {
                warn!(partition = %i.partition, tier = %i.tier, error = %e, "retention: partition kept (retried at the next run)");
            }
        }
    }
    for f in &r.expired_archives {
        info!(archive = %f, "retention: archive past the cold tier deleted");
    }
}

/// Plan, and unless `dry_run` apply, retention as of the clock's now.
pub async fn apply(pool: &PgPool, p: &Policy, clock: &Clock, dry_run: bool, cuts: &mpsc::Sender<CutRequest>) -> Report {
    let as_of = clock.now();
    let mut report = Report { as_of, dry_run, items: Vec::new(), expired_archives: Vec::new() };
    let parts = match sql::partitions(pool).await {
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
            sql::count(pool, table, day).await.map(|n| item.rows = n).map_err(anyhow::Error::from)
        } else {
            cut_partition(pool, p, clock, &mut item, cuts).await
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

/// Remove one partition under a signed cut (see the module comment).
async fn cut_partition(
    pool: &PgPool,
    p: &Policy,
    clock: &Clock,
    item: &mut Item,
    cuts: &mpsc::Sender<CutRequest>,
) -> anyhow::Result<()> {
    let (table, day) = (item.table.clone(), item.day);
    // 1. Read it: the leaves' hash, and the archive for cold.
    let mut archive = if item.tier == "cold" { Some(Archive::create(&p.archive_dir, &item.partition)?) } else { None };
    let (mut rows, mut chained, mut first, mut last) = (0u64, 0u64, None::<u64>, None::<u64>);
    let mut hasher = LeavesHasher::default();
    let rows_sql = sql::day_rows_sql(&table);
    let mut stream = std::pin::pin!(sql::day_rows(pool, &rows_sql, day));
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
        at: clock.now(),
        hot_secs: Some(p.hot.num_seconds()),
        warm_secs: p.warm.map(|w| w.num_seconds()),
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
    let mut stream = std::pin::pin!(sql::day_rows(pool, &rows_sql, day));
    while let Some(r) = stream.next().await {
        let (host, seq, hash, row) = r.context("reading the partition again")?;
        let Some(seq) = seq else { continue };
        let l = retained(host, seq, hash, &row);
        again.add(&l);
        batch.push(l);
        if batch.len() == LEAF_CHUNK {
            sql::insert_leaves(&mut db, id, &table, &batch).await?;
            batch.clear();
        }
    }
    sql::insert_leaves(&mut db, id, &table, &batch).await?;
    if again.finish() != leaves_hash {
        bail!("the partition changed while it was being cut; kept (retried at the next run)");
    }
    let dropped = sql::drop_partition(&mut db, &table, day, id).await?;
    db.commit().await?;
    crate::store::forget_day(day);
    item.rows = dropped;
    item.status = "dropped".into();
    Ok(())
}

const LEAF_CHUNK: usize = 2000;

/// The cut goes through the queue like any record: wait until the store has written it.
async fn wait_stored(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_mins(2);
    loop {
        if sql::cut_stored(pool, id).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the signed cut {id} was not stored within 120 s (is the database writable?); nothing was dropped");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
