//! What `agentmon agents install` writes into the agents' own managed settings, so that Claude
//! Code and Codex report their sessions, prompts and tool calls to the daemon (hooks through
//! `agentmon hook`, OpenTelemetry to the OTLP receiver), and how `uninstall` recognises it.
//!
//! Pure: text in, text out. The command (`cli/agents.rs`) reads and writes the files.
//!
//! - Claude Code reads `/etc/claude-code/managed-settings.json` and every `*.json` in
//!   `/etc/claude-code/managed-settings.d/`; managed settings cannot be overridden by users. The
//!   drop-in file is ours alone: install writes it whole, uninstall removes it.
//! - Codex reads hooks and `[otel]` that users cannot override or disable only from
//!   `/etc/codex/requirements.toml`, a single file shared with the administrator's other
//!   requirements (there is no drop-in directory). Ours is a block between [`BEGIN`] and
//!   [`END`] lines; uninstall removes exactly those lines.

use std::{fmt::Write as _, net::SocketAddr};

use serde_json::{json, Map, Value};

/// Claude Code's managed-settings drop-in of ours, relative to the root directory.
pub const CLAUDE_FILE: &str = "etc/claude-code/managed-settings.d/50-agentmon.json";
/// Codex's managed requirements, relative to the root directory.
pub const CODEX_FILE: &str = "etc/codex/requirements.toml";
/// First line of our block in [`CODEX_FILE`].
pub const BEGIN: &str = "# BEGIN agentmon (managed by agentmon agents install; remove with agentmon agents uninstall)";
/// Last line of our block in [`CODEX_FILE`].
pub const END: &str = "# END agentmon";

/// Seconds an agent waits for `agentmon hook` (it hands the JSON over and exits at once).
pub const HOOK_TIMEOUT_SECS: u32 = 5;
/// Codex clamps `SessionEnd` hooks to 3 s; ask for no more, so it does not warn.
const CODEX_SESSION_END_TIMEOUT_SECS: u32 = 3;

/// Claude Code hook events, and whether each takes a matcher (`"*"`: every tool, source, ...).
/// Names checked against Claude Code 2.1.328.
pub const CLAUDE_EVENTS: &[(&str, bool)] = &[
    ("SessionStart", true),
    ("SessionEnd", true),
    ("UserPromptSubmit", false),
    ("PreToolUse", true),
    ("PostToolUse", true),
    ("PostToolUseFailure", true),
    ("PermissionRequest", true),
    ("PermissionDenied", true),
    ("Notification", true),
    ("SubagentStart", true),
    ("SubagentStop", true),
    ("Stop", false),
    ("StopFailure", false),
];

/// Codex hook events, and whether each takes a matcher. Names checked against Codex 0.171.0
/// (an unknown event name would make Codex reject the whole requirements file).
pub const CODEX_EVENTS: &[(&str, bool)] = &[
    ("SessionStart", false),
    ("SessionEnd", false),
    ("UserPromptSubmit", false),
    ("PreToolUse", true),
    ("PermissionRequest", true),
    ("PostToolUse", true),
    ("SubagentStart", false),
    ("SubagentStop", false),
    ("Stop", false),
];

/// An agent whose settings we manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Agent {
    Claude,
    Codex,
}

impl Agent {
    /// The file we write, relative to the root directory.
    #[must_use]
    pub fn file(self) -> &'static str {
        match self {
            Agent::Claude => CLAUDE_FILE,
            Agent::Codex => CODEX_FILE,
        }
    }
}

/// What the hooks run and where telemetry goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The hook command: the agentmon binary's absolute path, shell-quoted, plus ` hook`.
    pub hook_command: String,
    /// The daemon's OTLP/HTTP receiver (`agents.otlp_listen`).
    pub otlp_listen: SocketAddr,
}

impl Target {
    /// `agentmon` is the absolute path of the binary the hooks run.
    #[must_use]
    pub fn new(agentmon: &str, otlp_listen: SocketAddr) -> Self {
        Target { hook_command: format!("{} hook", sh_quote(agentmon)), otlp_listen }
    }

    fn otlp_base(&self) -> String {
        format!("http://{}", self.otlp_listen)
    }
}

/// `s` as one word for `sh -c` (the agents run hook commands through the shell).
#[must_use]
/// The agent kinds whose hooks `agentmon agents install` put in place under `root`: the daemon
/// then expects their sessions to report (`agent_reports_missing` before any report).
pub fn installed(root: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    if root.join(CLAUDE_FILE).exists() {
        v.push("claude".to_owned());
    }
    if std::fs::read_to_string(root.join(CODEX_FILE)).is_ok_and(|t| t.contains(BEGIN)) {
        v.push("codex".to_owned());
    }
    v
}

pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The whole of [`CLAUDE_FILE`]: pretty JSON with a final newline.
#[must_use]
pub fn claude_settings(t: &Target) -> String {
    let mut hooks = Map::new();
    for &(event, matcher) in CLAUDE_EVENTS {
        let handler = json!({"type": "command", "command": t.hook_command, "timeout": HOOK_TIMEOUT_SECS});
        let group = if matcher { json!({"matcher": "*", "hooks": [handler]}) } else { json!({"hooks": [handler]}) };
        hooks.insert(event.to_owned(), Value::Array(vec![group]));
    }
    let env = json!({
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": t.otlp_base(),
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
        "OTEL_LOG_USER_PROMPTS": "1",
        "OTEL_LOG_TOOL_DETAILS": "1",
    });
    let doc = json!({"env": env, "hooks": Value::Object(hooks)});
    // A `Value` always serialises.
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

/// TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Our block for [`CODEX_FILE`], from [`BEGIN`] to [`END`], each line ending in a newline.
/// Hooks are `[[hooks.<Event>]]` array-of-tables and never a `[hooks]` header, so the
/// administrator's own `[hooks]` table and hook entries stay valid next to ours.
#[must_use]
pub fn codex_block(t: &Target) -> String {
    let base = t.otlp_base();
    let mut b = String::new();
    let _ = writeln!(b, "{BEGIN}");
    let _ = writeln!(b, "[otel]");
    let _ = writeln!(b, "log_user_prompt = true");
    for (key, path) in [("exporter", "/v1/logs"), ("metrics_exporter", "/v1/metrics")] {
        let endpoint = toml_str(&format!("{base}{path}"));
        let _ = writeln!(b, "{key} = {{ otlp-http = {{ endpoint = {endpoint}, protocol = \"json\" }} }}");
    }
    let command = toml_str(&t.hook_command);
    for &(event, matcher) in CODEX_EVENTS {
        let timeout = if event == "SessionEnd" { CODEX_SESSION_END_TIMEOUT_SECS } else { HOOK_TIMEOUT_SECS };
        let _ = writeln!(b, "[[hooks.{event}]]");
        if matcher {
            let _ = writeln!(b, "matcher = \"*\"");
        }
        let _ = writeln!(b, "hooks = [{{ type = \"command\", command = {command}, timeout = {timeout} }}]");
    }
    let _ = writeln!(b, "{END}");
    b
}

/// Where our block sits in `text`: the byte range from the start of its [`BEGIN`] line to the
/// end of its [`END`] line (with its newline). `Err` when a [`BEGIN`] has no [`END`] after it.
fn block_range(text: &str) -> Result<Option<std::ops::Range<usize>>, String> {
    let mut begin = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n').trim_end_matches('\r');
        match begin {
            None if bare == BEGIN => begin = Some(pos),
            Some(start) if bare == END => return Ok(Some(start..pos + line.len())),
            _ => {}
        }
        pos += line.len();
    }
    match begin {
        Some(_) => Err(format!("it has a `{BEGIN}` line without a `{END}` line after it; fix the file by hand")),
        None => Ok(None),
    }
}

/// `existing` (the current [`CODEX_FILE`], if any) with our block written in: replaced where it
/// was, else appended. `Err` (one line) when the rest of the file already sets what the block
/// sets, or the result would not parse.
pub fn codex_install(existing: Option<&str>, t: &Target) -> Result<String, String> {
    let block = codex_block(t);
    let text = existing.unwrap_or("");
    let out = match block_range(text)? {
        Some(r) => format!("{}{block}{}", &text[..r.start], &text[r.end..]),
        None if text.is_empty() || text.ends_with('\n') => format!("{text}{block}"),
        None => format!("{text}\n{block}"),
    };
    let rest = codex_uninstall(&out)?.unwrap_or_default();
    let rest: toml::Table =
        rest.parse().map_err(|e: toml::de::Error| format!("it does not parse as TOML: {}", e.message()))?;
    if rest.contains_key("otel") {
        return Err("it already has an [otel] table; remove it (or merge it by hand) first".to_owned());
    }
    if let Err(e) = out.parse::<toml::Table>() {
        return Err(format!("its hooks conflict with ours ({}); merge them by hand", e.message()));
    }
    Ok(out)
}

/// `text` without our block (`Ok(None)` when it has none): every other byte stays as it was.
pub fn codex_uninstall(text: &str) -> Result<Option<String>, String> {
    Ok(block_range(text)?.map(|r| format!("{}{}", &text[..r.start], &text[r.end..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("/usr/bin/agentmon", "127.0.0.1:4318".parse().expect("addr"))
    }

    #[test]
    fn claude_settings_hooks_and_env() {
        let v: Value = serde_json::from_str(&claude_settings(&target())).expect("json");
        let pre = &v["hooks"]["PreToolUse"][0];
        assert_eq!(pre["matcher"], "*");
        assert_eq!(pre["hooks"][0], json!({"type": "command", "command": "/usr/bin/agentmon hook", "timeout": 5}));
        assert!(v["hooks"]["UserPromptSubmit"][0].get("matcher").is_none());
        assert_eq!(v["hooks"].as_object().map(Map::len), Some(CLAUDE_EVENTS.len()));
        assert_eq!(v["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:4318");
        assert_eq!(v["env"]["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/json");
        assert_eq!(v["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"], "1");
    }

    #[test]
    fn quoting_of_the_hook_command() {
        assert_eq!(
            Target::new("/opt/a b/agentmon", "[::1]:4318".parse().expect("addr")).hook_command,
            "'/opt/a b/agentmon' hook"
        );
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let t = Target::new("/usr/bin/agentmon", "[::1]:4318".parse().expect("addr"));
        assert!(codex_block(&t).contains("endpoint = \"http://[::1]:4318/v1/logs\""));
    }

    #[test]
    fn codex_block_parses_and_sets_what_codex_reads() {
        let out = codex_install(None, &target()).expect("install");
        assert!(out.starts_with(BEGIN) && out.ends_with("# END agentmon\n"));
        let v: toml::Table = out.parse().expect("toml");
        assert_eq!(v["otel"]["exporter"]["otlp-http"]["endpoint"].as_str(), Some("http://127.0.0.1:4318/v1/logs"));
        assert_eq!(v["otel"]["metrics_exporter"]["otlp-http"]["protocol"].as_str(), Some("json"));
        let pre = &v["hooks"]["PreToolUse"][0];
        assert_eq!(pre["matcher"].as_str(), Some("*"));
        assert_eq!(pre["hooks"][0]["command"].as_str(), Some("/usr/bin/agentmon hook"));
        assert_eq!(v["hooks"]["SessionEnd"][0]["hooks"][0]["timeout"].as_integer(), Some(3));
        assert_eq!(codex_uninstall(&out).expect("uninstall"), Some(String::new()));
    }

    const USER: &str = "# site policy\nallowed_approval_policies = [\"on-request\"]\n\n[hooks]\nmanaged_dir = \"/opt/hooks\"\n\n[[hooks.PreToolUse]]\nmatcher = \"Bash\"\nhooks = [{ type = \"command\", command = \"/opt/hooks/check\" }]\n";

    #[test]
    fn a_users_requirements_survive_byte_for_byte() {
        let once = codex_install(Some(USER), &target()).expect("install");
        assert!(once.starts_with(USER));
        let v: toml::Table = once.parse().expect("toml");
        assert_eq!(v["hooks"]["PreToolUse"].as_array().map(Vec::len), Some(2));
        // Idempotent, and in place: text after the block stays after it.
        let with_tail = format!("{once}\n# added later\nallowed_sandbox_modes = [\"read-only\"]\n");
        let again = codex_install(Some(&with_tail), &target()).expect("reinstall");
        assert_eq!(again, with_tail);
        let other = Target::new("/usr/local/bin/agentmon", "127.0.0.1:9999".parse().expect("addr"));
        let moved = codex_install(Some(&with_tail), &other).expect("reinstall elsewhere");
        assert!(moved.contains("127.0.0.1:9999") && !moved.contains("127.0.0.1:4318"));
        assert_eq!(codex_uninstall(&once).expect("uninstall"), Some(USER.to_owned()));
        assert_eq!(
            codex_uninstall(&moved).expect("uninstall"),
            Some(format!("{USER}\n# added later\nallowed_sandbox_modes = [\"read-only\"]\n"))
        );
        assert_eq!(codex_uninstall(USER).expect("nothing"), None);
    }

    #[test]
    fn conflicts_are_refused() {
        let otel = "[otel]\nlog_user_prompt = false\n";
        assert!(codex_install(Some(otel), &target()).expect_err("otel").contains("[otel]"));
        let inline = "hooks = { PreToolUse = [] }\n";
        assert!(codex_install(Some(inline), &target()).expect_err("inline hooks").contains("conflict"));
        assert!(codex_install(Some("not toml ["), &target()).expect_err("bad").contains("does not parse"));
        let unterminated = format!("{BEGIN}\n[otel]\n");
        assert!(codex_install(Some(&unterminated), &target()).is_err());
        assert!(codex_uninstall(&unterminated).is_err());
    }

    #[test]
    fn a_missing_final_newline_gets_one() {
        let out = codex_install(Some("a = 1"), &target()).expect("install");
        assert!(out.starts_with("a = 1\n# BEGIN agentmon"));
        assert_eq!(codex_uninstall(&out).expect("uninstall"), Some("a = 1\n".to_owned()));
    }
}
