//! The record path, in stage order. Every record the daemon stores passes these stages once,
//! in this order, and this file is the one place that shows it:
//!
//! ```text
//!  read ──▶ correlate ──▶ redact ──▶ alerts ──▶ chain ──▶ queue / spool ──▶ store
//!  reader.rs  crate::      redact.rs  crate::    chain.rs  queue.rs          store.rs
//!  (two rings, correlate   (secrets   alerts     (hash     (memory, then     (one tx per
//!  time-merged) (sessions,  out)       (rules on  chain,    disk; raw events  batch, to
//!              actions,                redacted   signed    shed and counted  PostgreSQL)
//!              trees)                  records)   checkpoints) past the spool)
//! ```
//!
//! [`Daemon::pump`] reads and correlates; sessions (`sessions.rs`) and the correlator hand
//! their records on to [`Pipeline::push`], which redacts, raises alerts, chains and queues
//! them; the store task (`store.rs`) takes them from the queue.

use std::sync::atomic::Ordering;

use tracing::warn;

use super::{
    chain::Chain,
    queue::Queue,
    reader::Reader,
    redact,
    store::{lock, SharedQueue},
    webhook::Webhook,
    Daemon,
};
use crate::{
    ebpf::decode::Event,
    record::{AlertRecord, Output, SessionEnd},
    redact::Redactor,
};

/// Ring polls (up to 1 MiB each per ring) per turn of the main loop.
const PUMP_POLLS: u32 = 16;

/// The stages after correlation: redact, alerts, chain, queue.
pub struct Pipeline {
    pub redactor: Redactor,
    /// Alert rules, evaluated on every record (`crate::alerts`), and where alerts go.
    pub alerts: crate::alerts::Engine,
    pub webhook: Option<Webhook>,
    pub chain: Chain,
    pub queue: SharedQueue,
    pub host: String,
    pub records_redacted: u64,
    pub checkpoints_written: u64,
}

impl Pipeline {
    /// Redact, check against the alert rules, chain and queue records, in order. A session end
    /// first gets its losses from `on_end`, given the raw events the queue shed for it, so it
    /// counts everything shed before it.
    pub fn push(&mut self, out: Vec<Output>, mut on_end: impl FnMut(&mut SessionEnd, u64)) {
        if out.is_empty() {
            return;
        }
        let queue = self.queue.clone();
        let mut q = lock(&queue);
        for mut o in out {
            if let Output::SessionEnd(end) = &mut o {
                let shed = q.take_shed(end.session_id);
                on_end(end, shed);
            }
            // Redact, then chain, then queue: nothing unredacted or unchained reaches the
            // spool, the database or the log.
            let data = redact::apply(&self.redactor, &mut o);
            if o.redacted() {
                self.records_redacted += 1;
            }
            // Alert rules see the redacted record (an event's facts are its unredacted
            // paths and argv, never stored; the alert's own text is redacted below).
            let alerts = self.alerts.observe(&o);
            if let Output::Event(e) = &mut o {
                e.facts = None;
            }
            let before = self.chain.head();
            self.chain.seal(&mut o, data);
            if !q.push(o) {
                // Shed (counted against its session): it takes no place in the chain.
                self.chain.rewind(before);
            }
            for a in alerts {
                self.raise(&mut q, a);
            }
        }
    }

    /// Alerts raised outside a record (grouped repeats whose window closed).
    pub fn push_alerts(&mut self, alerts: Vec<AlertRecord>) {
        if alerts.is_empty() {
            return;
        }
        let queue = self.queue.clone();
        let mut q = lock(&queue);
        for a in alerts {
            self.raise(&mut q, a);
        }
    }

    /// Redact, chain and queue an alert, then log it and hand it to the webhook.
    fn raise(&mut self, q: &mut Queue, a: AlertRecord) {
        let mut o = Output::Alert(a);
        redact::apply(&self.redactor, &mut o);
        self.chain.seal(&mut o, None);
        let Output::Alert(a) = &o else { return };
        let payload = crate::alerts::payload(&self.host, a);
        // The summary and the rule hold text the agent chose: shown, never applied, in the log.
        warn!(target: "agentmon::alert", rule = %crate::text::visible(&a.rule), severity = %a.severity, session = ?a.session_id, count = a.count, alert = %crate::text::json_visible(&payload.to_string()), "{}", crate::text::visible(&a.summary));
        if let Some(w) = &self.webhook {
            w.send(payload);
        }
        // Alerts are never shed (only raw events are).
        q.push(o);
    }

    /// Sign and queue a checkpoint of the chain's head (also copied to the external log).
    pub fn checkpoint(&mut self, kind: &str) {
        let c = self.chain.checkpoint(kind);
        lock(&self.queue).push(c);
        self.checkpoints_written += 1;
    }

    /// A retention cut: signed over the head and queued like any record.
    pub fn cut(&mut self, cut: crate::record::RetentionCut) {
        let c = self.chain.cut(cut);
        lock(&self.queue).push(c);
    }

    /// Webhook delivery counters: delivered, failures, waiting, dropped.
    pub fn webhook_stats(&self) -> [u64; 4] {
        self.webhook.as_ref().map_or([0; 4], |w| {
            let s = &w.stats;
            [&s.delivered, &s.failures, &s.waiting, &s.dropped].map(|a| a.load(Ordering::Relaxed))
        })
    }
}

impl Daemon {
    /// Read and correlate until the rings are drained (or `all` at shutdown), or for at most
    /// [`PUMP_POLLS`] polls so commands are served during a storm, handing every record on to
    /// the pipeline. Returns whether the rings hold more.
    pub(super) fn pump(&mut self, reader: &mut Reader, all: bool) -> bool {
        let mut events = Vec::new();
        let mut polls = 0;
        let more = loop {
            let more = reader.poll(&mut events, all);
            let mut out = Vec::with_capacity(events.len() + 4);
            for ev in events.drain(..) {
                // A new session's start is decided against every earlier record stored.
                match &ev {
                    Event::Cgroup(c) => {
                        self.emit(std::mem::take(&mut out));
                        self.on_new_cgroup(c, &mut out);
                        continue;
                    }
                    Event::Exec(e) if e.session_start && !self.correlator.has_session(e.hdr.session_cgroup) => {
                        self.emit(std::mem::take(&mut out));
                        self.start_exe_session(e, &mut out);
                    }
                    _ => {}
                }
                out.extend(self.correlator.handle(&ev));
            }
            let (probes, sessions) = (&self.probes, &self.sessions);
            out.extend(self.correlator.end_idle_sessions(|cg| probes.kernel_live(cg) <= 0 && sessions.gone(cg)));
            self.emit(out);
            polls += 1;
            if !more || (!all && polls >= PUMP_POLLS) {
                break more;
            }
        };
        self.decode_errors = reader.decode_errors;
        more
    }

    /// Hand records on to the pipeline; a session end releases the session (`sessions.rs`).
    pub(super) fn emit(&mut self, out: Vec<Output>) {
        let out = self.account_pass(out);
        let (sessions, probes) = (&mut self.sessions, &mut self.probes);
        self.pipeline.push(out, |end, shed| sessions.close(end, probes, shed));
    }
}
