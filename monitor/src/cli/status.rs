//! `agentmon status`: is anything capturing, and how is it doing.

use std::path::Path;

use crate::{
    cli::table,
    control::{self, Request, Response},
};

/// Returns the process exit code: 0 when capturing, 1 when not.
pub fn run(runtime_dir: &Path, json: bool) -> anyhow::Result<i32> {
    let st = match control::request(runtime_dir, &Request::Status) {
        Ok(Response::Status(st)) => st,
        Ok(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "capturing": false, "error": e.to_string() }));
            } else {
                eprintln!("agentmon: not capturing: {e}");
            }
            return Ok(1);
        }
    };
    if json {
        println!("{}", serde_json::to_string(&st)?);
        return Ok(0);
    }
    let rows = vec![
        vec!["capturing".into(), "yes".into()],
        vec!["daemon pid".into(), st.pid.to_string()],
        vec!["host".into(), st.host.clone()],
        vec!["since".into(), table::local_time(st.started_at)],
        vec!["programs".into(), format!("{} ({}, {} attached)", st.programs_version, st.programs, st.probes.len())],
        vec!["live sessions".into(), format!("{} ({} closing)", st.sessions.len(), st.sessions_closing)],
        vec!["events read".into(), st.events_read.to_string()],
        vec![
            "events dropped".into(),
            format!("{} (lifecycle {}, file {}, net {})", st.events_dropped, st.dropped_lifecycle, st.dropped_file, st.dropped_net),
        ],
        vec!["decode errors".into(), st.decode_errors.to_string()],
        vec!["memory queue".into(), format!("{} records, {} of {}", st.queue_records, table::bytes(st.queue_bytes), table::bytes(st.queue_max_bytes))],
        vec![
            "spool".into(),
            format!("{} records, {} of {}, {} segments", st.spool_records, table::bytes(st.spool_bytes), table::bytes(st.spool_max_bytes), st.spool_segments),
        ],
        vec!["spool corrupt records".into(), st.spool_corrupt_records.to_string()],
        vec!["oldest unstored".into(), st.oldest_unstored_secs.map_or("-".into(), |s| format!("{s:.1}s ago"))],
        vec!["records stored".into(), st.records_stored.to_string()],
        vec!["events shed".into(), st.events_shed.to_string()],
        vec!["db write failures".into(), st.db_write_failures.to_string()],
        vec!["db records rejected".into(), st.db_records_rejected.to_string()],
        vec!["track failures".into(), st.track_failures.to_string()],
        vec!["stale tracked pids dropped".into(), st.stale_tracked.to_string()],
        vec!["chain".into(), format!("seq {}, {} checkpoints signed by key {}", st.chain_seq, st.checkpoints_written, st.signing_key)],
        vec!["records redacted".into(), st.records_redacted.to_string()],
    ];
    table::print(&["FIELD", "VALUE"], &rows);
    if !st.sessions.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = st
            .sessions
            .iter()
            .map(|s| {
                vec![
                    table::short_id(&s.id),
                    s.agent.clone(),
                    s.root_pid.map_or("-".into(), |p| p.to_string()),
                    s.processes.to_string(),
                    s.events_lost.to_string(),
                ]
            })
            .collect();
        table::print(&["SESSION", "AGENT", "ROOT PID", "PROCESSES", "LOST"], &rows);
    }
    Ok(0)
}
