//! Correlation: decoded kernel events in, evidence records out.
//!
//! - A **session** is one tagged cgroup (one agent run). Its first process is the **agent**.
//! - An **action** is a process the agent spawned, together with its whole subtree. It is
//!   written once, when the last process of the subtree has exited (or when its session ends).
//!   An open action keeps at most `MAX_KEPT_PROCESSES` ended processes (and
//!   `MAX_KEPT_ARGV_BYTES` of their argv); each further one is written as it ends, as a process
//!   row with the action's id, and counted in the action's `processes_early`.
//! - Every event becomes one raw event record, attributed to its session, action and exec id.
//!
//! This module is pure: no I/O, no clock reads, so it is tested on synthetic sequences.

pub mod acts;
pub mod resources;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::record::{
    ActionRecord, ChainLink, EventFacts, EventRecord, NetSummary, Output, ProcessRecord, ProcessRow, SessionEnd,
    MAX_KEPT_ARGV_BYTES, MAX_KEPT_PROCESSES,
};

use crate::ebpf::decode::{join_path, Event, Exec, FileOp, Header, NetOp, SockAddr, TamperOp, UringOp};
use resources::{DnsCache, Resources};

/// Converts kernel boot-time nanoseconds to wall-clock time and to `/proc` clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix time (ns) at boot: realtime minus boottime, measured at daemon start.
    pub boot_unix_ns: i128,
    /// Nanoseconds per `/proc/<pid>/stat` clock tick.
    pub ns_per_tick: u64,
    /// First 8 hex digits of the kernel boot id, so exec ids never repeat across reboots.
    pub boot_tag: u32,
}

impl Clock {
    pub fn wall(&self, boot_ns: u64) -> DateTime<Utc> {
        let ns = self.boot_unix_ns + boot_ns as i128;
        DateTime::from_timestamp_nanos(ns.clamp(0, i64::MAX as i128) as i64)
    }

    /// The stable process key: boot, pid and start time in clock ticks (what `/proc` shows).
    pub fn exec_id(&self, tgid: u32, start_ns: u64) -> String {
        self.exec_id_ticks(tgid, start_ns / self.ns_per_tick.max(1))
    }

    pub fn exec_id_ticks(&self, tgid: u32, ticks: u64) -> String {
        format!("{:08x}-{tgid}-{ticks}", self.boot_tag)
    }
}

/// What the daemon knows about a session when it starts tracking it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: Uuid,
    pub cgroup_id: u64,
    pub agent: String,
    /// Events and actions an earlier daemon already stored for this session (re-adoption after
    /// a restart), so `seq` continues and the end record's counts cover the whole session.
    pub events_before: u64,
    pub actions_before: u64,
    /// The session cgroup's directory (writes to cgroups outside it are tampering).
    #[serde(default)]
    pub cgroup: String,
}

/// A process found in `/proc` when a session is adopted.
#[derive(Debug, Clone)]
pub struct SeedProcess {
    pub tgid: u32,
    pub ppid: u32,
    pub start_ticks: u64,
    pub argv: Vec<String>,
    pub exe: String,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Proc {
    exec_id: String,
    session: u64,
    action: Option<Uuid>,
    is_agent: bool,
    rec: ProcessRecord,
    /// Whether this process has exec'd since we started following it.
    exec_seen: bool,
    /// The last file it failed to exec, while it has not exec'd successfully.
    failed_exec: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ActionState {
    rec: ActionRecord,
    resources: Resources,
    root_tgid: u32,
    live: u32,
    argv_known: bool,
    /// Bytes of command lines `rec.processes` holds (bounded by `MAX_KEPT_ARGV_BYTES`).
    #[serde(default)]
    kept_bytes: usize,
    /// Pids of the processes handed on early (the first `MAX_EARLY_PIDS`), so a read of their
    /// own `/proc/<pid>/…` is not marked sensitive when the action ends.
    #[serde(default)]
    early_pids: Vec<u32>,
}

/// Pids of early processes an action remembers (4 bytes each); past it, a read of such a
/// process's own `/proc/<pid>/environ` would be marked sensitive, never the reverse.
const MAX_EARLY_PIDS: usize = 65_536;

#[derive(Debug, Serialize, Deserialize)]
struct SessionState {
    info: SessionInfo,
    root: Option<(u32, String)>,
    root_argv: Vec<String>,
    live: u32,
    actions: u64,
    events: u64,
    /// What the agent process itself touched.
    resources: Resources,
    /// Names this session's processes looked up (answers they received), by address.
    dns: DnsCache,
}

/// A process that sent a report, as the correlator knows it (see [`Correlator::sender`]).
#[derive(Debug, Clone)]
pub struct Sender {
    pub pid: u32,
    pub session_id: Uuid,
    pub exec_id: String,
    /// It is the session's agent process.
    pub is_agent: bool,
    pub exe: String,
    pub argv: Vec<String>,
    pub ppid: u32,
    pub action: Option<Uuid>,
    /// Its action's first process: pid, parent pid and first image.
    pub action_root: Option<(u32, u32, Vec<String>)>,
    /// The session's agent process.
    pub agent: Option<u32>,
}

/// Counters the daemon reports in `status`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct CorrelatorStats {
    pub events: u64,
    /// Events whose session cgroup the daemon does not know.
    pub unattributed: u64,
    /// Events of cgroups held pending for the cgroup rules that matched no rule (dropped).
    pub pending_discarded: u64,
    pub actions_written: u64,
    pub sessions_ended: u64,
    /// Processes of open actions stored on their own before their action (the action held
    /// `MAX_KEPT_PROCESSES` or `MAX_KEPT_ARGV_BYTES` already).
    #[serde(default)]
    pub processes_early: u64,
}

pub struct Correlator {
    clock: Clock,
    sessions: HashMap<u64, SessionState>,
    procs: HashMap<u32, Proc>,
    actions: HashMap<Uuid, ActionState>,
    /// Addresses bound or connected on (pid, fd), to name the endpoint of a later listen/send.
    /// Forgotten when the process exits.
    sockets: HashMap<u32, HashMap<i32, SockAddr>>,
    /// Sessions whose known processes have all exited, and when the last one did. Each ends
    /// once the kernel agrees that none of its processes is still tracked.
    idle: HashMap<u64, DateTime<Utc>>,
    /// agentmon's own paths (pins, state, config): writing them is tampering.
    protected: Vec<String>,
    /// Where cgroups are mounted: writing there outside the session is tampering.
    cgroup_roots: Vec<String>,
    /// `io_uring` submissions awaiting their completion, by (tgid, request). Not handed over at
    /// a restart: a completion without its submission is still stored, without summary.
    uring: HashMap<(u32, u64), acts::UringPending>,
    /// Tamper records derived from the event being handled (protected-path writes, hand-offs
    /// to privileged services).
    derived: Vec<serde_json::Value>,
    /// Pending cgroups released because no rule matched them (see [`Correlator::discard`]).
    discarded: std::collections::VecDeque<u64>,
    /// Which paths and endpoints the summaries mark `sensitive`.
    sensitive: crate::sensitive::Sensitive,
    /// The host's DNS resolvers (`/etc/resolv.conf`).
    resolvers: Vec<std::net::IpAddr>,
    /// What the alert rules need of the event being handled (see [`EventFacts`]).
    facts: Option<EventFacts>,
    /// The exec ids of the last processes that exited (bounded): a second "process exited"
    /// for one of them (threads racing to the exit) is a thread's exit, never a new process.
    exited: std::collections::VecDeque<String>,
    pub stats: CorrelatorStats,
}

/// How many exited processes [`Correlator::exited`] remembers.
const EXITED_KEPT: usize = 1024;

/// Everything a correlator holds, written at a graceful stop and loaded by the next daemon, so
/// in-flight actions come out once, whole, with their original ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct CorrelatorState {
    sessions: Vec<SessionState>,
    procs: Vec<(u32, Proc)>,
    actions: Vec<ActionState>,
    sockets: Vec<(u32, Vec<(i32, SockAddr)>)>,
    idle: Vec<(u64, DateTime<Utc>)>,
}

/// Decode a raw wait status into (exit code, signal).
pub fn wait_status(status: u32) -> (Option<i32>, Option<i32>) {
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        (Some(((status >> 8) & 0xff) as i32), None)
    } else {
        (None, Some(sig))
    }
}

impl Correlator {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            sessions: HashMap::new(),
            procs: HashMap::new(),
            actions: HashMap::new(),
            sockets: HashMap::new(),
            idle: HashMap::new(),
            protected: Vec::new(),
            cgroup_roots: Vec::new(),
            uring: HashMap::new(),
            derived: Vec::new(),
            discarded: std::collections::VecDeque::new(),
            sensitive: crate::sensitive::Sensitive::default(),
            resolvers: Vec::new(),
            facts: None,
            exited: std::collections::VecDeque::new(),
            stats: CorrelatorStats::default(),
        }
    }

    /// agentmon's own paths and the cgroup mounts, for tamper detection on file writes.
    pub fn set_protected(&mut self, protected: Vec<String>, cgroup_roots: Vec<String>) {
        self.protected = protected;
        self.cgroup_roots = cgroup_roots;
    }

    /// The host's DNS resolvers: only their answers name connects (see `DnsCache`).
    pub fn set_resolvers(&mut self, resolvers: Vec<std::net::IpAddr>) {
        self.resolvers = resolvers;
    }

    pub fn set_sensitive(&mut self, s: crate::sensitive::Sensitive) {
        self.sensitive = s;
    }

    /// Hand the whole state over (the correlator is empty afterwards).
    pub fn take_state(&mut self) -> CorrelatorState {
        CorrelatorState {
            sessions: self.sessions.drain().map(|(_, s)| s).collect(),
            procs: self.procs.drain().collect(),
            actions: self.actions.drain().map(|(_, a)| a).collect(),
            sockets: self.sockets.drain().map(|(p, m)| (p, m.into_iter().collect())).collect(),
            idle: self.idle.drain().collect(),
        }
    }

    /// Continue from a state an earlier daemon handed over.
    pub fn restore(&mut self, state: CorrelatorState) {
        for mut s in state.sessions {
            s.resources.reindex();
            self.sessions.insert(s.info.cgroup_id, s);
        }
        self.procs.extend(state.procs);
        for mut a in state.actions {
            a.resources.reindex();
            self.actions.insert(a.rec.id, a);
        }
        self.sockets.extend(state.sockets.into_iter().map(|(p, m)| (p, m.into_iter().collect())));
        self.idle.extend(state.idle);
    }

    /// Whether a session's state is held here (restored or started).
    pub fn has_session(&self, cgroup_id: u64) -> bool {
        self.sessions.contains_key(&cgroup_id)
    }

    /// End the idle sessions the kernel agrees are over (`kernel_done`), oldest first.
    pub fn end_idle_sessions(&mut self, kernel_done: impl Fn(u64) -> bool) -> Vec<Output> {
        let mut done: Vec<(u64, DateTime<Utc>)> =
            self.idle.iter().filter(|(c, _)| kernel_done(**c)).map(|(c, t)| (*c, *t)).collect();
        done.sort_by_key(|(_, t)| *t);
        done.into_iter().flat_map(|(c, t)| self.end_session(c, t)).collect()
    }

    /// Live processes the correlator knows in a session.
    pub fn session_live(&self, cgroup_id: u64) -> Option<u32> {
        self.sessions.get(&cgroup_id).map(|s| s.live)
    }

    /// Sessions waiting for the kernel to agree that they are over.
    pub fn idle_sessions(&self) -> usize {
        self.idle.len()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// A cgroup held pending for the rules matched none: its events (still arriving from the
    /// rings) are dropped and counted, not taken for loss. Remembers the latest 4096.
    pub fn discard(&mut self, cgroup: u64) {
        if self.discarded.len() >= 4096 {
            self.discarded.pop_front();
        }
        self.discarded.push_back(cgroup);
    }

    pub fn start_session(&mut self, info: SessionInfo) {
        self.sessions.entry(info.cgroup_id).or_insert(SessionState {
            root: None,
            root_argv: Vec::new(),
            live: 0,
            actions: info.actions_before,
            events: info.events_before,
            info,
            resources: Resources::default(),
            dns: DnsCache::default(),
        });
    }

    /// What the correlator knows of a live process that sent a report, for binding it to its
    /// session and deciding whether the agent's own hook sent it.
    pub fn sender(&self, pid: u32) -> Option<Sender> {
        let p = self.procs.get(&pid)?;
        let s = self.sessions.get(&p.session)?;
        let root = p.action.and_then(|a| self.actions.get(&a)).and_then(|a| self.procs.get(&a.root_tgid));
        let first = |r: &crate::record::ProcessRecord| r.prior_argv.first().cloned().unwrap_or_else(|| r.argv.clone());
        Some(Sender {
            pid,
            session_id: s.info.id,
            exec_id: p.exec_id.clone(),
            is_agent: p.is_agent,
            exe: p.rec.exe.clone(),
            argv: p.rec.argv.clone(),
            ppid: p.rec.ppid,
            action: p.action,
            action_root: root.map(|r| (r.rec.pid, r.rec.ppid, first(&r.rec))),
            agent: s.root.as_ref().map(|r| r.0),
        })
    }

    /// A session's agent process (pid and executable), when known.
    pub fn agent_of(&self, session_id: Uuid) -> Option<(u32, String)> {
        let s = self.sessions.values().find(|s| s.info.id == session_id)?;
        let (pid, _) = s.root.as_ref()?;
        Some((*pid, self.procs.get(pid).map(|p| p.rec.exe.clone()).unwrap_or_default()))
    }

    /// The live processes of a session.
    pub fn session_pids(&self, session_id: Uuid) -> Vec<u32> {
        let Some(cg) = self.sessions.iter().find(|(_, s)| s.info.id == session_id).map(|(c, _)| *c) else {
            return Vec::new();
        };
        self.procs.iter().filter(|(_, p)| p.session == cg).map(|(pid, _)| *pid).collect()
    }

    /// Live processes of every session.
    pub fn all_session_pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Live sessions: (id, agent, cgroup id, root pid, live processes).
    pub fn live_sessions(&self) -> Vec<(Uuid, String, u64, Option<u32>, u32)> {
        self.sessions
            .values()
            .map(|s| (s.info.id, s.info.agent.clone(), s.info.cgroup_id, s.root.as_ref().map(|r| r.0), s.live))
            .collect()
    }

    /// Adopt processes that were already running in a session when tracking began,
    /// oldest first, so parents are known before their children.
    pub fn seed(&mut self, session_cgroup: u64, mut seeds: Vec<SeedProcess>) {
        seeds.sort_by_key(|s| (s.start_ticks, s.tgid));
        for s in seeds {
            if self.procs.contains_key(&s.tgid) {
                continue;
            }
            let started = self.clock.wall(s.start_ticks * self.clock.ns_per_tick);
            let rec = ProcessRecord {
                exec_id: self.clock.exec_id_ticks(s.tgid, s.start_ticks),
                pid: s.tgid,
                ppid: s.ppid,
                argv: s.argv,
                exe: s.exe,
                cwd: s.cwd,
                uid: s.uid,
                started_at: started,
                ..ProcessRecord::default()
            };
            // Its command line comes from /proc, so it is known even though no exec was seen.
            if let Some(a) = self.add_process(session_cgroup, rec, s.ppid, false).and_then(|a| self.actions.get_mut(&a))
            {
                if a.root_tgid == s.tgid {
                    a.argv_known = true;
                }
            }
        }
    }

    /// Insert a newly seen process (by fork, by an exec we had no fork for, or by seeding) and
    /// decide which action it belongs to.
    /// `start_seen` is false when the process was found already running (seeded, or first seen
    /// by a later event): an action it starts is then not complete.
    fn add_process(&mut self, session_cgroup: u64, rec: ProcessRecord, ppid: u32, start_seen: bool) -> Option<Uuid> {
        let session = self.sessions.get_mut(&session_cgroup)?;
        let tgid = rec.pid;
        session.live += 1;
        self.idle.remove(&session_cgroup);
        let parent = self.procs.get(&ppid).filter(|p| p.session == session_cgroup);
        let (is_agent, action) = match (session.root.is_none(), parent) {
            // The session's first process is the agent.
            (true, _) => {
                session.root = Some((tgid, rec.exec_id.clone()));
                session.root_argv.clone_from(&rec.argv);
                (true, None)
            }
            // Children of the agent start new actions; everything else joins its parent's.
            (false, Some(p)) if !p.is_agent => (false, p.action),
            // A child of the agent, or a process whose parent we never saw: a new action.
            (false, _) => (false, None),
        };
        let action = match (is_agent, action) {
            (true, _) => None,
            (false, Some(a)) => {
                if let Some(st) = self.actions.get_mut(&a) {
                    st.live += 1;
                }
                Some(a)
            }
            (false, None) => {
                let id = Uuid::now_v7();
                session.actions += 1;
                self.actions.insert(
                    id,
                    ActionState {
                        rec: ActionRecord {
                            id,
                            session_id: session.info.id,
                            exec_id: rec.exec_id.clone(),
                            pid: tgid,
                            argv: rec.argv.clone(),
                            cwd: rec.cwd.clone(),
                            exe: rec.exe.clone(),
                            uid: rec.uid,
                            started_at: rec.started_at,
                            complete: start_seen,
                            ..ActionRecord::default()
                        },
                        resources: Resources::default(),
                        root_tgid: tgid,
                        live: 1,
                        argv_known: false,
                        kept_bytes: 0,
                        early_pids: Vec::new(),
                    },
                );
                Some(id)
            }
        };
        self.procs.insert(
            tgid,
            Proc {
                exec_id: rec.exec_id.clone(),
                session: session_cgroup,
                action,
                is_agent,
                rec,
                exec_seen: false,
                failed_exec: None,
            },
        );
        action
    }

    /// Feed one decoded event; returns the records to store, in order.
    pub fn handle(&mut self, event: &Event) -> Vec<Output> {
        let hdr = event.header();
        let mut out = Vec::new();
        if let Event::Cgroup(_) = event {
            // Decided by the daemon (session rules), never a record of its own.
            return out;
        }
        if !self.sessions.contains_key(&hdr.session_cgroup) {
            if self.discarded.contains(&hdr.session_cgroup) {
                self.stats.pending_discarded += 1;
            } else {
                self.stats.unattributed += 1;
            }
            return out;
        }
        self.stats.events += 1;
        let now = self.clock.wall(hdr.ts_ns);
        let (action, exec_id, data) = match event {
            Event::Exec(e) => self.on_exec(e, &mut out),
            Event::ExecFailed { hdr, errno, uid, filename, filename_truncated, filename_kernel } => {
                let (action, exec_id) = self.attribution(hdr);
                if let Some(p) = self.procs.get_mut(&hdr.tgid).filter(|p| !p.exec_seen) {
                    p.failed_exec = Some(filename.clone());
                }
                let data = serde_json::json!({
                    "filename": filename, "filename_truncated": filename_truncated,
                    "filename_kernel": filename_kernel, "errno": errno, "error": crate::errno::name(*errno), "uid": uid,
                });
                self.facts = Some(EventFacts {
                    kind: "exec_failed",
                    pid: hdr.tgid,
                    result: crate::errno::name(*errno),
                    argv: vec![filename.clone()],
                    exe: filename.clone(),
                    ..EventFacts::default()
                });
                (action, exec_id, data)
            }
            Event::Fork { hdr, child_tgid, child_pid, child_start_ns, thread } => {
                self.on_fork(hdr, *child_tgid, *child_pid, *child_start_ns, *thread, &mut out)
            }
            Event::Exit { hdr, status, group_dead } => self.on_exit(hdr, *status, *group_dead, &mut out, now),
            Event::File(f) => self.on_file(f, &mut out),
            Event::Net(n) => self.on_net(n, &mut out),
            Event::Tamper(t) => self.on_tamper(t, &mut out),
            Event::IoUring(u) => self.on_uring(u, &mut out),
            Event::Cgroup(_) => return out,
        };
        let derived = std::mem::take(&mut self.derived);
        let mut facts = self.facts.take();
        if let (Event::Tamper(t), None) = (event, &facts) {
            facts = Some(EventFacts {
                kind: "tamper",
                pid: t.hdr.tgid,
                result: resources::result_name(t.ret),
                tamper: Some(acts::tamper_name(t.what).into()),
                ..EventFacts::default()
            });
        }
        let session = self.sessions.get_mut(&hdr.session_cgroup);
        let Some(session) = session else { return out };
        // The raw event goes first so it is stored before anything derived from it; tamper
        // records derived from it (protected-path writes, hand-offs) follow it, each with its
        // own seq.
        let mut records = Vec::with_capacity(1 + derived.len());
        let kinds = std::iter::once((kind_name(event), data)).chain(derived.into_iter().map(|d| ("tamper", d)));
        for (kind, data) in kinds {
            session.events += 1;
            let facts = if kind == "tamper" && facts.as_ref().is_none_or(|f| f.kind != "tamper") {
                // A tamper record derived from this event (a protected-path write, a hand-off).
                Some(Box::new(EventFacts {
                    kind: "tamper",
                    pid: hdr.tgid,
                    result: data["result"].as_str().unwrap_or("ok").to_owned(),
                    tamper: data["tamper"].as_str().map(str::to_owned),
                    ..EventFacts::default()
                }))
            } else {
                facts.take().map(Box::new)
            };
            records.push(Output::Event(EventRecord {
                id: Uuid::now_v7(),
                session_id: session.info.id,
                action_id: action,
                exec_id: exec_id.clone(),
                seq: session.events,
                ts: now,
                kind: kind.to_owned(),
                pid: hdr.tgid,
                tid: hdr.pid,
                data: data.to_string(),
                redacted: Vec::new(),
                chain: ChainLink::default(),
                facts,
            }));
        }
        out.splice(0..0, records);
        if session.live == 0 && session.root.is_some() {
            self.idle.insert(hdr.session_cgroup, now);
        }
        out
    }

    /// A tamper record the daemon itself saw (a session process asked the control socket for
    /// something that changes the trail): stored in the session of `session_cgroup` like a
    /// kernel tamper event, attributed to the process's action when it is known.
    pub fn daemon_tamper(&mut self, session_cgroup: u64, pid: u32, data: &serde_json::Value) -> Vec<Output> {
        let Some(session) = self.sessions.get_mut(&session_cgroup) else { return Vec::new() };
        session.events += 1;
        let (action, exec_id) = self.procs.get(&pid).map_or((None, String::new()), |p| (p.action, p.exec_id.clone()));
        let facts = EventFacts {
            kind: "tamper",
            pid,
            result: data["result"].as_str().unwrap_or("refused").to_owned(),
            tamper: data["tamper"].as_str().map(str::to_owned),
            ..EventFacts::default()
        };
        vec![Output::Event(EventRecord {
            id: Uuid::now_v7(),
            session_id: session.info.id,
            action_id: action,
            exec_id,
            seq: session.events,
            ts: Utc::now(),
            kind: "tamper".to_owned(),
            pid,
            tid: pid,
            data: data.to_string(),
            redacted: Vec::new(),
            chain: ChainLink::default(),
            facts: Some(Box::new(facts)),
        })]
    }

    /// Where a process's resource accesses are summarised: its action, or the session for the
    /// agent process itself.
    fn resources_of(&mut self, tgid: u32) -> Option<&mut Resources> {
        let p = self.procs.get(&tgid)?;
        if p.is_agent {
            return self.sessions.get_mut(&p.session).map(|s| &mut s.resources);
        }
        let a = p.action?;
        self.actions.get_mut(&a).map(|a| &mut a.resources)
    }

    /// Make sure a process that shows up with a fork, file or network event is in the table (it
    /// may have entered the session without exec or fork).
    /// `ppid` is 0 when the event does not say.
    fn ensure_process(&mut self, hdr: &Header, ppid: u32, out: &mut Vec<Output>) {
        let exec_id = self.clock.exec_id(hdr.tgid, hdr.start_ns);
        self.retire_if_reused(hdr.tgid, &exec_id, out);
        if !self.procs.contains_key(&hdr.tgid) {
            let rec = ProcessRecord {
                exec_id,
                pid: hdr.tgid,
                ppid,
                started_at: self.clock.wall(hdr.start_ns),
                ..ProcessRecord::default()
            };
            self.add_process(hdr.session_cgroup, rec, ppid, false);
        }
    }

    /// Same pid, different start time: the old process's exit was missed, so close it.
    fn retire_if_reused(&mut self, tgid: u32, exec_id: &str, out: &mut Vec<Output>) {
        if self.procs.get(&tgid).is_some_and(|p| p.exec_id != exec_id) {
            self.finish_process(tgid, None, out);
        }
    }

    fn on_file(&mut self, f: &FileOp, out: &mut Vec<Output>) -> (Option<Uuid>, String, serde_json::Value) {
        self.ensure_process(&f.hdr, 0, out);
        let (accesses, data) = resources::file_accesses(f);
        self.files_touched(&f.hdr, &accesses, &resources::result_name(f.ret), &data);
        let (action, exec_id) = self.attribution(&f.hdr);
        (action, exec_id, data)
    }

    fn on_net(&mut self, n: &NetOp, out: &mut Vec<Output>) -> (Option<Uuid>, String, serde_json::Value) {
        self.ensure_process(&n.hdr, 0, out);
        let op = resources::net_op_of(n);
        let result = resources::result_name(n.ret);
        let endpoint = resources::net_endpoint(n, self.sockets.get(&n.hdr.tgid).and_then(|m| m.get(&n.fd)));
        if n.ret >= 0 && matches!(op, "bind" | "connect") {
            if let Some(a) = &n.addr {
                self.sockets.entry(n.hdr.tgid).or_default().insert(n.fd, a.clone());
            }
        }
        let mut dns = serde_json::Value::Null;
        if let Some(msg) = (!n.payload.is_empty()).then(|| resources::parse_dns(&n.payload)).flatten() {
            // Only an answer a session process received, to a query the same session sent to
            // the server it came from, names later connects (see `DnsCache`). A sent "answer",
            // or an answer nobody here asked for, is kept below but believed by nobody.
            let mut used = None;
            if let (Some(s), true) = (self.sessions.get_mut(&n.hdr.session_cgroup), n.ret >= 0) {
                match op {
                    "send" if !msg.response => {
                        if let Some(server) = &endpoint {
                            s.dns.query(&msg, server);
                        }
                    }
                    "recv" if msg.response => {
                        used = s.dns.answer(&msg, resources::recv_source(n).as_ref(), &self.resolvers);
                    }
                    _ => {}
                }
            }
            let answers: Vec<serde_json::Value> = msg
                .addrs
                .iter()
                .enumerate()
                .map(|(i, (name, ip))| {
                    let trusted = used.as_ref().and_then(|u| u.get(i)).copied().unwrap_or(false);
                    serde_json::json!({"name": name, "addr": ip.to_string(), "trusted": trusted})
                })
                .collect();
            dns = serde_json::json!({
                "id": msg.id,
                "response": msg.response,
                "queries": msg.questions,
                "answers": answers,
                "cnames": msg.cnames.iter().map(|(name, target)| serde_json::json!({"name": name, "target": target})).collect::<Vec<_>>(),
                "trusted": used.is_some(),
            });
        }
        let (addr, port) = endpoint.as_ref().map(resources::addr_port).unwrap_or_default();
        let family = match (&endpoint, &n.sock, n.created) {
            (Some(e), _, _) | (None, Some((e, _)), _) => resources::family_name(e),
            (None, None, Some((f, _))) => resources::family_number_name(f),
            _ => "unknown".into(),
        };
        let host = endpoint.as_ref().and_then(|e| self.sessions.get(&n.hdr.session_cgroup).and_then(|s| s.dns.host(e)));
        let summary =
            NetSummary { op: op.into(), family, addr, port, host, result: result.clone(), count: 1, sensitive: false };
        let data = serde_json::json!({
            "syscall": resources::syscall_name(n.nr),
            "op": op,
            "family": summary.family,
            "addr": summary.addr,
            "port": summary.port,
            "host": summary.host,
            "result": result,
            "ret": n.ret,
            "fd": n.fd,
            "addr_given": n.addr.as_ref().map(resources::addr_port),
            "compat": n.compat,
            "fastopen": n.fastopen,
            "addr_kernel": n.addr_kernel || n.peer_path.is_some(),
            "socket": n.created.map(|(family, proto)| serde_json::json!({"family": family, "protocol": proto})),
            "sock_type": match n.sock_type { 1 => "stream", 2 => "dgram", 0 => "unknown", _ => "other" },
            "dns": dns,
        });
        let local = n.sock.as_ref().map(|s| &s.0);
        self.net_touched(&n.hdr, summary, endpoint.as_ref(), local, n.sock_type != 2, &data);
        let (action, exec_id) = self.attribution(&n.hdr);
        (action, exec_id, data)
    }

    /// File accesses of a session process, however it made them (a syscall, an `io_uring`
    /// request): the one way from (path, access, result) to tamper and hand-off records, the
    /// summary entry and the facts the alert rules see, so that no way of touching a file is
    /// judged apart from another. `data` is the raw event's (for the derived records' syscall).
    fn files_touched(
        &mut self,
        hdr: &Header,
        accesses: &[(String, &'static str)],
        result: &str,
        data: &serde_json::Value,
    ) {
        for (path, access) in accesses {
            let flagged = self.file_tamper(hdr, path, access, result, data);
            self.summarise_file(hdr.tgid, path, access, result, flagged);
        }
        self.facts = Some(EventFacts {
            kind: "file",
            pid: hdr.tgid,
            result: result.to_owned(),
            files: accesses.to_vec(),
            ..EventFacts::default()
        });
    }

    /// Count a file access in its process's summary, bounded by what it is (see
    /// [`resources::Bound`]): `flagged` when it raised a tamper or hand-off record.
    fn summarise_file(&mut self, tgid: u32, path: &str, access: &str, result: &str, flagged: bool) {
        let sensitive = self.sensitive.path(path, Some(tgid));
        let bound = resources::Bound::file(path, access, result, sensitive, flagged);
        if let Some(r) = self.resources_of(tgid) {
            r.add_file(path, access, result, bound);
        }
    }

    /// A network use of a session process, however it made it (a syscall, an `io_uring`
    /// request): the hand-off record of a connect, the summary entry (not for receives) and
    /// the alert rules' facts. `peer` is the endpoint the summary names, `local` the socket's
    /// own address when known.
    fn net_touched(
        &mut self,
        hdr: &Header,
        summary: NetSummary,
        peer: Option<&SockAddr>,
        local: Option<&SockAddr>,
        stream: bool,
        data: &serde_json::Value,
    ) {
        let handoff = peer.filter(|_| summary.op == "connect").and_then(|p| acts::connect_handoff(p, local, stream));
        if let Some(h) = handoff {
            let (addr, port) = (summary.addr.clone(), summary.port);
            let extra = serde_json::json!({"op": summary.op, "family": summary.family, "addr": addr, "port": port});
            self.derive_handoff(h, &summary.result, data, extra);
        }
        if summary.op != "recv" {
            let bound = resources::Bound::net(&summary, self.sensitive.net(&summary), handoff.is_some());
            if let Some(r) = self.resources_of(hdr.tgid) {
                r.add_net(&summary, bound);
            }
        }
        self.facts = Some(EventFacts {
            kind: "net",
            pid: hdr.tgid,
            result: summary.result.clone(),
            net: Some(summary),
            ..EventFacts::default()
        });
    }

    /// The tamper and hand-off records one file access raises: a write to agentmon's own
    /// paths or to cgroups outside the session, and a hand-off to a privileged service (see
    /// [`acts::HANDOFF_SERVICES`]). Returns whether it raised any.
    fn file_tamper(&mut self, hdr: &Header, path: &str, access: &str, result: &str, data: &serde_json::Value) -> bool {
        // An exe rule's session has no cgroup of its own (its `cgroup` is where it was started):
        // every cgroup write of it is outside the session.
        let session_cgroup = if hdr.session_cgroup & monitor_common::EXE_SESSION == 0 {
            self.sessions.get(&hdr.session_cgroup).map(|s| s.info.cgroup.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut raised = false;
        if let Some(why) = acts::protected_access(path, access, &self.protected, &self.cgroup_roots, &session_cgroup) {
            self.derived.push(serde_json::json!({
                "tamper": why, "path": path, "access": access,
                "syscall": data.get("syscall").cloned().or_else(|| data.get("op").cloned()),
                "result": result, "target_pid": null, "target_exe": null, "target_uid": null,
            }));
            raised = true;
        }
        let in_session = |pid: u32| self.procs.get(&pid).is_some_and(|p| p.session == hdr.session_cgroup);
        if let Some(h) = acts::file_handoff(path, access, hdr.tgid, in_session) {
            self.derive_handoff(h, result, data, serde_json::json!({"path": path, "access": access}));
            raised = true;
        }
        raised
    }

    /// A `handoff` tamper record derived from the event being handled: stored right after it,
    /// counted and alerted on like the kernel's hand-offs. `extra` says what was touched.
    fn derive_handoff(&mut self, h: acts::Handoff, result: &str, data: &serde_json::Value, extra: serde_json::Value) {
        let (exe, uid) = h.target_pid.map(acts::proc_identity).unwrap_or_default();
        let mut v = serde_json::json!({
            "tamper": acts::tamper_name(monitor_common::tamper::HANDOFF),
            "syscall": data.get("syscall").cloned().or_else(|| data.get("op").cloned()),
            "result": result, "target_pid": h.target_pid, "target_exe": exe, "target_uid": uid,
            "detail": {"service": h.service},
        });
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        self.derived.push(v);
    }

    fn on_tamper(&mut self, t: &TamperOp, out: &mut Vec<Output>) -> (Option<Uuid>, String, serde_json::Value) {
        self.ensure_process(&t.hdr, 0, out);
        let (action, exec_id) = self.attribution(&t.hdr);
        (action, exec_id, acts::tamper_data(t))
    }

    fn on_uring(&mut self, u: &UringOp, out: &mut Vec<Output>) -> (Option<Uuid>, String, serde_json::Value) {
        self.ensure_process(&u.hdr, 0, out);
        let key = (u.hdr.tgid, u.req);
        let data = acts::uring_data(u);
        if u.complete {
            if let Some(p) = self.uring.remove(&key) {
                let result = resources::result_name(u.res);
                let accesses = p.file_accesses(u.object.as_deref());
                if !accesses.is_empty() {
                    self.files_touched(&u.hdr, &accesses, &result, &data);
                }
                // The destination: the kernel's own copy at completion (cgroup hooks), else the
                // address named at submission.
                let op = match p.opcode {
                    monitor_common::uring::CONNECT => Some("connect"),
                    monitor_common::uring::SENDMSG | monitor_common::uring::SEND => Some("send"),
                    _ => None,
                };
                if let (Some(op), Some(e)) = (op, u.addr.clone().or(p.addr)) {
                    let (addr, port) = resources::addr_port(&e);
                    let host = self.sessions.get(&u.hdr.session_cgroup).and_then(|s| s.dns.host(&e));
                    let summary = NetSummary {
                        op: op.into(),
                        family: resources::family_name(&e),
                        addr,
                        port,
                        host,
                        result,
                        count: 1,
                        sensitive: false,
                    };
                    // The socket's type and own address are not in the request: any connect
                    // counts as a stream one.
                    self.net_touched(&u.hdr, summary, Some(&e), None, true, &data);
                }
            }
        } else {
            // Bounded: requests whose completion never comes must not grow the daemon.
            if self.uring.len() >= 65_536 {
                self.uring.clear();
            }
            self.uring.insert(key, acts::UringPending::of(u));
        }
        let (action, exec_id) = self.attribution(&u.hdr);
        (action, exec_id, data)
    }

    fn attribution(&self, hdr: &Header) -> (Option<Uuid>, String) {
        match self.procs.get(&hdr.tgid) {
            Some(p) => (p.action, p.exec_id.clone()),
            None => (None, self.clock.exec_id(hdr.tgid, hdr.start_ns)),
        }
    }

    fn on_exec(&mut self, e: &Exec, out: &mut Vec<Output>) -> (Option<Uuid>, String, serde_json::Value) {
        let hdr = &e.hdr;
        // The file the kernel executed, else the name it was given (joined to the cwd).
        let exe = e.exe.clone().or_else(|| match (&e.cwd, e.filename.starts_with('/')) {
            (_, true) => Some(e.filename.clone()),
            (Some(cwd), false) => Some(join_path(cwd, &e.filename)),
            (None, false) => None,
        });
        let exe_name = exe.clone().unwrap_or_else(|| e.filename.clone());
        let exec_id = self.clock.exec_id(hdr.tgid, hdr.start_ns);
        self.ensure_process(hdr, e.ppid, out);
        let data = serde_json::json!({
            "filename": e.filename, "filename_truncated": e.filename_truncated, "exe": e.exe,
            "argv": e.argv, "argv_truncated": e.argv_truncated, "argv_bytes": e.argv_full_len,
            "cwd": e.cwd, "cwd_truncated": e.cwd_truncated,
            "uid": e.uid, "gid": e.gid, "ppid": e.ppid, "cgroup_id": hdr.cgroup_id,
        });
        self.facts = Some(EventFacts {
            kind: "exec",
            pid: hdr.tgid,
            result: "ok".into(),
            argv: e.argv.clone(),
            exe: exe_name.clone(),
            ..EventFacts::default()
        });
        let Some(p) = self.procs.get_mut(&hdr.tgid) else {
            return (None, exec_id, data);
        };
        if p.exec_seen {
            p.rec.push_prior();
        }
        p.exec_seen = true;
        p.rec.argv.clone_from(&e.argv);
        p.rec.argv_truncated = e.argv_truncated;
        p.rec.exe.clone_from(&exe_name);
        p.rec.cwd.clone_from(&e.cwd);
        p.rec.uid = Some(e.uid);
        let action = p.action;
        if p.is_agent {
            if let Some(s) = self.sessions.get_mut(&p.session) {
                // The session's root argv is the first image the agent exec'd.
                if s.root_argv.is_empty() {
                    s.root_argv.clone_from(&e.argv);
                }
            }
        }
        if let Some(exe) = exe {
            self.summarise_file(hdr.tgid, &exe, "exec", "ok", false);
        }
        if let Some(a) = action.and_then(|a| self.actions.get_mut(&a)) {
            // The action is the first command its root process exec'd.
            if a.root_tgid == hdr.tgid && !a.argv_known {
                a.argv_known = true;
                a.rec.argv.clone_from(&e.argv);
                a.rec.argv_truncated = e.argv_truncated;
                a.rec.cwd.clone_from(&e.cwd);
                a.rec.exe.clone_from(&exe_name);
                a.rec.uid = Some(e.uid);
            }
        }
        (action, exec_id, data)
    }

    fn on_fork(
        &mut self,
        hdr: &Header,
        child_tgid: u32,
        child_pid: u32,
        child_start_ns: u64,
        thread: bool,
        out: &mut Vec<Output>,
    ) -> (Option<Uuid>, String, serde_json::Value) {
        let child_exec_id = self.clock.exec_id(child_tgid, child_start_ns);
        let data = serde_json::json!({
            "child_pid": child_tgid, "child_tid": child_pid, "thread": thread,
            "child_exec_id": if thread { None } else { Some(&child_exec_id) },
        });
        if thread {
            let (action, exec_id) = self.attribution(hdr);
            return (action, exec_id, data);
        }
        // A parent we have not seen yet (it entered the cgroup without exec): adopt it first.
        self.ensure_process(hdr, 0, out);
        let parent_exec_id = self.procs.get(&hdr.tgid).map(|p| p.exec_id.clone()).unwrap_or_default();
        self.retire_if_reused(child_tgid, &child_exec_id, out);
        let mut action = None;
        if !self.procs.contains_key(&child_tgid) {
            let parent = self.procs.get(&hdr.tgid).map(|p| p.rec.clone()).unwrap_or_default();
            let rec = ProcessRecord {
                exec_id: child_exec_id,
                pid: child_tgid,
                ppid: hdr.tgid,
                argv: parent.argv,
                exe: parent.exe,
                cwd: parent.cwd,
                uid: parent.uid,
                started_at: self.clock.wall(child_start_ns),
                ..ProcessRecord::default()
            };
            action = self.add_process(hdr.session_cgroup, rec, hdr.tgid, true);
        }
        (action, parent_exec_id, data)
    }

    fn on_exit(
        &mut self,
        hdr: &Header,
        status: u32,
        group_dead: bool,
        out: &mut Vec<Output>,
        now: DateTime<Utc>,
    ) -> (Option<Uuid>, String, serde_json::Value) {
        let (exit_code, signal) = wait_status(status);
        // The process's exit was handled already (another thread reported it too): this one
        // is a thread's, and must not bring the process back as a new one.
        let group_dead = group_dead
            && (self.procs.contains_key(&hdr.tgid)
                || !self.exited.contains(&self.clock.exec_id(hdr.tgid, hdr.start_ns)));
        let data = serde_json::json!({
            "status": status, "exit_code": exit_code, "signal": signal, "process_exited": group_dead,
        });
        if group_dead {
            // Even a process we never saw do anything (killed right after it entered the
            // session) is recorded, so its session can end.
            self.ensure_process(hdr, 0, out);
        }
        let (action, exec_id) = self.attribution(hdr);
        if group_dead {
            self.finish_process(hdr.tgid, Some((status, now)), out);
        }
        (action, exec_id, data)
    }

    /// A process ended (`exit` is `None` when its exit was never seen). Completes its action
    /// when it was the action's last live process.
    fn finish_process(&mut self, tgid: u32, exit: Option<(u32, DateTime<Utc>)>, out: &mut Vec<Output>) {
        let Some(mut p) = self.procs.remove(&tgid) else { return };
        if self.exited.len() >= EXITED_KEPT {
            self.exited.pop_front();
        }
        self.exited.push_back(p.rec.exec_id.clone());
        self.sockets.remove(&tgid);
        // A process that never exec'd but tried to: what it tried is its command.
        if let (false, Some(f)) = (p.exec_seen, &p.failed_exec) {
            p.rec.argv = vec![f.clone()];
            p.rec.exe.clone_from(f);
        }
        if let Some((status, at)) = exit {
            let (code, sig) = wait_status(status);
            p.rec.ended_at = Some(at);
            p.rec.exit_code = code;
            p.rec.signal = sig;
        }
        if let Some(s) = self.sessions.get_mut(&p.session) {
            s.live = s.live.saturating_sub(1);
        }
        if p.is_agent {
            if let Some(s) = self.sessions.get_mut(&p.session) {
                if s.root_argv.is_empty() {
                    s.root_argv.clone_from(&p.rec.argv);
                }
            }
            out.push(Output::Process(ProcessRow {
                session_id: self.session_id(p.session),
                action_id: None,
                rec: p.rec,
            }));
            return;
        }
        let Some(aid) = p.action else { return };
        let Some(a) = self.actions.get_mut(&aid) else { return };
        if exit.is_none() {
            // Its exit was never seen (pid reused, or the session ended first).
            a.rec.complete = false;
        }
        if a.root_tgid == tgid {
            if !a.argv_known && p.failed_exec.is_some() {
                a.argv_known = true;
                a.rec.argv.clone_from(&p.rec.argv);
                a.rec.exe.clone_from(&p.rec.exe);
            }
            a.rec.ended_at = p.rec.ended_at;
            a.rec.exit_code = p.rec.exit_code;
            a.rec.signal = p.rec.signal;
            if !a.argv_known {
                a.rec.argv.clone_from(&p.rec.argv);
            }
        }
        a.live = a.live.saturating_sub(1);
        if a.live == 0 {
            a.rec.processes.push(p.rec);
            self.complete_action(aid, out);
            return;
        }
        // An open action keeps a bounded number of ended processes: past the bound each is
        // handed on at once as a row of its own, with the action's id, and counted.
        let bytes = p.rec.argv_bytes();
        if a.rec.processes.len() < MAX_KEPT_PROCESSES && a.kept_bytes + bytes <= MAX_KEPT_ARGV_BYTES {
            a.kept_bytes += bytes;
            a.rec.processes.push(p.rec);
            return;
        }
        a.rec.processes_early += 1;
        if a.early_pids.len() < MAX_EARLY_PIDS {
            a.early_pids.push(p.rec.pid);
        }
        self.stats.processes_early += 1;
        out.push(Output::Process(ProcessRow { session_id: a.rec.session_id, action_id: Some(aid), rec: p.rec }));
    }

    fn session_id(&self, cgroup: u64) -> Uuid {
        self.sessions.get(&cgroup).map(|s| s.info.id).unwrap_or_default()
    }

    fn complete_action(&mut self, aid: Uuid, out: &mut Vec<Output>) {
        let Some(mut a) = self.actions.remove(&aid) else { return };
        a.rec.command = crate::text::shell_join(&a.rec.argv);
        a.rec.duration_ms = a.rec.ended_at.map(|e| (e - a.rec.started_at).num_milliseconds().max(0));
        a.rec.processes.sort_by_key(|p| (p.started_at, p.pid));
        (a.rec.files, a.rec.net) = a.resources.take();
        let pids: Vec<u32> = a.rec.processes.iter().map(|p| p.pid).chain(a.early_pids.iter().copied()).collect();
        self.sensitive.mark(&mut a.rec.files, &mut a.rec.net, &pids);
        self.stats.actions_written += 1;
        out.push(Output::Action(a.rec));
    }

    /// End a session: flush its open actions (marked incomplete), then its end record.
    pub fn end_session(&mut self, cgroup: u64, now: DateTime<Utc>) -> Vec<Output> {
        let mut out = Vec::new();
        self.idle.remove(&cgroup);
        let tgids: Vec<u32> = self.procs.iter().filter(|(_, p)| p.session == cgroup).map(|(t, _)| *t).collect();
        for t in tgids {
            if let Some(a) = self.procs.get(&t).and_then(|p| p.action) {
                if let Some(st) = self.actions.get_mut(&a) {
                    st.rec.complete = false;
                }
            }
            self.finish_process(t, None, &mut out);
        }
        let sid = self.session_id(cgroup);
        let open: Vec<Uuid> = self.actions.iter().filter(|(_, a)| a.rec.session_id == sid).map(|(id, _)| *id).collect();
        for a in open {
            if let Some(st) = self.actions.get_mut(&a) {
                st.rec.complete = false;
            }
            self.complete_action(a, &mut out);
        }
        let mut s = self.sessions.remove(&cgroup);
        let (mut files, mut net) = s.as_mut().map(|s| s.resources.take()).unwrap_or_default();
        let root: Vec<u32> = s.as_ref().and_then(|s| s.root.as_ref()).map(|r| r.0).into_iter().collect();
        self.sensitive.mark(&mut files, &mut net, &root);
        self.stats.sessions_ended += 1;
        out.push(Output::SessionEnd(match s {
            Some(s) => SessionEnd {
                session_id: s.info.id,
                cgroup_id: cgroup,
                ended_at: now,
                root_pid: s.root.as_ref().map(|r| r.0),
                root_exec_id: s.root.map(|r| r.1),
                root_argv: s.root_argv,
                actions: s.actions,
                events: s.events,
                events_lost: 0,
                files,
                net,
                ..SessionEnd::default()
            },
            None => SessionEnd { cgroup_id: cgroup, ended_at: now, ..SessionEnd::default() },
        }));
        out
    }
}

fn kind_name(e: &Event) -> &'static str {
    match e {
        Event::Exec(_) => "exec",
        Event::ExecFailed { .. } => "exec_failed",
        Event::Fork { thread: true, .. } => "clone_thread",
        Event::Fork { .. } => "fork",
        Event::Exit { group_dead: true, .. } => "exit",
        Event::Exit { .. } => "exit_thread",
        Event::File(_) => "file",
        Event::Net(_) => "net",
        Event::Tamper(_) => "tamper",
        Event::IoUring(_) => "io_uring",
        Event::Cgroup(_) => "cgroup",
    }
}

#[cfg(test)]
mod tests;
