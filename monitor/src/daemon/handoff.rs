//! The state one daemon hands the next at a graceful stop: its correlation state (processes,
//! in-flight actions, session seq and counters, DNS and socket caches) and its sessions, in
//! `<state dir>/handoff.json`. The next daemon reads on from the pinned rings where this one
//! stopped, so in-flight actions come out once, whole, with their original ids.
//!
//! A handoff from another boot is ignored (its processes are gone); one the next daemon has
//! loaded is removed, so a crash later never replays stale state.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::correlate::CorrelatorState;

pub const FILE: &str = "handoff.json";
/// Bumped when the layout changes; another format is ignored (and the sessions re-seeded).
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionHandoff {
    pub cgroup_id: u64,
    pub session_id: Uuid,
    pub path: PathBuf,
    pub owned: bool,
    /// Raw events this daemon shed for the session (added to its `events_lost`).
    pub shed: u64,
    /// Started by a unit or cgroup rule (lasts as long as its cgroup).
    #[serde(default)]
    pub rule_cgroup: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Handoff {
    format: u32,
    pub boot_id: String,
    pub host: String,
    pub saved_at: DateTime<Utc>,
    pub sessions: Vec<SessionHandoff>,
    pub correlator: CorrelatorState,
}

impl Handoff {
    pub fn new(boot_id: String, host: String, sessions: Vec<SessionHandoff>, correlator: CorrelatorState) -> Self {
        Self { format: FORMAT, boot_id, host, saved_at: Utc::now(), sessions, correlator }
    }
}

/// Write it durably (temporary file, fsync, rename), readable by root only.
/// `h` is a [`Handoff`] as JSON (redacted by the caller).
pub fn save(state_dir: &Path, h: &serde_json::Value) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    serde_json::to_writer(&mut f, h)?;
    f.flush()?;
    f.sync_all()?;
    std::fs::rename(&tmp, state_dir.join(FILE))?;
    std::fs::File::open(state_dir)?.sync_all()
}

/// Take the handoff left by the last daemon, if it is usable here.
pub fn take(state_dir: &Path, boot_id: &str, host: &str) -> Option<Handoff> {
    let path = state_dir.join(FILE);
    let text = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    match serde_json::from_slice::<Handoff>(&text) {
        Ok(h) if h.format == FORMAT && h.boot_id == boot_id && h.host == host => Some(h),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "ignoring a handoff from another boot, host or daemon version; sessions are re-seeded from /proc");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable handoff; sessions are re-seeded from /proc");
            None
        }
    }
}
