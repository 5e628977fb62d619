//! What a report says: the fields of a hook's JSON (Claude Code, Codex) or of one
//! OpenTelemetry record that the account needs, read leniently (a missing or odd field is
//! `None`, never an error), and the report bounded for storage.

use serde_json::{Map, Value};

use crate::record::{MAX_REPORT_BYTES, MAX_REPORT_STRING};

/// One report, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// `claude`, `codex` or `unknown`, from the report's shape.
    pub agent_kind: &'static str,
    /// The hook event (`PreToolUse`) or OpenTelemetry event (`tool_result`, `codex.tool_result`).
    pub event: String,
    pub conversation_id: Option<String>,
    pub tool_use_id: Option<String>,
    pub tool_name: Option<String>,
    pub prompt_id: Option<String>,
    /// The declared input (hooks: `tool_input`; OpenTelemetry: `tool_parameters`/`arguments`).
    pub input: Option<Value>,
    /// The tool's output text (`tool_response`), success and duration as reported.
    pub output: Option<String>,
    pub success: Option<bool>,
    pub duration_ms: Option<i64>,
    /// A permission decision (`accept`, `reject`, `allow`, `deny`...) and its source.
    pub decision: Option<String>,
    pub decision_source: Option<String>,
    /// The user's prompt (`UserPromptSubmit`, `user_prompt`).
    pub prompt: Option<String>,
    pub transcript_path: Option<String>,
    /// The assistant's text before the call, from the transcript (filled in by the daemon).
    pub assistant_text: Option<String>,
    /// When the agent says the event happened (OpenTelemetry: `event.timestamp`, else the
    /// record's time): the agent's word, used only for calls no hook reported.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cache_read: Option<i64>,
    pub cache_creation: Option<i64>,
    pub cost_micro_usd: Option<i64>,
    /// The report as stored: JSON text, strings and total size bounded.
    pub body: String,
    pub truncated: bool,
    pub malformed: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| m.get(*k).filter(|v| !v.is_null()))
}

fn first_text(m: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    first(m, keys).and_then(text)
}

/// An integer, also from a numeric string or a float (OpenTelemetry JSON sends int64 as text).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.round() as i64)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f.round() as i64)),
        _ => None,
    }
}

fn first_int(m: &Map<String, Value>, keys: &[&str]) -> Option<i64> {
    first(m, keys).and_then(int)
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "True" | "1" => Some(true),
            "false" | "False" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

/// US dollars (number or text) to millionths, rounded.
fn micro_usd(v: &Value) -> Option<i64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (0.0..1e9).contains(&f).then(|| (f * 1e6).round() as i64)
}

/// Cut every string of `v` to [`MAX_REPORT_STRING`] characters; whether any was cut.
pub fn bound_strings(v: &mut Value) -> bool {
    match v {
        Value::String(s) if s.len() > MAX_REPORT_STRING => {
            *s = format!("{}…", crate::text::truncate_chars(s, MAX_REPORT_STRING));
            true
        }
        Value::Array(a) => a.iter_mut().fold(false, |cut, x| bound_strings(x) | cut),
        Value::Object(m) => m.values_mut().fold(false, |cut, x| bound_strings(x) | cut),
        _ => false,
    }
}

/// The stored text of a report value: its strings bounded, then the whole cut to
/// [`MAX_REPORT_BYTES`] (kept as a JSON string of the prefix when even that is too long).
fn body_of(mut v: Value, mut truncated: bool) -> (String, bool) {
    truncated |= bound_strings(&mut v);
    let s = v.to_string();
    if s.len() <= MAX_REPORT_BYTES {
        return (s, truncated);
    }
    let cut = crate::text::truncate_chars(&s, MAX_REPORT_BYTES / 2);
    (Value::String(cut).to_string(), true)
}

/// The tool output of a hook's `tool_response` (an object with `stdout`/`stderr`, a string, or
/// anything else as JSON).
fn response_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Object(m) if m.contains_key("stdout") || m.contains_key("stderr") => {
            let out = m.get("stdout").and_then(Value::as_str).unwrap_or("");
            let err = m.get("stderr").and_then(Value::as_str).unwrap_or("");
            Some(if err.is_empty() {
                out.to_owned()
            } else {
                format!("{out}{}{err}", if out.is_empty() { "" } else { "\n" })
            })
        }
        other => Some(other.to_string()),
    }
}

/// A hook's JSON from stdin, as `agentmon hook` delivered it (`cut`: it was longer than the
/// client sends, and only its start arrived).
pub fn hook(raw: &[u8], cut: bool) -> Parsed {
    let value: Result<Value, _> = serde_json::from_slice(raw);
    let m = match value {
        Ok(Value::Object(m)) => m,
        Ok(other) => return malformed(other.to_string().as_bytes(), cut, "the hook's input is JSON but not an object"),
        Err(e) => return malformed(raw, cut, &format!("the hook's input is not JSON: {e}")),
    };
    let event = first_text(&m, &["hook_event_name", "event", "hook_event"]).unwrap_or_else(|| "unknown".into());
    let agent_kind = if m.contains_key("turn_id") || event.starts_with("codex") {
        "codex"
    } else if m.contains_key("hook_event_name") {
        "claude"
    } else {
        "unknown"
    };
    let response = m.get("tool_response").or_else(|| m.get("tool_output")).unwrap_or(&Value::Null);
    let success = match (event.as_str(), response) {
        ("PostToolUseFailure", _) => Some(false),
        (_, Value::Object(r)) => r
            .get("success")
            .and_then(boolean)
            .or_else(|| r.get("interrupted").and_then(boolean).map(|i| !i))
            .or_else(|| r.get("is_error").and_then(boolean).map(|e| !e))
            .or(Some(true)),
        ("PostToolUse", Value::Null) => None,
        ("PostToolUse", _) => Some(true),
        _ => None,
    };
    let output = response_text(response).or_else(|| first_text(&m, &["error"]));
    let (body, truncated) = body_of(Value::Object(m.clone()), cut);
    Parsed {
        agent_kind,
        conversation_id: first_text(&m, &["session_id", "conversation_id"]),
        tool_use_id: first_text(&m, &["tool_use_id", "call_id"]),
        tool_name: first_text(&m, &["tool_name"]),
        prompt_id: first_text(&m, &["prompt_id", "turn_id"]),
        input: first(&m, &["tool_input", "arguments"]).cloned(),
        output,
        success,
        duration_ms: first_int(&m, &["duration_ms"]),
        decision: first_text(&m, &["permission_decision", "decision"]),
        decision_source: first_text(&m, &["decision_source"]),
        prompt: first_text(&m, &["prompt"]),
        transcript_path: first_text(&m, &["transcript_path"]),
        event,
        body,
        truncated,
        ..Parsed::default()
    }
}

/// A report that is not what it should be: kept as text (cut), flagged.
pub fn malformed(raw: &[u8], cut: bool, why: &str) -> Parsed {
    let text = String::from_utf8_lossy(raw);
    let (body, truncated) = body_of(Value::String(text.into_owned()), cut);
    Parsed {
        agent_kind: "unknown",
        event: "malformed".into(),
        body,
        truncated,
        malformed: Some(why.to_owned()),
        ..Parsed::default()
    }
}

/// One OpenTelemetry record: its name, attributes and resource attributes (see `crate::otlp`).
pub fn otlp(
    name: &str,
    time: Option<chrono::DateTime<chrono::Utc>>,
    attributes: &Map<String, Value>,
    resource: &Map<String, Value>,
) -> Parsed {
    let service = resource.get("service.name").and_then(Value::as_str).unwrap_or("");
    let agent_kind = if name.starts_with("codex") || service.contains("codex") {
        "codex"
    } else if name.starts_with("claude_code") || service.contains("claude") {
        "claude"
    } else {
        "unknown"
    };
    let event = name.strip_prefix("claude_code.").unwrap_or(name).to_owned();
    let a = attributes;
    let tool_event = event.ends_with("tool_result") || event.ends_with("tool_decision");
    let mut p = Parsed {
        agent_kind,
        conversation_id: first_text(a, &["session.id", "conversation.id", "conversation_id"]),
        tool_use_id: first_text(a, &["tool_use_id", "call_id", "tool.call_id"]),
        tool_name: first_text(a, &["tool_name", "tool.name"]),
        prompt_id: first_text(a, &["prompt.id", "prompt_id", "turn.id"]),
        model: first_text(a, &["model"]),
        duration_ms: first_int(a, &["duration_ms"]),
        success: first(a, &["success"]).and_then(boolean),
        decision: tool_event.then(|| first_text(a, &["decision"])).flatten(),
        decision_source: tool_event.then(|| first_text(a, &["source", "decision.source"])).flatten(),
        prompt: first_text(a, &["prompt"]).filter(|_| event.ends_with("user_prompt")),
        input: first(a, &["tool_input", "arguments", "tool_parameters"]).map(|v| match v {
            Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
            other => other.clone(),
        }),
        output: first_text(a, &["output", "tool_output"]),
        time: first_text(a, &["event.timestamp"])
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .or(time),
        event,
        ..Parsed::default()
    };
    // Tokens: Claude Code's api_request; Codex's sse_event response.completed.
    let usage = p.event == "api_request"
        || (p.event.starts_with("codex.") && first_text(a, &["event.kind"]).as_deref() == Some("response.completed"));
    if usage {
        p.tokens_in = first_int(a, &["input_tokens", "input_token_count"]);
        p.tokens_out = first_int(a, &["output_tokens", "output_token_count"]);
        p.cache_read = first_int(a, &["cache_read_tokens", "cached_token_count", "cache_read_input_tokens"]);
        p.cache_creation = first_int(a, &["cache_creation_tokens", "cache_creation_input_tokens"]);
        p.cost_micro_usd = first(a, &["cost_usd"]).and_then(micro_usd);
    }
    let mut body = Map::new();
    body.insert("name".into(), Value::String(name.to_owned()));
    body.insert("attributes".into(), Value::Object(a.clone()));
    body.insert("resource".into(), Value::Object(resource.clone()));
    (p.body, p.truncated) = body_of(Value::Object(body), false);
    p
}

/// The assistant's text that preceded a tool call, from a Claude Code transcript (JSON lines:
/// `{"type":"assistant","message":{"id":..,"content":[{"type":"text",..},{"type":"tool_use","id":..}]}}`,
/// one message possibly spread over several lines with the same id). Anthropic documents the
/// transcript as internal and changing: a fallback, and the agent's own words.
pub fn assistant_text_before(jsonl: &str, tool_use_id: &str) -> Option<String> {
    let mut texts: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let Some(msg) = v.get("message").filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant")) else {
            continue;
        };
        let id = msg.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let Some(content) = msg.get("content").and_then(Value::as_array) else { continue };
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = texts.entry(id.clone()).or_default();
                    if !t.is_empty() {
                        t.push('\n');
                    }
                    t.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
                }
                Some("tool_use") if block.get("id").and_then(Value::as_str) == Some(tool_use_id) => {
                    return texts.remove(&id).filter(|t| !t.trim().is_empty());
                }
                _ => {}
            }
        }
    }
    None
}

/// A price table entry: US dollars per million tokens.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_creation: f64,
}

impl Price {
    /// The estimated cost, in millionths of a dollar, of the tokens of a report.
    #[expect(clippy::cast_precision_loss, reason = "token counts, far below 2^52")]
    pub fn estimate(&self, p: &Parsed) -> Option<i64> {
        if p.tokens_in.is_none() && p.tokens_out.is_none() {
            return None;
        }
        let n = |t: Option<i64>| t.unwrap_or(0).max(0) as f64;
        // $ per million tokens × tokens = millionths of a dollar.
        let micro = self.input * n(p.tokens_in)
            + self.output * n(p.tokens_out)
            + self.cache_read * n(p.cache_read)
            + self.cache_creation * n(p.cache_creation);
        (micro.is_finite() && micro >= 0.0).then(|| micro.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claude_post_tool_use_hook() {
        let raw = json!({
            "session_id": "3f1c", "transcript_path": "/home/a/.claude/projects/x.jsonl", "cwd": "/srv",
            "permission_mode": "default", "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_input": {"command": "echo hi", "description": "say hi"}, "tool_use_id": "toolu_1",
            "tool_response": {"stdout": "hi\n", "stderr": "", "interrupted": false}, "duration_ms": 12,
        });
        let p = hook(raw.to_string().as_bytes(), false);
        assert_eq!(p.agent_kind, "claude");
        assert_eq!(p.event, "PostToolUse");
        assert_eq!(p.conversation_id.as_deref(), Some("3f1c"));
        assert_eq!(p.tool_use_id.as_deref(), Some("toolu_1"));
        assert_eq!(p.tool_name.as_deref(), Some("Bash"));
        assert_eq!(p.input, Some(json!({"command": "echo hi", "description": "say hi"})));
        assert_eq!(p.output.as_deref(), Some("hi\n"));
        assert_eq!(p.success, Some(true));
        assert_eq!(p.duration_ms, Some(12));
        assert!(!p.truncated && p.malformed.is_none());
        assert_eq!(serde_json::from_str::<Value>(&p.body).expect("json"), raw);
    }

    #[test]
    fn malformed_and_huge_hooks_are_kept_cut_and_flagged() {
        let p = hook(b"{not json", false);
        assert_eq!(p.event, "malformed");
        assert!(p.malformed.as_deref().is_some_and(|m| m.starts_with("the hook's input is not JSON")));
        assert_eq!(p.body, "\"{not json\"");
        let big = json!({"hook_event_name": "UserPromptSubmit", "prompt": "x".repeat(100_000)});
        let p = hook(big.to_string().as_bytes(), false);
        assert!(p.truncated, "a long string is cut");
        assert!(p.body.len() < MAX_REPORT_BYTES);
        let p = hook(&vec![b'['; 200_000], true);
        assert!(p.truncated && p.malformed.is_some() && p.body.len() <= MAX_REPORT_BYTES);
    }

    #[test]
    fn otlp_api_request_gives_usage_and_cost() {
        let a = json!({"event.name": "api_request", "session.id": "s1", "prompt.id": "p1", "model": "claude-x",
            "input_tokens": "120", "output_tokens": 30, "cache_read_tokens": 5, "cache_creation_tokens": "0",
            "cost_usd": 0.00123, "duration_ms": "800"});
        let p = otlp("claude_code.api_request", None, a.as_object().expect("map"), &Map::new());
        assert_eq!(p.event, "api_request");
        assert_eq!(p.agent_kind, "claude");
        assert_eq!(
            (p.tokens_in, p.tokens_out, p.cache_read, p.cache_creation),
            (Some(120), Some(30), Some(5), Some(0))
        );
        assert_eq!(p.cost_micro_usd, Some(1230));
        assert_eq!(p.model.as_deref(), Some("claude-x"));
        let d = json!({"decision": "reject", "source": "config", "tool_name": "Bash", "tool_use_id": "t9"});
        let p = otlp("tool_decision", None, d.as_object().expect("map"), &Map::new());
        assert_eq!((p.decision.as_deref(), p.decision_source.as_deref()), (Some("reject"), Some("config")));
        assert_eq!(p.tokens_in, None, "no usage outside api_request");
    }

    #[test]
    fn the_assistant_text_before_a_tool_call() {
        let lines = [
            json!({"type": "user", "message": {"role": "user", "content": "go"}}),
            json!({"type": "assistant", "message": {"id": "m1", "role": "assistant", "content": [{"type": "text", "text": "Listing."}]}}),
            json!({"type": "assistant", "message": {"id": "m1", "role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]}}),
            json!({"type": "assistant", "message": {"id": "m2", "role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Bash", "input": {}}]}}),
        ];
        let text = lines.iter().fold(String::new(), |t, l| t + &l.to_string() + "\nnot json\n");
        assert_eq!(assistant_text_before(&text, "t1").as_deref(), Some("Listing."));
        assert_eq!(assistant_text_before(&text, "t2"), None, "no text before it");
        assert_eq!(assistant_text_before(&text, "t9"), None);
    }

    #[test]
    fn codex_usage_and_price_estimates() {
        let a = json!({"event.kind": "response.completed", "input_token_count": 1000, "output_token_count": 200,
            "cached_token_count": 100, "conversation.id": "c1"});
        let p = otlp("codex.sse_event", None, a.as_object().expect("map"), &Map::new());
        assert_eq!(p.agent_kind, "codex");
        assert_eq!((p.tokens_in, p.tokens_out, p.cache_read), (Some(1000), Some(200), Some(100)));
        assert_eq!(p.cost_micro_usd, None);
        let price = Price { input: 3.0, output: 15.0, cache_read: 0.3, cache_creation: 0.0 };
        assert_eq!(price.estimate(&p), Some(3000 + 3000 + 30));
    }
}
