//! The tamper-evident chain: how a stored row is encoded and hashed, how rows are linked, and
//! how checkpoints are signed. The daemon's chain stage (`daemon/chain.rs`) and `agentmon
//! verify` (`cli/verify.rs`) both use this file, and `docs/storage.md`'s "Evidence chain" section
//! documents it for anyone who writes their own verifier.
//!
//! - Every row a host stores has a per-host `chain_seq` (1, 2, …, with no gaps).
//! - Its leaf is `SHA-256(canonical JSON of the row)`. The row object has the key `table`, the
//!   key `chain_seq`, and one key per stored column (see [`ROW_SQL`]); timestamps are integer
//!   microseconds since the Unix epoch, ids are lowercase hyphenated UUID strings, byte strings
//!   are lowercase hex, `jsonb` columns are their JSON value, arrays are JSON arrays.
//! - Canonical JSON (RFC 8785 for this data: integers only, ASCII keys): object keys sorted by
//!   byte order, no whitespace, strings escaped as JSON requires with `\b \t \n \f \r`, other
//!   control characters as `\u00xx` (lowercase hex), nothing else escaped.
//! - `chain_hash = SHA-256(previous row's chain_hash ‖ leaf)`, with 32 zero bytes before row 1.
//! - A checkpoint signs `"agentmon checkpoint v1\n" ‖ canonical JSON of {host, covers_seq,
//!   head_hash, at, kind, next_within_secs, key_fingerprint}` with ed25519. A key's fingerprint is
//!   the first 16 hex digits of SHA-256 of its 32-byte public key.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{
    record::{
        ActionRecord, AlertRecord, CallRecord, Checkpoint, EventRecord, Hash, ProcessRecord, ReportRecord,
        RetentionCut, SessionEnd, SessionStart, SigningKey,
    },
    text::{hex, unhex},
};

/// The hash before the first row.
pub const GENESIS: Hash = [0; 32];

/// Prefix of every signed checkpoint message.
const CHECKPOINT_DOMAIN: &[u8] = b"agentmon checkpoint v1\n";
/// What a retention cut's signature covers starts with this, so a cut's signature can never
/// pass for a checkpoint's, nor the other way round.
const CUT_DOMAIN: &[u8] = b"agentmon retention cut v1\n";

/// The newest row of a chain: its sequence number and chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

/// Append the canonical JSON text of `v` to `out`.
pub fn canonical_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => string_into(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_into(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string_into(k, out);
                out.push(':');
                canonical_into(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn string_into(s: &str, out: &mut String) {
    out.push('"');
    // Most text needs no escape: copy it whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn canonical(v: &Value) -> String {
    let mut s = String::new();
    canonical_into(v, &mut s);
    s
}

pub fn leaf(row: &Value) -> Hash {
    Sha256::digest(canonical(row).as_bytes()).into()
}

pub fn link(prev: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

/// A timestamp as the database stores it: whole microseconds.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Drop what the database cannot store (below a microsecond), so the hashed value is the
/// stored value whichever way the row is inserted.
pub fn truncate_micros(t: &mut DateTime<Utc>) {
    if let Some(x) = DateTime::from_timestamp_micros(t.timestamp_micros()) {
        *t = x;
    }
}

pub fn key_fingerprint(public_key: &[u8]) -> String {
    hex(&Sha256::digest(public_key)[..8])
}

/// The id of a process row: deterministic, so a retried batch inserts nothing twice.
pub fn process_id(session: Uuid, exec_id: &str) -> Uuid {
    Uuid::new_v5(&session, exec_id.as_bytes())
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(host: &str, c: &Checkpoint) -> Vec<u8> {
    let body = json!({
        "host": host,
        "covers_seq": c.covers_seq,
        "head_hash": c.head_hash,
        "at": micros(c.at),
        "kind": c.kind,
        "next_within_secs": c.next_within_secs,
        "key_fingerprint": c.key_fingerprint,
    });
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(canonical(&body).as_bytes());
    m
}

/// Check a checkpoint's signature against a hex public key.
pub fn signature_valid(host: &str, c: &Checkpoint, public_key_hex: &str) -> bool {
    ed25519_valid(&checkpoint_message(host, c), &c.signature, public_key_hex)
}

/// An ed25519 signature (hex) of `message` under a hex public key.
fn ed25519_valid(message: &[u8], signature_hex: &str, public_key_hex: &str) -> bool {
    let Some(pk) = unhex(public_key_hex).and_then(|v| <[u8; 32]>::try_from(v).ok()) else { return false };
    let Some(sig) = unhex(signature_hex).and_then(|v| <[u8; 64]>::try_from(v).ok()) else { return false };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else { return false };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
}

/// The bytes a retention cut's signature covers: every field but the signature.
pub fn cut_message(host: &str, c: &RetentionCut) -> Vec<u8> {
    let mut body = cut_row(host, c, 0);
    if let Some(m) = body.as_object_mut() {
        for k in ["table", "chain_seq", "signature"] {
            m.remove(k);
        }
    }
    let mut m = CUT_DOMAIN.to_vec();
    m.extend_from_slice(canonical(&body).as_bytes());
    m
}

pub fn cut_signature_valid(host: &str, c: &RetentionCut, public_key_hex: &str) -> bool {
    ed25519_valid(&cut_message(host, c), &c.signature, public_key_hex)
}

/// One removed row as a cut records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedLeaf {
    pub host: String,
    pub seq: u64,
    pub leaf: Hash,
    /// The row's stored chain hash (None when it had none).
    pub chain_hash: Option<Hash>,
}

/// The running hash a cut's `leaves_hash` is: over its leaves in (host, `chain_seq`) order, each
/// as the host's bytes, a NUL, the sequence (8 bytes, big-endian), the leaf and the stored
/// chain hash (32 zero bytes when none).
#[derive(Default)]
pub struct LeavesHasher(Sha256);

impl LeavesHasher {
    pub fn add(&mut self, l: &RetainedLeaf) {
        self.0.update(l.host.as_bytes());
        self.0.update([0]);
        self.0.update(l.seq.to_be_bytes());
        self.0.update(l.leaf);
        self.0.update(l.chain_hash.unwrap_or([0; 32]));
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

// The row objects. Each must equal, key for key, what `ROW_SQL` builds from the stored row.

pub fn session_row(host: &str, s: &SessionStart, seq: u64) -> Value {
    json!({
        "table": "sessions", "chain_seq": seq, "id": s.id, "host": host, "agent": s.agent,
        "label": s.label, "cgroup": s.cgroup, "cgroup_id": s.cgroup_id as i64, "uid": s.uid,
        "source": s.source, "started_at": micros(s.started_at), "redacted": s.redacted,
    })
}

pub fn session_end_row(host: &str, e: &SessionEnd, seq: u64) -> Value {
    json!({
        "table": "session_ends", "chain_seq": seq, "session_id": e.session_id, "host": host,
        "ended_at": micros(e.ended_at), "root_pid": e.root_pid, "root_exec_id": e.root_exec_id,
        "root_argv": e.root_argv, "actions": e.actions as i64, "events": e.events as i64,
        "events_lost": e.events_lost as i64, "files": e.files, "net": e.net, "redacted": e.redacted,
    })
}

/// Add `key: n` to a row object only when `n` is not 0: a column added after rows were chained
/// (default 0) leaves the leaves of those rows as they were. `ROW_SQL` does the same.
fn with_count(mut row: Value, key: &str, n: u64) -> Value {
    if let (Some(m), true) = (row.as_object_mut(), n > 0) {
        m.insert(key.to_owned(), json!(n));
    }
    row
}

pub fn action_row(host: &str, a: &ActionRecord, seq: u64) -> Value {
    let row = json!({
        "table": "actions", "chain_seq": seq, "id": a.id, "session_id": a.session_id, "host": host,
        "exec_id": a.exec_id, "pid": a.pid, "argv": a.argv, "argv_truncated": a.argv_truncated,
        "command": a.command, "cwd": a.cwd, "exe": a.exe, "uid": a.uid,
        "started_at": micros(a.started_at), "ended_at": a.ended_at.map(micros),
        "duration_ms": a.duration_ms, "exit_code": a.exit_code, "signal": a.signal,
        "complete": a.complete, "files": a.files, "net": a.net, "redacted": a.redacted,
    });
    with_count(row, "processes_early", a.processes_early)
}

pub fn process_row(host: &str, session: Uuid, action: Option<Uuid>, p: &ProcessRecord, seq: u64) -> Value {
    let row = json!({
        "table": "processes", "chain_seq": seq, "id": process_id(session, &p.exec_id),
        "session_id": session, "action_id": action, "host": host, "exec_id": p.exec_id, "pid": p.pid,
        "ppid": p.ppid, "argv": p.argv, "prior_argv": p.prior_argv, "argv_truncated": p.argv_truncated,
        "exe": p.exe, "cwd": p.cwd, "uid": p.uid, "started_at": micros(p.started_at),
        "ended_at": p.ended_at.map(micros), "exit_code": p.exit_code, "signal": p.signal,
        "redacted": p.redacted,
    });
    with_count(row, "prior_argv_omitted", p.prior_argv_omitted)
}

/// `data` is the event's JSON, parsed (the stored column is `jsonb`).
pub fn event_row(host: &str, e: &EventRecord, data: &Value, seq: u64) -> Value {
    json!({
        "table": "events", "chain_seq": seq, "id": e.id, "host": host, "session_id": e.session_id,
        "action_id": e.action_id, "exec_id": e.exec_id, "seq": e.seq, "ts": micros(e.ts), "kind": e.kind,
        "pid": e.pid, "tid": e.tid, "data": data, "redacted": e.redacted,
    })
}

/// The canonical text of [`event_row`], written directly (events are most rows): `data` is
/// the event's data already in canonical form. Equal to `canonical(&event_row(..))` (tested).
pub fn event_row_canonical(host: &str, e: &EventRecord, data_canonical: &str, seq: u64) -> String {
    let mut o = String::with_capacity(data_canonical.len() + 300);
    let opt_uuid = |u: Option<Uuid>| u.map_or_else(|| "null".to_owned(), |u| format!("\"{u}\""));
    let _ = write!(
        o,
        "{{\"action_id\":{},\"chain_seq\":{seq},\"data\":{data_canonical},\"exec_id\":",
        opt_uuid(e.action_id)
    );
    string_into(&e.exec_id, &mut o);
    o.push_str(",\"host\":");
    string_into(host, &mut o);
    let _ = write!(o, ",\"id\":\"{}\",\"kind\":", e.id);
    string_into(&e.kind, &mut o);
    let _ = write!(o, ",\"pid\":{},\"redacted\":[", e.pid);
    for (i, r) in e.redacted.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        string_into(r, &mut o);
    }
    let _ = write!(
        o,
        "],\"seq\":{},\"session_id\":\"{}\",\"table\":\"events\",\"tid\":{},\"ts\":{}}}",
        e.seq,
        e.session_id,
        e.tid,
        micros(e.ts)
    );
    o
}

/// The leaf of a row from its canonical text.
pub fn leaf_of_text(canonical: &str) -> Hash {
    Sha256::digest(canonical.as_bytes()).into()
}

pub fn checkpoint_row(host: &str, c: &Checkpoint, seq: u64) -> Value {
    json!({
        "table": "checkpoints", "chain_seq": seq, "id": c.id, "host": host,
        "covers_seq": c.covers_seq, "head_hash": c.head_hash, "at": micros(c.at), "kind": c.kind,
        "next_within_secs": c.next_within_secs, "key_fingerprint": c.key_fingerprint,
        "signature": c.signature,
    })
}

pub fn cut_row(host: &str, c: &RetentionCut, seq: u64) -> Value {
    let mut row = json!({
        "table": "retention_cuts", "chain_seq": seq, "id": c.id, "host": host, "table_name": c.table,
        "partition_name": c.partition, "range_from": micros(c.range_from), "range_to": micros(c.range_to),
        "tier": c.tier, "rows": c.rows as i64, "chained_rows": c.chained_rows as i64,
        "first_seq": c.first_seq.map(|s| s as i64), "last_seq": c.last_seq.map(|s| s as i64),
        "leaves_hash": c.leaves_hash, "archive_file": c.archive_file, "archive_sha256": c.archive_sha256,
        "covers_seq": c.covers_seq as i64, "head_hash": c.head_hash, "at": micros(c.at),
        "key_fingerprint": c.key_fingerprint, "signature": c.signature,
    });
    // The tiers are in the row (and so signed) only when recorded: older cuts keep their leaf.
    if let Some(m) = row.as_object_mut() {
        if let Some(h) = c.hot_secs {
            m.insert("hot_secs".into(), h.into());
        }
        if let Some(w) = c.warm_secs {
            m.insert("warm_secs".into(), w.into());
        }
    }
    row
}

pub fn signing_key_row(host: &str, k: &SigningKey, seq: u64) -> Value {
    json!({
        "table": "signing_keys", "chain_seq": seq, "host": host, "fingerprint": k.fingerprint,
        "public_key": k.public_key, "created_at": micros(k.created_at),
    })
}

pub fn alert_row(host: &str, a: &AlertRecord, seq: u64) -> Value {
    json!({
        "table": "alerts", "chain_seq": seq, "id": a.id, "host": host, "session_id": a.session_id,
        "action_id": a.action_id, "agent": a.agent, "rule": a.rule, "severity": a.severity,
        "first_at": micros(a.first_at), "last_at": micros(a.last_at), "count": a.count as i64,
        "action_ids": a.action_ids, "event_ids": a.event_ids, "summary": a.summary, "details": a.details,
    })
}

pub fn report_row(host: &str, r: &ReportRecord, seq: u64) -> Value {
    json!({
        "table": "agent_reports", "chain_seq": seq, "id": r.id, "host": host, "session_id": r.session_id,
        "received_at": micros(r.received_at), "channel": r.channel, "agent_kind": r.agent_kind, "event": r.event,
        "conversation_id": r.conversation_id, "tool_use_id": r.tool_use_id, "tool_name": r.tool_name,
        "pid": r.pid, "exec_id": r.exec_id, "attested": r.attested, "attestation": r.attestation,
        "malformed": r.malformed, "truncated": r.truncated, "body": r.body, "model": r.model,
        "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "cache_read": r.cache_read,
        "cache_creation": r.cache_creation, "cost_micro_usd": r.cost_micro_usd, "cost_estimated": r.cost_estimated,
        "redacted": r.redacted,
    })
}

pub fn call_row(host: &str, c: &CallRecord, seq: u64) -> Value {
    json!({
        "table": "tool_calls", "chain_seq": seq, "id": c.id, "host": host, "session_id": c.session_id,
        "agent_kind": c.agent_kind, "conversation_id": c.conversation_id, "tool_use_id": c.tool_use_id,
        "tool_name": c.tool_name, "input": c.input, "decision": c.decision, "decision_source": c.decision_source,
        "decided_at": c.decided_at.map(micros), "started_at": micros(c.started_at), "ended_at": c.ended_at.map(micros),
        "duration_ms": c.duration_ms, "success": c.success, "output": c.output, "assistant_text": c.assistant_text,
        "prompt_id": c.prompt_id, "attested": c.attested, "verdict": c.verdict, "reason": c.reason,
        "action_ids": c.action_ids, "event_ids": c.event_ids, "report_ids": c.report_ids, "redacted": c.redacted,
    })
}

/// Microseconds since the epoch of a `timestamptz` column, exactly (`extract` is numeric).
macro_rules! us {
    ($c:literal) => {
        concat!("(extract(epoch FROM ", $c, ") * 1000000)::int8")
    };
}

/// For each chained table: its name, the SQL of its row object, and the column that names a
/// row in reports. The objects must equal the `*_row` functions above.
pub const ROW_SQL: &[(&str, &str, &str)] = &[
    (
        "sessions",
        concat!(
            "jsonb_build_object('table', 'sessions', 'chain_seq', chain_seq, 'id', id, 'host', host, 'agent', agent, ",
            "'label', label, 'cgroup', cgroup, 'cgroup_id', cgroup_id, 'uid', uid, 'source', source, 'started_at', ",
            us!("started_at"),
            ", 'redacted', redacted)"
        ),
        "id::text",
    ),
    (
        "session_ends",
        concat!(
            "jsonb_build_object('table', 'session_ends', 'chain_seq', chain_seq, 'session_id', session_id, 'host', host, ",
            "'ended_at', ",
            us!("ended_at"),
            ", 'root_pid', root_pid, 'root_exec_id', root_exec_id, 'root_argv', root_argv, 'actions', actions, ",
            "'events', events, 'events_lost', events_lost, 'files', files, 'net', net, 'redacted', redacted)"
        ),
        "session_id::text",
    ),
    (
        "actions",
        concat!(
            "(jsonb_build_object('table', 'actions', 'chain_seq', chain_seq, 'id', id, 'session_id', session_id, 'host', host, ",
            "'exec_id', exec_id, 'pid', pid, 'argv', argv, 'argv_truncated', argv_truncated, 'command', command, ",
            "'cwd', cwd, 'exe', exe, 'uid', uid, 'started_at', ",
            us!("started_at"),
            ", 'ended_at', ",
            us!("ended_at"),
            ", 'duration_ms', duration_ms, 'exit_code', exit_code, 'signal', signal, 'complete', complete, ",
            "'files', files, 'net', net, 'redacted', redacted)",
            " || CASE WHEN processes_early > 0 THEN jsonb_build_object('processes_early', processes_early) ",
            "ELSE '{}'::jsonb END)"
        ),
        "id::text",
    ),
    (
        "processes",
        concat!(
            "(jsonb_build_object('table', 'processes', 'chain_seq', chain_seq, 'id', id, 'session_id', session_id, ",
            "'action_id', action_id, 'host', host, 'exec_id', exec_id, 'pid', pid, 'ppid', ppid, 'argv', argv, ",
            "'prior_argv', prior_argv, 'argv_truncated', argv_truncated, 'exe', exe, 'cwd', cwd, 'uid', uid, ",
            "'started_at', ",
            us!("started_at"),
            ", 'ended_at', ",
            us!("ended_at"),
            ", 'exit_code', exit_code, 'signal', signal, 'redacted', redacted)",
            " || CASE WHEN prior_argv_omitted > 0 THEN jsonb_build_object('prior_argv_omitted', prior_argv_omitted) ",
            "ELSE '{}'::jsonb END)"
        ),
        "id::text",
    ),
    (
        "events",
        concat!(
            "jsonb_build_object('table', 'events', 'chain_seq', chain_seq, 'id', id, 'host', host, 'session_id', session_id, ",
            "'action_id', action_id, 'exec_id', exec_id, 'seq', seq, 'ts', ",
            us!("ts"),
            ", 'kind', kind, 'pid', pid, 'tid', tid, 'data', data, 'redacted', redacted)"
        ),
        "id::text",
    ),
    (
        "checkpoints",
        concat!(
            "jsonb_build_object('table', 'checkpoints', 'chain_seq', chain_seq, 'id', id, 'host', host, ",
            "'covers_seq', covers_seq, 'head_hash', head_hash, 'at', ",
            us!("at"),
            ", 'kind', kind, 'next_within_secs', next_within_secs, 'key_fingerprint', key_fingerprint, ",
            "'signature', signature)"
        ),
        "id::text",
    ),
    (
        "signing_keys",
        concat!(
            "jsonb_build_object('table', 'signing_keys', 'chain_seq', chain_seq, 'host', host, 'fingerprint', fingerprint, ",
            "'public_key', public_key, 'created_at', ",
            us!("created_at"),
            ")"
        ),
        "fingerprint",
    ),
    (
        "alerts",
        concat!(
            "jsonb_build_object('table', 'alerts', 'chain_seq', chain_seq, 'id', id, 'host', host, 'session_id', session_id, ",
            "'action_id', action_id, 'agent', agent, 'rule', rule, 'severity', severity, 'first_at', ",
            us!("first_at"),
            ", 'last_at', ",
            us!("last_at"),
            ", 'count', count, 'action_ids', action_ids, 'event_ids', event_ids, 'summary', summary, 'details', details)"
        ),
        "id::text",
    ),
    (
        "retention_cuts",
        concat!(
            "jsonb_build_object('table', 'retention_cuts', 'chain_seq', chain_seq, 'id', id, 'host', host, ",
            "'table_name', table_name, 'partition_name', partition_name, 'range_from', ",
            us!("range_from"),
            ", 'range_to', ",
            us!("range_to"),
            ", 'tier', tier, 'rows', rows, 'chained_rows', chained_rows, 'first_seq', first_seq, 'last_seq', last_seq, ",
            "'leaves_hash', leaves_hash, 'archive_file', archive_file, 'archive_sha256', archive_sha256, ",
            "'covers_seq', covers_seq, 'head_hash', head_hash, 'at', ",
            us!("at"),
            ", 'key_fingerprint', key_fingerprint, 'signature', signature) || ",
            "jsonb_strip_nulls(jsonb_build_object('hot_secs', hot_secs, 'warm_secs', warm_secs))"
        ),
        "id::text",
    ),
    (
        "agent_reports",
        concat!(
            "jsonb_build_object('table', 'agent_reports', 'chain_seq', chain_seq, 'id', id, 'host', host, ",
            "'session_id', session_id, 'received_at', ",
            us!("received_at"),
            ", 'channel', channel, 'agent_kind', agent_kind, 'event', event, 'conversation_id', conversation_id, ",
            "'tool_use_id', tool_use_id, 'tool_name', tool_name, 'pid', pid, 'exec_id', exec_id, 'attested', attested, ",
            "'attestation', attestation, 'malformed', malformed, 'truncated', truncated, 'body', body, 'model', model, ",
            "'tokens_in', tokens_in, 'tokens_out', tokens_out, 'cache_read', cache_read, 'cache_creation', cache_creation, ",
            "'cost_micro_usd', cost_micro_usd, 'cost_estimated', cost_estimated, 'redacted', redacted)"
        ),
        "id::text",
    ),
    (
        "tool_calls",
        concat!(
            "jsonb_build_object('table', 'tool_calls', 'chain_seq', chain_seq, 'id', id, 'host', host, ",
            "'session_id', session_id, 'agent_kind', agent_kind, 'conversation_id', conversation_id, ",
            "'tool_use_id', tool_use_id, 'tool_name', tool_name, 'input', input, 'decision', decision, ",
            "'decision_source', decision_source, 'decided_at', ",
            us!("decided_at"),
            ", 'started_at', ",
            us!("started_at"),
            ", 'ended_at', ",
            us!("ended_at"),
            ", 'duration_ms', duration_ms, 'success', success, 'output', output, 'assistant_text', assistant_text, ",
            "'prompt_id', prompt_id, 'attested', attested, 'verdict', verdict, 'reason', reason, ",
            "'action_ids', action_ids, 'event_ids', event_ids, 'report_ids', report_ids, 'redacted', redacted)"
        ),
        "id::text",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_hash, ChainLink};

    #[test]
    fn a_cut_signature_covers_every_field_and_is_domain_separated() {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let pk = hex(key.verifying_key().as_bytes());
        let t = DateTime::from_timestamp_micros(1_764_000_000_000_000).expect("time");
        let mut c = RetentionCut {
            id: Uuid::nil(),
            table: "events".into(),
            partition: "events_p20251124".into(),
            range_from: t,
            range_to: t + chrono::Duration::days(1),
            tier: "warm".into(),
            rows: 3,
            chained_rows: 3,
            first_seq: Some(10),
            last_seq: Some(12),
            leaves_hash: "ab".into(),
            archive_file: None,
            archive_sha256: None,
            covers_seq: 20,
            head_hash: "cd".into(),
            at: t,
            hot_secs: None,
            warm_secs: None,
            key_fingerprint: key_fingerprint(key.verifying_key().as_bytes()),
            signature: String::new(),
            chain: ChainLink::default(),
        };
        // A cut made before the tiers were recorded: its row has no tier keys (its leaf and
        // signed message are what they were).
        assert!(cut_row("h", &c, 1).get("hot_secs").is_none());
        let mut tiered = c.clone();
        tiered.hot_secs = Some(86_400);
        tiered.signature = hex(&key.sign(&cut_message("h", &tiered)).to_bytes());
        assert!(cut_signature_valid("h", &tiered, &pk));
        tiered.hot_secs = Some(60);
        assert!(!cut_signature_valid("h", &tiered, &pk), "the recorded tiers are signed");
        c.signature = hex(&key.sign(&cut_message("h", &c)).to_bytes());
        assert!(cut_signature_valid("h", &c, &pk));
        assert!(!cut_signature_valid("other", &c, &pk));
        let mut more = c.clone();
        more.rows = 2;
        assert!(!cut_signature_valid("h", &more, &pk));
        let mut archived = c.clone();
        archived.archive_sha256 = Some("00".into());
        assert!(!cut_signature_valid("h", &archived, &pk));
        // Domain separated from checkpoints, which sign "agentmon checkpoint v1\n" + ...
        assert!(cut_message("h", &c).starts_with(b"agentmon retention cut v1\n"));
    }

    #[test]
    fn the_leaves_hash_depends_on_every_leaf_and_its_place() {
        let l = |host: &str, seq, b| RetainedLeaf { host: host.into(), seq, leaf: [b; 32], chain_hash: Some([b; 32]) };
        let hash = |ls: &[RetainedLeaf]| {
            let mut h = LeavesHasher::default();
            for x in ls {
                h.add(x);
            }
            h.finish()
        };
        let base = hash(&[l("a", 1, 1), l("a", 2, 2)]);
        assert_ne!(base, hash(&[l("a", 1, 1), l("a", 3, 2)]));
        assert_ne!(base, hash(&[l("a", 1, 1), l("b", 2, 2)]));
        assert_ne!(base, hash(&[l("a", 1, 1), l("a", 2, 3)]));
        assert_ne!(base, hash(&[l("a", 1, 1)]));
        assert_eq!(base, hash(&[l("a", 1, 1), l("a", 2, 2)]));
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes_minimally() {
        let v = json!({"b": 1, "a": [true, null, "x\"y\\z\n\u{1}\u{7f}é"], "A": {"z": -3, "y": 18_446_744_073_709_551_615_u64}});
        assert_eq!(
            canonical(&v),
            "{\"A\":{\"y\":18446744073709551615,\"z\":-3},\"a\":[true,null,\"x\\\"y\\\\z\\n\\u0001\u{7f}é\"],\"b\":1}"
        );
    }

    #[test]
    fn chain_links_depend_on_every_previous_row() {
        let rows = [json!({"table": "t", "chain_seq": 1, "x": "a"}), json!({"table": "t", "chain_seq": 2, "x": "b"})];
        let h1 = link(&GENESIS, &leaf(&rows[0]));
        let h2 = link(&h1, &leaf(&rows[1]));
        // A known-answer test pins the encoding: a third-party verifier must get the same.
        assert_eq!(hex(&leaf(&rows[0])), hex(&Sha256::digest(br#"{"chain_seq":1,"table":"t","x":"a"}"#)));
        assert_ne!(h2, link(&GENESIS, &leaf(&rows[1])));
        let mut swapped = rows[0].clone();
        swapped["chain_seq"] = json!(2);
        assert_ne!(leaf(&swapped), leaf(&rows[1]), "the table and position are part of the leaf");
    }

    #[test]
    fn the_direct_event_encoding_equals_the_generic_one() {
        let data = json!({"path": "/tmp/a\"b\\c\u{1}", "argv": ["x", "é"], "n": -1});
        let e = EventRecord {
            id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            action_id: Some(Uuid::now_v7()),
            exec_id: "4f1c2a9e-1-2".into(),
            seq: 9,
            ts: DateTime::from_timestamp(1_700_000_000, 5000).expect("time"),
            kind: "file".into(),
            pid: 3,
            tid: 4,
            data: String::new(),
            redacted: vec!["jwt".into(), "github_token".into()],
            chain: ChainLink::default(),
            facts: None,
        };
        assert_eq!(
            event_row_canonical("h\tx", &e, &canonical(&data), 77),
            canonical(&event_row("h\tx", &e, &data, 77))
        );
        let e = EventRecord { action_id: None, redacted: Vec::new(), ..e };
        assert_eq!(event_row_canonical("h", &e, &canonical(&data), 1), canonical(&event_row("h", &e, &data, 1)));
    }

    #[test]
    fn serde_json_output_is_already_canonical() {
        // The chain stage stores the correlator's `data.to_string()` as is: this must hold (it
        // would not with serde_json's `preserve_order` feature).
        let v = json!({"z": 1, "a": {"y": [1, -2, "x\"\n\u{1}é/"], "b": null}, "m": true, "big": 18_446_744_073_709_551_615_u64});
        assert_eq!(v.to_string(), canonical(&v));
    }

    #[test]
    fn hex_round_trips() {
        let h: Hash = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn timestamps_are_whole_microseconds() {
        let mut t = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("time");
        truncate_micros(&mut t);
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(micros(t), 1_700_000_000_123_456);
    }

    #[test]
    fn checkpoint_signatures_verify_and_bind_every_field() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pk = hex(key.verifying_key().as_bytes());
        let mut c = Checkpoint {
            id: Uuid::nil(),
            covers_seq: 41,
            head_hash: hex(&[1; 32]),
            at: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            kind: "periodic".into(),
            next_within_secs: 60,
            key_fingerprint: key_fingerprint(key.verifying_key().as_bytes()),
            signature: String::new(),
            chain: ChainLink::default(),
        };
        c.signature = hex(&ed25519_dalek::Signer::sign(&key, &checkpoint_message("h", &c)).to_bytes());
        assert!(signature_valid("h", &c, &pk));
        assert!(!signature_valid("other-host", &c, &pk));
        let mut moved = c.clone();
        moved.covers_seq = 40;
        assert!(!signature_valid("h", &moved, &pk));
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        assert!(!signature_valid("h", &c, &hex(other.verifying_key().as_bytes())));
        assert!(!signature_valid("h", &c, "nothex"));
    }
}
