//! Redact stage: secrets in a record's text (argv and so `command`, cwd, exe, paths, socket
//! names, DNS names, every string of a raw event) are replaced before the record is chained,
//! queued, spooled, stored or logged. The rules are in `crate::redact`; this file applies them
//! to each kind of record and keeps the fingerprint key (`<state dir>/redaction.key`).

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    record::{EventFacts, FileSummary, NetSummary, Output, ProcessRecord},
    redact::{Hits, RedactConfig, Redactor},
    text::shell_join,
};

pub const KEY_FILE: &str = "redaction.key";

/// Load the per-installation fingerprint key (made on first start) and build the rules.
pub fn open(state_dir: &Path, cfg: &RedactConfig) -> anyhow::Result<Redactor> {
    let path = state_dir.join(KEY_FILE);
    let key = match std::fs::read(&path) {
        Ok(k) if k.len() == 32 => k,
        Ok(_) => anyhow::bail!(
            "{} is not a 32-byte key; move it away to make a new one (fingerprints will change)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => super::chain::random_key(&path)?.to_vec(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(Redactor::new(&key, cfg)?)
}

fn opt(r: &Redactor, s: &mut Option<String>, hits: &mut Hits) {
    if let Some(s) = s {
        r.text(s, hits);
    }
}

fn summaries(r: &Redactor, files: &mut [FileSummary], net: &mut [NetSummary], hits: &mut Hits) {
    for f in files {
        r.text(&mut f.path, hits);
    }
    for n in net {
        opt(r, &mut n.addr, hits);
        opt(r, &mut n.host, hits);
    }
}

fn facts(r: &Redactor, f: &mut EventFacts) {
    let mut hits = Hits::new();
    r.argv(&mut f.argv, &mut hits);
    r.text(&mut f.exe, &mut hits);
    for (path, _) in &mut f.files {
        r.text(path, &mut hits);
    }
    if let Some(n) = &mut f.net {
        opt(r, &mut n.addr, &mut hits);
        opt(r, &mut n.host, &mut hits);
    }
}

fn process(r: &Redactor, p: &mut ProcessRecord) {
    let mut hits = Hits::new();
    r.argv(&mut p.argv, &mut hits);
    for a in &mut p.prior_argv {
        r.argv(a, &mut hits);
    }
    r.text(&mut p.exe, &mut hits);
    opt(r, &mut p.cwd, &mut hits);
    p.redacted = hits.into_iter().collect();
}

/// Redact a record in place and list the rules that fired on it. Returns an event's data,
/// parsed, for the chain stage, when it had to be parsed (else it is the correlator's
/// serialisation, which is already canonical).
pub fn apply(r: &Redactor, o: &mut Output) -> Option<Value> {
    let mut hits = Hits::new();
    match o {
        Output::SessionStart(s) => {
            r.text(&mut s.agent, &mut hits);
            opt(r, &mut s.label, &mut hits);
            r.text(&mut s.cgroup, &mut hits);
            s.redacted = hits.into_iter().collect();
            None
        }
        Output::Event(e) => {
            // The facts the alert rules read (the event's argv, exe, paths, endpoint) are
            // redacted like the data, so an alert is built only from redacted text.
            if let Some(f) = e.facts.as_deref_mut() {
                facts(r, f);
            }
            // Most events hold no rule's keyword anywhere: no need to parse them.
            if !r.is_candidate(&e.data) {
                return None;
            }
            let mut data: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| Value::String(e.data.clone()));
            r.json(&mut data, &mut hits);
            e.redacted = hits.into_iter().collect();
            Some(data)
        }
        Output::Process(p) => {
            process(r, &mut p.rec);
            None
        }
        Output::Action(a) => {
            if r.argv(&mut a.argv, &mut hits) {
                a.command = shell_join(&a.argv);
            }
            r.text(&mut a.exe, &mut hits);
            opt(r, &mut a.cwd, &mut hits);
            summaries(r, &mut a.files, &mut a.net, &mut hits);
            for p in &mut a.processes {
                process(r, p);
            }
            a.redacted = hits.into_iter().collect();
            None
        }
        Output::SessionEnd(e) => {
            r.argv(&mut e.root_argv, &mut hits);
            opt(r, &mut e.root_exec_id, &mut hits);
            summaries(r, &mut e.files, &mut e.net, &mut hits);
            e.redacted = hits.into_iter().collect();
            None
        }
        // An alert's text quotes paths and commands.
        Output::Alert(a) => {
            r.text(&mut a.summary, &mut hits);
            r.json(&mut a.details, &mut hits);
            None
        }
        // The agent's account: every string in it may quote a secret.
        Output::Report(rep) => {
            json_text(r, &mut rep.body, &mut hits);
            opt(r, &mut rep.tool_name, &mut hits);
            rep.redacted = hits.into_iter().collect();
            None
        }
        Output::Call(c) => {
            if let Some(i) = c.input.as_mut() {
                json_text(r, i, &mut hits);
            }
            for t in [&mut c.output, &mut c.assistant_text, &mut c.tool_name] {
                opt(r, t, &mut hits);
            }
            r.text(&mut c.reason, &mut hits);
            c.redacted = hits.into_iter().collect();
            None
        }
        Output::Checkpoint(_) | Output::SigningKey(_) | Output::RetentionCut(_) => None,
    }
}

/// Redact JSON text as JSON (so a rule sees each string), or as plain text when it is not JSON.
fn json_text(r: &Redactor, text: &mut String, hits: &mut Hits) {
    if !r.is_candidate(text) {
        return;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            if r.json(&mut v, hits) {
                *text = v.to_string();
            }
        }
        Err(_) => {
            r.text(text, hits);
        }
    }
}

/// Redact the text of the correlation state before it is written to disk at a graceful stop.
pub fn state(r: &Redactor, v: &mut Value) {
    let mut hits = Hits::new();
    r.json(v, &mut hits);
}
