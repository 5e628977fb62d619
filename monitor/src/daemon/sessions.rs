//! Sessions: how they start (`agentmon run`, `tag`, a session rule matching a cgroup or an
//! exe), how they are re-adopted after a restart (the handoff, else `/proc`), and how they
//! end (when the kernel and the correlator agree nothing of theirs is left). The correlator
//! keeps what happens inside a session; this file keeps the session's cgroup and how it began.
//! Every method here hands the records it makes (session starts and ends) back to its caller
//! for the pipeline.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use chrono::Utc;
use tracing::{info, warn};
use uuid::Uuid;

use super::{control::proc_start_ticks, handoff, reader::Reader, redact, store::lock, Daemon};
use crate::{
    cgroup,
    control::{Response, SessionStarted},
    correlate::SessionInfo,
    ebpf::{
        decode::{CgroupOp, Exec},
        Probes,
    },
    procscan,
    record::{Output, SessionEnd, SessionStart},
    rules::Rules,
    store::OpenSession,
};

/// What the daemon remembers about a session beyond the correlator.
pub struct SessionMeta {
    pub id: Uuid,
    pub path: PathBuf,
    /// Created by us (`run`), so we remove the cgroup when the session ends.
    pub owned: bool,
    /// Raw events shed for it by earlier daemons (from the handoff).
    pub shed_before: u64,
    /// Started by a unit or cgroup rule: it lasts as long as its cgroup (a unit's processes
    /// may all exit between `ExecStartPre` and `ExecStart`).
    pub rule_cgroup: bool,
}

fn is_rule_cgroup(source: &str) -> bool {
    matches!(source, "unit" | "cgroup")
}

/// The daemon's sessions, by cgroup id (an exe rule's session has a synthetic one).
pub struct Sessions {
    pub by_cgroup: HashMap<u64, SessionMeta>,
    /// Sessions found with no process at start-up: ended after the first drain of the rings,
    /// unless the rings held some of their processes.
    pub orphans: Vec<u64>,
    pub cgroup_mount: PathBuf,
    /// Where `run` makes session cgroups for callers in the root cgroup.
    pub cgroup_root: PathBuf,
    /// Session rules from the config file.
    pub rules: Rules,
}

impl Sessions {
    pub fn new(cgroup_mount: PathBuf, cgroup_root: PathBuf, rules: Rules) -> Self {
        Self { by_cgroup: HashMap::new(), orphans: Vec::new(), cgroup_mount, cgroup_root, rules }
    }

    /// Whether a session may end as far as its cgroup goes: a rule's cgroup session lasts as
    /// long as the cgroup.
    pub fn gone(&self, cgroup_id: u64) -> bool {
        self.by_cgroup.get(&cgroup_id).is_none_or(|m| !m.rule_cgroup || !m.path.exists())
    }

    /// A session ends: count its losses (the kernel's, `shed` by the queue, and those earlier
    /// daemons shed), release its kernel state and remove the cgroup `run` made for it.
    pub fn close(&mut self, end: &mut SessionEnd, probes: &mut Probes, shed: u64) {
        let meta = self.by_cgroup.remove(&end.cgroup_id);
        end.events_lost = probes.untag(end.cgroup_id).total() + shed + meta.as_ref().map_or(0, |m| m.shed_before);
        if let Some(meta) = meta.filter(|m| m.owned) {
            if let Err(e) = cgroup::remove_tree(&meta.path) {
                warn!(cgroup = %meta.path.display(), error = %e, "could not remove session cgroup");
            }
        }
        info!(session = %end.session_id, actions = end.actions, lost = end.events_lost, "session ended");
    }
}

impl Daemon {
    /// A cgroup the kernel held pending for the cgroup rules: a session when its path matches
    /// a rule (and it is not inside a session already), else released.
    pub(super) fn on_new_cgroup(&mut self, c: &CgroupOp, out: &mut Vec<Output>) {
        if self.sessions.by_cgroup.contains_key(&c.id) {
            return; // `run`'s own cgroup, or found by the start-up scan.
        }
        let dir = self.sessions.cgroup_mount.join(c.path.trim_start_matches('/'));
        let rule = self.sessions.rules.match_cgroup(&c.path).cloned();
        let inside = self.session_above(&dir);
        // A cgroup already removed (a short-lived unit, or a backlog read after a restart) is
        // still its session: its processes were held from its first instant.
        let current = match cgroup::cgroup_id(&dir) {
            Ok(id) => id == c.id,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        let kept = match (rule, inside) {
            (Some(rule), None) if current => {
                match self.register_id(
                    c.id,
                    Uuid::now_v7(),
                    &dir,
                    &rule.agent,
                    rule.label.clone(),
                    0,
                    rule.source(),
                    out,
                ) {
                    Ok(_) => {
                        self.seed(c.id, &dir);
                        info!(agent = %rule.agent, rule = rule.source(), cgroup = %dir.display(), "session started by a rule");
                        true
                    }
                    Err(e) => {
                        warn!(cgroup = %dir.display(), error = %e, "a cgroup matched a rule but could not become a session");
                        false
                    }
                }
            }
            (Some(_), Some(outer)) => {
                info!(cgroup = %dir.display(), session = %outer, "a cgroup matched a rule inside a session: recorded in the outer session");
                false
            }
            _ => false,
        };
        if !kept {
            self.probes.untag(c.id);
            self.correlator.discard(c.id);
        }
    }

    /// The session whose cgroup holds `dir`, if any.
    fn session_above(&self, dir: &Path) -> Option<Uuid> {
        self.sessions
            .by_cgroup
            .values()
            .find(|m| !m.path.as_os_str().is_empty() && dir.starts_with(&m.path) && dir != m.path)
            .map(|m| m.id)
    }

    /// An exec the kernel matched to an exe rule started a session: register it before the
    /// correlator sees the exec, so the exec is its first record.
    pub(super) fn start_exe_session(&mut self, e: &Exec, out: &mut Vec<Output>) {
        let session = e.hdr.session_cgroup;
        let rule = self.sessions.rules.match_exec(&e.filename, &e.argv).cloned();
        let (agent, label) = rule.map_or_else(|| ("unknown".to_owned(), None), |r| (r.agent, r.label));
        let path = cgroup::path_of_pid(&self.sessions.cgroup_mount, e.hdr.tgid).unwrap_or_default();
        let id = Uuid::now_v7();
        self.correlator.start_session(SessionInfo {
            id,
            cgroup_id: session,
            agent: agent.clone(),
            events_before: 0,
            actions_before: 0,
            cgroup: path.display().to_string(),
        });
        self.sessions.by_cgroup.insert(
            session,
            SessionMeta { id, path: PathBuf::new(), owned: false, shed_before: 0, rule_cgroup: false },
        );
        out.push(Output::SessionStart(SessionStart {
            id,
            agent: agent.clone(),
            label,
            cgroup: path.display().to_string(),
            cgroup_id: session,
            uid: e.uid,
            source: "exe".to_owned(),
            started_at: self.correlator.clock().wall(e.hdr.ts_ns),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        }));
        // The log gets what the store gets: the agent's exe path with its secrets redacted.
        let mut exe = e.filename.clone();
        self.pipeline.redactor.text(&mut exe, &mut crate::redact::Hits::new());
        info!(session = %id, agent, pid = e.hdr.tgid, exe = %exe, "session started by an exe rule");
    }

    /// Start-up: every existing cgroup a rule matches becomes a session with its processes, and
    /// cgroups left pending with no event (lost) are released. Pending ones whose event is still
    /// in the ring are decided when it is read.
    pub(super) fn scan_rule_cgroups(&mut self, out: &mut Vec<Output>) {
        if !self.sessions.rules.kernel().cgroups {
            return;
        }
        let mount = self.sessions.cgroup_mount.clone();
        for dir in cgroup::walk(&mount) {
            let rel = format!("/{}", dir.strip_prefix(&mount).unwrap_or(&dir).display());
            let Some(rule) = self.sessions.rules.match_cgroup(&rel).cloned() else { continue };
            let Ok(id) = cgroup::cgroup_id(&dir) else { continue };
            if self.sessions.by_cgroup.contains_key(&id) || self.session_above(&dir).is_some() {
                continue;
            }
            match self.register(Uuid::now_v7(), &dir, &rule.agent, rule.label.clone(), 0, rule.source(), out) {
                Ok(_) => {
                    self.seed(id, &dir);
                    info!(agent = %rule.agent, rule = rule.source(), cgroup = %dir.display(), "existing cgroup matched a rule: session started");
                }
                Err(e) => {
                    warn!(cgroup = %dir.display(), error = %e, "a cgroup matched a rule but could not become a session");
                }
            }
        }
    }

    /// Cgroups pending since start-up that no event decided (it was lost): the start-up scan
    /// made every matching cgroup a session, so these match no rule and are released.
    pub(super) fn settle_pending(&mut self, at_start: &[u64]) {
        let now = self.probes.pending_cgroups();
        for &id in at_start {
            if self.sessions.by_cgroup.contains_key(&id) || !now.contains(&id) {
                continue;
            }
            self.probes.untag(id);
            self.correlator.discard(id);
        }
    }

    /// Rule sessions whose cgroup was removed with nothing left running in it.
    pub(super) fn end_removed_rule_cgroups(&mut self, out: &mut Vec<Output>) {
        let now = Utc::now();
        let gone: Vec<u64> = self
            .sessions
            .by_cgroup
            .iter()
            .filter(|(cg, m)| {
                m.rule_cgroup
                    && !m.path.exists()
                    && self.correlator.session_live(**cg).unwrap_or(0) == 0
                    && self.probes.kernel_live(**cg) <= 0
            })
            .map(|(cg, _)| *cg)
            .collect();
        for cg in gone {
            out.extend(self.correlator.end_session(cg, now));
        }
    }

    /// End sessions re-adopted with no process, if the first drain found none of theirs.
    pub(super) fn end_orphans(&mut self, out: &mut Vec<Output>) {
        let now = Utc::now();
        for cg in std::mem::take(&mut self.sessions.orphans) {
            if self.correlator.session_live(cg) == Some(0) && self.probes.kernel_live(cg) <= 0 {
                out.extend(self.correlator.end_session(cg, now));
                info!(cgroup_id = cg, "closed a session that ended while no daemon was running");
            }
        }
    }

    /// Graceful stop: hand the correlation state and sessions to the next daemon.
    pub(super) fn hand_over(&mut self) {
        let mut q = lock(&self.pipeline.queue);
        let sessions = self
            .sessions
            .by_cgroup
            .iter()
            .map(|(cg, m)| handoff::SessionHandoff {
                cgroup_id: *cg,
                session_id: m.id,
                path: m.path.clone(),
                owned: m.owned,
                shed: m.shed_before + q.take_shed(m.id),
                rule_cgroup: m.rule_cgroup,
            })
            .collect();
        drop(q);
        let h = handoff::Handoff::new(
            self.boot_id.clone(),
            self.pipeline.host.clone(),
            sessions,
            self.correlator.take_state(),
        );
        let saved = serde_json::to_value(&h).map_err(std::io::Error::from).and_then(|mut v| {
            // The state holds in-flight argv and paths: redacted like records before it is written.
            redact::state(&self.pipeline.redactor, &mut v["correlator"]);
            handoff::save(&self.state_dir, &v)
        });
        match saved {
            Ok(()) => info!(sessions = h.sessions.len(), "correlation state handed over for the next daemon"),
            Err(e) => warn!(error = %e, "could not write the handoff; the next daemon re-seeds sessions from /proc"),
        }
    }

    /// Register a session for a cgroup: kernel filter, correlator, database.
    #[expect(clippy::too_many_arguments, reason = "a session's fields, each named at the call")]
    fn register(
        &mut self,
        id: Uuid,
        path: &Path,
        agent: &str,
        label: Option<String>,
        uid: u32,
        source: &'static str,
        out: &mut Vec<Output>,
    ) -> Result<u64, String> {
        let cgroup_id = cgroup::cgroup_id(path).map_err(|e| format!("cgroup {}: {e}", path.display()))?;
        self.register_id(cgroup_id, id, path, agent, label, uid, source, out)
    }

    /// [`Self::register`] with the cgroup id known (a rule's cgroup that may be gone already).
    #[expect(clippy::too_many_arguments, reason = "a session's fields, each named at the call")]
    fn register_id(
        &mut self,
        cgroup_id: u64,
        id: Uuid,
        path: &Path,
        agent: &str,
        label: Option<String>,
        uid: u32,
        source: &'static str,
        out: &mut Vec<Output>,
    ) -> Result<u64, String> {
        if self.sessions.by_cgroup.contains_key(&cgroup_id) {
            return Err(format!("cgroup {} is already a session", path.display()));
        }
        self.probes.tag(cgroup_id).map_err(|e| e.to_string())?;
        self.correlator.start_session(SessionInfo {
            id,
            cgroup_id,
            agent: agent.to_owned(),
            events_before: 0,
            actions_before: 0,
            cgroup: path.display().to_string(),
        });
        self.sessions.by_cgroup.insert(
            cgroup_id,
            SessionMeta {
                id,
                path: path.to_owned(),
                owned: source == "run",
                shed_before: 0,
                rule_cgroup: is_rule_cgroup(source),
            },
        );
        out.push(Output::SessionStart(SessionStart {
            id,
            agent: agent.to_owned(),
            label,
            cgroup: path.display().to_string(),
            cgroup_id,
            uid,
            source: source.to_owned(),
            started_at: Utc::now(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        }));
        Ok(cgroup_id)
    }

    /// Move the asking process into a new session cgroup, `agentmon-<id>` under the cgroup it is
    /// in (see [`cgroup::session_parent`]), so `run` keeps every limit the caller had.
    ///
    /// The pid is checked and moved through a pidfd. A pid alone can be reused between the
    /// check and the move, and the move would then capture an unrelated process. So: open a
    /// pidfd first (it names one process for good), then check the start time (the pidfd is the
    /// process that connected), then move by pid, then ask the pidfd whether that process is still
    /// unreaped. If it is, the pid was never free between the check and the move, so the process
    /// moved is the one checked. If it is not, the move may have caught a newcomer with the same
    /// pid: put whatever was moved back, end the session, and fail.
    pub(super) fn start_session(
        &mut self,
        agent: &str,
        label: Option<String>,
        pid: u32,
        uid: u32,
        start: Option<u64>,
        out: &mut Vec<Output>,
    ) -> Result<Response, String> {
        const GONE: &str = "the process that asked is gone (or its pid was reused); nothing was moved";
        crate::rules::valid_session_names(agent, label.as_deref())?;
        let pidfd = cgroup::PidFd::open(pid).map_err(|_| GONE.to_owned())?;
        if pid == 0 || start.is_none() || proc_start_ticks(pid) != start {
            return Err(GONE.into());
        }
        if let Some(session) = self.probes.tracked_session(pid) {
            return Err(format!(
                "this process is already inside a session (cgroup id {session}); nested sessions are not supported"
            ));
        }
        let parent = cgroup::session_parent(&self.sessions.cgroup_mount, &self.sessions.cgroup_root, pid)
            .map_err(|e| format!("finding the cgroup of pid {pid}: {e}"))?;
        let id = Uuid::now_v7();
        let dir = parent.join(format!("agentmon-{id}"));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup_id = match self.register(id, &dir, agent, label, uid, "run", out) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let moved = cgroup::move_pid(&dir, pid).map_err(|e| format!("moving pid {pid} into {}: {e}", dir.display()));
        let moved = moved.and_then(|()| if pidfd.alive() { Ok(()) } else { Err(GONE.to_owned()) });
        if let Err(e) = moved {
            // Whatever landed in the cgroup goes back where the caller was, then the session
            // ends at once (nothing of the caller ran in it) and its cgroup is removed.
            for p in cgroup::procs_recursive(&dir).unwrap_or_default() {
                let _ = cgroup::move_pid(&parent, p);
            }
            out.extend(self.correlator.end_session(cgroup_id, Utc::now()));
            return Err(e);
        }
        info!(session = %id, agent, pid, uid, cgroup = %dir.display(), "session started");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    pub(super) fn tag(
        &mut self,
        cgroup_arg: &str,
        agent: &str,
        label: Option<String>,
        uid: u32,
        out: &mut Vec<Output>,
    ) -> Result<Response, String> {
        crate::rules::valid_session_names(agent, label.as_deref())?;
        let p = Path::new(cgroup_arg);
        let dir = if p.starts_with(&self.sessions.cgroup_mount) {
            p.to_owned()
        } else {
            self.sessions.cgroup_mount.join(p.strip_prefix("/").unwrap_or(p))
        };
        if !dir.join("cgroup.procs").exists() {
            return Err(format!(
                "{} is not a cgroup2 directory (paths are relative to {})",
                dir.display(),
                self.sessions.cgroup_mount.display()
            ));
        }
        let id = Uuid::now_v7();
        let cgroup_id = self.register(id, &dir, agent, label, uid, "tag", out)?;
        self.seed(cgroup_id, &dir);
        info!(session = %id, agent, cgroup = %dir.display(), "cgroup tagged");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    /// Adopt the processes already running in a session cgroup.
    fn seed(&mut self, cgroup_id: u64, dir: &Path) {
        self.seed_pids(cgroup_id, cgroup::procs_recursive(dir).unwrap_or_default());
    }

    fn seed_pids(&mut self, cgroup_id: u64, pids: Vec<u32>) {
        let seeds: Vec<_> = pids.into_iter().filter_map(procscan::seed_process).collect();
        for s in &seeds {
            if let Err(e) = self.probes.track(s.tgid, cgroup_id, s.start_ticks) {
                warn!(pid = s.tgid, error = %e, "could not track process");
            }
        }
        self.correlator.seed(cgroup_id, seeds);
    }

    /// Continue exactly the sessions in the last daemon's handoff, if it left one (a graceful
    /// stop on this boot).
    pub(super) fn restore_handoff(&mut self) {
        if let Some(h) = handoff::take(&self.state_dir, &self.boot_id, &self.pipeline.host) {
            info!(sessions = h.sessions.len(), saved = %h.saved_at, "continuing from the last daemon's handoff");
            self.correlator.restore(h.correlator);
            for s in h.sessions {
                self.sessions.by_cgroup.insert(
                    s.cgroup_id,
                    SessionMeta {
                        id: s.session_id,
                        path: s.path,
                        owned: s.owned,
                        shed_before: s.shed,
                        rule_cgroup: s.rule_cgroup,
                    },
                );
            }
        }
    }

    /// Sessions left open by an earlier daemon on this host (`open`, from the database) and
    /// not in its handoff (after a crash) are re-seeded from `/proc`, and their events still in
    /// the pinned rings are read; one with no process left is closed after the first drain.
    pub(super) fn readopt(&mut self, open: Vec<OpenSession>, reader: &mut Reader) -> anyhow::Result<()> {
        // /proc first, then the rings: a process forked after the scan is not seeded, and one
        // forked before it has its fork in the rings by the time they are read, so it is not
        // seeded either and comes through the rings with its start.
        let rows: Vec<_> = open.into_iter().filter(|r| !self.correlator.has_session(r.cgroup_id)).collect();
        let scanned: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let dir = Path::new(&r.cgroup);
                if r.cgroup_id & monitor_common::EXE_SESSION != 0 {
                    // Started by an exe rule: its processes are the ones the kernel tracks.
                    self.probes.tracked_pids(r.cgroup_id)
                } else if cgroup::cgroup_id(dir).ok() == Some(r.cgroup_id) {
                    cgroup::procs_recursive(dir).unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let forked = if rows.is_empty() { HashSet::new() } else { reader.prefetch() };
        for (s, pids) in rows.into_iter().zip(scanned) {
            let OpenSession { id, agent, cgroup: path, cgroup_id, source, events_before, actions_before } = s;
            if cgroup_id & monitor_common::EXE_SESSION == 0 {
                self.probes.tag(cgroup_id)?;
            }
            self.pipeline.alerts.session(id, &agent);
            self.correlator.start_session(SessionInfo {
                id,
                cgroup_id,
                agent,
                events_before,
                actions_before,
                cgroup: path.clone(),
            });
            // An exe rule's session has no cgroup of its own (as in `start_exe_session`).
            let own = if cgroup_id & monitor_common::EXE_SESSION == 0 { PathBuf::from(&path) } else { PathBuf::new() };
            self.sessions.by_cgroup.insert(
                cgroup_id,
                SessionMeta {
                    id,
                    path: own,
                    owned: source == "run",
                    shed_before: 0,
                    rule_cgroup: is_rule_cgroup(&source),
                },
            );
            if pids.is_empty() {
                self.sessions.orphans.push(cgroup_id);
            } else {
                self.seed_pids(cgroup_id, pids.into_iter().filter(|p| !forked.contains(p)).collect());
                info!(session = %id, "re-adopted a running session from /proc");
            }
        }
        Ok(())
    }
}
