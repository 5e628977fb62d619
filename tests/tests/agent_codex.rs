//! The agent's own account against the kernel's, with the real Codex CLI (the pinned version
//! `cargo xtask test` installs, `AGENTMON_CODEX_BIN`) driven by a scripted Responses API server
//! on loopback (`tests/agents/fake_responses_api.py`, a custom model provider in Codex's
//! config), its hooks pointing at `agentmon hook` and its OpenTelemetry at the daemon's OTLP
//! receiver. The session runs under `agentmon run`; the stored report and call rows are
//! asserted field by field.

use std::fmt::Write as _;
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use integration_tests::{
    agents::{daemon, rows, wait_calls, FakeApi},
    bin, json_lines, scratch, Daemon,
};
use serde_json::{json, Value};

fn codex_bin() -> PathBuf {
    let p = PathBuf::from(std::env::var("AGENTMON_CODEX_BIN").unwrap_or_else(|_| {
        panic!("AGENTMON_CODEX_BIN is not set: run the tests through `cargo xtask test`, which installs Codex CLI")
    }));
    assert!(p.exists(), "AGENTMON_CODEX_BIN={} does not exist", p.display());
    p
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Codex's `$CODEX_HOME/config.toml`: the scripted provider, no approvals and no sandbox,
/// every hook event running `agentmon hook` (`hook` is the command line), logs and metrics
/// to the daemon's OTLP receiver as OTLP/JSON.
fn codex_config(codex_home: &Path, api: &FakeApi, otlp: u16, hook: &str) {
    let mut c = format!(
        r#"model = "gpt-5-mock"
model_provider = "mock"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.mock]
name = "mock"
base_url = "http://127.0.0.1:{api}/v1"
wire_api = "responses"

[otel]
log_user_prompt = true
exporter = {{ otlp-http = {{ endpoint = "http://127.0.0.1:{otlp}/v1/logs", protocol = "json" }} }}
metrics_exporter = {{ otlp-http = {{ endpoint = "http://127.0.0.1:{otlp}/v1/metrics", protocol = "json" }} }}
"#,
        api = api.port,
    );
    for (event, matcher) in [
        ("SessionStart", false),
        ("UserPromptSubmit", false),
        ("PreToolUse", true),
        ("PostToolUse", true),
        ("Stop", false),
    ] {
        let _ = write!(c, "\n[[hooks.{event}]]\n");
        if matcher {
            c.push_str("matcher = \"*\"\n");
        }
        let _ = writeln!(c, "hooks = [{{ type = \"command\", command = {}, timeout = 10 }}]", toml_str(hook));
    }
    std::fs::create_dir_all(codex_home).expect("codex home");
    std::fs::write(codex_home.join("config.toml"), c).expect("codex config");
}

/// Run `codex exec` in an `agentmon run` session in `work`; the session id.
fn run_codex(d: &Daemon, work: &Path, home: &Path) -> String {
    let out = Command::new(bin())
        .args(["run", "--agent", "codex-test", "--"])
        .arg(codex_bin())
        // Hooks from the user's config need a persisted trust Codex asks for interactively.
        .args(["exec", "--dangerously-bypass-hook-trust", "--skip-git-repo-check", "do it"])
        .current_dir(work)
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"))
        .env("AGENTMON_RUNTIME_DIR", &d.runtime_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run codex");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex failed ({}): {stderr}\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        d.log(),
    );
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("agentmon: session "))
        .unwrap_or_else(|| panic!("no session line: {stderr}"))
        .trim()
        .to_owned()
}

/// Codex's `exec_command` call matched against what the kernel saw: the file it wrote and the
/// connection it made, hook and OpenTelemetry reports attested, tokens (no cost: no price for
/// the mock model) from OpenTelemetry.
#[tokio::test(flavor = "multi_thread")]
async fn codex_calls_are_checked_against_the_kernel() {
    let dir = scratch("codex-main");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    let (d, otlp) = daemon("codex_main", &dir).await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let lport = listener.local_addr().expect("addr").port();
    let w = work.display();
    let hook = format!("{} hook --runtime-dir {}", bin().display(), d.runtime_dir.display());
    let cmd = format!("echo hello > {w}/out.txt && exec 3<>/dev/tcp/127.0.0.1/{lport} && echo ping >&3; echo done-c1");
    let script = json!([
        [{"type": "tool_call", "call_id": "call_C1", "name": "exec_command", "arguments": {"cmd": cmd}}],
        [{"type": "text", "text": "all done"}]
    ]);
    let api = FakeApi::start(&dir, "fake_responses_api.py", &script);
    let home = dir.join("home");
    codex_config(&home.join(".codex"), &api, otlp, &hook);
    let id = run_codex(&d, &work, &home);
    assert!(api.main_requests() >= 2, "every scripted turn was asked for");
    assert_eq!(std::fs::read_to_string(work.join("out.txt")).expect("out.txt"), "hello\n");
    d.wait_session_end_within(&id, 60);
    let calls = wait_calls(&d, &id, |c| c.iter().any(|x| x["tool_use_id"] == "call_C1")).await;
    drop(listener);

    let c1 = calls.iter().find(|c| c["tool_use_id"] == "call_C1").expect("call_C1");
    assert_eq!(c1["verdict"], "matched", "{c1:#}\nactions: {:#?}", d.actions(&id));
    assert!(c1["tool_name"] == "Bash" || c1["tool_name"] == "exec_command", "{c1:#}");
    assert_eq!(c1["success"], true, "{c1:#}");
    assert_eq!(c1["attested"], true, "{c1:#}");
    let actions = d.actions(&id);
    let c1_action = actions
        .iter()
        .find(|a| {
            c1["action_ids"].as_array().expect("ids").iter().any(|x| x == &a["id"])
                && a["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == format!("{w}/out.txt")))
        })
        .unwrap_or_else(|| panic!("C1's action: {c1:#} {actions:#?}"));
    assert_eq!(c1_action["exit_code"], 0, "{c1_action:#}");
    let files = c1_action["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"] == format!("{w}/out.txt") && f["access"] == "create"), "{files:#?}");
    let net = c1_action["net"].as_array().expect("net");
    assert!(net.iter().any(|n| n["op"] == "connect" && n["port"] == lport), "{net:#?}");
    assert!(calls.iter().all(|c| c["verdict"] != "undeclared"), "nothing ran outside the call: {calls:#?}");

    // Every hook report is attested, from Codex's own hooks.
    let reports = rows(&d, "SELECT * FROM agent_reports WHERE session_id = $1 ORDER BY received_at", &id).await;
    let hooks: Vec<&Value> = reports.iter().filter(|r| r["channel"] == "hook").collect();
    assert!(hooks.iter().all(|r| r["attested"] == true), "{hooks:#?}");
    for ev in ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"] {
        assert!(hooks.iter().any(|r| r["event"] == ev), "no {ev} report: {hooks:#?}");
    }
    let pre = hooks.iter().find(|r| r["event"] == "PreToolUse").expect("PreToolUse");
    assert_eq!(pre["tool_use_id"], "call_C1", "{pre:#}");
    assert_eq!(pre["tool_name"], "Bash", "{pre:#}");
    assert!(c1["report_ids"].as_array().expect("ids").contains(&pre["id"]), "{c1:#}");

    // OpenTelemetry, sent by the agent process itself: the tool result, and tokens from the
    // response.completed stream events (cost null: the mock model has no price).
    let otel: Vec<&Value> = reports.iter().filter(|r| r["channel"] == "otlp").collect();
    assert!(otel.iter().all(|r| r["attested"] == true), "{otel:#?}");
    // Codex 0.171.0 delivered its metrics here but not its log batch (sent as it exits; the
    // cause is not found, see the closing note of issue 21): its token usage comes as a metric.
    assert!(otel.iter().any(|r| r["event"] == "codex.turn.token_usage"), "{otel:#?}");
    assert!(otel.iter().any(|r| r["event"] == "codex.tool.call"), "{otel:#?}");

    let v = d.cli(&["verify"]);
    assert!(v.status.success(), "verify: {}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    let listed = json_lines(&d.cli(&["calls", "--json", "--session", &id]));
    assert_eq!(listed.len(), calls.len(), "{listed:#?}");
    let sessions = json_lines(&d.cli(&["sessions", "--json"]));
    let s = sessions.iter().find(|s| s["id"] == id.as_str()).expect("the session");
    let tokens_in: i64 = reports.iter().filter(|r| r["attested"] == true).filter_map(|r| r["tokens_in"].as_i64()).sum();
    assert_eq!(s["tokens_in"].as_i64(), Some(tokens_in), "{s:#}");
    assert_eq!(s["undeclared"], 0, "{s:#}");
}
