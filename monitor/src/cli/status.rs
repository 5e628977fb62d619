//! `agentmon status`: is anything capturing, and how is it doing. The human form is a summary;
//! `--json` has every field, the full list of attached programs included.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use crate::{
    cli::table,
    control::{self, LiveSession, Request, Response, Status},
};

/// Returns the process exit code: 0 when capturing, 1 when not.
pub fn run(runtime_dir: &Path, json: bool) -> anyhow::Result<i32> {
    let st = match control::request(runtime_dir, &Request::Status) {
        Ok(Response::Status(st)) => st,
        Ok(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        Err(e) => {
            if json {
                println!("{}", table::json_line(&serde_json::json!({ "capturing": false, "error": e.to_string() }))?);
            } else {
                eprintln!("agentmon: not capturing: {}", table::visible(&e.to_string()));
            }
            return Ok(1);
        }
    };
    if json {
        println!("{}", table::json_line(&st)?);
        return Ok(0);
    }
    print!("{}", summary(&st, chrono::Utc::now()));
    Ok(0)
}

/// `all primary hooks`, or the fallbacks in use and what this kernel cannot capture.
fn capture(paths: &[crate::ebpf::CapturePath]) -> String {
    let of = |state: &str| paths.iter().filter(|p| p.state == state).map(|p| p.what.as_str()).collect::<Vec<_>>();
    let mut parts = Vec::new();
    for (state, label) in [("fallback", "fallback for"), ("off", "off"), ("missing", "not on this kernel")] {
        let names = of(state);
        if !names.is_empty() {
            parts.push(format!("{label}: {}", names.join(", ")));
        }
    }
    if parts.is_empty() {
        "all primary hooks".into()
    } else {
        parts.join("; ")
    }
}

/// The human summary: a headline, aligned `label  value` lines, then the live sessions.
fn summary(st: &Status, now: chrono::DateTime<chrono::Utc>) -> String {
    let up = (now - st.started_at).num_seconds().max(0) as u64;
    let mut out = format!(
        "agentmon is capturing on {} (daemon pid {}, up {}, since {})\n\n",
        table::visible(&st.host),
        st.pid,
        uptime(up),
        table::local_time(st.started_at)
    );
    let lines = labelled_lines(st);
    let width = lines.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in lines {
        let _ = writeln!(out, "{label:<width$}  {}", table::visible(&value));
    }
    if !st.sessions.is_empty() {
        out.push('\n');
        sessions_table(&st.sessions, &mut out);
    }
    out
}

/// The summary's `label  value` lines, in the order shown.
fn labelled_lines(st: &Status) -> Vec<(&'static str, String)> {
    vec![
        ("programs", format!("{} ({})", st.programs_version, st.programs)),
        ("probes", probes(st.probes.len(), &st.probe_kinds)),
        ("capture", capture(&st.capture_paths)),
        (
            "sessions",
            format!("{} live, {} closing, {} ended", st.sessions.len(), st.sessions_closing, st.sessions_ended),
        ),
        (
            "events",
            format!(
                "{} read, {} unattributed, {}",
                st.events_read,
                st.unattributed,
                count(st.decode_errors, "decode error")
            ),
        ),
        (
            "kernel drops",
            format!(
                "{} (lifecycle {}, file {}, net {})",
                count(st.events_dropped, "event"),
                st.dropped_lifecycle,
                st.dropped_file,
                st.dropped_net
            ),
        ),
        (
            "kernel",
            [
                count(st.kernel_read_errors, "read error"),
                count(st.track_failures, "track failure"),
                count(st.stale_tracked, "stale pid") + " dropped",
                count(st.tag_failures, "tag failure"),
                count(st.pending_discarded, "pending event") + " discarded",
            ]
            .join(", "),
        ),
    ]
    .into_iter()
    .chain(storage_lines(st))
    .collect()
}

/// The lines from the memory queue on: where records wait, what was stored, the chain,
/// redaction, the control socket and alerts.
fn storage_lines(st: &Status) -> Vec<(&'static str, String)> {
    vec![
        (
            "memory queue",
            format!(
                "{}, {} of {}",
                count(st.queue_records, "record"),
                table::bytes(st.queue_bytes),
                table::bytes(st.queue_max_bytes)
            ),
        ),
        (
            "spool",
            format!(
                "{}, {} of {} in {}, {}",
                count(st.spool_records, "record"),
                table::bytes(st.spool_bytes),
                table::bytes(st.spool_max_bytes),
                count(st.spool_segments, "segment"),
                count(st.spool_corrupt_records, "corrupt record")
            ),
        ),
        (
            "oldest unstored",
            st.oldest_unstored_secs.map_or_else(
                || "- (everything is stored)".into(),
                |s| crate::text::duration(Some((s * 1000.0) as i64)),
            ),
        ),
        ("events shed", st.events_shed.to_string()),
        (
            "database",
            [
                count(st.records_stored, "record") + " stored",
                count(st.actions_written, "action"),
                count(st.processes_early, "process row") + " stored early",
                count(st.db_write_failures, "write failure"),
                count(st.db_records_rejected, "record") + " rejected",
            ]
            .join(", "),
        ),
        (
            "chain",
            format!(
                "seq {}, {}, signed by {}",
                st.chain_seq,
                count(st.checkpoints_written, "checkpoint"),
                st.signing_key
            ),
        ),
        ("redaction", count(st.records_redacted, "record") + " redacted"),
        (
            "control socket",
            format!(
                "{} (a uid may hold {} connections at once)",
                count(st.control_busy, "busy refusal"),
                crate::control::MAX_CONNECTIONS_PER_UID
            ),
        ),
        (
            "agents' reports",
            format!(
                "{} stored ({} not attested, {} malformed), {} refused from no session, {} over the rate; OTLP: {}",
                st.account.reports,
                st.account.unattested,
                st.account.malformed,
                st.account.refused_no_session,
                st.account.rate_limited,
                st.account.otlp_listen.as_deref().map_or_else(
                    || "off".to_owned(),
                    |l| format!("{l}, {}", count(st.account.otlp_requests, "request"))
                ),
            ),
        ),
        (
            "tool calls",
            format!(
                "{} matched, {} mismatch, {} denied, {} unobserved, {} undeclared; {} undelivered",
                st.account.verdicts.matched,
                st.account.verdicts.mismatch,
                st.account.verdicts.denied,
                st.account.verdicts.unobserved,
                st.account.verdicts.undeclared,
                count(st.account.verdicts.hooks_undelivered, "hook"),
            ),
        ),
        (
            "alerts",
            format!(
                "{} raised, webhook: {} delivered, {} waiting, {}, {} dropped",
                st.alerts_raised,
                st.webhook_delivered,
                st.webhook_waiting,
                count(st.webhook_failures, "failed attempt"),
                st.webhook_dropped
            ),
        ),
    ]
}

/// The live sessions as a table, one line each under the headers, appended to `out`.
fn sessions_table(sessions: &[LiveSession], out: &mut String) {
    let headers = ["SESSION", "AGENT", "ROOT PID", "PROCESSES", "KERNEL", "LOST"];
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|s| {
            [
                table::short_id(&s.id),
                table::visible(&s.agent),
                s.root_pid.map_or("-".into(), |p| p.to_string()),
                s.processes.to_string(),
                s.kernel_processes.to_string(),
                s.events_lost.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let mut line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(headers);
    for r in &rows {
        line(r.each_ref().map(String::as_str));
    }
}

/// `130 attached: 122 syscall tracepoints, 6 raw tracepoints, 2 tracepoints`, most first.
fn probes(total: usize, kinds: &BTreeMap<String, u64>) -> String {
    let mut kinds: Vec<(&String, &u64)> = kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> =
        kinds.iter().map(|(k, n)| format!("{n} {}{}", k.replace('_', " "), if **n == 1 { "" } else { "s" })).collect();
    if parts.is_empty() {
        format!("{total} attached")
    } else {
        format!("{total} attached: {}", parts.join(", "))
    }
}

/// `1 record`, `2 records`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `45s`, `12m05s`, `3h07m`, `2d04h`.
fn uptime(secs: u64) -> String {
    match secs {
        ..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{:02}h", secs / 86400, secs / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_status_is_a_summary() {
        let mut st: Status = serde_json::from_str(
            r#"{
            "capturing": true, "pid": 42, "host": "web-1", "started_at": "2026-01-02T03:00:00Z",
            "probes": ["raw_tp/a", "raw_tp/b", "tracepoint/syscalls/c", "tracepoint/syscalls/d", "tracepoint/syscalls/e", "tracepoint/io_uring/f"],
            "probe_kinds": { "raw_tracepoint": 2, "syscall_tracepoint": 3, "tracepoint": 1 },
            "capture_paths": [
                { "what": "process exit", "state": "primary", "how": "raw_tp" },
                { "what": "io_uring submissions", "state": "fallback", "how": "io_uring_submit_sqe" },
                { "what": "syscall fchmodat2", "state": "missing", "how": "none" },
                { "what": "syscall openat2", "state": "missing", "how": "none" }
            ],
            "programs": "loaded", "programs_version": "v1", "sessions": [], "sessions_closing": 0, "events_read": 1000,
            "events_dropped": 3, "dropped_lifecycle": 1, "dropped_file": 2, "dropped_net": 0, "decode_errors": 0,
            "unattributed": 5, "kernel_read_errors": 0, "queue_records": 2, "queue_bytes": 2048, "queue_max_bytes": 16777216,
            "spool_records": 0, "spool_bytes": 0, "spool_segments": 1, "spool_max_bytes": 4294967296,
            "spool_corrupt_records": 0, "oldest_unstored_secs": 1.25, "events_shed": 0, "db_write_failures": 0,
            "db_records_rejected": 0, "records_stored": 900, "track_failures": 0, "stale_tracked": 0,
            "actions_written": 12, "sessions_ended": 4, "chain_seq": 950, "signing_key": "SHA256:k", "checkpoints_written": 7,
            "records_redacted": 1
        }"#,
        )
        .expect("status");
        st.sessions.push(
            serde_json::from_str(r#"{"id": "0190b2a4-0000-7000-8000-0000abcd0001", "agent": "claude", "cgroup_id": 9, "root_pid": 777, "processes": 3, "kernel_processes": 0, "events_lost": 0}"#)
                .expect("session"),
        );
        let now = st.started_at + chrono::Duration::seconds(2 * 3600 + 13 * 60);
        let text = summary(&st, now);
        let want = [
            format!("agentmon is capturing on web-1 (daemon pid 42, up 2h13m, since {})", table::local_time(st.started_at)),
            String::new(),
            "programs         v1 (loaded)".into(),
            "probes           6 attached: 3 syscall tracepoints, 2 raw tracepoints, 1 tracepoint".into(),
            "capture          fallback for: io_uring submissions; not on this kernel: syscall fchmodat2, syscall openat2".into(),
            "sessions         1 live, 0 closing, 4 ended".into(),
            "events           1000 read, 5 unattributed, 0 decode errors".into(),
            "kernel drops     3 events (lifecycle 1, file 2, net 0)".into(),
            "kernel           0 read errors, 0 track failures, 0 stale pids dropped, 0 tag failures, 0 pending events discarded".into(),
            "memory queue     2 records, 2.0 KiB of 16.0 MiB".into(),
            "spool            0 records, 0 B of 4.0 GiB in 1 segment, 0 corrupt records".into(),
            "oldest unstored  1.2s".into(),
            "events shed      0".into(),
            "database         900 records stored, 12 actions, 0 process rows stored early, 0 write failures, 0 records rejected".into(),
            "chain            seq 950, 7 checkpoints, signed by SHA256:k".into(),
            "redaction        1 record redacted".into(),
            "control socket   0 busy refusals (a uid may hold 8 connections at once)".into(),
            "agents' reports  0 stored (0 not attested, 0 malformed), 0 refused from no session, 0 over the rate; OTLP: off".into(),
            "tool calls       0 matched, 0 mismatch, 0 denied, 0 unobserved, 0 undeclared; 0 hooks undelivered".into(),
            "alerts           0 raised, webhook: 0 delivered, 0 waiting, 0 failed attempts, 0 dropped".into(),
            String::new(),
            "SESSION   AGENT   ROOT PID  PROCESSES  KERNEL  LOST".into(),
            "abcd0001  claude  777       3          0       0".into(),
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "\n{text}");
        assert!(!text.contains("raw_tp/a"), "the program list is only in --json");
    }

    #[test]
    fn uptimes_are_readable() {
        assert_eq!(uptime(45), "45s");
        assert_eq!(uptime(725), "12m05s");
        assert_eq!(uptime(3 * 3600 + 7 * 60), "3h07m");
        assert_eq!(uptime(2 * 86400 + 4 * 3600 + 59), "2d04h");
    }
}
