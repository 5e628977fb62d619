//! The agent's account in the daemon: a report (from the intake socket or the OTLP receiver) is
//! bound to its session by its sender, judged attested or not, stored as a report row, and
//! handed to the matcher (`crate::account`); the matcher's verdicts and silences go down the
//! pipeline like every record.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tracing::{debug, warn};
use uuid::Uuid;

use super::{intake::HookReport, otlp::Received, Daemon};
use crate::{
    account::{self, attest, AccountStatus, Parsed, MAX_REPORTS_PER_SEC},
    correlate::Sender,
    record::{ChainLink, Output, ReportRecord},
};

/// The daemon's side of the account: the matcher, its settings and counters.
pub struct Reports {
    pub matcher: account::Account,
    pub capture_prompts: bool,
    pub prices: HashMap<String, account::parse::Price>,
    /// The daemon's own executable: `agentmon hook` is the same program.
    pub own_exe: String,
    /// The OTLP receiver's address, when it listens.
    pub otlp_listen: Option<String>,
    /// Reports per session in the current second.
    rate: HashMap<Uuid, (i64, u32)>,
    pub status: AccountStatus,
}

impl Reports {
    pub fn new(cfg: &account::AgentsConfig, installed: Vec<String>) -> Self {
        let own_exe = std::fs::read_link("/proc/self/exe").map(|p| p.display().to_string()).unwrap_or_default();
        Self {
            matcher: account::Account::new(cfg.profile.clone(), installed, cfg.silence_secs),
            capture_prompts: cfg.capture_prompts.unwrap_or(true),
            prices: cfg.prices.clone(),
            own_exe,
            otlp_listen: None,
            rate: HashMap::new(),
            status: AccountStatus::default(),
        }
    }

    /// Whether the session may send another report this second.
    fn allow(&mut self, session: Uuid, now: DateTime<Utc>) -> bool {
        let sec = now.timestamp();
        if self.rate.len() > 4096 {
            self.rate.retain(|_, (s, _)| *s == sec);
        }
        let e = self.rate.entry(session).or_insert((sec, 0));
        if e.0 != sec {
            *e = (sec, 0);
        }
        e.1 += 1;
        e.1 <= MAX_REPORTS_PER_SEC
    }
}

/// The last MiB of an agent's transcript, read as root only when it is a regular file (not
/// through a symlink) owned by the hook's user and named `*.jsonl`: its path is the agent's word.
fn transcript_tail(path: &str, uid: u32) -> Option<String> {
    use std::{
        io::{Read as _, Seek as _},
        os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    };
    const TAIL: u64 = 1 << 20;
    if std::path::Path::new(path).extension().is_none_or(|e| e != "jsonl") {
        return None;
    }
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.uid() != uid {
        return None;
    }
    f.seek(std::io::SeekFrom::Start(meta.len().saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Replace the prompt in a stored report body when prompts are not captured.
fn drop_prompt(p: &mut Parsed) {
    if p.prompt.is_none() {
        return;
    }
    p.prompt = None;
    let gone = serde_json::Value::from("(not captured: agents.capture_prompts = false)");
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&p.body) {
        if let Some(m) = v.as_object_mut() {
            if m.contains_key("prompt") {
                m.insert("prompt".into(), gone.clone());
            }
            if let Some(a) = m.get_mut("attributes").and_then(|a| a.as_object_mut()) {
                if a.contains_key("prompt") {
                    a.insert("prompt".into(), gone);
                }
            }
        }
        p.body = v.to_string();
    }
}

impl Daemon {
    /// One hook report from the intake socket; answers its sender.
    pub(super) fn hook_report(&mut self, r: HookReport) {
        let answer = self.take_hook(&r);
        let _ = r.reply.send(answer);
    }

    fn take_hook(&mut self, r: &HookReport) -> String {
        let Some(cgroup) = r.start.and_then(|s| self.probes.tracked_session_of(r.pid, Some(s))) else {
            self.reports.status.refused_no_session += 1;
            debug!(pid = r.pid, uid = r.uid, "refused a report from a process in no session");
            return "refused: the sender is not part of any agent session".into();
        };
        let sender = self.correlator.sender(r.pid);
        let by_cgroup = self.sessions.by_cgroup.get(&cgroup).map(|m| m.id);
        let Some(session) = sender.as_ref().map(|s| s.session_id).or(by_cgroup) else {
            self.reports.status.refused_no_session += 1;
            return "refused: the sender's session is not known to the daemon".into();
        };
        let mut parsed = account::parse::hook(&r.input, r.header.cut);
        let verdict = match &sender {
            Some(s) => attest::hook(s, &self.reports.own_exe),
            None => Err("the sender is not yet known to agentmon's process tracking".into()),
        };
        if !r.pidfd {
            // Kernels before 6.5 have no SO_PEERPIDFD: the start time was read at accept, with
            // the sender blocked on its answer.
            debug!(pid = r.pid, "no pidfd for the intake peer; identity from its start time");
        }
        self.reports.matcher.delivered(session, sender.as_ref().and_then(|s| s.action));
        let tool_hook = matches!(parsed.event.as_str(), "PreToolUse" | "PostToolUse" | "PostToolUseFailure");
        if tool_hook && verdict.is_ok() {
            if let (Some(path), Some(id)) = (&parsed.transcript_path, &parsed.tool_use_id) {
                parsed.assistant_text =
                    transcript_tail(path, r.uid).and_then(|t| account::parse::assistant_text_before(&t, id));
            }
        }
        if !r.header.args.is_empty() {
            parsed.body = format!(
                "{{\"hook_args\":{},\"input\":{}}}",
                serde_json::to_string(&r.header.args).unwrap_or_default(),
                parsed.body
            );
        }
        self.take_report(session, sender.as_ref(), r.pid, "hook", parsed, verdict, r.at)
    }

    /// One OTLP request: each record a report of the process holding the client socket.
    /// Returns false, having stored nothing, when the sender is not (yet) known; refused and
    /// counted when `last_try`.
    pub(super) fn otlp_request(&mut self, r: &Received, last_try: bool) -> bool {
        // The socket's owner now, else when the connection was accepted (the agent may have
        // sent its last batch and exited).
        let owner = super::intake::tcp_inode(r.peer, r.local)
            .and_then(|inode| super::intake::socket_owner(inode, self.correlator.all_session_pids()))
            .or(r.owner);
        let Some(sender) = owner.and_then(|pid| self.correlator.sender(pid).map(|s| (pid, s))) else {
            if last_try {
                self.reports.status.refused_no_session += 1;
                debug!(peer = %r.peer, "refused OTLP from a process in no session");
            }
            return false;
        };
        let (pid, sender) = sender;
        let verdict = attest::otlp(&sender);
        let at = Utc::now();
        if !self.reports.allow(sender.session_id, at) {
            self.reports.status.rate_limited += r.items.as_ref().map_or(1, |i| i.len().max(1) as u64);
            return true;
        }
        let parsed: Vec<Parsed> = match &r.items {
            Ok(items) => {
                items.iter().map(|i| account::parse::otlp(&i.name, i.time, &i.attributes, &i.resource)).collect()
            }
            Err(e) => vec![account::parse::malformed(&r.raw_prefix, r.body_len > r.raw_prefix.len(), e)],
        };
        for p in parsed {
            self.take_report(sender.session_id, Some(&sender), pid, "otlp", p, verdict.clone(), at);
        }
        true
    }

    /// Store a report and hand it to the matcher; the answer for a hook.
    #[expect(clippy::too_many_arguments, reason = "one report's parts, each from another source")]
    fn take_report(
        &mut self,
        session: Uuid,
        sender: Option<&Sender>,
        pid: u32,
        channel: &'static str,
        mut parsed: Parsed,
        verdict: Result<String, String>,
        at: DateTime<Utc>,
    ) -> String {
        // A hook is one report; an OTLP request (one batch, already bounded in size) counts
        // once, however many records it holds, so a large metrics batch cannot crowd out the
        // log records the agent sends beside it.
        if channel == "hook" && !self.reports.allow(session, at) {
            self.reports.status.rate_limited += 1;
            return format!("refused: more than {MAX_REPORTS_PER_SEC} reports a second from this session");
        }
        if !self.reports.capture_prompts {
            drop_prompt(&mut parsed);
        }
        let mut cost_estimated = false;
        if parsed.cost_micro_usd.is_none() {
            if let Some(price) = parsed.model.as_ref().and_then(|m| self.reports.prices.get(m)) {
                parsed.cost_micro_usd = price.estimate(&parsed);
                cost_estimated = parsed.cost_micro_usd.is_some();
            }
        }
        let (attested, attestation) = match verdict {
            Ok(why) => (true, why),
            Err(why) => (false, why),
        };
        let st = &mut self.reports.status;
        st.reports += 1;
        st.unattested += u64::from(!attested);
        st.malformed += u64::from(parsed.malformed.is_some());
        if !attested {
            warn!(pid, channel, event = %crate::text::visible(&parsed.event), why = %attestation, "a report not sent by the agent's own hook");
        }
        // A session re-adopted after a restart is followed from its first report; one that
        // has ended is not followed again (its report is stored all the same).
        if !self.reports.matcher.has(session) {
            if let Some((_, agent, ..)) = self.correlator.live_sessions().into_iter().find(|s| s.0 == session) {
                self.reports.matcher.start_session(session, &agent);
            }
        }
        self.learn_agent(session);
        let id = Uuid::now_v7();
        let rec = ReportRecord {
            id,
            session_id: session,
            received_at: at,
            channel: channel.into(),
            agent_kind: parsed.agent_kind.into(),
            event: crate::text::truncate_chars(&parsed.event, 200),
            conversation_id: parsed.conversation_id.as_deref().map(|s| crate::text::truncate_chars(s, 200)),
            tool_use_id: parsed.tool_use_id.as_deref().map(|s| crate::text::truncate_chars(s, 200)),
            tool_name: parsed.tool_name.as_deref().map(|s| crate::text::truncate_chars(s, 200)),
            pid,
            exec_id: sender.map(|s| s.exec_id.clone()),
            attested,
            attestation,
            malformed: parsed.malformed.clone(),
            truncated: parsed.truncated,
            body: std::mem::take(&mut parsed.body),
            model: parsed.model.clone(),
            tokens_in: parsed.tokens_in,
            tokens_out: parsed.tokens_out,
            cache_read: parsed.cache_read,
            cache_creation: parsed.cache_creation,
            cost_micro_usd: parsed.cost_micro_usd,
            cost_estimated,
            redacted: Vec::new(),
            chain: ChainLink::default(),
        };
        self.reports.matcher.report(session, &account::Report { id, received_at: at, attested, channel, parsed });
        self.emit(vec![Output::Report(rec)]);
        "ok".into()
    }

    /// Tell the matcher the session's agent process (its executable and the endpoints its
    /// environment names), once.
    pub(super) fn learn_agent(&mut self, session: Uuid) {
        if !self.reports.matcher.wants_agent(session) {
            return;
        }
        let Some((pid, exe)) = self.correlator.agent_of(session) else { return };
        let mut endpoints = super::intake::agent_endpoints(pid);
        if let Some(l) = &self.reports.otlp_listen {
            endpoints.push(l.clone());
        }
        self.reports.matcher.agent_exe(session, &exe, endpoints);
    }

    /// Verdicts and silences that are due.
    pub(super) fn account_tick(&mut self) {
        let now = Utc::now();
        let (calls, silences) = self.reports.matcher.tick(now);
        self.emit(calls);
        for s in silences {
            let alerts = self.pipeline.alerts.silence(s.session, s.at, s.action, &s.summary, s.details);
            self.pipeline.push_alerts(alerts);
        }
        self.reports.status.verdicts = self.reports.matcher.stats;
    }

    /// Pass records by the matcher on their way to the pipeline: it learns sessions and the
    /// kernel's actions and events, and a session's end decides what is left of it first.
    pub(super) fn account_pass(&mut self, out: Vec<Output>) -> Vec<Output> {
        let now = Utc::now();
        let mut res = Vec::with_capacity(out.len());
        for o in out {
            match &o {
                Output::SessionStart(s) => self.reports.matcher.start_session(s.id, &s.agent),
                Output::SessionEnd(e) => {
                    let (calls, silence) = self.reports.matcher.end_session(e.session_id, now);
                    res.extend(calls);
                    if let Some(s) = silence {
                        let alerts = self.pipeline.alerts.silence(s.session, s.at, s.action, &s.summary, s.details);
                        self.pipeline.push_alerts(alerts);
                    }
                }
                Output::Action(a) => self.learn_agent(a.session_id),
                _ => {}
            }
            self.reports.matcher.observe(&o, now);
            res.push(o);
        }
        res
    }
}
