//! What `agentmon status` (and the Prometheus metrics, `metrics.rs`) report: the daemon's
//! counters, gathered from every stage.

use super::{queue, store::lock, Daemon};
use crate::{
    control::{LiveSession, Status},
    ebpf::Attachment,
};

impl Daemon {
    /// Every stage's counters, and the live sessions.
    pub(super) fn status(&self) -> Status {
        let k = self.probes.counters();
        let st = self.correlator.stats;
        let q = lock(&self.pipeline.queue);
        let qs = q.stats();
        let now = queue::now_ms();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let [webhook_delivered, webhook_failures, webhook_waiting, webhook_dropped] = self.pipeline.webhook_stats();
        #[expect(clippy::cast_precision_loss, reason = "an age in milliseconds, exact in f64 up to 285 000 years")]
        let oldest_unstored_secs = qs.oldest_ms.map(|t| now.saturating_sub(t) as f64 / 1000.0);
        let mut account = self.reports.status.clone();
        account.otlp_listen.clone_from(&self.reports.otlp_listen);
        account.intake_bad = load(&self.intake_stats.bad);
        account.intake_busy = load(&self.intake_stats.busy);
        account.otlp_requests = load(&self.otlp_stats.requests);
        account.otlp_busy = load(&self.otlp_stats.busy);
        account.otlp_too_big = load(&self.otlp_stats.too_big);
        Status {
            capturing: true,
            account,
            pid: std::process::id(),
            host: self.pipeline.host.clone(),
            started_at: self.started_at,
            probes: self.probes.attached.clone(),
            probe_kinds: crate::ebpf::probe_kinds(&self.probes.attached),
            capture_paths: crate::ebpf::capture_paths(&self.probes.attached),
            programs: match &self.probes.attachment {
                Attachment::Loaded => "loaded".into(),
                Attachment::Adopted => "adopted".into(),
                Attachment::Replaced { old_version } => format!("replaced {old_version}"),
            },
            programs_version: self.probes.version.clone(),
            sessions: self
                .correlator
                .live_sessions()
                .into_iter()
                .map(|(id, agent, cgroup_id, root_pid, processes)| LiveSession {
                    id,
                    agent,
                    cgroup_id,
                    root_pid,
                    processes,
                    kernel_processes: self.probes.kernel_live(cgroup_id),
                    events_lost: self.probes.session_lost(cgroup_id).total()
                        + q.shed_of(id)
                        + self.sessions.by_cgroup.get(&cgroup_id).map_or(0, |m| m.shed_before),
                })
                .collect(),
            sessions_closing: self.correlator.idle_sessions(),
            events_read: st.events + st.unattributed + st.pending_discarded + self.decode_errors,
            events_dropped: k.dropped(),
            dropped_lifecycle: k.dropped_lifecycle,
            dropped_file: k.dropped_file,
            dropped_net: k.dropped_net,
            decode_errors: self.decode_errors,
            unattributed: st.unattributed,
            kernel_read_errors: k.read_errors,
            queue_records: qs.records,
            queue_bytes: qs.bytes,
            queue_max_bytes: qs.max_bytes,
            spool_records: qs.spool_records,
            spool_bytes: qs.spool_bytes,
            spool_segments: qs.spool_segments,
            spool_max_bytes: qs.spool_max_bytes,
            spool_corrupt_records: qs.spool_corrupt,
            oldest_unstored_secs,
            events_shed: qs.shed,
            db_write_failures: load(&self.store_stats.failures),
            db_records_rejected: load(&self.store_stats.rejected),
            records_stored: load(&self.store_stats.stored),
            track_failures: k.track_failures,
            stale_tracked: k.stale_tracked,
            pending_discarded: st.pending_discarded,
            tag_failures: k.tag_failures,
            actions_written: st.actions_written,
            processes_early: st.processes_early,
            control_busy: load(&self.control_stats.busy),
            sessions_ended: st.sessions_ended,
            chain_seq: self.pipeline.chain.head().seq,
            signing_key: self.pipeline.chain.fingerprint.clone(),
            checkpoints_written: self.pipeline.checkpoints_written,
            records_redacted: self.pipeline.records_redacted,
            alerts_raised: self.pipeline.alerts.raised,
            webhook_delivered,
            webhook_failures,
            webhook_waiting,
            webhook_dropped,
        }
    }
}
