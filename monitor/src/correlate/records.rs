//! The evidence records correlation produces. Each is inserted once and never updated.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::resources::{FileSummary, NetSummary};

/// One process of an action's subtree (or the agent process itself).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub exec_id: String,
    pub pid: u32,
    pub ppid: u32,
    /// The last image the process exec'd (inherited from the parent if it never exec'd).
    pub argv: Vec<String>,
    /// Earlier images, oldest first, when the process exec'd more than once.
    pub prior_argv: Vec<Vec<String>>,
    pub argv_truncated: bool,
    pub exe: String,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// One command the agent started, with its whole subtree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub exec_id: String,
    pub pid: u32,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub command: String,
    pub cwd: Option<String>,
    pub exe: String,
    pub uid: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// False when the session ended (or the pid was reused) before every process exited.
    pub complete: bool,
    pub processes: Vec<ProcessRecord>,
    /// Files the whole subtree touched, identical accesses collapsed with a count.
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
}

/// One raw kernel event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub action_id: Option<Uuid>,
    pub exec_id: String,
    /// Position in the session's event stream, from 1.
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    /// The event's details as JSON text, serialised once (it is most of the queued volume).
    pub data: String,
}

/// The agent process of a session (action processes are stored with their action).
#[derive(Debug, Clone)]
pub struct ProcessRow {
    pub session_id: Uuid,
    pub action_id: Option<Uuid>,
    pub rec: ProcessRecord,
}

#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    pub session_id: Uuid,
    pub cgroup_id: u64,
    pub ended_at: DateTime<Utc>,
    pub root_pid: Option<u32>,
    pub root_exec_id: Option<String>,
    pub root_argv: Vec<String>,
    pub actions: u64,
    pub events: u64,
    /// Filled in by the daemon from the kernel's per-session loss counter.
    pub events_lost: u64,
    /// What the agent process itself touched.
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
}

/// A new session, written by the daemon when it starts tracking one.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub id: Uuid,
    pub agent: String,
    pub label: Option<String>,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub uid: u32,
    pub source: &'static str,
    pub started_at: DateTime<Utc>,
}

/// Everything the store writes, in the order it must be written.
#[derive(Debug, Clone)]
pub enum Output {
    SessionStart(SessionStart),
    Event(EventRecord),
    Process(ProcessRow),
    Action(ActionRecord),
    SessionEnd(SessionEnd),
}
