//! The agent's own account against the kernel's, with the real Claude Code CLI (the pinned
//! version `cargo xtask test` installs, `AGENTMON_CLAUDE_BIN`) driven by a scripted Messages API
//! server on loopback (`tests/agents/fake_messages_api.py`), its hooks pointing at
//! `agentmon hook` and its OpenTelemetry at the daemon's OTLP receiver. Every scenario runs as
//! an `agentmon run` session and asserts the stored report and call rows field by field.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    agents::{call, daemon, rows, wait_calls, FakeApi},
    bin, json_lines, scratch, wait_for, Daemon,
};
use serde_json::{json, Value};

/// The prompt: with a secret in it, which must be stored redacted.
const PROMPT: &str = "do the scripted work with key AKIAQWERTYUIOPASDFGH";

fn claude_bin() -> PathBuf {
    let p = PathBuf::from(std::env::var("AGENTMON_CLAUDE_BIN").unwrap_or_else(|_| {
        panic!("AGENTMON_CLAUDE_BIN is not set: run the tests through `cargo xtask test`, which installs Claude Code")
    }));
    assert!(p.exists(), "AGENTMON_CLAUDE_BIN={} does not exist", p.display());
    p
}

/// Claude Code's settings: every hook event runs `agentmon hook` (`hook` is the command
/// line), plus the user's own `extra` hooks.
fn settings(dir: &Path, hook: &str, extra: &Value) -> PathBuf {
    let ours = |matcher: bool| {
        let h = json!({"hooks": [{"type": "command", "command": hook, "timeout": 10}]});
        if matcher {
            let mut h = h;
            h["matcher"] = json!("*");
            h
        } else {
            h
        }
    };
    let mut hooks = json!({
        "SessionStart": [ours(false)],
        "UserPromptSubmit": [ours(false)],
        "PreToolUse": [ours(true)],
        "PostToolUse": [ours(true)],
        "PostToolUseFailure": [ours(true)],
        "Stop": [ours(false)],
    });
    if let (Some(h), Some(e)) = (hooks.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if let Some(list) = h.get_mut(k).and_then(Value::as_array_mut) {
                list.push(v.clone());
            }
        }
    }
    let path = dir.join("settings.json");
    std::fs::write(&path, json!({"hooks": hooks}).to_string()).expect("settings");
    path
}

/// Start Claude Code in an `agentmon run` session in `work`.
fn spawn_claude(
    runtime: &Path,
    work: &Path,
    api: &FakeApi,
    otlp: u16,
    settings: &Path,
    extra: &[&str],
) -> (Child, Instant) {
    let home = work.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let child = Command::new(bin())
        .args(["run", "--agent", "claude-test", "--"])
        .arg(claude_bin())
        .args(["-p", PROMPT, "--settings"])
        .arg(settings)
        .args(["--allowedTools", "Bash", "Write", "Read", "--output-format", "json"])
        .args(extra)
        .current_dir(work)
        .env("HOME", &home)
        .env("AGENTMON_RUNTIME_DIR", runtime)
        .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{}", api.port))
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_ENABLE_TELEMETRY", "1")
        .env("OTEL_LOGS_EXPORTER", "otlp")
        .env("OTEL_METRICS_EXPORTER", "otlp")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp}"))
        .env("OTEL_LOGS_EXPORT_INTERVAL", "500")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .env("OTEL_LOG_TOOL_DETAILS", "1")
        .env("OTEL_LOG_USER_PROMPTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claude");
    (child, Instant::now())
}

/// Wait for Claude Code to finish; the session id and how long the agent took.
fn finish_claude(child: Child, started: Instant, log: &str) -> (String, Duration) {
    let out = child.wait_with_output().expect("wait for claude");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "claude failed ({}): {stderr}\n{}\ndaemon log:\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("agentmon: session "))
        .unwrap_or_else(|| panic!("no session line: {stderr}"))
        .trim()
        .to_owned();
    (id, took)
}

fn run_claude(
    d: &Daemon,
    work: &Path,
    api: &FakeApi,
    otlp: u16,
    settings: &Path,
    extra: &[&str],
) -> (String, Duration) {
    let (child, started) = spawn_claude(&d.runtime_dir, work, api, otlp, settings, extra);
    finish_claude(child, started, &d.log())
}

/// Poll an async query every 200 ms until it gives `Some`.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(secs: u64, what: &str, mut f: impl FnMut() -> F) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The main scenario: declared commands matched, a Write matched, a background process tied to
/// its call, a user's hook undeclared, a forged report unattested, a refused call denied, and
/// tokens and cost from OpenTelemetry.
#[tokio::test(flavor = "multi_thread")]
#[expect(clippy::too_many_lines, reason = "one scenario, asserted field by field")]
async fn claude_code_calls_are_checked_against_the_kernel() {
    let dir = scratch("account-main");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    let (d, otlp) = daemon("account_main", &dir).await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let lport = listener.local_addr().expect("addr").port();
    let w = work.display();
    let hook = format!("{} hook --runtime-dir {}", bin().display(), d.runtime_dir.display());
    let forged = json!({"hook_event_name": "PostToolUse", "session_id": "forged", "tool_name": "Bash",
        "tool_use_id": "toolu_A1", "tool_input": {"command": "nothing"}, "tool_response": {"stdout": "forged"}});
    let script = json!([
        [{"type": "text", "text": "Writing and connecting."},
         {"type": "tool_use", "id": "toolu_A1", "name": "Bash",
          "input": {"command": format!("echo hello > {w}/out.txt && exec 3<>/dev/tcp/127.0.0.1/{lport} && echo ping >&3; echo done-a")}}],
        [{"type": "tool_use", "id": "toolu_A2", "name": "Write", "input": {"file_path": format!("{w}/written.txt"), "content": "x\n"}}],
        [{"type": "tool_use", "id": "toolu_A3", "name": "Bash", "input": {"command": format!("(sleep 2; echo late > {w}/late.txt) & echo started")}}],
        [{"type": "tool_use", "id": "toolu_A4", "name": "Bash",
          "input": {"command": format!("printf '%s' '{}' | {hook}", forged)}}],
        [{"type": "tool_use", "id": "toolu_A5", "name": "Bash", "input": {"command": format!("rm -f {w}/denied.txt")}}],
        [{"type": "text", "text": "all done"}]
    ]);
    let api = FakeApi::start(&dir, "fake_messages_api.py", &script);
    let user_hook =
        json!({"Stop": {"hooks": [{"type": "command", "command": format!("echo stop > {w}/stop-hook.txt")}]}});
    let settings = settings(&dir, &hook, &user_hook);
    let (id, _) = run_claude(&d, &work, &api, otlp, &settings, &["--disallowedTools", "Bash(rm:*)"]);
    assert!(api.main_requests() >= 6, "every scripted turn was asked for");
    // The background writer outlives the agent: its call is decided once it ends.
    wait_for(30, "the background write", || work.join("late.txt").exists().then_some(()));
    d.wait_session_end_within(&id, 60);
    let want = ["toolu_A1", "toolu_A2", "toolu_A3", "toolu_A4", "toolu_A5"];
    let calls = wait_calls(&d, &id, |c| {
        want.iter().all(|w| c.iter().any(|x| x["tool_use_id"] == *w)) && c.iter().any(|x| x["verdict"] == "undeclared")
    })
    .await;
    drop(listener);

    let a1 = call(&calls, "toolu_A1");
    assert_eq!(a1["verdict"], "matched", "{a1:#}");
    assert_eq!(a1["tool_name"], "Bash");
    assert_eq!(a1["success"], true);
    assert_eq!(a1["attested"], true);
    assert!(a1["output"].as_str().is_some_and(|o| o.contains("done-a") && !o.contains("forged")), "{a1:#}");
    assert_eq!(a1["assistant_text"], "Writing and connecting.", "from the transcript: {a1:#}");
    let actions = d.actions(&id);
    let a1_action = actions
        .iter()
        .find(|a| {
            a1["action_ids"].as_array().expect("ids").iter().any(|x| x == &a["id"])
                && a["command"].as_str().is_some_and(|c| c.contains("out.txt"))
        })
        .unwrap_or_else(|| panic!("A1's action: {a1:#} {actions:#?}"));
    assert_eq!(a1_action["exit_code"], 0);
    let files = a1_action["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"] == format!("{w}/out.txt") && f["access"] == "create"), "{files:#?}");
    let net = a1_action["net"].as_array().expect("net");
    assert!(net.iter().any(|n| n["op"] == "connect" && n["port"] == lport), "{net:#?}");

    let a2 = call(&calls, "toolu_A2");
    assert_eq!(a2["verdict"], "matched", "{a2:#}");
    assert!(!a2["event_ids"].as_array().expect("ids").is_empty(), "the agent process's own write: {a2:#}");

    let a3 = call(&calls, "toolu_A3");
    assert_eq!(a3["verdict"], "matched", "{a3:#}");
    let late = actions
        .iter()
        .find(|a| a["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == format!("{w}/late.txt"))))
        .unwrap_or_else(|| panic!("the background write's action: {actions:#?}"));
    assert!(
        a3["action_ids"].as_array().expect("ids").contains(&late["id"]),
        "the background write is tied to its call"
    );

    // The forged PostToolUse: stored, not attested, and A1 kept its own output and reports.
    let reports = rows(&d, "SELECT * FROM agent_reports WHERE session_id = $1 ORDER BY received_at", &id).await;
    let forged_row = reports
        .iter()
        .find(|r| r["conversation_id"] == "forged")
        .unwrap_or_else(|| panic!("the forged report: {reports:#?}"));
    assert_eq!(forged_row["attested"], false);
    assert_eq!(forged_row["channel"], "hook");
    assert_eq!(forged_row["event"], "PostToolUse");
    assert!(forged_row["attestation"].as_str().is_some_and(|a| a.contains("inside an action")), "{forged_row:#}");
    assert!(!a1["report_ids"].as_array().expect("ids").contains(&forged_row["id"]));
    let a4 = call(&calls, "toolu_A4");
    assert_eq!(a4["verdict"], "matched", "the forging command itself ran as declared: {a4:#}");

    let a5 = call(&calls, "toolu_A5");
    assert_eq!(a5["verdict"], "denied", "{a5:#}");
    assert_eq!(a5["decision"], "reject");
    assert_eq!(a5["decision_source"], "config");
    assert!(a5["action_ids"].as_array().expect("ids").is_empty(), "nothing ran: {a5:#}");
    assert!(!work.join("denied.txt").exists());

    // The user's Stop hook wrote a file outside every call.
    let undeclared: Vec<&Value> = calls.iter().filter(|c| c["verdict"] == "undeclared").collect();
    assert_eq!(undeclared.len(), 1, "exactly the user's hook: {undeclared:#?}");
    assert!(undeclared[0]["reason"].as_str().is_some_and(|r| r.contains("stop-hook.txt")), "{:#}", undeclared[0]);
    assert!(undeclared[0]["tool_use_id"].is_null());

    // Every hook report of the agent's own is attested; prompts and hooks all arrived.
    let hooks: Vec<&Value> =
        reports.iter().filter(|r| r["channel"] == "hook" && r["conversation_id"] != "forged").collect();
    assert!(hooks.iter().all(|r| r["attested"] == true), "{hooks:#?}");
    for ev in ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"] {
        assert!(hooks.iter().any(|r| r["event"] == ev), "no {ev} report: {hooks:#?}");
    }
    // The prompt, in the hook's report and the telemetry's, stored redacted.
    let prompts: Vec<&Value> =
        reports.iter().filter(|r| r["event"] == "UserPromptSubmit" || r["event"] == "user_prompt").collect();
    assert!(prompts.len() >= 2, "{prompts:#?}");
    for p in &prompts {
        let body = p["body"].as_str().expect("body");
        assert!(!body.contains("AKIAQWERTYUIOPASDFGH") && body.contains("[REDACTED:aws_access_key:"), "{p:#}");
        assert_eq!(p["redacted"], json!(["aws_access_key"]));
    }
    // Tokens and cost from OpenTelemetry, sent by the agent process itself.
    let usage: Vec<&Value> = reports.iter().filter(|r| r["event"] == "api_request").collect();
    assert!(usage.len() >= 6, "one api_request per turn: {usage:#?}");
    assert!(usage
        .iter()
        .all(|r| r["channel"] == "otlp" && r["attested"] == true && r["tokens_in"].as_i64().is_some_and(|t| t > 0)));
    assert!(usage.iter().any(|r| r["cost_micro_usd"].as_i64().is_some_and(|c| c > 0)), "{usage:#?}");
    let decision = reports.iter().find(|r| r["event"] == "tool_decision" && r["tool_use_id"] == "toolu_A5");
    assert!(decision.is_some(), "the refusal's decision came over OpenTelemetry");

    // Alerts: the undeclared hook and the forged report.
    let alerts = rows(&d, "SELECT rule FROM alerts WHERE session_id = $1", &id).await;
    let rules: Vec<&str> = alerts.iter().filter_map(|a| a["rule"].as_str()).collect();
    assert!(rules.contains(&"undeclared_action"), "{rules:?}");
    assert!(rules.contains(&"report_unattested"), "{rules:?}");
    assert!(!rules.contains(&"agent_reports_missing"), "{rules:?}");

    // The seed's view: tool rows, and model requests with tokens and cost.
    let view = rows(
        &d,
        "SELECT action_type, action_name, tokens_input, cost_usd FROM agent_audit_log WHERE session_id = $1",
        &id,
    )
    .await;
    assert!(view.iter().any(|r| r["action_type"] == "tool" && r["action_name"] == "Write"), "{view:#?}");
    assert!(view
        .iter()
        .any(|r| r["action_type"] == "model_request" && r["tokens_input"].as_i64().is_some_and(|t| t > 0)));

    // The trail still verifies with the new rows in it.
    let v = d.cli(&["verify"]);
    assert!(v.status.success(), "verify: {}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));

    // The CLI: `calls`, `sessions`, `show`.
    let listed = json_lines(&d.cli(&["calls", "--json", "--session", &id]));
    assert_eq!(listed.len(), calls.len(), "{listed:#?}");
    let denied = json_lines(&d.cli(&["calls", "--json", "--session", &id, "--verdict", "denied"]));
    assert_eq!(denied.iter().map(|c| c["tool_use_id"].clone()).collect::<Vec<_>>(), [json!("toolu_A5")]);
    let bad = d.cli(&["calls", "--verdict", "fine"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a verdict"));
    let table = String::from_utf8_lossy(&d.cli(&["calls", "--session", &id]).stdout).into_owned();
    assert!(table.contains("(undeclared)") && table.contains("denied"), "{table}");
    let sessions = json_lines(&d.cli(&["sessions", "--json"]));
    let s = sessions.iter().find(|s| s["id"] == id.as_str()).expect("the session");
    let tokens_in: i64 = usage.iter().filter_map(|r| r["tokens_in"].as_i64()).sum();
    assert_eq!(s["tokens_in"].as_i64(), Some(tokens_in), "{s:#}");
    assert!(s["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{s:#}");
    assert_eq!(s["undeclared"], 1);
    assert_eq!(s["mismatch"], 0);
    let shown = json_lines(&d.cli(&["show", "--json", a1_action["id"].as_str().expect("id")]));
    let declared = shown[0]["declared_calls"].as_array().expect("declared_calls");
    assert!(declared.iter().any(|c| c["tool_use_id"] == "toolu_A1" && c["verdict"] == "matched"), "{shown:#?}");

    // The incident packet carries the reports and calls, and verifies offline.
    let packet = dir.join("packet.json");
    wait_for(30, "an export covered by a checkpoint", || {
        let out = d.cli(&["export", "--session", &id, "-o", packet.to_str().expect("utf-8")]);
        out.status.success().then_some(())
    });
    let text = std::fs::read_to_string(&packet).expect("packet");
    assert!(text.contains("\"table\":\"tool_calls\"") && text.contains("\"table\":\"agent_reports\""));
    let v = Command::new(bin())
        .args(["verify", "--packet"])
        .arg(&packet)
        .env_remove("DATABASE_URL")
        .output()
        .expect("verify");
    assert!(
        v.status.code() == Some(0) || v.status.code() == Some(4),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

/// Hooks that stop reporting while the agent keeps acting: `agent_reports_missing`.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_hooks_go_silent_is_flagged() {
    let dir = scratch("account-silent");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    let (d, otlp) = daemon("account_silent", &dir).await;
    let flag = dir.join("rundir");
    std::fs::write(&flag, d.runtime_dir.display().to_string()).expect("flag");
    // The hook reads where to deliver from a file; the first call points it nowhere.
    let hook = format!("{} hook --runtime-dir \"$(cat {})\"", bin().display(), flag.display());
    let w = work.display();
    let script = json!([
        [{"type": "tool_use", "id": "toolu_S1", "name": "Bash", "input": {"command": format!("echo /nonexistent > {}", flag.display())}}],
        [{"type": "delay", "secs": 1}, {"type": "tool_use", "id": "toolu_S2", "name": "Bash", "input": {"command": format!("touch {w}/after1")}}],
        [{"type": "tool_use", "id": "toolu_S3", "name": "Bash", "input": {"command": format!("touch {w}/after2")}}],
        [{"type": "text", "text": "done"}]
    ]);
    let api = FakeApi::start(&dir, "fake_messages_api.py", &script);
    let settings = settings(&dir, &hook, &json!({}));
    let (id, _) = run_claude(&d, &work, &api, otlp, &settings, &[]);
    d.wait_session_end_within(&id, 60);
    let sql = "SELECT rule, summary FROM alerts WHERE session_id = $1 AND rule = 'agent_reports_missing'";
    let alerts =
        poll(30, "the silence alert", || async { Some(rows(&d, sql, &id).await).filter(|a| !a.is_empty()) }).await;
    assert!(alerts[0]["summary"].as_str().is_some_and(|s| s.contains("no report")), "{alerts:#?}");
    // The telemetry went on: the calls no hook reported are still checked, in the window the
    // agent's own clock gives them.
    let calls =
        wait_calls(&d, &id, |c| ["toolu_S2", "toolu_S3"].iter().all(|w| c.iter().any(|x| x["tool_use_id"] == *w)))
            .await;
    for id in ["toolu_S2", "toolu_S3"] {
        let c = call(&calls, id);
        assert_eq!(c["verdict"], "matched", "{c:#}");
        assert!(c["reason"].as_str().is_some_and(|r| r.contains("no hook reported it")), "{c:#}");
    }
}

/// The daemon down while the agent runs: each hook gives up within its bound and the agent
/// goes on; the kernel side is complete afterwards, and the hooks that delivered nothing are
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_down_never_holds_the_agent_up() {
    let dir = scratch("account-down");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    let (mut d, otlp) = daemon("account_down", &dir).await;
    let w = work.display();
    let hook = format!("{} hook --runtime-dir {}", bin().display(), d.runtime_dir.display());
    let script = json!([
        // The first answer waits while the test stops the daemon.
        [{"type": "delay", "secs": 4},
         {"type": "tool_use", "id": "toolu_D1", "name": "Bash", "input": {"command": format!("echo down > {w}/down.txt")}}],
        [{"type": "text", "text": "done"}]
    ]);
    let api = FakeApi::start(&dir, "fake_messages_api.py", &script);
    let settings = settings(&dir, &hook, &json!({}));
    let (child, started) = spawn_claude(&d.runtime_dir, &work, &api, otlp, &settings, &[]);
    // Stop the daemon while the model "thinks", and start it again once the agent is done.
    wait_for(30, "the first model request", || (api.main_requests() > 0).then_some(()));
    d.stop();
    let (id, took) = finish_claude(child, started, &d.log());
    d.start_again(None);
    assert!(work.join("down.txt").exists(), "the agent went on with the daemon down");
    d.wait_session_end_within(&id, 60);
    // The kernel side is complete: the command's action, with its write.
    let actions = d.actions(&id);
    let a = actions
        .iter()
        .find(|a| a["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == format!("{w}/down.txt"))))
        .unwrap_or_else(|| panic!("the command's action: {actions:#?}"));
    assert_eq!(a["exit_code"], 0);
    // Each `agentmon hook` the agent ran ended within its bound, by the kernel's clock.
    let hooks = rows(
        &d,
        "SELECT pid, argv, extract(epoch FROM ended_at - started_at) * 1000 AS ms FROM processes \
         WHERE session_id = $1 AND argv[2] = 'hook'",
        &id,
    )
    .await;
    assert!(hooks.len() >= 4, "SessionStart, UserPromptSubmit, PreToolUse, PostToolUse, Stop: {hooks:#?}");
    let bound = monitor::intake::CLIENT_BUDGET.as_secs_f64() * 1000.0 + 500.0;
    assert!(hooks.iter().all(|h| h["ms"].as_f64().is_some_and(|ms| ms < bound)), "{hooks:#?}");
    // The hooks that ran while the daemon was down are counted by the next one.
    let undelivered = d.status()["account"]["verdicts"]["hooks_undelivered"].as_u64().unwrap_or(0);
    assert!(undelivered >= 2, "PreToolUse, PostToolUse (and Stop) found no daemon: {undelivered}");
    eprintln!("the agent took {took:?} with the daemon down");
}
