//! `agentmon sessions`, `actions`, `calls`, `alerts`, `events` and `show`: read what was captured.

use anyhow::bail;
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use sqlx::PgPool;

use crate::{
    cli::table,
    record::{call_input_summary, FileSummary, NetSummary, VERDICTS},
    redact::LARGE_SHARE,
    store::query::{self, ActionFilter, ActionView, AlertFilter, CallFilter, CallView, ProcessView, SessionFilter},
    text::shell_join,
};

/// `10m`, `2h`, `3d` ago, an RFC 3339 time, or a local `YYYY-MM-DD[ HH:MM[:SS]]`.
pub fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(char::is_ascii_alphabetic) {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h, d or w)")),
            };
            return Ok(Utc::now() - chrono::Duration::seconds(n.saturating_mul(secs)));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
    match naive.and_then(|n| Local.from_local_datetime(&n).earliest()) {
        Some(t) => Ok(t.with_timezone(&Utc)),
        None => Err(format!("`{s}` is not a time: use a duration like 10m, 2h, 3d, or a time like 2026-11-22 14:00")),
    }
}

/// An id or id prefix as the tables print it.
pub fn parse_id_prefix(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() || s.len() > 36 || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(format!("`{s}` is not an id (expected hex digits, as `agentmon actions` prints it)"));
    }
    Ok(s)
}

/// A `--verdict`: one of the verdicts a tool call row carries.
pub fn parse_verdict(s: &str) -> Result<String, String> {
    let v = s.trim().to_ascii_lowercase();
    if VERDICTS.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a verdict: use {}", VERDICTS.join(", ")))
    }
}

/// `--json`: one object per line.
fn print_json_lines<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<()> {
    for r in rows {
        println!("{}", table::json_line(r)?);
    }
    Ok(())
}

pub async fn sessions(pool: &PgPool, f: &SessionFilter, json: bool) -> anyhow::Result<()> {
    let rows = query::sessions(pool, f).await?;
    if json {
        return print_json_lines(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                table::short_id(&s.id),
                s.agent.clone(),
                s.label.clone().unwrap_or_default(),
                s.source.clone(),
                table::local_time(s.started_at),
                s.ended_at.map_or_else(|| "live".into(), table::local_time),
                s.root_pid.map_or("-".into(), |p| p.to_string()),
                s.actions.to_string(),
                s.events_lost.to_string(),
                if s.incomplete { format!("{}!", s.tamper_events) } else { s.tamper_events.to_string() },
                s.alerts.to_string(),
                if s.sensitive_data_accessed { "yes" } else { "-" }.into(),
                table::tokens(s.tokens_in.saturating_add(s.tokens_out)),
                table::usd(s.cost_usd, s.cost_estimated),
                if s.calls == 0 { "-".into() } else { s.undeclared.to_string() },
                if s.calls == 0 { "-".into() } else { s.mismatch.to_string() },
                table::clip(&shell_join(&s.root_argv), 50),
            ]
        })
        .collect();
    table::print(
        &[
            "SESSION",
            "AGENT",
            "LABEL",
            "SOURCE",
            "STARTED",
            "ENDED",
            "ROOT PID",
            "ACTIONS",
            "LOST",
            "TAMPER",
            "ALERTS",
            "SENSITIVE",
            "TOKENS",
            "COST",
            "UNDECLARED",
            "MISMATCH",
            "COMMAND",
        ],
        &cells,
    );
    Ok(())
}

pub async fn actions(pool: &PgPool, f: &ActionFilter, json: bool) -> anyhow::Result<()> {
    let rows = query::actions(pool, f).await?;
    if json {
        return print_json_lines(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                table::short_id(&a.id),
                table::short_id(&a.session_id),
                table::local_time(a.started_at),
                crate::text::duration(a.duration_ms),
                table::status(a.exit_code, a.signal),
                a.processes.len().to_string(),
                a.files.iter().filter(|f| !f.noise).count().to_string(),
                a.net.len().to_string(),
                if a.sensitive_data_accessed { "yes" } else { "-" }.into(),
                table::clip(&a.command, 80),
            ]
        })
        .collect();
    table::print(
        &["ACTION", "SESSION", "STARTED", "DURATION", "EXIT", "PROCS", "FILES", "NET", "SENSITIVE", "COMMAND"],
        &cells,
    );
    Ok(())
}

pub async fn alerts(pool: &PgPool, f: &AlertFilter, json: bool) -> anyhow::Result<()> {
    let rows = query::alerts(pool, f).await?;
    if json {
        return print_json_lines(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                table::local_time(a.first_at),
                a.severity.to_uppercase(),
                a.rule.clone(),
                a.agent.clone(),
                a.session_id.as_ref().map_or_else(|| "-".into(), table::short_id),
                a.action_id.as_ref().map_or_else(|| "-".into(), table::short_id),
                a.count.to_string(),
                table::clip(&a.summary, 100),
            ]
        })
        .collect();
    table::print(&["TIME", "SEVERITY", "RULE", "AGENT", "SESSION", "ACTION", "COUNT", "SUMMARY"], &cells);
    Ok(())
}

pub async fn calls(pool: &PgPool, f: &CallFilter, json: bool) -> anyhow::Result<()> {
    let rows = query::calls(pool, f).await?;
    if json {
        return print_json_lines(&rows);
    }
    let cells: Vec<Vec<String>> = rows.iter().map(call_cells).collect();
    table::print(&["TIME", "SESSION", "TOOL", "VERDICT", "DECISION", "INPUT", "REASON"], &cells);
    Ok(())
}

/// One row of the `calls` table.
fn call_cells(c: &CallView) -> Vec<String> {
    vec![
        table::local_time(c.started_at),
        table::short_id(&c.session_id),
        c.tool_name.clone().unwrap_or_else(|| "(undeclared)".into()),
        c.verdict.clone(),
        c.decision.clone().unwrap_or_else(|| "-".into()),
        short_input(c.input.as_deref(), 60),
        table::clip(&c.reason, 100),
    ]
}

/// The gist of a call's input (its command or path) for a table cell: hidden characters
/// escaped, then cut to `max`; `-` when it declared none.
fn short_input(input: Option<&str>, max: usize) -> String {
    input.map_or_else(|| "-".into(), |i| table::clip(&crate::text::visible(&call_input_summary(i)), max))
}

pub async fn events(
    pool: &PgPool,
    session: &str,
    kind: Option<&str>,
    limit: Option<i64>,
    json: bool,
) -> anyhow::Result<()> {
    let rows = query::events(pool, session, kind, limit).await?;
    if json {
        return print_json_lines(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.ts.with_timezone(&Local).format("%H:%M:%S%.3f").to_string(),
                e.action_id.as_ref().map_or_else(|| "agent".into(), table::short_id),
                e.pid.to_string(),
                e.kind.clone(),
                table::clip(&event_summary(&e.kind, &e.data), 100),
            ]
        })
        .collect();
    table::print(&["SEQ", "TIME", "ACTION", "PID", "KIND", "DETAIL"], &cells);
    Ok(())
}

/// One line describing a raw event.
fn event_summary(kind: &str, d: &serde_json::Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    match kind {
        "exec" => {
            let argv: Vec<String> = d["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            format!("{}  (cwd {})", shell_join(&argv), s("cwd"))
        }
        "exec_failed" => format!("{}  {}", s("filename"), s("error")),
        "fork" => format!("child {}", d["child_pid"]),
        "clone_thread" => format!("thread {}", d["child_tid"]),
        "exit" | "exit_thread" => {
            table::status(d["exit_code"].as_i64().map(|v| v as i32), d["signal"].as_i64().map(|v| v as i32))
        }
        "file" => {
            let to = d["path2"].as_str().map(|p2| format!(" -> {p2}")).unwrap_or_default();
            format!(
                "{} {}{to}  {}",
                s("syscall"),
                d["path"].as_str().unwrap_or(&format!("{} (unresolved)", s("path_given"))),
                s("result")
            )
        }
        "net" => {
            let host = d["host"].as_str().map(|h| format!(" ({h})")).unwrap_or_default();
            let port = d["port"].as_u64().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{} {} {}{}{}  {}",
                s("syscall"),
                s("family"),
                d["addr"].as_str().unwrap_or("?"),
                port,
                host,
                s("result")
            )
        }
        "tamper" => {
            // A hand-off derived by the daemon names the service asked and what was touched
            // (a file, or a connect's address).
            let service = d["detail"]["service"].as_str().map(|v| format!(" {v}")).unwrap_or_default();
            let target = d["target_pid"].as_u64().map(|p| format!(" pid {p} {}", s("target_exe"))).unwrap_or_default();
            let path = d["path"].as_str().or(d["addr"].as_str()).map(|p| format!(" {p}")).unwrap_or_default();
            let port = d["port"].as_u64().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{service} {}{target}{path}{port}  {}", s("tamper"), s("syscall"), s("result"))
        }
        "io_uring" => {
            let path = d["path"].as_str().map(|p| format!(" {p}")).unwrap_or_default();
            let result = d["result"].as_str().unwrap_or("submitted");
            format!("{} {} fd {}{path}  {result}", s("phase"), s("op"), d["fd"])
        }
        _ => d.to_string(),
    }
}

/// Returns false when no action matches.
pub async fn show(pool: &PgPool, id: &str, all: bool, json: bool) -> anyhow::Result<bool> {
    let f = ActionFilter { id_prefix: Some(id.to_owned()), limit: Some(2), ..ActionFilter::default() };
    let mut rows = query::actions(pool, &f).await?;
    if rows.len() > 1 {
        bail!("`{id}` matches more than one action; give more of the id");
    }
    let Some(a) = rows.pop() else { return Ok(false) };
    let calls = query::calls(pool, &CallFilter { action: Some((a.session_id, a.id)), ..CallFilter::default() }).await?;
    if json {
        let mut v = serde_json::to_value(&a)?;
        v["declared_calls"] = serde_json::to_value(&calls)?;
        println!("{}", table::json_line(&v)?);
        return Ok(true);
    }
    print_action(&a, all);
    for c in &calls {
        print_declared_call(c);
    }
    Ok(true)
}

/// The agent's side of an action: the tool call that declared it, or why none did.
fn print_declared_call(c: &CallView) {
    if c.verdict == "undeclared" {
        println!("\ndeclared call: none (undeclared: {})", table::visible(&c.reason));
        return;
    }
    println!("\ndeclared call:");
    let decision = match (&c.decision, &c.decision_source) {
        (Some(d), Some(src)) => format!("{d} ({src})"),
        (Some(d), None) => d.clone(),
        (None, _) => "-".into(),
    };
    let mut rows = vec![
        vec!["  tool".into(), c.tool_name.clone().unwrap_or_else(|| "-".into())],
        vec!["  tool_use_id".into(), c.tool_use_id.clone().unwrap_or_else(|| "-".into())],
        vec!["  verdict".into(), c.verdict.clone()],
        vec!["  reason".into(), c.reason.clone()],
        vec!["  decision".into(), decision],
        vec!["  declared".into(), short_input(c.input.as_deref(), 200)],
    ];
    if let Some(i) = c.input.as_deref().filter(|i| call_input_summary(i) != *i) {
        rows.push(vec!["  input".into(), table::clip(i, 300)]);
    }
    rows.push(vec!["  attested".into(), if c.attested { "yes" } else { "no" }.into()]);
    table::print(&["  FIELD", "VALUE"], &rows);
}

fn print_action(a: &ActionView, all: bool) {
    let rows = vec![
        vec!["action".into(), a.id.to_string()],
        vec!["session".into(), a.session_id.to_string()],
        vec!["agent".into(), a.agent.clone()],
        vec!["host".into(), a.host.clone()],
        vec!["command".into(), a.command.clone() + if a.argv_truncated { " [argv truncated]" } else { "" }],
        vec!["cwd".into(), a.cwd.clone().unwrap_or_else(|| "?".into())],
        vec!["exe".into(), a.exe.clone()],
        vec!["uid".into(), a.uid.map_or("?".into(), |u| u.to_string())],
        vec!["pid".into(), a.pid.to_string()],
        vec!["started".into(), table::local_time(a.started_at)],
        vec!["ended".into(), table::opt_time(a.ended_at)],
        vec!["duration".into(), crate::text::duration(a.duration_ms)],
        vec!["exit".into(), table::status(a.exit_code, a.signal)],
        vec!["complete".into(), if a.complete { "yes" } else { "no (some process exits were not seen)" }.into()],
        vec![
            "sensitive".into(),
            if a.sensitive_data_accessed { "yes: touched a sensitive file or endpoint" } else { "no" }.into(),
        ],
        vec!["redacted".into(), redacted_line(&a.redacted)],
    ];
    table::print(&["FIELD", "VALUE"], &rows);
    if a.processes_early > 0 {
        println!("\nprocesses ({}; {} stored as they ended, before the action):", a.processes.len(), a.processes_early);
    } else {
        println!("\nprocesses:");
    }
    for line in tree_lines(&a.processes) {
        println!("  {}", table::visible(&line));
    }
    print_resources(&a.files, &a.net, all);
}

/// The redaction rules that replaced something in an action's row, and the large-share mark in words.
fn redacted_line(redacted: &[String]) -> String {
    let rules: Vec<&str> = redacted.iter().map(String::as_str).filter(|r| *r != LARGE_SHARE).collect();
    let mut line = if rules.is_empty() { "nothing".to_owned() } else { rules.join(", ") };
    if redacted.iter().any(|r| r == LARGE_SHARE) {
        line.push_str(" (large share: most of an argument is redacted)");
    }
    line
}

/// Files grouped by access, then network endpoints. Library/locale reads are folded unless `all`.
pub fn print_resources(files: &[FileSummary], net: &[NetSummary], all: bool) {
    let folded = files.iter().filter(|f| f.noise).count();
    let shown: Vec<&FileSummary> = files.iter().filter(|f| all || !f.noise).collect();
    if !shown.is_empty() || folded > 0 {
        println!("\nfiles:");
        let mut rows: Vec<Vec<String>> = shown
            .iter()
            .map(|f| {
                vec![
                    f.access.clone(),
                    f.result.clone(),
                    f.count.to_string(),
                    if f.sensitive { format!("{}  [sensitive]", f.path) } else { f.path.clone() },
                ]
            })
            .collect();
        rows.sort_by(|x, y| x[0].cmp(&y[0]));
        table::print(
            &["  ACCESS", "RESULT", "COUNT", "PATH"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
        if folded > 0 && !all {
            println!("  ({folded} shared-library/locale reads folded; --all shows them)");
        }
    }
    if !net.is_empty() {
        println!("\nnetwork:");
        let rows: Vec<Vec<String>> = net
            .iter()
            .map(|n| {
                vec![
                    format!("  {}", n.op),
                    n.family.clone(),
                    n.addr.clone().unwrap_or_else(|| "-".into()),
                    n.port.map_or_else(|| "-".into(), |p| p.to_string()),
                    n.host.clone().unwrap_or_else(|| "-".into()),
                    n.result.clone(),
                    n.count.to_string(),
                    if n.sensitive { "yes" } else { "-" }.into(),
                ]
            })
            .collect();
        table::print(&["  OP", "FAMILY", "ADDRESS", "PORT", "HOST", "RESULT", "COUNT", "SENSITIVE"], &rows);
    }
}

/// The process subtree drawn with box characters, children in start order. Each process is
/// drawn once: a pid that repeats in one action (reuse) cannot make the walk loop, and a process
/// only reachable through a cycle is drawn as a root of its own.
pub fn tree_lines(procs: &[ProcessView]) -> Vec<String> {
    /// Draws process `i` and, under it, the children not drawn yet.
    fn walk(
        procs: &[ProcessView],
        i: usize,
        seen: &mut [bool],
        prefix: &str,
        last: bool,
        root: bool,
        out: &mut Vec<String>,
    ) {
        seen[i] = true;
        let p = &procs[i];
        let branch = if root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let dur = p.ended_at.map(|e| (e - p.started_at).num_milliseconds());
        out.push(format!(
            "{prefix}{branch}[{}] {}  (exit {}, {})",
            p.pid,
            shell_join(&p.argv),
            table::status(p.exit_code, p.signal),
            crate::text::duration(dur)
        ));
        let kids: Vec<usize> =
            (0..procs.len()).filter(|&c| !seen[c] && procs[c].ppid == p.pid && procs[c].pid != p.pid).collect();
        for &c in &kids {
            seen[c] = true;
        }
        let child_prefix =
            if root { prefix.to_owned() } else { format!("{prefix}{}", if last { "   " } else { "│  " }) };
        for (n, &c) in kids.iter().enumerate() {
            walk(procs, c, seen, &child_prefix, n + 1 == kids.len(), false, out);
        }
    }
    let pids: std::collections::HashSet<i64> = procs.iter().map(|p| p.pid).collect();
    let mut out = Vec::new();
    let mut seen = vec![false; procs.len()];
    // Roots: processes whose parent is not in the subtree (the action's process, and
    // any re-parented orphans), then anything a cycle of reused pids left unreached.
    for i in 0..procs.len() {
        if !seen[i] && !pids.contains(&procs[i].ppid) {
            walk(procs, i, &mut seen, "", true, true, &mut out);
        }
    }
    for i in 0..procs.len() {
        if !seen[i] {
            walk(procs, i, &mut seen, "", true, true, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(pid: i64, parent: i64, argv: &[&str]) -> ProcessView {
        ProcessView {
            pid,
            ppid: parent,
            exec_id: String::new(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            argv_truncated: false,
            exe: String::new(),
            cwd: None,
            started_at: Utc::now(),
            ended_at: None,
            exit_code: Some(0),
            signal: None,
            uid: Some(0),
            prior_argv: Vec::new(),
            prior_argv_omitted: 0,
            redacted: Vec::new(),
        }
    }

    #[test]
    fn the_redacted_row_says_the_rules_and_a_large_share() {
        let v = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(redacted_line(&[]), "nothing");
        assert_eq!(redacted_line(&v(&["cookie", "password_option"])), "cookie, password_option");
        assert_eq!(
            redacted_line(&v(&["large_share", "secret_assignment"])),
            "secret_assignment (large share: most of an argument is redacted)"
        );
    }

    #[test]
    fn a_repeated_pid_does_not_loop_and_every_process_is_drawn_once() {
        // pid 5 twice (reused within the action), forming 5 -> 7 -> 5.
        let procs = vec![pv(5, 1, &["sh"]), pv(7, 5, &["a"]), pv(5, 7, &["b"])];
        let lines = tree_lines(&procs);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        // A pure cycle, no root: still drawn.
        let cycle = vec![pv(10, 11, &["x"]), pv(11, 10, &["y"])];
        assert_eq!(tree_lines(&cycle).len(), 2);
    }

    #[test]
    fn draws_a_tree() {
        let procs = [
            pv(10, 1, &["bash", "-c", "git log | head"]),
            pv(11, 10, &["git", "log"]),
            pv(12, 10, &["head"]),
            pv(13, 11, &["less"]),
        ];
        let lines = tree_lines(&procs);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("[10] bash -c 'git log | head'"), "{}", lines[0]);
        assert!(lines[1].starts_with("├─ [11] git log"), "{}", lines[1]);
        assert!(lines[2].starts_with("│  └─ [13] less"), "{}", lines[2]);
        assert!(lines[3].starts_with("└─ [12] head"), "{}", lines[3]);
    }

    fn call(tool: Option<&str>, verdict: &str, input: Option<&str>) -> CallView {
        CallView {
            id: uuid::Uuid::nil(),
            host: "h".into(),
            session_id: uuid::Uuid::parse_str("0193a000-0000-7000-8000-00000000abcd").expect("uuid"),
            agent: "claude".into(),
            agent_kind: "claude".into(),
            conversation_id: None,
            tool_use_id: tool.map(|_| "toolu_1".into()),
            tool_name: tool.map(str::to_owned),
            input: input.map(str::to_owned),
            decision: tool.map(|_| "allow".into()),
            decision_source: None,
            decided_at: None,
            started_at: Utc::now(),
            ended_at: None,
            duration_ms: None,
            success: None,
            output: None,
            assistant_text: None,
            prompt_id: None,
            attested: true,
            verdict: verdict.into(),
            reason: "why".into(),
            action_ids: Vec::new(),
            event_ids: Vec::new(),
            report_ids: Vec::new(),
            redacted: Vec::new(),
            chain_seq: None,
        }
    }

    #[test]
    fn verdicts_are_checked() {
        for v in ["matched", "mismatch", "denied", "unobserved", "undeclared", " Undeclared "] {
            assert_eq!(parse_verdict(v).expect(v), v.trim().to_ascii_lowercase());
        }
        let err = parse_verdict("ok").expect_err("not a verdict");
        assert_eq!(err, "`ok` is not a verdict: use matched, mismatch, denied, unobserved, undeclared");
        assert!(!err.contains('\n'), "one line");
    }

    #[test]
    fn a_call_row_shows_the_gist_of_its_input() {
        let bash = call(Some("Bash"), "matched", Some(r#"{"command":"rm -rf /tmp/x\u202e","description":"d"}"#));
        let cells = call_cells(&bash);
        assert_eq!(&cells[1..], ["0000abcd", "Bash", "matched", "allow", "rm -rf /tmp/x\\u{202e}", "why"]);
        let write = call(Some("Write"), "mismatch", Some(r#"{"file_path":"/srv/a.txt","content":"x"}"#));
        assert_eq!(call_cells(&write)[5], "/srv/a.txt");
        let codex = call(Some("shell"), "matched", Some(r#"{"command":["bash","-lc","ls -l"]}"#));
        assert_eq!(call_cells(&codex)[5], "bash -lc 'ls -l'");
        let other = call(Some("mcp__x"), "unobserved", Some(r#"{"a":1}"#));
        assert_eq!(call_cells(&other)[5], r#"{"a":1}"#);
        let long = call(Some("Bash"), "matched", Some(&format!(r#"{{"command":"{}"}}"#, "x".repeat(100))));
        assert_eq!(call_cells(&long)[5].chars().count(), 60, "cut");
        let undeclared = call(None, "undeclared", None);
        assert_eq!(&call_cells(&undeclared)[2..6], ["(undeclared)", "undeclared", "-", "-"]);
    }

    #[test]
    fn parses_times_and_ids() {
        let t = parse_when("10m").expect("10m");
        assert!((Utc::now() - t).num_seconds() >= 599);
        assert!(parse_when("2026-11-22T10:00:00Z").is_ok());
        assert!(parse_when("2026-11-22 10:00").is_ok());
        assert!(parse_when("2026-11-22").is_ok());
        assert!(parse_when("yesterday").is_err());
        assert!(parse_when("5y").is_err());
        assert!(parse_id_prefix("0193ABcd").is_ok());
        assert!(parse_id_prefix("x'; drop").is_err());
    }
}
