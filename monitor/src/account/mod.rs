//! The agent's account against the kernel's record. Reports (hooks, OpenTelemetry) say which
//! tool calls the agent made; the kernel's records say what its processes did. This module
//! pairs them, and once both sides are final writes one [`CallRecord`] per declared call with
//! its verdict, and one per kernel action no call declared.
//!
//! - A call's **window** runs from its first report (`PreToolUse`, as agentmon received it) to
//!   its last (`PostToolUse`, or whatever closed it). Hooks run before and after the tool, and
//!   `agentmon hook` waits for the daemon's receipt, so the window holds the tool's work.
//! - **Bash**: the actions (children of the agent and their subtrees) started in the window;
//!   the one whose command line holds the declared command matches. An action ends when its
//!   last process does, so a background process keeps its call waiting.
//! - **File tools** (Read, Write, Edit, `MultiEdit`, `NotebookEdit`, Glob, Grep): the agent
//!   process's own file events on the declared path in the window.
//! - **Web tools**: the agent process's connects in the window. **MCP tools**: any activity of
//!   the session's other processes in the window.
//! - **Undeclared**: an action started outside every window, or a write, delete or connect by
//!   the agent process outside every window, that the agent's profile does not explain (its
//!   API and telemetry endpoints, its state files, its hooks).
//!
//! Only attested reports (see `daemon/intake.rs`) open or close a call. Pure: no I/O and no
//! clock; the daemon passes the time in.

pub mod attest;
pub mod parse;

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::record::{ActionRecord, CallRecord, ChainLink, EventRecord, Output, MAX_CALL_OUTPUT};
pub use parse::Parsed;

/// How long after a call closes (or an action ends) its verdict waits for the other side's
/// late records (ring events still unread, OpenTelemetry batches).
pub const GRACE_MS: i64 = 3000;
/// How much later than the last report an action must start to count as unreported.
const SILENCE_MARGIN_MS: i64 = 200;
/// A session that has reported before and then acts this long with no report is silent
/// (the default of `agents.silence_secs`).
pub const SILENCE_SECS: i64 = 30;
/// Records kept per session for matching (the oldest go first).
const KEEP_EVENTS: usize = 8192;
const KEEP_ACTIONS: usize = 1024;
/// Command lines an action keeps for matching, and characters of each.
const MAX_LINES: usize = 32;
const MAX_LINE: usize = 8192;
/// Ids listed in one call row.
const MAX_IDS: usize = 64;
/// Distinct undeclared agent-process accesses written per session (later ones are counted in
/// the last row's reason).
const MAX_AGENT_UNDECLARED: usize = 256;

/// The default address of the OTLP/HTTP receiver (the OpenTelemetry default port, loopback).
pub const DEFAULT_OTLP_LISTEN: &str = "127.0.0.1:4318";

/// `[agents]` in the config file.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Where the OTLP/HTTP receiver listens: `HOST:PORT`, or `off` [default: 127.0.0.1:4318].
    pub otlp_listen: Option<String>,
    /// Store the prompts the agents report [default: true].
    pub capture_prompts: Option<bool>,
    /// US dollars per million tokens, by model, for agents that report tokens but no cost
    /// (the cost is then marked estimated).
    #[serde(default)]
    pub prices: HashMap<String, parse::Price>,
    /// Additions to the built-in profile of each agent kind (`claude`, `codex`).
    #[serde(default)]
    pub profile: HashMap<String, Profile>,
    /// Seconds an agent that has reported before may act with no report before
    /// `agent_reports_missing` is raised [default: 30].
    pub silence_secs: Option<u32>,
}

impl AgentsConfig {
    /// The receiver's address, `None` when off.
    pub fn otlp_listen(&self) -> Option<String> {
        match self.otlp_listen.as_deref() {
            Some("off" | "") => None,
            Some(a) => Some(a.to_owned()),
            None => Some(DEFAULT_OTLP_LISTEN.to_owned()),
        }
    }
}

/// What an agent kind does on its own, never a tool call's work: its state files, hosts and
/// housekeeping commands. Built in per kind (see `docs/agents.md`), extended by the config.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Path fragments: a write whose path contains one is the agent's own state.
    #[serde(default)]
    pub paths: Vec<String>,
    /// DNS names (exact, or `*.suffix`) the agent talks to on its own.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Command-line fragments of processes the agent starts on its own.
    #[serde(default)]
    pub commands: Vec<String>,
}

impl Profile {
    /// The built-in profile of an agent kind.
    pub fn builtin(kind: &str) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect();
        match kind {
            "claude" => Self {
                paths: s(&[
                    "/.claude/",
                    "/.claude.json",
                    "/tmp/claude-",
                    "/tmp/cc-socks/",
                    "/.cache/claude",
                    "/.local/share/claude/",
                ]),
                hosts: s(&["*.anthropic.com", "*.claude.ai", "claude.ai"]),
                // Its shell snapshot (`bash -c env`, then a login shell writing the snapshot), its
                // start-up file listing, and the process listing it takes to stop a hook.
                commands: s(&["SNAPSHOT_FILE=", "/bin/bash -c env", " ls-files", "ps -A -o pid= -o ppid= -o pgid="]),
            },
            "codex" => Self {
                paths: s(&["/.codex/", "/tmp/codex-"]),
                hosts: s(&["*.openai.com", "chatgpt.com", "*.chatgpt.com"]),
                // Its shell snapshot, the platform probes it runs at start, and its plugin
                // index check (observed with Codex 0.171.0).
                commands: s(&[
                    "# Snapshot file",
                    "/.codex/shell_snapshots/",
                    "lsb_release -a",
                    "getconf LONG_BIT",
                    "openai/plugins.git",
                ]),
            },
            _ => Self::default(),
        }
    }

    fn extend(&mut self, other: &Self) {
        self.paths.extend(other.paths.iter().cloned());
        self.hosts.extend(other.hosts.iter().cloned());
        self.commands.extend(other.commands.iter().cloned());
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")) || host == suffix,
            None => host == h,
        })
    }
}

/// A report, as the matcher needs it.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub attested: bool,
    pub channel: &'static str,
    pub parsed: Parsed,
}

/// A kernel action, as the matcher keeps it.
#[derive(Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "four independent facts of one action")]
struct Act {
    id: Uuid,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// Its command line and every image of its processes, for matching a declared command.
    lines: Vec<String>,
    command: String,
    /// An `agentmon hook` the agent started (never undeclared, never a tool's work).
    hook: bool,
    /// A housekeeping command of the agent's profile.
    own: bool,
    writes: bool,
    connects: bool,
    /// One of its processes exec'd (a fork that never exec'd, wrote or connected did nothing
    /// the account asks about).
    execd: bool,
}

/// One raw event, as the matcher keeps it.
#[derive(Debug, Clone)]
struct Ev {
    id: Uuid,
    ts: DateTime<Utc>,
    action: Option<Uuid>,
    files: Vec<(String, &'static str, bool)>,
    /// A connect: (address, port, DNS name).
    connect: Option<(String, Option<u16>, Option<String>)>,
}

/// A declared call being assembled.
#[derive(Debug, Clone, Default)]
struct Call {
    tool_use_id: String,
    tool_name: Option<String>,
    conversation_id: Option<String>,
    prompt_id: Option<String>,
    input: Option<Value>,
    opened_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    decision: Option<String>,
    decision_source: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    success: Option<bool>,
    output: Option<String>,
    duration_ms: Option<i64>,
    reports: Vec<Uuid>,
    attested: bool,
    /// No hook reported it: its window is the agent's telemetry's, by the agent's clock.
    window_reported: bool,
    assistant_text: Option<String>,
}

#[derive(Debug, Default)]
struct Acct {
    kind: &'static str,
    profile: Profile,
    /// Endpoints the agent's environment names (its API, its telemetry): `addr:port`.
    endpoints: Vec<String>,
    /// Attested reports received, and when the last arrived.
    reports: u64,
    /// The last report that counts against silence: a hook's, once the session has sent any
    /// (telemetry goes on flowing when hooks are removed), else any.
    last_report: Option<DateTime<Utc>>,
    hook_reports: u64,
    /// Expected to report (hooks installed for its kind) even before its first report.
    expected: bool,
    calls: Vec<Call>,
    /// Windows of calls already decided, for the undeclared check of late actions.
    windows: VecDeque<(DateTime<Utc>, DateTime<Utc>)>,
    events: VecDeque<Ev>,
    acts: VecDeque<Act>,
    /// Actions seen starting (their exec events) and not yet written, with their start.
    open_acts: HashMap<Uuid, DateTime<Utc>>,
    /// Actions and agent events waiting for their grace before the undeclared check.
    undecided: VecDeque<(DateTime<Utc>, Pending)>,
    agent_undeclared: HashSet<String>,
    agent_undeclared_over: u64,
    /// Actions started after the last report (counted once they are written).
    silent_actions: u64,
    silence_alerted: bool,
    /// The agent process's executable was looked at.
    agent_known: bool,
    /// Hook actions whose report arrived.
    delivered: HashSet<Uuid>,
}

#[derive(Debug, Clone)]
enum Pending {
    Act(Uuid),
    AgentEvent(Ev, String),
}

/// An agent gone silent: the daemon raises `agent_reports_missing`.
#[derive(Debug, Clone)]
pub struct Silence {
    pub session: Uuid,
    pub at: DateTime<Utc>,
    pub action: Option<Uuid>,
    pub summary: String,
    pub details: Value,
}

/// Counters for `status`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AccountStats {
    pub calls: u64,
    pub matched: u64,
    pub mismatch: u64,
    pub denied: u64,
    pub unobserved: u64,
    pub undeclared: u64,
    /// `agentmon hook` processes the kernel saw the agent start whose report never arrived
    /// (the daemon was down or busy): counted when their action is read, also after a restart.
    #[serde(default)]
    pub hooks_undelivered: u64,
}

/// The account's part of `agentmon status`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct AccountStatus {
    /// Where the OTLP/HTTP receiver listens (`null`: off, or it could not bind: see the log).
    pub otlp_listen: Option<String>,
    /// Reports stored, and of them not attested and malformed.
    pub reports: u64,
    pub unattested: u64,
    pub malformed: u64,
    /// Reports refused: the sender was in no session, or the session sent more than
    /// [`MAX_REPORTS_PER_SEC`] a second.
    pub refused_no_session: u64,
    pub rate_limited: u64,
    /// Intake connections that delivered no report in time or a bad header, and reports turned
    /// away because the daemon's queue was full.
    pub intake_bad: u64,
    pub intake_busy: u64,
    /// OTLP requests received, refused because the daemon's queue was full (503), and too big.
    pub otlp_requests: u64,
    pub otlp_busy: u64,
    pub otlp_too_big: u64,
    /// Verdicts written, by kind.
    pub verdicts: AccountStats,
}

/// Hook reports and OTLP requests a session may send a second (more are refused and counted;
/// an OTLP request counts once, whatever it holds).
pub const MAX_REPORTS_PER_SEC: u32 = 500;

#[derive(Default)]
pub struct Account {
    sessions: HashMap<Uuid, Acct>,
    /// Extra profile entries from the config, per agent kind.
    extra: HashMap<String, Profile>,
    /// Agent kinds whose hooks are installed on this host (`agentmon agents install`).
    installed: Vec<String>,
    silence_secs: i64,
    pub stats: AccountStats,
}

fn is_write(access: &str) -> bool {
    crate::record::WRITE_ACCESSES.contains(&access)
}

/// Whether `line` holds the declared command, as given or as a shell would have quoted it.
pub fn holds_command(line: &str, declared: &str) -> bool {
    let d = declared.trim();
    if d.is_empty() {
        return false;
    }
    line.contains(d)
        || line.contains(&d.replace('\'', r"'\''"))
        || line.contains(&d.replace('\'', r#"'"'"'"#))
        || line.contains(&crate::text::shell_join(&[d.to_owned()]))
}

/// Whether an argv is a shell running `agentmon hook` (`sh -c '/usr/bin/agentmon hook'`), or
/// `agentmon hook` itself.
pub fn is_hook_command(argv: &[String]) -> bool {
    let hook_words = |s: &str| {
        let mut w = s.split_whitespace();
        let prog = w.next().unwrap_or("");
        (prog.rsplit('/').next() == Some("agentmon")) && w.next() == Some("hook")
    };
    match argv {
        [sh, c, cmd, ..] if c == "-c" && sh.rsplit('/').next().is_some_and(|b| b.ends_with("sh")) => hook_words(cmd),
        [prog, hook, ..] => prog.rsplit('/').next() == Some("agentmon") && hook == "hook",
        _ => false,
    }
}

/// The command a shell tool's input declares: Claude Code's `command` (its telemetry's
/// `full_command`), Codex's `cmd` (text, or an argv joined by spaces).
fn declared_command(input: Option<&Value>) -> String {
    let Some(m) = input.and_then(Value::as_object) else { return String::new() };
    match ["command", "full_command", "cmd"].iter().find_map(|k| m.get(*k)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

/// The path a file tool's input names.
fn declared_path(input: Option<&Value>) -> Option<String> {
    let m = input?.as_object()?;
    ["file_path", "notebook_path", "path"].iter().find_map(|k| m.get(*k)?.as_str().map(str::to_owned))
}

/// Whether a path the kernel recorded is the declared one: the same, under it (a directory),
/// its atomic-write temporary (`<path>.tmp.<pid>.<hex>`, as Claude Code writes), or the same
/// name reached through a directory fd (`/proc/self/fd/N/<name>`, as its rename is given).
fn path_matches(kernel: &str, declared: &str) -> bool {
    let d = declared.trim_end_matches('/');
    if d.is_empty() {
        return false;
    }
    let name = d.rsplit('/').next().unwrap_or(d);
    let via_fd = kernel
        .strip_prefix("/proc/self/fd/")
        .or_else(|| kernel.strip_prefix("/proc/thread-self/fd/"))
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(fd, rest)| {
            fd.bytes().all(|b| b.is_ascii_digit()) && (rest == name || rest.starts_with(&format!("{name}.tmp.")))
        });
    kernel == d
        || kernel.strip_prefix(d).is_some_and(|r| r.starts_with('/') || r.starts_with(".tmp."))
        || (!d.starts_with('/') && kernel.ends_with(&format!("/{d}")))
        || via_fd
}

impl Account {
    pub fn new(extra: HashMap<String, Profile>, installed: Vec<String>, silence_secs: Option<u32>) -> Self {
        Self { extra, installed, silence_secs: silence_secs.map_or(SILENCE_SECS, i64::from), ..Self::default() }
    }

    /// Follow a new session of `agent` (its name), whose agent process runs `exe`.
    pub fn start_session(&mut self, id: Uuid, agent: &str) {
        let _ = agent;
        self.sessions.entry(id).or_insert_with(|| Acct { kind: "unknown", ..Acct::default() });
    }

    /// The agent process's executable is known (its exec): hooks installed for its kind make
    /// the session expected to report.
    pub fn agent_exe(&mut self, session: Uuid, exe: &str, endpoints: Vec<String>) {
        let base = exe.rsplit('/').next().unwrap_or(exe);
        let kind = match base {
            "claude" => Some("claude"),
            "codex" => Some("codex"),
            _ => None,
        };
        let Some(a) = self.sessions.get_mut(&session) else { return };
        a.agent_known = !exe.is_empty();
        a.endpoints = endpoints;
        if let Some(kind) = kind {
            Self::set_kind(&self.extra, a, kind);
            a.expected |= self.installed.iter().any(|k| k == kind);
        }
    }

    fn set_kind(extra: &HashMap<String, Profile>, a: &mut Acct, kind: &'static str) {
        if a.kind == kind {
            return;
        }
        a.kind = kind;
        a.profile = Profile::builtin(kind);
        if let Some(p) = extra.get(kind) {
            a.profile.extend(p);
        }
    }

    /// A hook report arrived from a process of this action.
    pub fn delivered(&mut self, session: Uuid, action: Option<Uuid>) {
        if let Some(act) = action {
            let a = self.acct(session);
            if a.delivered.len() < 65_536 {
                a.delivered.insert(act);
            }
        }
    }

    /// Whether the session's agent process is still to be told (see [`Account::agent_exe`]).
    pub fn wants_agent(&self, session: Uuid) -> bool {
        self.sessions.get(&session).is_some_and(|a| !a.agent_known)
    }

    /// Whether the session is followed here.
    pub fn has(&self, session: Uuid) -> bool {
        self.sessions.contains_key(&session)
    }

    /// A report arrived (already stored as a report row by the caller).
    pub fn report(&mut self, session: Uuid, r: &Report) {
        let Some(a) = self.sessions.get_mut(&session) else { return };
        if !r.attested {
            return;
        }
        let p = &r.parsed;
        if a.kind == "unknown" && p.agent_kind != "unknown" {
            Self::set_kind(&self.extra, a, p.agent_kind);
        }
        a.reports += 1;
        if r.channel == "hook" {
            a.hook_reports += 1;
        }
        if r.channel == "hook" || a.hook_reports == 0 {
            a.last_report = Some(r.received_at);
            a.silent_actions = 0;
        }
        let now = r.received_at;
        let closing =
            matches!(p.event.as_str(), "PostToolUse" | "PostToolUseFailure" | "tool_result" | "codex.tool_result");
        let Some(id) = p.tool_use_id.clone() else {
            // A report of no call: a new prompt or a stop closes whatever is still open.
            if matches!(p.event.as_str(), "Stop" | "SubagentStop" | "UserPromptSubmit" | "SessionEnd") {
                for c in a.calls.iter_mut().filter(|c| c.closed_at.is_none() && c.opened_at.is_some()) {
                    c.closed_at = Some(now);
                }
            }
            return;
        };
        let idx = if let Some(i) = a.calls.iter().position(|c| c.tool_use_id == id) {
            i
        } else {
            a.calls.push(Call { tool_use_id: id, attested: true, ..Call::default() });
            a.calls.len() - 1
        };
        let c = &mut a.calls[idx];
        c.reports.push(r.id);
        c.tool_name = c.tool_name.take().or_else(|| p.tool_name.clone());
        c.conversation_id = c.conversation_id.take().or_else(|| p.conversation_id.clone());
        c.prompt_id = c.prompt_id.take().or_else(|| p.prompt_id.clone());
        if c.input.is_none() {
            c.input.clone_from(&p.input);
        }
        if let Some(t) = p.assistant_text.as_ref().filter(|_| c.assistant_text.is_none()) {
            c.assistant_text = Some(crate::text::truncate_chars(t, MAX_CALL_OUTPUT));
        }
        // Hooks give the window; OpenTelemetry arrives in batches and only fills in details,
        // or, for a call no hook reported, gives the window by the agent's own clock.
        if r.channel != "hook" && c.opened_at.is_none() && (closing || p.decision.as_deref().is_some_and(is_refusal)) {
            // A margin for the agent's timing of its own tool.
            let end = p.time.unwrap_or(now) + Duration::milliseconds(250);
            c.closed_at = Some(end);
            c.opened_at = Some(end - Duration::milliseconds(p.duration_ms.unwrap_or(0).clamp(0, 86_400_000) + 500));
            c.window_reported = true;
        }
        // A call its hook opened but no hook closed (the agent's hooks broke): its telemetry's
        // result closes it, by the agent's clock.
        if r.channel != "hook" && closing && c.opened_at.is_some() && c.closed_at.is_none() {
            c.closed_at = Some(p.time.unwrap_or(now) + Duration::milliseconds(250));
        }
        if r.channel == "hook" {
            if c.opened_at.is_none() && !closing {
                c.opened_at = Some(now);
            }
            if closing {
                c.opened_at.get_or_insert(now);
                c.closed_at = Some(now);
            }
        }
        if let Some(d) = &p.decision {
            c.decision = Some(d.clone());
            c.decision_source.clone_from(&p.decision_source);
            c.decided_at = Some(now);
            if is_refusal(d) && c.closed_at.is_none() {
                c.closed_at = Some(now);
                c.opened_at.get_or_insert(now);
            }
        }
        if closing || p.success.is_some() {
            c.success = p.success.or(c.success);
            c.duration_ms = p.duration_ms.or(c.duration_ms);
            if let Some(o) = &p.output {
                c.output = Some(crate::text::truncate_chars(o, MAX_CALL_OUTPUT));
            }
        }
    }

    /// A record of the kernel's, before redaction (an event's facts are still attached).
    pub fn observe(&mut self, o: &Output, now: DateTime<Utc>) {
        match o {
            Output::Event(e) => self.event(e, now),
            Output::Action(act) => self.action(act, now),
            _ => {}
        }
    }

    /// A session's state, made on its first record when its start was not seen (a session
    /// re-adopted after a restart).
    fn acct(&mut self, id: Uuid) -> &mut Acct {
        self.sessions.entry(id).or_insert_with(|| Acct { kind: "unknown", ..Acct::default() })
    }

    fn event(&mut self, e: &EventRecord, now: DateTime<Utc>) {
        let a = self.acct(e.session_id);
        let Some(f) = e.facts.as_deref() else { return };
        if let (Some(act), "exec") = (e.action_id, f.kind) {
            a.open_acts.entry(act).or_insert(e.ts);
        }
        let files: Vec<(String, &'static str, bool)> =
            f.files.iter().map(|(p, acc)| (p.clone(), *acc, f.result == "ok")).collect();
        let connect = f
            .net
            .as_ref()
            .filter(|n| n.op == "connect" || n.op == "send")
            .map(|n| (n.addr.clone().unwrap_or_default(), n.port, n.host.clone()));
        if files.is_empty() && connect.is_none() {
            return;
        }
        let ev = Ev { id: e.id, ts: e.ts, action: e.action_id, files, connect };
        // The agent process's own writes and connects are checked against the windows.
        if e.action_id.is_none() && (a.reports > 0 || a.expected) {
            if let Some(what) = Self::agent_effect(a, &ev) {
                a.undecided.push_back((now + Duration::milliseconds(GRACE_MS), Pending::AgentEvent(ev.clone(), what)));
            }
        }
        if a.events.len() >= KEEP_EVENTS {
            a.events.pop_front();
        }
        a.events.push_back(ev);
    }

    /// What an agent-process event did that needs a call to explain it (a write, delete or
    /// connect its profile does not cover), in a few words.
    fn agent_effect(a: &Acct, ev: &Ev) -> Option<String> {
        for (path, access, ok) in &ev.files {
            if *ok && is_write(access) && !a.profile.paths.iter().any(|p| path.contains(p.as_str())) {
                return Some(format!("{access} {path}"));
            }
        }
        let (addr, port, host) = ev.connect.as_ref()?;
        let endpoint = port.map_or_else(|| addr.clone(), |p| format!("{addr}:{p}"));
        let allowed = addr.starts_with('/')
            || addr.starts_with('@')
            || addr.is_empty()
            || *port == Some(53)
            || a.endpoints.contains(&endpoint)
            || host.as_deref().is_some_and(|h| a.profile.host_allowed(h));
        (!allowed)
            .then(|| format!("connect {}", host.as_deref().map_or(endpoint.clone(), |h| format!("{h} ({endpoint})"))))
    }

    fn action(&mut self, r: &ActionRecord, now: DateTime<Utc>) {
        let a = self.sessions.entry(r.session_id).or_insert_with(|| Acct { kind: "unknown", ..Acct::default() });
        a.open_acts.remove(&r.id);
        let root = r.processes.iter().find(|p| p.pid == r.pid);
        let first_image = root.and_then(|p| p.prior_argv.first()).unwrap_or(&r.argv);
        // Each image's arguments as given (not re-quoted), so a declared command is found
        // inside the shell line that wraps it.
        // Bounded: at most MAX_LINES lines of MAX_LINE bytes each are kept per action.
        let line = |a: &[String]| crate::text::truncate_chars(&a.join(" "), MAX_LINE);
        let mut lines = vec![line(&r.argv)];
        for p in r.processes.iter().take(MAX_LINES) {
            lines.push(line(&p.argv));
            lines.extend(p.prior_argv.iter().take(2).map(|x| line(x)));
        }
        let hook = is_hook_command(first_image);
        if hook && !a.delivered.remove(&r.id) {
            self.stats.hooks_undelivered += 1;
        }
        let own = !hook && a.profile.commands.iter().any(|c| lines.iter().any(|l| l.contains(c.as_str())));
        let act = Act {
            id: r.id,
            started_at: r.started_at,
            ended_at: r.ended_at,
            lines,
            command: r.command.clone(),
            hook,
            own,
            writes: r.files.iter().any(|f| is_write(&f.access) && f.result == "ok"),
            connects: r.net.iter().any(|n| n.op == "connect"),
            execd: !r.argv.is_empty() || r.processes.iter().any(|p| !p.argv.is_empty()),
        };
        let effect = act.execd || act.writes || act.connects;
        if !hook && !own && effect && (a.reports > 0 || a.expected) {
            a.undecided.push_back((now + Duration::milliseconds(GRACE_MS), Pending::Act(r.id)));
            // A report is handled before its hook answers, so before the tool it precedes
            // starts: an action that starts after the last report had none (the margin is for
            // the kernel's and the daemon's clocks).
            if a.last_report.is_none_or(|l| r.started_at > l + Duration::milliseconds(SILENCE_MARGIN_MS)) {
                a.silent_actions += 1;
            }
        }
        if a.acts.len() >= KEEP_ACTIONS {
            a.acts.pop_front();
        }
        a.acts.push_back(act);
    }

    /// Verdicts that are due at `now`: calls closed for the grace period whose actions have
    /// all ended, and actions and agent events no window covers.
    pub fn tick(&mut self, now: DateTime<Utc>) -> (Vec<Output>, Vec<Silence>) {
        let mut out = Vec::new();
        let mut silences = Vec::new();
        let ids: Vec<Uuid> = self.sessions.keys().copied().collect();
        for id in ids {
            self.decide(id, now, false, &mut out);
            if let Some(a) = self.sessions.get_mut(&id) {
                if let Some(s) = Self::silence(id, a, now, self.silence_secs) {
                    silences.push(s);
                }
            }
        }
        (out, silences)
    }

    /// The session ended: everything still open is decided now, and an agent that acted after
    /// its last report is silent whatever the time.
    pub fn end_session(&mut self, session: Uuid, now: DateTime<Utc>) -> (Vec<Output>, Option<Silence>) {
        let mut out = Vec::new();
        let silence = self.sessions.get_mut(&session).and_then(|a| Self::silence(session, a, now, 0));
        if let Some(a) = self.sessions.get_mut(&session) {
            for c in &mut a.calls {
                if c.closed_at.is_none() {
                    c.closed_at = Some(now);
                    c.opened_at.get_or_insert(now);
                }
            }
            a.open_acts.clear();
        }
        self.decide(session, now, true, &mut out);
        self.sessions.remove(&session);
        (out, silence)
    }

    fn silence(session: Uuid, a: &mut Acct, now: DateTime<Utc>, secs: i64) -> Option<Silence> {
        if a.silence_alerted || a.silent_actions == 0 {
            return None;
        }
        let quiet_since = a.last_report?;
        if now - quiet_since < Duration::seconds(secs) {
            return None;
        }
        a.silence_alerted = true;
        let action = a.acts.back().map(|x| x.id);
        Some(Silence {
            session,
            at: now,
            action,
            summary: format!(
                "the agent reported before and has taken {} action(s) with no report for {}s: its hooks may be removed or broken",
                a.silent_actions,
                (now - quiet_since).num_seconds()
            ),
            details: serde_json::json!({"silent_actions": a.silent_actions, "last_report_at": quiet_since, "agent_kind": a.kind}),
        })
    }

    fn decide(&mut self, session: Uuid, now: DateTime<Utc>, all: bool, out: &mut Vec<Output>) {
        let Some(a) = self.sessions.get_mut(&session) else { return };
        // Calls first: their windows decide what is undeclared.
        let mut i = 0;
        while i < a.calls.len() {
            let c = &a.calls[i];
            let ready = match (c.opened_at, c.closed_at) {
                (Some(open), Some(closed)) => {
                    let waited = all || now >= closed + Duration::milliseconds(GRACE_MS);
                    let running = a.open_acts.values().any(|s| *s >= open && *s <= closed);
                    waited && (all || !running)
                }
                // OpenTelemetry alone (no hooks): decided on its own at the session's end.
                (None, _) => all,
                _ => false,
            };
            if !ready {
                i += 1;
                continue;
            }
            let c = a.calls.remove(i);
            let rec = Self::verdict(session, a, &c);
            Self::count(&mut self.stats, &rec.verdict);
            if let (Some(o), Some(cl)) = (c.opened_at, c.closed_at) {
                // A refused call ran nothing: its window covers nothing else.
                let refused = c.decision.as_deref().is_some_and(is_refusal);
                a.windows.push_back((o, if refused { o } else { cl }));
                if a.windows.len() > KEEP_ACTIONS {
                    a.windows.pop_front();
                }
            }
            out.push(Output::Call(rec));
        }
        let mut later = VecDeque::new();
        while let Some((due, _)) = a.undecided.front() {
            if !all && *due > now {
                break;
            }
            let Some((due, p)) = a.undecided.pop_front() else { break };
            let (ts, what) = match &p {
                Pending::Act(id) => match a.acts.iter().find(|x| x.id == *id) {
                    Some(x) => (x.started_at, None),
                    None => continue,
                },
                Pending::AgentEvent(ev, what) => (ev.ts, Some(what.clone())),
            };
            if a.windows.iter().any(|(o, c)| ts >= *o && ts <= *c) {
                continue;
            }
            // Inside a call not decided yet (a refusal may still arrive and shrink its
            // window): decided after it.
            let pending =
                a.calls.iter().any(|c| c.opened_at.is_some_and(|o| ts >= o && c.closed_at.is_none_or(|cl| ts <= cl)));
            if pending && !all {
                later.push_back((due, p));
                continue;
            }
            if let Some(rec) = Self::undeclared(session, a, &p, what) {
                self.stats.undeclared += 1;
                out.push(Output::Call(rec));
            }
        }
        for item in later.into_iter().rev() {
            a.undecided.push_front(item);
        }
    }

    fn count(s: &mut AccountStats, verdict: &str) {
        s.calls += 1;
        match verdict {
            "matched" => s.matched += 1,
            "mismatch" => s.mismatch += 1,
            "denied" => s.denied += 1,
            _ => s.unobserved += 1,
        }
    }

    fn undeclared(session: Uuid, a: &mut Acct, p: &Pending, what: Option<String>) -> Option<CallRecord> {
        let (started_at, ended_at, action_ids, event_ids, reason) = match p {
            Pending::Act(id) => {
                let x = a.acts.iter().find(|x| x.id == *id)?;
                let effects = [(x.writes, "wrote files"), (x.connects, "connected")]
                    .iter()
                    .filter(|(b, _)| *b)
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>()
                    .join(" and ");
                let effects = if effects.is_empty() { String::new() } else { format!(" ({effects})") };
                let reason = format!(
                    "the kernel saw `{}` start outside every tool call the agent declared{effects}",
                    crate::text::truncate_chars(&x.command, 300)
                );
                (x.started_at, x.ended_at, vec![x.id], Vec::new(), reason)
            }
            Pending::AgentEvent(ev, _) => {
                let what = what.unwrap_or_default();
                if !a.agent_undeclared.insert(what.clone()) {
                    return None;
                }
                if a.agent_undeclared.len() > MAX_AGENT_UNDECLARED {
                    a.agent_undeclared_over += 1;
                    return None;
                }
                let reason = format!("the agent process itself did `{what}` outside every tool call it declared");
                (ev.ts, Some(ev.ts), Vec::new(), vec![ev.id], reason)
            }
        };
        Some(CallRecord {
            id: Uuid::now_v7(),
            session_id: session,
            agent_kind: a.kind.to_owned(),
            started_at,
            ended_at,
            attested: false,
            verdict: "undeclared".into(),
            reason,
            action_ids,
            event_ids,
            ..CallRecord::default()
        })
    }

    /// The verdict of one declared call against the session's records in its window.
    #[expect(clippy::too_many_lines, reason = "one branch per kind of tool, side by side")]
    fn verdict(session: Uuid, a: &Acct, c: &Call) -> CallRecord {
        let open = c.opened_at.unwrap_or_default();
        let close = c.closed_at.unwrap_or(open);
        let tool = c.tool_name.clone().unwrap_or_default();
        let in_window = |t: DateTime<Utc>| t >= open && t <= close;
        let acts: Vec<&Act> = a.acts.iter().filter(|x| !x.hook && in_window(x.started_at)).collect();
        let agent_events: Vec<&Ev> = a.events.iter().filter(|e| e.action.is_none() && in_window(e.ts)).collect();
        let refused = c.decision.as_deref().is_some_and(is_refusal);
        let mut action_ids = Vec::new();
        let mut event_ids = Vec::new();
        let (verdict, reason) = if refused {
            // Refused: the declared command must not have run (other work in the window is
            // another call's, or undeclared on its own).
            let cmd = declared_command(c.input.as_ref());
            let cmd = cmd.as_str();
            let ran: Vec<&&Act> = acts.iter().filter(|x| x.lines.iter().any(|l| holds_command(l, cmd))).collect();
            action_ids.extend(ran.iter().map(|x| x.id));
            if ran.is_empty() {
                ("denied", format!("refused ({}) and nothing observed", c.decision.as_deref().unwrap_or("")))
            } else {
                (
                    "mismatch",
                    format!(
                        "refused ({}), yet the kernel saw `{}` run",
                        c.decision.as_deref().unwrap_or(""),
                        short(cmd)
                    ),
                )
            }
        } else if is_shell_tool(&tool) {
            let cmd = declared_command(c.input.as_ref());
            let cmd = cmd.as_str();
            let hits: Vec<&&Act> = acts.iter().filter(|x| x.lines.iter().any(|l| holds_command(l, cmd))).collect();
            action_ids.extend(acts.iter().map(|x| x.id));
            if let Some(x) = hits.first() {
                ("matched", format!("`{}` ran as `{}`", short(cmd), short(&x.command)))
            } else if let Some(x) = acts.iter().find(|x| !x.own) {
                ("mismatch", format!("declared `{}`, the kernel saw `{}`", short(cmd), short(&x.command)))
            } else {
                nothing(c, &format!("declared `{}`; no process started in its window", short(cmd)))
            }
        } else if let Some(path) = declared_path(c.input.as_ref()).filter(|_| is_file_tool(&tool)) {
            let writes_expected = matches!(tool.as_str(), "Write" | "Edit" | "MultiEdit" | "NotebookEdit");
            let on_path: Vec<&&Ev> =
                agent_events.iter().filter(|e| e.files.iter().any(|(p, _, _)| path_matches(p, &path))).collect();
            event_ids.extend(on_path.iter().map(|e| e.id));
            // Grep and Glob may run a helper (`rg`) as an action of their own.
            action_ids.extend(acts.iter().filter(|x| x.lines.iter().any(|l| l.contains(&path))).map(|x| x.id));
            let wrote = on_path
                .iter()
                .any(|e| e.files.iter().any(|(p, acc, ok)| *ok && is_write(acc) && path_matches(p, &path)));
            if on_path.is_empty() && action_ids.is_empty() {
                nothing(
                    c,
                    &format!("declared {tool} of {}; the agent process did not touch it in the window", short(&path)),
                )
            } else if writes_expected && !wrote && c.success != Some(false) {
                ("mismatch", format!("declared {tool} of {}; the kernel saw it touched but not written", short(&path)))
            } else {
                (
                    "matched",
                    format!("{tool} of {}: {} event(s) of the agent process on it", short(&path), on_path.len()),
                )
            }
        } else if matches!(tool.as_str(), "WebFetch") {
            let conns: Vec<&&Ev> = agent_events.iter().filter(|e| e.connect.is_some()).collect();
            event_ids.extend(conns.iter().map(|e| e.id));
            if conns.is_empty() {
                nothing(c, "declared a fetch; the agent process connected nowhere in the window")
            } else {
                ("matched", format!("{} connect(s) by the agent process in the window", conns.len()))
            }
        } else if tool.starts_with("mcp__") {
            let others: Vec<&Ev> = a.events.iter().filter(|e| e.action.is_some() && in_window(e.ts)).collect();
            event_ids.extend(others.iter().map(|e| e.id));
            action_ids.extend(acts.iter().map(|x| x.id));
            if others.is_empty() && acts.is_empty() {
                nothing(c, "declared an MCP call; no other process of the session acted in its window")
            } else {
                ("matched", format!("{} event(s) of the session's other processes in the window", others.len()))
            }
        } else {
            // Tools with no effect the kernel sees (TodoWrite, Task, WebSearch at the provider...).
            action_ids.extend(acts.iter().map(|x| x.id));
            ("matched", format!("{tool}: no local effect expected"))
        };
        action_ids.truncate(MAX_IDS);
        event_ids.truncate(MAX_IDS);
        let reason = if c.window_reported {
            format!("{reason} (no hook reported it: its window is from the agent's telemetry, by its own clock)")
        } else {
            reason
        };
        CallRecord {
            id: Uuid::now_v7(),
            session_id: session,
            agent_kind: a.kind.to_owned(),
            conversation_id: c.conversation_id.clone(),
            tool_use_id: Some(c.tool_use_id.clone()),
            tool_name: c.tool_name.clone(),
            input: c.input.as_ref().map(|i| {
                let mut i = i.clone();
                parse::bound_strings(&mut i);
                i.to_string()
            }),
            decision: c.decision.clone(),
            decision_source: c.decision_source.clone(),
            decided_at: c.decided_at,
            started_at: open,
            ended_at: c.closed_at,
            duration_ms: c.duration_ms,
            success: c.success,
            output: c.output.clone(),
            assistant_text: c.assistant_text.clone(),
            prompt_id: c.prompt_id.clone(),
            attested: c.attested,
            verdict: verdict.to_owned(),
            reason,
            action_ids,
            event_ids,
            report_ids: c.reports.iter().copied().take(MAX_IDS).collect(),
            redacted: Vec::new(),
            chain: ChainLink::default(),
        }
    }
}

/// A decision that refused the call.
fn is_refusal(d: &str) -> bool {
    matches!(d.to_ascii_lowercase().as_str(), "reject" | "deny" | "denied" | "block" | "blocked" | "abort" | "rejected")
}

/// Claude Code's `Bash`, Codex's `exec_command` / `shell` / `local_shell`.
fn is_shell_tool(tool: &str) -> bool {
    matches!(tool, "Bash" | "exec_command" | "shell" | "local_shell" | "container.exec")
}

fn is_file_tool(tool: &str) -> bool {
    matches!(tool, "Read" | "Write" | "Edit" | "MultiEdit" | "NotebookEdit" | "Glob" | "Grep" | "LS")
}

fn short(s: &str) -> String {
    crate::text::truncate_chars(s, 200)
}

/// The verdict when the kernel saw nothing: `unobserved` if the agent says it succeeded.
fn nothing(c: &Call, reason: &str) -> (&'static str, String) {
    match c.success {
        Some(false) => ("unobserved", format!("{reason} (the agent reported it failed)")),
        None => ("unobserved", format!("{reason} (no result was reported)")),
        Some(true) => ("unobserved", reason.to_owned()),
    }
}

#[cfg(test)]
mod tests;
