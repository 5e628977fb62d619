//! The records that flow between the daemon's stages: correlation makes sessions, actions,
//! processes and events; the alert, chain and retention stages add alerts, checkpoints,
//! signing keys and retention cuts. Each is stored once and never updated.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Processes an open action keeps in memory; each further one that ends is handed on at once
/// as a process row of its own (with the action's id) and counted in `processes_early`.
pub const MAX_KEPT_PROCESSES: usize = 256;
/// Bytes of command lines (argv and earlier images) an open action keeps in memory, likewise.
pub const MAX_KEPT_ARGV_BYTES: usize = 1 << 20;
/// Earlier images a process record keeps (the rest are counted in `prior_argv_omitted`).
pub const MAX_PRIOR_IMAGES: usize = 8;

/// One process of an action's subtree (or the agent process itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub exec_id: String,
    pub pid: u32,
    pub ppid: u32,
    /// The last image the process exec'd (inherited from the parent if it never exec'd).
    pub argv: Vec<String>,
    /// Earlier images, oldest first, when the process exec'd more than once (the first
    /// [`MAX_PRIOR_IMAGES`]; every exec is also a raw event of its own).
    pub prior_argv: Vec<Vec<String>>,
    /// Earlier images past the first [`MAX_PRIOR_IMAGES`], counted, not kept.
    #[serde(default)]
    pub prior_argv_omitted: u64,
    pub argv_truncated: bool,
    pub exe: String,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Redaction rules that replaced something in this row (filled in by the daemon's redact stage).
    #[serde(default)]
    pub redacted: Vec<String>,
    /// Its row's place in the host's hash chain (filled in by the daemon's chain stage).
    #[serde(default)]
    pub chain: ChainLink,
}

impl ProcessRecord {
    /// Bytes of its command lines (argv and earlier images), for the open action's bound.
    pub fn argv_bytes(&self) -> usize {
        let strs = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        strs(&self.argv) + self.prior_argv.iter().map(|a| strs(a) + 24).sum::<usize>()
    }

    /// Record an exec that replaced the current image: the old argv becomes an earlier image,
    /// the first [`MAX_PRIOR_IMAGES`] kept and the rest counted.
    pub fn push_prior(&mut self) {
        let prev = std::mem::take(&mut self.argv);
        if self.prior_argv.len() < MAX_PRIOR_IMAGES {
            self.prior_argv.push(prev);
        } else {
            self.prior_argv_omitted += 1;
        }
    }
}

/// One command the agent started, with its whole subtree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// The processes that ended while the action held fewer than [`MAX_KEPT_PROCESSES`] (and
    /// [`MAX_KEPT_ARGV_BYTES`] of command lines), and those still running at its end.
    pub processes: Vec<ProcessRecord>,
    /// Processes of the action stored as rows of their own when they ended, before the action
    /// (an open action keeps a bounded number in memory); 0 for most actions.
    #[serde(default)]
    pub processes_early: u64,
    /// Files the whole subtree touched, identical accesses collapsed with a count.
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// One raw kernel event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub action_id: Option<Uuid>,
    pub exec_id: String,
    /// Position in the session's event stream, from 1.
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub pid: u32,
    pub tid: u32,
    /// The event's details as JSON text, serialised once (it is most of the queued volume).
    pub data: String,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
    /// For the alert rules only (not stored, not spooled).
    #[serde(skip)]
    pub facts: Option<Box<EventFacts>>,
}

/// What the alert rules need of a raw event, kept beside it in memory and never stored (the
/// stored form is `data`). Paths and argv are as the kernel gave them: alert text made from
/// them goes through the redact stage like every record.
#[derive(Debug, Clone, Default)]
pub struct EventFacts {
    /// The event kind (`file`, `net`, `exec`, `exec_failed`, `tamper`).
    pub kind: &'static str,
    pub pid: u32,
    /// `ok` or the errno name.
    pub result: String,
    /// file: each path touched and how.
    pub files: Vec<(String, &'static str)>,
    /// net: the endpoint.
    pub net: Option<NetSummary>,
    /// exec: the new image's argv and path.
    pub argv: Vec<String>,
    pub exe: String,
    /// tamper: what kind.
    pub tamper: Option<String>,
}

/// A process stored on its own: the agent process of a session (no action), or a process of
/// an open action handed on before the action ends (see [`MAX_KEPT_PROCESSES`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRow {
    pub session_id: Uuid,
    pub action_id: Option<Uuid>,
    pub rec: ProcessRecord,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: Uuid,
    pub cgroup_id: u64,
    pub ended_at: DateTime<Utc>,
    pub root_pid: Option<u32>,
    pub root_exec_id: Option<String>,
    pub root_argv: Vec<String>,
    pub actions: u64,
    pub events: u64,
    /// Filled in by the daemon: events lost in the kernel (by every daemon and while none ran)
    /// plus raw events shed by the daemon.
    pub events_lost: u64,
    /// What the agent process itself touched.
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// A new session, written by the daemon when it starts tracking one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStart {
    pub id: Uuid,
    pub agent: String,
    pub label: Option<String>,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub uid: u32,
    pub source: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// A signed statement of the chain's head: host, sequence, head hash and time. Written every
/// few seconds while records flow, once a minute while idle, at start and at a graceful stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: Uuid,
    /// The last chained row it covers (the checkpoint row itself is the next one).
    pub covers_seq: u64,
    /// That row's chain hash, lowercase hex.
    pub head_hash: String,
    pub at: DateTime<Utc>,
    /// `start`, `periodic`, `heartbeat` or `stop`.
    pub kind: String,
    /// The daemon promises another checkpoint within this many seconds, unless this is a stop.
    pub next_within_secs: u64,
    pub key_fingerprint: String,
    /// ed25519 signature of the signed message (see `chain::checkpoint_message`), lowercase hex.
    pub signature: String,
    #[serde(default)]
    pub chain: ChainLink,
}

/// The public key a host signs its checkpoints with, registered once per key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub fingerprint: String,
    /// ed25519 public key, lowercase hex.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// An alert raised by one of the daemon's alert rules (`crate::alerts`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertRecord {
    pub id: Uuid,
    pub session_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub agent: String,
    pub rule: String,
    /// info, low, medium, high or critical.
    pub severity: String,
    /// The first and last occurrence this row stands for.
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// Occurrences this row stands for: 1 for the first, the number of repeats for a grouped row.
    pub count: u64,
    /// The actions and raw events that triggered it (at most [`crate::alerts::MAX_IDS`] each).
    pub action_ids: Vec<Uuid>,
    pub event_ids: Vec<Uuid>,
    /// One line saying what happened.
    pub summary: String,
    /// What the rule matched (path, host, command, counts).
    pub details: serde_json::Value,
    #[serde(default)]
    pub chain: ChainLink,
}

/// A signed record of one day partition removed by retention (`daemon/retention.rs`): which
/// rows left, under which tier, the leaves they had in the chain, the chain head when it was
/// signed, and the archive's hash for the cold tier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionCut {
    pub id: Uuid,
    pub table: String,
    pub partition: String,
    pub range_from: DateTime<Utc>,
    pub range_to: DateTime<Utc>,
    /// `warm` (raw events dropped) or `cold` (archived, then dropped).
    pub tier: String,
    /// Every row of the partition, and those with a place in a chain.
    pub rows: u64,
    pub chained_rows: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// SHA-256 over the removed rows' leaves (`chain::leaves_hash`), lowercase hex.
    pub leaves_hash: String,
    pub archive_file: Option<String>,
    pub archive_sha256: Option<String>,
    /// The chain's head when the cut was signed (the cut row is the next row).
    pub covers_seq: u64,
    pub head_hash: String,
    /// The retention task's "now": the tiers are measured back from it.
    pub at: DateTime<Utc>,
    /// The tiers in force, in seconds (`hot`, and `warm` when set), so `verify` can tell a cut
    /// that removed rows younger than they allow. None in cuts made before they were recorded.
    #[serde(default)]
    pub hot_secs: Option<i64>,
    #[serde(default)]
    pub warm_secs: Option<i64>,
    pub key_fingerprint: String,
    /// ed25519 signature of `chain::cut_message`, lowercase hex.
    pub signature: String,
    #[serde(default)]
    pub chain: ChainLink,
}

/// One report an agent made about itself (a hook's JSON, or one OpenTelemetry log record or
/// metric point), stored as received (redacted and bounded) with who sent it as the kernel
/// knows it. It is the agent's word: only the sender and the time are agentmon's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    /// When the daemon received it (agentmon's clock, not the report's).
    pub received_at: DateTime<Utc>,
    /// `hook` (through `agentmon hook` and the intake socket) or `otlp`.
    pub channel: String,
    /// `claude`, `codex` or `unknown`: what the report's shape says (never who sent it).
    pub agent_kind: String,
    /// The hook event (`PreToolUse`, ...) or the OpenTelemetry event or metric name.
    pub event: String,
    /// The agent's own session id (`session_id` of a hook, `session.id` of OpenTelemetry).
    pub conversation_id: Option<String>,
    pub tool_use_id: Option<String>,
    pub tool_name: Option<String>,
    /// The sending process, from the socket's peer credentials (hook) or the owner of the
    /// client socket (OpenTelemetry), and its exec id as the correlator knows it.
    pub pid: u32,
    pub exec_id: Option<String>,
    /// Sent by the agent's own hook (or, for OpenTelemetry, the agent process itself), not by a
    /// process inside a tool call's subtree. Only attested reports change a verdict.
    pub attested: bool,
    /// Why it is (`hook`, `agent`) or is not attested (one line).
    pub attestation: String,
    /// Why the report could not be read as JSON or OTLP; its text is then kept as a string.
    pub malformed: Option<String>,
    /// The report was longer than [`MAX_REPORT_BYTES`] and was cut.
    pub truncated: bool,
    /// The report as JSON text (redacted; strings past [`MAX_REPORT_STRING`] cut).
    pub body: String,
    /// Model, tokens and cost, where the report carries them.
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cache_read: Option<i64>,
    pub cache_creation: Option<i64>,
    /// Cost in millionths of a US dollar, as the agent reported it or (`cost_estimated`) from
    /// the config's price table.
    pub cost_micro_usd: Option<i64>,
    pub cost_estimated: bool,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// Bytes of one report kept; the rest is cut and the report marked `truncated`.
pub const MAX_REPORT_BYTES: usize = 64 << 10;
/// Characters of one string inside a report kept (prompts, tool output, file contents).
pub const MAX_REPORT_STRING: usize = 8 << 10;
/// Bytes of a tool call's output kept in its call row.
pub const MAX_CALL_OUTPUT: usize = 2 << 10;

/// A tool call the agent declared, with the verdict of checking it against the kernel; or an
/// action of the kernel's that no call declared (`verdict` = `undeclared`, no tool). Written
/// once, when both sides are final.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub agent_kind: String,
    pub conversation_id: Option<String>,
    pub tool_use_id: Option<String>,
    pub tool_name: Option<String>,
    /// The declared input, JSON text (redacted, bounded).
    pub input: Option<String>,
    /// `allow`, `deny`, `ask` ... and where the decision came from (`config`, `hook`, `user`).
    pub decision: Option<String>,
    pub decision_source: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// From the call's first report (agentmon's clock) to its last; for `undeclared`, the action's.
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// As the agent reported it.
    pub duration_ms: Option<i64>,
    pub success: Option<bool>,
    /// The first [`MAX_CALL_OUTPUT`] bytes of the tool's output (redacted).
    pub output: Option<String>,
    /// The assistant's text before the call, from the transcript: the agent's own words.
    pub assistant_text: Option<String>,
    pub prompt_id: Option<String>,
    /// Whether the reports that declared it were attested.
    pub attested: bool,
    /// `matched`, `mismatch`, `denied`, `unobserved` or `undeclared`.
    pub verdict: String,
    /// One line: what was compared and why the verdict.
    pub reason: String,
    /// The kernel's side: actions and raw events matched (at most 64 each).
    pub action_ids: Vec<Uuid>,
    pub event_ids: Vec<Uuid>,
    /// The agent's side: the reports it was assembled from.
    pub report_ids: Vec<Uuid>,
    #[serde(default)]
    pub redacted: Vec<String>,
    #[serde(default)]
    pub chain: ChainLink,
}

/// The verdicts a [`CallRecord`] may carry (the `tool_calls.verdict` check constraint).
pub const VERDICTS: &[&str] = &["matched", "mismatch", "denied", "unobserved", "undeclared"];

/// The gist of a declared call's input (JSON text) for a person: its `command` (a string, or an
/// argv joined for the shell), else the path, URL or pattern it names, else the input itself.
/// Not escaped: the caller shows it as it shows any text the agent chose.
pub fn call_input_summary(input: &str) -> String {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(input) else {
        return input.to_owned();
    };
    for key in ["command", "cmd"] {
        match m.get(key) {
            Some(serde_json::Value::String(s)) => return s.clone(),
            Some(serde_json::Value::Array(a)) if a.iter().all(serde_json::Value::is_string) => {
                let argv: Vec<String> = a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
                return crate::text::shell_join(&argv);
            }
            _ => {}
        }
    }
    ["file_path", "notebook_path", "path", "url", "pattern", "query"]
        .iter()
        .find_map(|k| m.get(*k)?.as_str().map(str::to_owned))
        .unwrap_or_else(|| input.to_owned())
}

/// Everything the store writes, in the order it must be written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Output {
    SessionStart(SessionStart),
    Event(EventRecord),
    Process(ProcessRow),
    Action(ActionRecord),
    SessionEnd(SessionEnd),
    Checkpoint(Checkpoint),
    SigningKey(SigningKey),
    Alert(AlertRecord),
    RetentionCut(RetentionCut),
    Report(ReportRecord),
    Call(CallRecord),
}

impl Output {
    /// About how many heap bytes the record holds, for the byte-bounded memory queue.
    pub fn approx_bytes(&self) -> u64 {
        fn strs(v: &[String]) -> usize {
            v.iter().map(|s| s.len() + 24).sum()
        }
        fn process(p: &ProcessRecord) -> usize {
            200 + p.exec_id.len()
                + strs(&p.argv)
                + p.prior_argv.iter().map(|a| strs(a)).sum::<usize>()
                + p.exe.len()
                + p.cwd.as_ref().map_or(0, String::len)
        }
        fn files(f: &[FileSummary], n: &[NetSummary]) -> usize {
            f.iter().map(|f| 96 + f.path.len() + f.access.len() + f.result.len()).sum::<usize>()
                + n.iter()
                    .map(|n| 160 + n.addr.as_ref().map_or(0, String::len) + n.host.as_ref().map_or(0, String::len))
                    .sum::<usize>()
        }
        let n = match self {
            Self::SessionStart(s) => 200 + s.agent.len() + s.label.as_ref().map_or(0, String::len) + s.cgroup.len(),
            Self::Event(e) => 160 + e.exec_id.len() + e.kind.len() + e.data.len(),
            Self::Process(p) => process(&p.rec),
            Self::Action(a) => {
                300 + a.exec_id.len()
                    + strs(&a.argv)
                    + a.command.len()
                    + a.exe.len()
                    + a.cwd.as_ref().map_or(0, String::len)
                    + a.processes.iter().map(process).sum::<usize>()
                    + files(&a.files, &a.net)
            }
            Self::SessionEnd(e) => 200 + strs(&e.root_argv) + files(&e.files, &e.net),
            Self::Checkpoint(c) => 300 + c.head_hash.len() + c.signature.len(),
            Self::SigningKey(k) => 200 + k.public_key.len(),
            Self::RetentionCut(c) => 600 + c.partition.len() + c.archive_file.as_ref().map_or(0, String::len),
            Self::Report(r) => 400 + r.event.len() + r.body.len(),
            Self::Call(c) => {
                500 + c.input.as_ref().map_or(0, String::len)
                    + c.output.as_ref().map_or(0, String::len)
                    + c.assistant_text.as_ref().map_or(0, String::len)
                    + c.reason.len()
                    + 16 * (c.action_ids.len() + c.event_ids.len() + c.report_ids.len())
            }
            Self::Alert(a) => {
                300 + a.agent.len()
                    + a.rule.len()
                    + a.summary.len()
                    + 16 * (a.action_ids.len() + a.event_ids.len())
                    + a.details.to_string().len()
            }
        };
        n as u64
    }

    /// Whether a redaction rule replaced something in it.
    pub fn redacted(&self) -> bool {
        match self {
            Self::SessionStart(s) => !s.redacted.is_empty(),
            Self::Event(e) => !e.redacted.is_empty(),
            Self::Process(p) => !p.rec.redacted.is_empty(),
            Self::Action(a) => !a.redacted.is_empty() || a.processes.iter().any(|p| !p.redacted.is_empty()),
            Self::SessionEnd(e) => !e.redacted.is_empty(),
            Self::Report(r) => !r.redacted.is_empty(),
            Self::Call(c) => !c.redacted.is_empty(),
            Self::Checkpoint(_) | Self::SigningKey(_) | Self::Alert(_) | Self::RetentionCut(_) => false,
        }
    }

    /// Raw events may be shed under pressure (and are counted); everything else is always kept.
    pub fn is_event(&self) -> bool {
        matches!(self, Self::Event(_))
    }

    /// The session a record belongs to, for charging a shed event (nil for the chain's own
    /// records).
    pub fn session_id(&self) -> uuid::Uuid {
        match self {
            Self::SessionStart(s) => s.id,
            Self::Event(e) => e.session_id,
            Self::Process(p) => p.session_id,
            Self::Action(a) => a.session_id,
            Self::SessionEnd(e) => e.session_id,
            Self::Alert(a) => a.session_id.unwrap_or_default(),
            Self::Report(r) => r.session_id,
            Self::Call(c) => c.session_id,
            Self::Checkpoint(_) | Self::SigningKey(_) | Self::RetentionCut(_) => Uuid::nil(),
        }
    }
}

/// One summary entry of an action's (or the agent's) file accesses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSummary {
    pub path: String,
    /// read, write, create, delete, `rename_from`, `rename_to`, mkdir, link, chmod, chown, truncate, exec.
    pub access: String,
    /// `ok`, or the errno name.
    pub result: String,
    pub count: u64,
    /// A shared library, locale or loader file read: folded away in human output by default.
    pub noise: bool,
    /// A sensitive path (keys, credentials, agentmon's own files; see `crate::sensitive`).
    #[serde(default)]
    pub sensitive: bool,
}

/// One summary entry of an action's (or the agent's) network use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetSummary {
    /// connect, bind, listen, accept or send.
    pub op: String,
    /// ipv4, ipv6, unix or `family <n>`.
    pub family: String,
    pub addr: Option<String>,
    pub port: Option<u16>,
    /// The DNS name the address was resolved from, when a tagged process looked it up.
    pub host: Option<String>,
    pub result: String,
    pub count: u64,
    /// A sensitive endpoint (cloud metadata service, docker socket, configured addresses).
    #[serde(default)]
    pub sensitive: bool,
}

/// Accesses that modify something (`--writes`).
pub const WRITE_ACCESSES: &[&str] =
    &["write", "create", "delete", "rename_from", "rename_to", "mkdir", "link", "chmod", "chown", "truncate"];

/// A SHA-256 digest: a row's leaf or chain hash.
pub type Hash = [u8; 32];

/// A row's place in its host's chain.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub hash: Hash,
}

mod hex_hash {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &super::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::text::hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Hash, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hash(&s).ok_or_else(|| serde::de::Error::custom("a chain hash is 64 hex digits"))
    }
}

/// A hash from its 64 hex digits.
pub fn parse_hash(s: &str) -> Option<Hash> {
    crate::text::unhex(s)?.try_into().ok()
}
