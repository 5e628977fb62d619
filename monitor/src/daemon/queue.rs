//! Stage between correlation and the store: records wait in a memory queue bounded in bytes,
//! and past that bound in the on-disk spool, in one FIFO order.
//!
//! Order is kept by one rule: a record goes to the first stage that is not behind a non-empty
//! later stage. The store takes from the front spool, memory, the spool, then the overflow, so
//! records are stored in the order they were queued.
//!
//! - **front spool**: what was in memory when the last daemon stopped (older than anything in
//!   the spool), in its own directory so it is stored first.
//! - **memory**: up to `memory_bytes` (approximate heap bytes of the records).
//! - **spool**: segment files under the state directory, up to `spool_max_bytes`.
//! - **overflow**: when the spool cannot take a record (full, `ENOSPC`, I/O error), raw events
//!   are shed and counted against their session; sessions, actions, processes and session ends
//!   are kept here in memory, so they are never lost.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::spool::{Spool, SpoolError, SpoolRecord};
use crate::record::Output;

/// Records per batch handed to the store.
pub const BATCH_RECORDS: usize = 20_000;
/// A spooled batch is read under the queue's lock: keep it short.
const SPOOL_BATCH_RECORDS: usize = 5_000;
const SPOOL_BATCH_BYTES: usize = 4 << 20;
/// How often appended spool records are fdatasync'd at the latest.
pub const SPOOL_SYNC_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Queued {
    at_ms: u64,
    bytes: u64,
    rec: Output,
}

/// Records taken for one database transaction; give them back with [`Queue::done`] or
/// [`Queue::put_back`].
#[derive(Debug)]
pub enum Batch {
    Memory(Vec<Output>, u64),
    /// As read from a spool (true: the front one); [`Batch::decode`] turns it into `Spool`,
    /// outside the queue's lock.
    Spooled(Vec<SpoolRecord>, bool),
    Spool(Vec<Output>, bool),
    Overflow(Vec<Output>, u64),
}

impl Batch {
    pub fn records(&self) -> &[Output] {
        match self {
            Self::Memory(r, _) | Self::Spool(r, _) | Self::Overflow(r, _) => r,
            Self::Spooled(..) => &[],
        }
    }

    /// Decode spooled records; returns the batch and how many could not be decoded.
    pub fn decode(self) -> (Self, u64) {
        let Self::Spooled(recs, front) = self else { return (self, 0) };
        let mut bad = 0;
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            match serde_json::from_slice::<Output>(&r.payload) {
                Ok(o) => out.push(o),
                Err(e) => {
                    bad += 1;
                    tracing::warn!(error = %e, "a spooled record is not a record this daemon can read; skipped");
                }
            }
        }
        (Self::Spool(out, front), bad)
    }
}

/// What `status` shows of the queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub spool_segments: u64,
    pub spool_max_bytes: u64,
    pub spool_corrupt: u64,
    pub oldest_ms: Option<u64>,
    pub shed: u64,
}

pub struct Queue {
    mem: VecDeque<Queued>,
    /// Bytes of records in memory, including a batch the store has taken from it.
    mem_bytes: u64,
    max_mem_bytes: u64,
    /// When the store holds a memory batch: its oldest record's time.
    inflight_oldest_ms: Option<u64>,
    front: Spool,
    spool: Spool,
    spool_max_bytes: u64,
    overflow: VecDeque<Queued>,
    overflow_bytes: u64,
    dirty: bool,
    last_sync: Instant,
    shed: u64,
    shed_by_session: HashMap<Uuid, u64>,
    /// Spooled records that could not be decoded (their frame was whole; counted as corrupt).
    undecodable: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Queue {
    pub fn new(front: Spool, spool: Spool, max_mem_bytes: u64, spool_max_bytes: u64) -> Self {
        Self {
            mem: VecDeque::new(),
            mem_bytes: 0,
            max_mem_bytes,
            inflight_oldest_ms: None,
            front,
            spool,
            spool_max_bytes,
            overflow: VecDeque::new(),
            overflow_bytes: 0,
            dirty: false,
            last_sync: Instant::now(),
            shed: 0,
            shed_by_session: HashMap::new(),
            undecodable: 0,
        }
    }

    /// Queue a record. Returns false when it was a raw event and had to be shed (counted
    /// against its session: see [`Queue::take_shed`]).
    pub fn push(&mut self, rec: Output) -> bool {
        let q = Queued { at_ms: now_ms(), bytes: rec.approx_bytes(), rec };
        if self.overflow.is_empty()
            && self.front.is_empty()
            && self.spool.is_empty()
            && self.mem_bytes + q.bytes <= self.max_mem_bytes
        {
            self.mem_bytes += q.bytes;
            self.mem.push_back(q);
            return true;
        }
        if self.overflow.is_empty() {
            match self.append(&q) {
                Ok(()) => return true,
                Err(e) if !q.rec.is_event() => {
                    tracing::warn!(error = %e, "the spool cannot take a record; keeping it in memory");
                }
                Err(_) => {}
            }
        }
        if q.rec.is_event() {
            self.shed += 1;
            *self.shed_by_session.entry(q.rec.session_id()).or_default() += 1;
            return false;
        }
        self.overflow_bytes += q.bytes;
        self.overflow.push_back(q);
        true
    }

    /// The spool's size limit applies to raw events only: the rest always goes in, unless the
    /// disk itself is full.
    fn append(&mut self, q: &Queued) -> Result<(), SpoolError> {
        if !q.rec.is_event() {
            self.spool.set_max_bytes(u64::MAX);
        }
        let r = Self::append_to(&mut self.spool, q);
        self.spool.set_max_bytes(self.spool_max_bytes);
        r?;
        self.dirty = true;
        Ok(())
    }

    fn append_to(spool: &mut Spool, q: &Queued) -> Result<(), SpoolError> {
        let payload =
            serde_json::to_vec(&q.rec).map_err(|e| SpoolError::Io { path: "record".into(), source: e.into() })?;
        spool.append(q.at_ms, &payload)
    }

    /// Raw events of a session shed so far; the count is handed over once.
    pub fn take_shed(&mut self, session: Uuid) -> u64 {
        self.shed_by_session.remove(&session).unwrap_or(0)
    }

    pub fn shed_of(&self, session: Uuid) -> u64 {
        self.shed_by_session.get(&session).copied().unwrap_or(0)
    }

    /// The next batch, oldest records first.
    pub fn take(&mut self) -> Option<Batch> {
        if !self.front.is_drained() {
            return self.read_spool(true);
        }
        if !self.mem.is_empty() {
            let n = self.mem.len().min(BATCH_RECORDS);
            let taken: Vec<Queued> = self.mem.drain(..n).collect();
            self.inflight_oldest_ms = taken.first().map(|q| q.at_ms);
            let bytes = taken.iter().map(|q| q.bytes).sum();
            return Some(Batch::Memory(taken.into_iter().map(|q| q.rec).collect(), bytes));
        }
        if !self.spool.is_drained() {
            return self.read_spool(false);
        }
        if !self.overflow.is_empty() {
            let n = self.overflow.len().min(BATCH_RECORDS);
            let taken: Vec<Queued> = self.overflow.drain(..n).collect();
            let bytes = taken.iter().map(|q| q.bytes).sum();
            return Some(Batch::Overflow(taken.into_iter().map(|q| q.rec).collect(), bytes));
        }
        None
    }

    fn read_spool(&mut self, front: bool) -> Option<Batch> {
        let spool = if front { &mut self.front } else { &mut self.spool };
        match spool.read_batch(SPOOL_BATCH_RECORDS, SPOOL_BATCH_BYTES) {
            Ok(recs) => Some(Batch::Spooled(recs, front)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the spool failed");
                None
            }
        }
    }

    /// Count spooled records that could not be decoded (their frames were whole).
    pub fn count_undecodable(&mut self, n: u64) {
        self.undecodable += n;
    }

    /// The batch is committed.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a committed batch is used up: taking it means it cannot be put back or committed twice"
    )]
    pub fn done(&mut self, batch: Batch) {
        match batch {
            Batch::Memory(_, bytes) => {
                self.mem_bytes -= bytes.min(self.mem_bytes);
                self.inflight_oldest_ms = None;
            }
            Batch::Spool(_, front) | Batch::Spooled(_, front) => {
                let spool = if front { &mut self.front } else { &mut self.spool };
                if let Err(e) = spool.commit() {
                    tracing::warn!(error = %e, "recording spool progress failed; some records may be stored twice (harmlessly) after a restart");
                }
            }
            Batch::Overflow(_, bytes) => self.overflow_bytes -= bytes.min(self.overflow_bytes),
        }
    }

    /// The batch was not stored: it goes back to the front.
    pub fn put_back(&mut self, batch: Batch) {
        let at = self.inflight_oldest_ms.take().unwrap_or_else(now_ms);
        match batch {
            Batch::Memory(recs, _) => {
                for rec in recs.into_iter().rev() {
                    // Its bytes are still counted in mem_bytes.
                    self.mem.push_front(Queued { at_ms: at, bytes: rec.approx_bytes(), rec });
                }
            }
            Batch::Spool(_, true) | Batch::Spooled(_, true) => self.front.rewind(),
            Batch::Spool(_, false) | Batch::Spooled(_, false) => self.spool.rewind(),
            Batch::Overflow(recs, _) => {
                for rec in recs.into_iter().rev() {
                    self.overflow.push_front(Queued { at_ms: at, bytes: rec.approx_bytes(), rec });
                }
            }
        }
    }

    /// When records were appended and the interval has passed: write them out and return the
    /// files to fdatasync, which the caller does without holding the queue.
    pub fn sync_handles(&mut self) -> Vec<std::fs::File> {
        if !self.dirty || self.last_sync.elapsed() < SPOOL_SYNC_INTERVAL {
            return Vec::new();
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        self.spool.sync_handles().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "writing the spool out failed");
            Vec::new()
        })
    }

    /// At shutdown: move everything held in memory to disk, past the spool's size limit, so the
    /// next daemon stores it in order: memory to the front spool (memory is only used while the
    /// front spool is empty, and is older than the spool), the overflow after the spool.
    /// Returns the records that could not be written (disk full).
    pub fn spill(&mut self) -> u64 {
        let mut lost = 0;
        let mut write = |spool: &mut Spool, q: &Queued| {
            if let Err(e) = Self::append_to(spool, q) {
                lost += 1;
                tracing::error!(error = %e, "could not spool a record at shutdown; it is lost");
            }
        };
        self.front.set_max_bytes(u64::MAX);
        self.spool.set_max_bytes(u64::MAX);
        for q in self.mem.drain(..) {
            write(&mut self.front, &q);
        }
        for q in self.overflow.drain(..) {
            write(&mut self.spool, &q);
        }
        for s in [&mut self.front, &mut self.spool] {
            if let Err(e) = s.sync() {
                tracing::error!(error = %e, "syncing the spool at shutdown failed");
            }
        }
        self.mem_bytes = 0;
        self.overflow_bytes = 0;
        lost
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
            && self.front.is_empty()
            && self.spool.is_empty()
            && self.overflow.is_empty()
            && self.mem_bytes == 0
    }

    pub fn stats(&self) -> QueueStats {
        let s = self.spool.stats();
        let f = self.front.stats();
        let oldest = [
            self.inflight_oldest_ms,
            f.oldest_enqueued_ms,
            self.mem.front().map(|q| q.at_ms),
            s.oldest_enqueued_ms,
            self.overflow.front().map(|q| q.at_ms),
        ]
        .into_iter()
        .flatten()
        .min();
        QueueStats {
            records: (self.mem.len() + self.overflow.len()) as u64,
            bytes: self.mem_bytes + self.overflow_bytes,
            max_bytes: self.max_mem_bytes,
            spool_records: s.records + f.records,
            spool_bytes: s.bytes + f.bytes,
            spool_segments: s.segments + f.segments,
            spool_max_bytes: self.spool_max_bytes,
            spool_corrupt: s.corrupt + f.corrupt + self.undecodable,
            oldest_ms: oldest,
            shed: self.shed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{EventRecord, SessionStart};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("agentmon-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn queue(d: &std::path::Path, mem: u64, spool_max: u64) -> Queue {
        let front = Spool::open(&d.join("front"), u64::MAX, 1 << 20).expect("front");
        let spool = Spool::open(&d.join("spool"), spool_max, 1 << 20).expect("spool");
        Queue::new(front, spool, mem, spool_max)
    }

    fn event(seq: u64) -> Output {
        Output::Event(EventRecord {
            id: Uuid::nil(),
            session_id: Uuid::from_u128(7),
            action_id: None,
            exec_id: "x".into(),
            seq,
            ts: chrono::DateTime::default(),
            kind: "file".into(),
            pid: 1,
            tid: 1,
            data: "{\"path\":\"/etc/hostname\"}".into(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
            facts: None,
        })
    }

    fn start() -> Output {
        Output::SessionStart(SessionStart {
            id: Uuid::from_u128(7),
            agent: "a".into(),
            label: None,
            cgroup: "/x".into(),
            cgroup_id: 1,
            uid: 0,
            source: "run".into(),
            started_at: chrono::DateTime::default(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        })
    }

    /// Take and commit everything; the records' seqs (0 for a non-event), in order.
    fn drain(q: &mut Queue) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(b) = q.take() {
            let (b, bad) = b.decode();
            assert_eq!(bad, 0);
            out.extend(b.records().iter().map(|r| if let Output::Event(e) = r { e.seq } else { 0 }));
            q.done(b);
        }
        out
    }

    #[test]
    fn memory_then_spool_keeps_one_fifo_order_within_the_byte_bound() {
        let d = dir("fifo");
        let one = event(1).approx_bytes();
        let mut q = queue(&d, one * 10, 1 << 30);
        assert!(q.push(start()));
        for s in 1..=100 {
            assert!(q.push(event(s)));
            assert!(q.stats().bytes <= one * 10 + start().approx_bytes(), "memory stays within its bound");
        }
        let st = q.stats();
        assert!(st.spool_records >= 89, "past the bound records go to the spool: {st:?}");
        // A record queued while the spool holds some goes behind them, not into memory.
        let b = q.take().expect("memory batch");
        assert!(matches!(b, Batch::Memory(..)));
        let mut order: Vec<u64> =
            b.records().iter().map(|r| if let Output::Event(e) = r { e.seq } else { 0 }).collect();
        q.done(b);
        assert!(q.push(event(101)));
        order.extend(drain(&mut q));
        let mut want = vec![0];
        want.extend(1..=101);
        assert_eq!(order, want, "one order: memory first, then the spool");
        assert!(q.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_batch_goes_back_to_the_front() {
        let d = dir("putback");
        let mut q = queue(&d, 1 << 20, 1 << 30);
        for s in 1..=5 {
            q.push(event(s));
        }
        let b = q.take().expect("batch");
        q.put_back(b);
        q.push(event(6));
        assert_eq!(drain(&mut q), [1, 2, 3, 4, 5, 6]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_spool_sheds_events_counted_per_session_but_keeps_the_rest() {
        let d = dir("full");
        let one = event(1).approx_bytes();
        let mut q = queue(&d, one * 2, 4096);
        let mut shed = 0;
        for s in 1..=200 {
            if !q.push(event(s)) {
                shed += 1;
            }
        }
        assert!(shed > 100, "{shed}");
        assert!(q.push(start()), "a non-event is never shed");
        assert_eq!(q.stats().shed, shed);
        assert_eq!(q.take_shed(Uuid::from_u128(7)), shed);
        assert_eq!(q.take_shed(Uuid::from_u128(7)), 0, "handed over once");
        let out = drain(&mut q);
        assert_eq!(out.len() as u64, 200 - shed + 1);
        assert_eq!(out.last(), Some(&0), "the session start is stored after the events before it");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn spilling_at_shutdown_keeps_memory_ahead_of_the_spool() {
        let d = dir("spill");
        let one = event(1).approx_bytes();
        {
            let mut q = queue(&d, one * 3, 1 << 30);
            for s in 1..=10 {
                q.push(event(s));
            }
            assert_eq!(q.spill(), 0);
        }
        let mut q = queue(&d, one * 3, 1 << 30);
        assert_eq!(q.stats().spool_records, 10);
        assert_eq!(drain(&mut q), (1..=10).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }
}
