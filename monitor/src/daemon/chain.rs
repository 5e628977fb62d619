//! Chain stage: gives every record (after redaction, before the queue and the spool) its place
//! in the host's hash chain, and writes signed checkpoints of the chain's head: to the database
//! as records of the chain, and to an external log the agents cannot reach.
//!
//! The encoding and the hashing are in `crate::chain`; this file owns the daemon's state: the
//! head, the signing key (`<state dir>/signing.key`, root-only, made on first start) and when
//! the next checkpoint is due.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use ed25519_dalek::Signer as _;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    chain::{self, Head, GENESIS},
    record::{ChainLink, Checkpoint, Hash, Output, RetentionCut, SigningKey},
    text::hex,
};

pub const KEY_FILE: &str = "signing.key";

/// Where checkpoints are copied besides the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLog {
    /// Appended as one JSON object per line (the format `verify --witness` reads).
    File(PathBuf),
    /// Sent to the systemd journal (`AGENTMON_CHECKPOINT=` field, the same JSON object).
    Journal,
}

impl CheckpointLog {
    pub fn parse(s: &str) -> Self {
        if s == "journal" {
            Self::Journal
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

pub struct Chain {
    host: String,
    head: Head,
    key: ed25519_dalek::SigningKey,
    pub fingerprint: String,
    pub public_key: String,
    log: CheckpointLog,
    interval: Duration,
    heartbeat: Duration,
    last_checkpoint: Instant,
    sealed_since_checkpoint: u64,
}

/// The chain stage as the daemon starts it: the signing key (made on first start), the
/// external checkpoint log and the checkpoint intervals. Its head is set once the spool is
/// stored (`Daemon::resume_chain`).
pub fn open(settings: &super::args::Settings, host: &str) -> anyhow::Result<Chain> {
    let (key, new_key) = load_or_create_key(&settings.state_dir)?;
    let log = CheckpointLog::parse(&settings.checkpoint_log);
    let chain = Chain::new(host.to_owned(), None, key, log.clone(), settings.checkpoint_every, settings.heartbeat);
    tracing::info!(key = %chain.fingerprint, public_key = %chain.public_key, new = new_key, log = ?log, "checkpoints are signed with this ed25519 key");
    Ok(chain)
}

/// Read the signing key, or make one (32 random bytes, mode 0600) on first start.
pub fn load_or_create_key(state_dir: &Path) -> anyhow::Result<(ed25519_dalek::SigningKey, bool)> {
    let path = state_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("{} is not a 32-byte ed25519 key; move it away to make a new one (verify will report the key change)", path.display()))?;
            Ok((ed25519_dalek::SigningKey::from_bytes(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = random_key(&path)?;
            Ok((ed25519_dalek::SigningKey::from_bytes(&seed), true))
        }
        Err(e) => Err(e).with_context(|| format!("reading the signing key {}", path.display())),
    }
}

/// 32 random bytes written to a new root-only file.
pub fn random_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != 32 {
        anyhow::bail!("getrandom failed: {}", std::io::Error::last_os_error());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&seed)?;
    f.sync_all()?;
    Ok(seed)
}

impl Chain {
    pub fn new(
        host: String,
        head: Option<Head>,
        key: ed25519_dalek::SigningKey,
        log: CheckpointLog,
        interval: Duration,
        heartbeat: Duration,
    ) -> Self {
        let public = key.verifying_key();
        Self {
            host,
            head: head.unwrap_or(Head { seq: 0, hash: GENESIS }),
            fingerprint: chain::key_fingerprint(public.as_bytes()),
            public_key: hex(public.as_bytes()),
            key,
            log,
            interval,
            heartbeat,
            last_checkpoint: Instant::now(),
            sealed_since_checkpoint: 0,
        }
    }

    /// Continue from the newest stored row (None: a new chain).
    pub fn set_head(&mut self, head: Option<Head>) {
        self.head = head.unwrap_or(Head { seq: 0, hash: GENESIS });
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Undo the records sealed since `h` (they were shed, not kept).
    pub fn rewind(&mut self, h: Head) {
        self.sealed_since_checkpoint = self.sealed_since_checkpoint.saturating_sub(self.head.seq - h.seq);
        self.head = h;
    }

    fn next(&mut self, row: impl FnOnce(u64) -> Value) -> ChainLink {
        self.next_leaf(|seq| chain::leaf(&row(seq)))
    }

    fn next_leaf(&mut self, leaf: impl FnOnce(u64) -> Hash) -> ChainLink {
        let seq = self.head.seq + 1;
        let hash = chain::link(&self.head.hash, &leaf(seq));
        self.head = Head { seq, hash };
        self.sealed_since_checkpoint += 1;
        ChainLink { seq, hash }
    }

    /// Give every row of the record its place in the chain. Timestamps are cut to whole
    /// microseconds first, as the database keeps them; an event's data is re-serialised in
    /// canonical form (`data` is the parsed value when the caller already has it).
    pub fn seal(&mut self, o: &mut Output, data: Option<Value>) {
        let host = std::mem::take(&mut self.host);
        let h = host.as_str();
        match o {
            Output::SessionStart(s) => {
                chain::truncate_micros(&mut s.started_at);
                s.chain = self.next(|seq| chain::session_row(h, s, seq));
            }
            Output::Event(e) => {
                chain::truncate_micros(&mut e.ts);
                // Stored as jsonb, so hashed in canonical form. The correlator writes its data with
                // serde_json, whose output is canonical already (sorted keys, integers: tested in
                // chain.rs); data the redact stage parsed and changed is re-serialised.
                if let Some(data) = data {
                    e.data = chain::canonical(&data);
                }
                e.chain = self.next_leaf(|seq| chain::leaf_of_text(&chain::event_row_canonical(h, e, &e.data, seq)));
            }
            Output::Process(p) => {
                truncate_process(&mut p.rec);
                p.rec.chain = self.next(|seq| chain::process_row(h, p.session_id, p.action_id, &p.rec, seq));
            }
            Output::Action(a) => {
                chain::truncate_micros(&mut a.started_at);
                if let Some(t) = a.ended_at.as_mut() {
                    chain::truncate_micros(t);
                }
                a.chain = self.next(|seq| chain::action_row(h, a, seq));
                let (sid, aid) = (a.session_id, a.id);
                for p in &mut a.processes {
                    truncate_process(p);
                    p.chain = self.next(|seq| chain::process_row(h, sid, Some(aid), p, seq));
                }
            }
            Output::SessionEnd(e) => {
                chain::truncate_micros(&mut e.ended_at);
                e.chain = self.next(|seq| chain::session_end_row(h, e, seq));
            }
            Output::Checkpoint(c) => {
                c.chain = self.next(|seq| chain::checkpoint_row(h, c, seq));
            }
            Output::Alert(a) => {
                chain::truncate_micros(&mut a.first_at);
                chain::truncate_micros(&mut a.last_at);
                a.chain = self.next(|seq| chain::alert_row(h, a, seq));
            }
            Output::SigningKey(k) => {
                chain::truncate_micros(&mut k.created_at);
                k.chain = self.next(|seq| chain::signing_key_row(h, k, seq));
            }
            Output::RetentionCut(c) => {
                c.chain = self.next(|seq| chain::cut_row(h, c, seq));
            }
            Output::Report(r) => {
                chain::truncate_micros(&mut r.received_at);
                r.chain = self.next(|seq| chain::report_row(h, r, seq));
            }
            Output::Call(c) => {
                chain::truncate_micros(&mut c.started_at);
                for t in [&mut c.ended_at, &mut c.decided_at].into_iter().flatten() {
                    chain::truncate_micros(t);
                }
                c.chain = self.next(|seq| chain::call_row(h, c, seq));
            }
        }
        self.host = host;
    }

    /// The record that registers this daemon's public key.
    pub fn key_record(&self) -> Output {
        Output::SigningKey(SigningKey {
            fingerprint: self.fingerprint.clone(),
            public_key: self.public_key.clone(),
            created_at: Utc::now(),
            chain: ChainLink::default(),
        })
    }

    /// Whether rows were sealed since the last checkpoint.
    pub fn uncovered(&self) -> bool {
        self.sealed_since_checkpoint > 0
    }

    /// Which checkpoint is due now, if any: `periodic` a few seconds after records were
    /// sealed, `heartbeat` when idle for the heartbeat interval.
    pub fn due(&self) -> Option<&'static str> {
        let age = self.last_checkpoint.elapsed();
        if self.sealed_since_checkpoint > 0 && age >= self.interval {
            Some("periodic")
        } else if age >= self.heartbeat {
            Some("heartbeat")
        } else {
            None
        }
    }

    /// A signed checkpoint of the current head, sealed into the chain and copied to the
    /// external log. The caller queues it.
    pub fn checkpoint(&mut self, kind: &str) -> Output {
        let mut c = Checkpoint {
            id: Uuid::now_v7(),
            covers_seq: self.head.seq,
            head_hash: hex(&self.head.hash),
            at: Utc::now(),
            kind: kind.to_owned(),
            next_within_secs: if kind == "stop" { 0 } else { self.heartbeat.as_secs().max(1) },
            key_fingerprint: self.fingerprint.clone(),
            signature: String::new(),
            chain: ChainLink::default(),
        };
        chain::truncate_micros(&mut c.at);
        c.signature = hex(&self.key.sign(&chain::checkpoint_message(&self.host, &c)).to_bytes());
        let mut out = Output::Checkpoint(c);
        self.seal(&mut out, None);
        if let Output::Checkpoint(c) = &out {
            if let Err(e) = self.append_log(c) {
                tracing::warn!(error = %e, log = ?self.log, "could not copy a checkpoint to the external log");
            }
        }
        self.last_checkpoint = Instant::now();
        self.sealed_since_checkpoint = 0;
        out
    }

    /// Sign a retention cut over the current head and seal it into the chain. The caller
    /// queues it; the partition is dropped only once it is stored.
    pub fn cut(&mut self, mut c: RetentionCut) -> Output {
        c.covers_seq = self.head.seq;
        c.head_hash = hex(&self.head.hash);
        // `at` is the retention task's "now", the time its tiers were measured from.
        chain::truncate_micros(&mut c.at);
        chain::truncate_micros(&mut c.range_from);
        chain::truncate_micros(&mut c.range_to);
        c.key_fingerprint.clone_from(&self.fingerprint);
        c.signature = hex(&self.key.sign(&chain::cut_message(&self.host, &c)).to_bytes());
        let mut out = Output::RetentionCut(c);
        self.seal(&mut out, None);
        out
    }

    fn append_log(&self, c: &Checkpoint) -> std::io::Result<()> {
        let line = witness_line(&self.host, &self.public_key, c).to_string();
        match &self.log {
            CheckpointLog::File(path) => {
                let mut f = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_data()
            }
            CheckpointLog::Journal => {
                let sock = std::os::unix::net::UnixDatagram::unbound()?;
                let msg = format!(
                    "MESSAGE=agentmon checkpoint {} seq {} {}\nSYSLOG_IDENTIFIER=agentmon\nPRIORITY=6\nAGENTMON_CHECKPOINT={line}\n",
                    c.kind, c.covers_seq, c.head_hash
                );
                sock.send_to(msg.as_bytes(), "/run/systemd/journal/socket").map(|_| ())
            }
        }
    }
}

fn truncate_process(p: &mut crate::record::ProcessRecord) {
    chain::truncate_micros(&mut p.started_at);
    if let Some(t) = p.ended_at.as_mut() {
        chain::truncate_micros(t);
    }
}

/// One line of the external checkpoint log, which `verify --witness` reads: the checkpoint's
/// signed fields, its signature, the host and the public key.
pub fn witness_line(host: &str, public_key: &str, c: &Checkpoint) -> Value {
    serde_json::json!({
        "host": host,
        "covers_seq": c.covers_seq,
        "head_hash": c.head_hash,
        "at": c.at,
        "kind": c.kind,
        "next_within_secs": c.next_within_secs,
        "key_fingerprint": c.key_fingerprint,
        "public_key": public_key,
        "signature": c.signature,
        "chain_seq": c.chain.seq,
    })
}
