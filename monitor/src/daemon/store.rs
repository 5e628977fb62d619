//! Last stage: take batches from the queue and commit each in one transaction, retrying with
//! back-off while `PostgreSQL` is unreachable. A batch leaves the queue (and a spool segment is
//! deleted) only after its transaction committed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::watch;

use super::queue::{Batch, Queue};
use crate::store::{is_data_error, write_batch, write_each, EventInsert};

/// What the daemon asks of the store task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Run,
    /// Store what is queued, then stop.
    Drain,
    /// Stop now; a batch being written goes back to the queue.
    Abort,
}

#[derive(Debug, Default)]
pub struct StoreStats {
    /// Failed write attempts (each is retried).
    pub failures: AtomicU64,
    /// Records the database refused as invalid (logged, set aside so the rest are stored).
    pub rejected: AtomicU64,
    pub stored: AtomicU64,
}

pub type SharedQueue = Arc<Mutex<Queue>>;

pub fn lock(q: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    // A panic elsewhere must not stop the evidence from being stored.
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run the store until told to stop.
pub async fn run(
    pool: PgPool,
    host: String,
    queue: SharedQueue,
    stats: Arc<StoreStats>,
    mut mode: watch::Receiver<StoreMode>,
) {
    loop {
        let batch = lock(&queue).take().map(|b| {
            let (b, bad) = b.decode();
            if bad > 0 {
                lock(&queue).count_undecodable(bad);
            }
            b
        });
        let Some(batch) = batch else {
            if *mode.borrow() != StoreMode::Run {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = mode.changed() => {}
            }
            continue;
        };
        let n = batch.records().len() as u64;
        let stored = tokio::select! {
            ok = write(&pool, &host, &batch, &stats) => ok,
            () = aborted(&mut mode) => false,
        };
        let mut q = lock(&queue);
        if stored {
            stats.stored.fetch_add(n, Ordering::Relaxed);
            q.done(batch);
        } else {
            q.put_back(batch);
            return;
        }
    }
}

/// Make spooled records durable, off the reader's path and whatever the database does: at most
/// `SPOOL_SYNC_INTERVAL` after they were appended (plus the time fdatasync takes).
pub async fn sync_spool(queue: SharedQueue) {
    let mut tick = tokio::time::interval(super::queue::SPOOL_SYNC_INTERVAL);
    loop {
        tick.tick().await;
        let files = lock(&queue).sync_handles();
        if files.is_empty() {
            continue;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                if let Err(e) = f.sync_data() {
                    tracing::warn!(error = %e, "syncing the spool failed");
                }
            }
        })
        .await;
    }
}

async fn aborted(mode: &mut watch::Receiver<StoreMode>) {
    while *mode.borrow_and_update() != StoreMode::Abort {
        if mode.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Commit one batch; retries until it is stored (or refused record by record). Only an abort
/// ends it early, by dropping this future.
async fn write(pool: &PgPool, host: &str, batch: &Batch, stats: &StoreStats) -> bool {
    let records = batch.records();
    if records.is_empty() {
        return true;
    }
    let mut delay = Duration::from_millis(200);
    // COPY first, for speed; a batch that was committed before (a retry after a lost commit,
    // or spooled records stored just before a crash) fails on a duplicate key and is then
    // inserted idempotently.
    let mut mode = EventInsert::Copy;
    loop {
        match write_batch(pool, host, records, mode).await {
            Ok(()) => return true,
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                // A duplicate key means an earlier attempt committed after all.
                if mode == EventInsert::Copy
                    && e.as_database_error().is_some_and(sqlx::error::DatabaseError::is_unique_violation)
                {
                    mode = EventInsert::Idempotent;
                    continue;
                }
                if is_data_error(&e) {
                    // One bad record must not block the rest: store them one by one.
                    stats.rejected.fetch_add(write_each(pool, host, records).await, Ordering::Relaxed);
                    return true;
                }
                tracing::warn!(error = %e, records = records.len(), "database write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
