//! Incident packets: one self-contained file a reviewer can check offline. This is the core:
//! the format, its check and its HTML page. `cli/export.rs` gathers the rows and writes the
//! file; `agentmon verify --packet` (also there) prints what [`verify_text`] finds.
//!
//! A packet holds, per host, a stretch of the host's hash chain: the chain hash just before
//! the first row of the selected sessions (`prev_hash`), then every row up to the first signed
//! checkpoint that covers their last row. Rows of the selected sessions (session start and
//! end, actions, processes, raw events, alerts) are there in full, as the row objects the chain
//! hashes (`chain::ROW_SQL`); other rows of the stretch only as their leaf hash. The checkpoint
//! and the public key close the proof: re-hashing the rows, chaining the leaves from
//! `prev_hash` must give the checkpoint's head hash, and the signature must verify.
//!
//! The JSON form is the packet object in canonical JSON (RFC 8785), so any change to the file,
//! even of whitespace, is detected. The HTML form renders the same object for people (a
//! timeline, process trees, files changed, hosts contacted, alerts, the verification) and
//! embeds it; `verify --packet` re-renders the page and compares it byte for byte.

use std::fmt::Write as _;

use chrono::DateTime;
use serde_json::Value;

use crate::chain::{self, GENESIS};

pub const FORMAT: &str = "agentmon-packet/1";

/// Tables whose rows belong to a session, and the key naming it.
pub const SESSION_TABLES: &[(&str, &str)] = &[
    ("sessions", "id"),
    ("session_ends", "session_id"),
    ("actions", "session_id"),
    ("processes", "session_id"),
    ("events", "session_id"),
    ("alerts", "session_id"),
];

/// What a packet proves.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: u64,
    pub leaves: u64,
    /// (host, `covers_seq`) of each checkpoint.
    pub checkpoints: Vec<(String, u64)>,
    /// Fingerprints of the keys that signed.
    pub keys: Vec<String>,
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

const HTML_MARK: &str = "<script type=\"application/json\" id=\"agentmon-packet\">";

/// Check a packet file's text (canonical JSON, or the HTML page with the packet in it): the
/// proof holds, it is signed by `key` if given, and the file is exactly what the packet
/// renders to.
pub fn verify_text(text: &str, key: Option<&str>) -> Result<Report, String> {
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
    let report = check(&packet)?;
    if let Some(k) = key {
        let k = k.to_ascii_lowercase();
        let ok = packet["proofs"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["public_key"].as_str() == Some(k.as_str()) || report.keys.iter().all(|f| *f == k));
        if !ok {
            return Err(format!("the packet is signed by {}, not by the key given with --key", report.keys.join(", ")));
        }
    }
    let expected = if is_html { html(&packet, &report) } else { chain::canonical(&packet) + "\n" };
    if expected != text {
        return Err("the file differs from the packet it holds (edited outside the proven rows)".into());
    }
    Ok(report)
}

// ---- HTML -------------------------------------------------------------------------------

fn esc(s: &str) -> String {
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
tr.flagged td{background:#fff8c5}.sev{font-weight:700;text-transform:uppercase}.muted{color:#6e7781}";

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
    let _ = write!(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>agentmon incident packet</title><style>{STYLE}</style></head><body>\n");
    let _ = writeln!(h, "<h1>agentmon incident packet</h1>");
    let _ = writeln!(
        h,
        "<p class=\"verified\" id=\"verification\"><b>Verified</b>: {} rows in full and {} leaf hashes chain to the signed {}, signed by key {}. \
         Re-check offline with <code>agentmon verify --packet FILE</code>.</p>",
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
        field("agent", esc(s["agent"].as_str().unwrap_or_default()));
        if let Some(l) = s["label"].as_str() {
            field("label", esc(l));
        }
        field("host", esc(s["host"].as_str().unwrap_or_default()));
        field("started", time(&s["started_at"]));
        field("ended", end.map_or_else(|| "still running at export".into(), |e| time(&e["ended_at"])));
        if let Some(e) = end {
            field("agent command", format!("<code>{}</code>", esc(&argv(&e["root_argv"]))));
            field("actions", e["actions"].to_string());
            field("raw events", format!("{} ({} lost)", e["events"], e["events_lost"]));
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
                esc(a["rule"].as_str().unwrap_or_default()),
                clock(&a["first_at"]),
                esc(a["summary"].as_str().unwrap_or_default()),
                a["count"]
            );
        }

        let mut actions: Vec<&Value> = of("actions").filter(|a| a["session_id"] == id).collect();
        actions.sort_by_key(|a| (a["started_at"].as_i64(), a["chain_seq"].as_i64()));
        let _ = writeln!(h, "<h3>Timeline ({} actions)</h3>", actions.len());
        let _ = writeln!(h, "<table><thead><tr><th>time</th><th>command</th><th>status</th><th>duration</th><th>files changed</th><th>hosts contacted</th></tr></thead><tbody>");
        for a in &actions {
            let aid = a["id"].as_str().unwrap_or_default();
            let (st, class) = status(a);
            let (changed, hosts) = (changed_files(&a["files"]), contacted(&a["net"]));
            let procs: Vec<&Value> = of("processes").filter(|p| p["action_id"] == aid).collect();
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td><code>{}</code><details><summary>process tree ({})</summary><pre>{}</pre></details></td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if flagged.contains(aid) { " class=\"flagged\"" } else { "" },
                clock(&a["started_at"]),
                esc(a["command"].as_str().unwrap_or_default()),
                procs.len(),
                esc(&tree(&procs)),
                st,
                crate::text::duration(a["duration_ms"].as_i64()),
                changed.join("<br>"),
                hosts.join("<br>")
            );
        }
        let _ = writeln!(h, "</tbody></table>");
    }
    let json_text = chain::canonical(packet).replace("</", "<\\/");
    let _ = write!(h, "<p class=\"muted\">Packet format {FORMAT}; the evidence rows and their proof are embedded below.</p>\n{HTML_MARK}{json_text}</script>\n</body></html>\n");
    h
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
                n["port"],
                esc(n["result"].as_str().unwrap_or(""))
            )
        })
        .collect()
}

/// An action's processes as an indented tree (by ppid), each with its argv.
fn tree(procs: &[&Value]) -> String {
    /// Writes process `p` at `depth`, then its children one deeper, each process once.
    fn walk(out: &mut String, all: &[&Value], p: &Value, depth: usize, seen: &mut std::collections::HashSet<String>) {
        let id = p["id"].as_str().unwrap_or_default().to_owned();
        if depth > 64 || !seen.insert(id) {
            return;
        }
        let (st, _) = status(p);
        let _ = writeln!(out, "{}{} {}  [{}]", "  ".repeat(depth), p["pid"], argv(&p["argv"]), st);
        for c in all.iter().filter(|c| c["ppid"] == p["pid"] && c["id"] != p["id"]) {
            walk(out, all, c, depth + 1, seen);
        }
    }
    let mut sorted: Vec<&Value> = procs.to_vec();
    sorted.sort_by_key(|p| (p["started_at"].as_i64(), p["pid"].as_i64()));
    let pids: std::collections::HashSet<i64> = sorted.iter().filter_map(|p| p["pid"].as_i64()).collect();
    let mut out = String::new();
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

    /// A packet over a five-row chain: rows 2 and 4 in full, the rest as leaves.
    fn packet() -> Value {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let rows: Vec<Value> = (1..=5)
            .map(|i| json!({"table": "actions", "chain_seq": i, "id": format!("a{i}"), "session_id": "s", "command": format!("echo {i}"), "started_at": i * 1_000_000, "files": [], "net": []}))
            .collect();
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
            covers_seq: 5,
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
            .map(|r| {
                let seq = r["chain_seq"].as_u64().expect("seq");
                if seq % 2 == 0 {
                    json!({"seq": seq, "row": r})
                } else {
                    json!({"seq": seq, "leaf": hex(&chain::leaf(r))})
                }
            })
            .collect();
        json!({
            "format": FORMAT, "exported_at": 0, "sessions": ["s"],
            "proofs": [{"host": "h", "first_seq": 2, "prev_hash": hex(&at_first), "entries": entries,
                        "checkpoint": chain::checkpoint_row("h", &c, 6), "public_key": hex(key.verifying_key().as_bytes())}],
        })
    }

    /// A change to a packet that must make it fail to verify.
    type Break = Box<dyn Fn(&mut Value)>;

    #[test]
    fn a_packet_checks_and_any_change_to_its_proof_fails() {
        let p = packet();
        let r = check(&p).expect("verifies");
        assert_eq!((r.rows, r.leaves, r.checkpoints.clone()), (2, 2, vec![("h".to_owned(), 5)]));
        let breaks: Vec<(&str, Break)> = vec![
            ("a row's text", Box::new(|p| p["proofs"][0]["entries"][0]["row"]["command"] = json!("echo X"))),
            ("a leaf", Box::new(|p| p["proofs"][0]["entries"][1]["leaf"] = json!("00".repeat(32)))),
            ("a row dropped", Box::new(|p| drop(p["proofs"][0]["entries"].as_array_mut().expect("entries").remove(1)))),
            ("the anchor", Box::new(|p| p["proofs"][0]["prev_hash"] = json!("11".repeat(32)))),
            ("the signature", Box::new(|p| p["proofs"][0]["checkpoint"]["signature"] = json!("22".repeat(64)))),
            (
                "another key",
                Box::new(|p| {
                    p["proofs"][0]["public_key"] =
                        json!(hex(ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key().as_bytes()));
                }),
            ),
            ("the format", Box::new(|p| p["format"] = json!("other/1"))),
        ];
        for (what, f) in breaks {
            let mut q = p.clone();
            f(&mut q);
            assert!(check(&q).is_err(), "{what} changed, yet it verifies");
        }
    }

    #[test]
    fn the_page_is_deterministic_escapes_text_and_embeds_the_packet() {
        let mut p = packet();
        p["proofs"][0]["entries"][0]["row"]["command"] = json!("echo '</script><b>x</b>'");
        let session =
            json!({"seq": 9, "row": {"table": "sessions", "id": "s", "agent": "a", "host": "h", "started_at": 0}});
        p["proofs"][0]["entries"].as_array_mut().expect("entries").push(session);
        // The row changed, so the proof no longer holds; the page is rendered all the same.
        let r = Report { rows: 2, leaves: 2, checkpoints: vec![("h".into(), 5)], keys: vec!["k".into()] };
        let a = html(&p, &r);
        assert_eq!(a, html(&p, &r));
        assert!(a.contains("echo &#39;&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;&#39;"), "escaped on the page");
        let start = a.find(HTML_MARK).expect("mark") + HTML_MARK.len();
        let end = a[start..].find("</script>").expect("end") + start;
        let embedded: Value = serde_json::from_str(&a[start..end]).expect("embedded JSON");
        assert_eq!(embedded, p, "the embedded packet survives a `</script>` in the data");
    }
}
