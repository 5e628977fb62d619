//! The daemon's control socket: one JSON request line, one JSON response line.
//!
//! Only root and members of the configured group may connect (the socket is mode 0660,
//! group-owned, and the daemon re-checks the peer's credentials). The daemon takes the caller's
//! pid and uid from `SO_PEERCRED`, never from the request.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub const SOCKET_NAME: &str = "agentmon.sock";

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Create a session cgroup and move the calling process into it.
    StartSession {
        agent: String,
        label: Option<String>,
    },
    /// Mark an existing cgroup (path under the cgroup2 mount, or absolute) as a session.
    Tag {
        cgroup: String,
        agent: String,
        label: Option<String>,
    },
    /// Apply retention now (root only); `dry_run` only lists what would go. "Now" is the
    /// daemon's clock: a client never says what time it is.
    Retention {
        dry_run: bool,
    },
    /// Sign a checkpoint of the chain's head now (`agentmon export` right after an incident),
    /// unless the last one already covers it. The reply names the host whose chain it is.
    Checkpoint,
}

impl Request {
    /// What the request is called in a refusal and a tamper record.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::StartSession { .. } => "start_session",
            Self::Tag { .. } => "tag",
            Self::Retention { .. } => "retention",
            Self::Checkpoint => "checkpoint",
        }
    }

    /// Requests that change the trail (what is kept, what is captured). The daemon refuses
    /// them from any process it tracks as part of a session, whatever its uid: an agent that
    /// is root in its session must not be able to erase or reshape its own record.
    pub fn changes_trail(&self) -> bool {
        matches!(self, Self::Tag { .. } | Self::Retention { .. })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionStarted {
    pub session_id: uuid::Uuid,
    pub cgroup: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Session(SessionStarted),
    Retention(Box<crate::retention::Report>),
    /// A checkpoint of this host's chain head is queued or stored.
    Checkpoint {
        host: String,
    },
    Error {
        message: String,
        /// The caller's uid already holds [`MAX_CONNECTIONS_PER_UID`] connections: the
        /// request was not read, and the same request may be sent again shortly.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
}

/// Control connections one uid may hold at once (of the daemon's 64); a further one is
/// answered at once with a `busy` error, which the client retries until its timeout.
pub const MAX_CONNECTIONS_PER_UID: usize = 8;

impl Response {
    /// A refusal, with its one-line reason.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error { message: message.into(), busy: false }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveSession {
    pub id: uuid::Uuid,
    pub agent: String,
    pub cgroup_id: u64,
    pub root_pid: Option<u32>,
    pub processes: u32,
    /// Processes of the session the kernel tracks beyond those the daemon seeded: the session
    /// ends only once this is 0 (and `processes` is 0).
    pub kernel_processes: i64,
    pub events_lost: u64,
}

/// What `agentmon status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub capturing: bool,
    /// The agents' own account: reports, the OTLP receiver, verdicts (see `crate::account`).
    #[serde(default)]
    pub account: crate::account::AccountStatus,
    pub pid: u32,
    pub host: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub probes: Vec<String>,
    /// `probes` counted by kind of hook: `syscall_tracepoint`, `tracepoint`, `raw_tracepoint`.
    #[serde(default)]
    pub probe_kinds: std::collections::BTreeMap<String, u64>,
    /// Which hook captures what on this kernel, where kernels differ: primary hooks, the
    /// fallbacks of older kernels, and what this kernel cannot capture.
    #[serde(default)]
    pub capture_paths: Vec<crate::ebpf::CapturePath>,
    /// How this daemon came by its programs: loaded, adopted or replaced (see `agentmon daemon`).
    pub programs: String,
    /// The programs' object hash.
    pub programs_version: String,
    pub sessions: Vec<LiveSession>,
    /// Sessions whose known processes exited, waiting for the kernel's tracked count to reach 0.
    pub sessions_closing: usize,
    pub events_read: u64,
    /// Events the kernel could not fit in a ring, in all (the sum of the next three).
    pub events_dropped: u64,
    pub dropped_lifecycle: u64,
    pub dropped_file: u64,
    pub dropped_net: u64,
    pub decode_errors: u64,
    pub unattributed: u64,
    pub kernel_read_errors: u64,
    /// Records waiting in memory for the database, and their approximate heap bytes.
    pub queue_records: u64,
    pub queue_bytes: u64,
    pub queue_max_bytes: u64,
    /// Records waiting in the on-disk spool.
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub spool_segments: u64,
    pub spool_max_bytes: u64,
    /// Corrupt or truncated spool records found (each logged with its segment and offset).
    pub spool_corrupt_records: u64,
    /// Age of the oldest record not yet stored, in seconds (null when everything is stored).
    pub oldest_unstored_secs: Option<f64>,
    /// Raw events not stored because memory and spool were full (charged to their sessions).
    pub events_shed: u64,
    pub db_write_failures: u64,
    /// Records the database refused as invalid (each logged).
    pub db_records_rejected: u64,
    pub records_stored: u64,
    /// Processes the kernel could not add to its tracked set (map full).
    pub track_failures: u64,
    /// Tracked entries found stale (their pid reused by another process) and dropped.
    #[serde(default)]
    pub stale_tracked: u64,
    /// Events of new cgroups held pending for the cgroup rules that matched none (dropped, not lost).
    #[serde(default)]
    pub pending_discarded: u64,
    /// New cgroups the kernel could not hold pending for the cgroup rules (session map full).
    #[serde(default)]
    pub tag_failures: u64,
    pub actions_written: u64,
    /// Processes of open actions stored on their own before their action, because the action
    /// held its in-memory share already (see `record::MAX_KEPT_PROCESSES`).
    #[serde(default)]
    pub processes_early: u64,
    /// Control connections refused because their uid held [`MAX_CONNECTIONS_PER_UID`] already.
    #[serde(default)]
    pub control_busy: u64,
    pub sessions_ended: u64,
    /// The host chain's head: the last sequence number given to a record.
    #[serde(default)]
    pub chain_seq: u64,
    /// Fingerprint of the key that signs this daemon's checkpoints.
    #[serde(default)]
    pub signing_key: String,
    /// Signed checkpoints written since the daemon started.
    #[serde(default)]
    pub checkpoints_written: u64,
    /// Records in which a redaction rule replaced something, since the daemon started.
    #[serde(default)]
    pub records_redacted: u64,
    /// Alert rows written since the daemon started (grouped repeats count once per row).
    #[serde(default)]
    pub alerts_raised: u64,
    /// Alerts the webhook accepted, delivery attempts that failed, alerts waiting for it, and
    /// alerts dropped because the waiting queue was full (all 0 without a webhook).
    #[serde(default)]
    pub webhook_delivered: u64,
    #[serde(default)]
    pub webhook_failures: u64,
    #[serde(default)]
    pub webhook_waiting: u64,
    #[serde(default)]
    pub webhook_dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is capturing: cannot connect to {path}: {source}. Start it with `sudo agentmon daemon` (or pass the daemon's --runtime-dir / AGENTMON_RUNTIME_DIR)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("permission denied on {path}: only root and members of the daemon's group (default `agentmon`) may use the control socket; ask an admin to add you")]
    Denied { path: PathBuf },
    #[error("talking to the daemon at {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon sent a reply this agentmon cannot read: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error("the daemon refused: {0}")]
    Refused(String),
}

/// Send one request and read one response (blocking: `run` must not start threads before it
/// execs, and needs no runtime).
pub fn request(runtime_dir: &Path, req: &Request) -> Result<Response, ClientError> {
    request_within(runtime_dir, req, Duration::from_secs(30))
}

/// [`request`], waiting up to `timeout` for the reply. A `busy` refusal (this uid holds its
/// share of the daemon's connections) is retried, with a growing pause, until `timeout`.
pub fn request_within(runtime_dir: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match exchange(runtime_dir, req, timeout)? {
            Response::Error { busy: true, .. } if start.elapsed() + pause < timeout => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Response::Error { message, .. } => return Err(ClientError::Refused(message)),
            r => return Ok(r),
        }
    }
}

/// One connection: the request line out, the reply line back.
fn exchange(runtime_dir: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let path = socket_path(runtime_dir);
    let mut stream = UnixStream::connect(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Denied { path: path.clone() },
        _ => ClientError::Connect { path: path.clone(), source },
    })?;
    let io = |source| ClientError::Io { path: path.clone(), source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    // A daemon that refuses the connection at once (`busy`) may close it before the request
    // is written: its reply is still there to read.
    let written = stream.write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    match (written, read) {
        (Err(e), Err(_) | Ok(0)) | (Ok(()), Err(e)) => Err(io(e)),
        _ => Ok(serde_json::from_str(&reply)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_say_what_time_it_is() {
        let ok: Request = serde_json::from_str(r#"{"op":"retention","dry_run":true}"#).expect("retention");
        assert!(matches!(ok, Request::Retention { dry_run: true }));
        let with_clock = r#"{"op":"retention","dry_run":false,"as_of":"2028-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<Request>(with_clock).is_err(), "as_of is not part of the protocol");
        assert!(ok.changes_trail());
        assert!(!Request::Status.changes_trail() && !Request::Checkpoint.changes_trail());
    }
}
