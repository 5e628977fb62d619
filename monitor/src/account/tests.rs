use chrono::TimeZone as _;
use serde_json::json;

use super::*;
use crate::record::{EventFacts, FileSummary, ProcessRecord};

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_800_000_000_000 + ms).single().expect("time")
}

#[expect(clippy::needless_pass_by_value, reason = "test literals")]
fn hook(id: &str, event: &str, tool: &str, input: Value, at: i64, extra: Value) -> Report {
    let mut v = json!({"hook_event_name": event, "session_id": "conv", "tool_name": tool, "tool_input": input, "tool_use_id": id});
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    Report {
        id: Uuid::now_v7(),
        received_at: t(at),
        attested: true,
        channel: "hook",
        parsed: parse::hook(v.to_string().as_bytes(), false),
    }
}

fn action(session: Uuid, argv: &[&str], start: i64, end: i64, files: &[(&str, &str)]) -> Output {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    let id = Uuid::now_v7();
    Output::Action(ActionRecord {
        id,
        session_id: session,
        pid: 10,
        command: crate::text::shell_join(&argv),
        argv: argv.clone(),
        started_at: t(start),
        ended_at: Some(t(end)),
        processes: vec![ProcessRecord { pid: 10, argv, ..ProcessRecord::default() }],
        files: files
            .iter()
            .map(|(p, a)| FileSummary {
                path: (*p).into(),
                access: (*a).into(),
                result: "ok".into(),
                count: 1,
                noise: false,
                sensitive: false,
            })
            .collect(),
        ..ActionRecord::default()
    })
}

fn agent_file(session: Uuid, path: &str, access: &'static str, at: i64) -> Output {
    Output::Event(EventRecord {
        id: Uuid::now_v7(),
        session_id: session,
        action_id: None,
        exec_id: String::new(),
        seq: 1,
        ts: t(at),
        kind: "file".into(),
        pid: 1,
        tid: 1,
        data: String::new(),
        redacted: Vec::new(),
        chain: ChainLink::default(),
        facts: Some(Box::new(EventFacts {
            kind: "file",
            pid: 1,
            result: "ok".into(),
            files: vec![(path.to_owned(), access)],
            ..EventFacts::default()
        })),
    })
}

fn calls(out: &[Output]) -> Vec<&CallRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn setup() -> (Account, Uuid) {
    let mut acc = Account::new(HashMap::new(), Vec::new(), None);
    let s = Uuid::now_v7();
    acc.start_session(s, "claude");
    (acc, s)
}

#[test]
fn a_bash_call_matches_the_command_its_shell_ran() {
    let (mut acc, s) = setup();
    acc.report(s, &hook("t1", "PreToolUse", "Bash", json!({"command": "echo 'hi' > /tmp/x"}), 0, json!({})));
    let wrapper = "source /root/.claude/shell-snapshots/snapshot-bash-1.sh 2>/dev/null || true && eval 'echo '\\''hi'\\'' > /tmp/x' < /dev/null && pwd -P >| /tmp/claude-1-cwd";
    acc.observe(&action(s, &["/bin/bash", "-c", wrapper], 100, 200, &[("/tmp/x", "create")]), t(200));
    acc.report(
        s,
        &hook(
            "t1",
            "PostToolUse",
            "Bash",
            json!({"command": "echo 'hi' > /tmp/x"}),
            300,
            json!({"tool_response": {"stdout": ""}}),
        ),
    );
    let (out, _) = acc.tick(t(1000));
    assert!(calls(&out).is_empty(), "waits for the grace period");
    let (out, _) = acc.tick(t(300 + GRACE_MS));
    let c = calls(&out);
    assert_eq!(c.len(), 1, "{out:#?}");
    assert_eq!(c[0].verdict, "matched", "{}", c[0].reason);
    assert_eq!(c[0].tool_use_id.as_deref(), Some("t1"));
    assert_eq!(c[0].action_ids.len(), 1);
    assert_eq!(c[0].success, Some(true));
    assert_eq!((c[0].started_at, c[0].ended_at), (t(0), Some(t(300))));
}

#[test]
fn another_command_is_a_mismatch_and_an_action_outside_every_call_is_undeclared() {
    let (mut acc, s) = setup();
    acc.report(s, &hook("t1", "PreToolUse", "Bash", json!({"command": "ls"}), 0, json!({})));
    acc.observe(&action(s, &["/bin/bash", "-c", "eval 'rm -rf /srv' < /dev/null"], 100, 200, &[]), t(200));
    acc.report(
        s,
        &hook("t1", "PostToolUse", "Bash", json!({"command": "ls"}), 300, json!({"tool_response": {"stdout": ""}})),
    );
    acc.observe(&action(s, &["/usr/bin/touch", "/tmp/evil"], 5000, 5100, &[("/tmp/evil", "create")]), t(5100));
    let (out, _) = acc.tick(t(20_000));
    let c = calls(&out);
    assert_eq!(c.len(), 2, "{out:#?}");
    assert_eq!(c[0].verdict, "mismatch");
    assert!(c[0].reason.contains("rm -rf /srv"), "{}", c[0].reason);
    assert_eq!(c[1].verdict, "undeclared");
    assert!(c[1].reason.contains("touch /tmp/evil") && c[1].reason.contains("wrote files"), "{}", c[1].reason);
    assert_eq!(c[1].tool_use_id, None);
}

#[test]
fn hooks_and_profile_commands_are_never_undeclared() {
    let (mut acc, s) = setup();
    acc.agent_exe(s, "/opt/claude/claude", Vec::new());
    acc.report(s, &hook("t0", "SessionStart", "", json!(null), 0, json!({})));
    acc.observe(&action(s, &["/bin/sh", "-c", "/usr/bin/agentmon hook"], 10, 20, &[]), t(20));
    acc.observe(&action(s, &["/bin/bash", "-c", "env"], 30, 40, &[]), t(40));
    let (out, _) = acc.tick(t(60_000));
    assert!(calls(&out).is_empty(), "{out:#?}");
}

#[test]
fn a_write_matches_the_agents_atomic_write_and_a_refusal_is_denied() {
    let (mut acc, s) = setup();
    acc.report(s, &hook("w1", "PreToolUse", "Write", json!({"file_path": "/srv/a.txt", "content": "x"}), 0, json!({})));
    acc.observe(&agent_file(s, "/srv/a.txt.tmp.77.ab12", "create", 50), t(50));
    acc.observe(&agent_file(s, "/proc/self/fd/14/a.txt", "rename_to", 60), t(60));
    acc.report(
        s,
        &hook("w1", "PostToolUse", "Write", json!({"file_path": "/srv/a.txt"}), 100, json!({"tool_response": {}})),
    );
    acc.report(s, &hook("b1", "PreToolUse", "Bash", json!({"command": "rm -f /x"}), 200, json!({})));
    let d = json!({"decision": "reject", "source": "config", "tool_use_id": "b1", "tool_name": "Bash"});
    let mut r = hook("b1", "x", "Bash", json!(null), 250, json!({}));
    r.channel = "otlp";
    r.parsed = parse::otlp("tool_decision", None, d.as_object().expect("map"), &serde_json::Map::new());
    acc.report(s, &r);
    let (out, _) = acc.tick(t(60_000));
    let c = calls(&out);
    assert_eq!(c.len(), 2, "{out:#?}");
    assert_eq!((c[0].verdict.as_str(), c[0].event_ids.len()), ("matched", 2), "{}", c[0].reason);
    assert_eq!(c[1].verdict, "denied", "{}", c[1].reason);
    assert_eq!((c[1].decision.as_deref(), c[1].decision_source.as_deref()), (Some("reject"), Some("config")));
}

#[test]
fn unattested_reports_change_nothing_and_silence_is_raised_once() {
    let (mut acc, s) = setup();
    acc.report(s, &hook("t1", "PreToolUse", "Bash", json!({"command": "true"}), 0, json!({})));
    acc.report(s, &hook("t1", "PostToolUse", "Bash", json!({"command": "true"}), 10, json!({"tool_response": {}})));
    let mut forged = hook("t2", "PreToolUse", "Bash", json!({"command": "curl x"}), 20, json!({}));
    forged.attested = false;
    acc.report(s, &forged);
    acc.observe(&action(s, &["curl", "x"], 4000, 4100, &[]), t(4100));
    let (out, silence) = acc.tick(t(8000));
    let c = calls(&out);
    assert_eq!(c.iter().map(|c| c.verdict.as_str()).collect::<Vec<_>>(), ["unobserved", "undeclared"], "{out:#?}");
    assert!(silence.is_empty(), "not yet silent");
    let (_, silence) = acc.tick(t(10 + SILENCE_SECS * 1000 + 1));
    assert_eq!(silence.len(), 1);
    let (_, again) = acc.tick(t(100_000));
    assert!(again.is_empty(), "raised once");
}

#[test]
fn hook_commands_are_recognised() {
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(is_hook_command(&v(&["/bin/sh", "-c", "/usr/bin/agentmon hook"])));
    assert!(is_hook_command(&v(&["/usr/bin/agentmon", "hook"])));
    assert!(!is_hook_command(&v(&["/bin/bash", "-c", "echo x | /usr/bin/agentmon hook"])));
    assert!(!is_hook_command(&v(&["/bin/sh", "-c", "/usr/bin/agentmon-evil hook"])));
    assert!(holds_command("eval 'echo '\\''a'\\'''", "echo 'a'"));
}
