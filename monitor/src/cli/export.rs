//! `agentmon export`: gather an incident packet (`crate::packet`) from the database and write
//! it; and `agentmon verify --packet`, which prints what `packet::verify_text` finds.

use std::{collections::BTreeMap, path::Path};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::{
    chain::{self, GENESIS},
    packet::{self, check, html, FORMAT},
    record::Hash,
    store,
    text::hex,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Html,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A session id, or a unique prefix or suffix of one (repeatable).
    #[arg(long, value_parser = super::query::parse_id_prefix)]
    pub session: Vec<String>,
    /// Sessions started at or after WHEN (a duration ago or a time).
    #[arg(long, value_parser = super::query::parse_when)]
    pub since: Option<DateTime<Utc>>,
    /// Sessions started before WHEN.
    #[arg(long, value_parser = super::query::parse_when)]
    pub until: Option<DateTime<Utc>>,
    /// Sessions of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// `json` (canonical JSON) or `html` (a single page that works offline).
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Where to write the packet.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: std::path::PathBuf,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// Returns the exit code.
pub async fn run(args: &ExportArgs) -> anyhow::Result<i32> {
    if args.session.is_empty() && args.since.is_none() && args.until.is_none() && args.agent.is_none() {
        bail!("say which sessions to export: --session ID, or --since/--until/--agent");
    }
    let pool = super::pool(&args.db).await?;
    let filter = store::export::Selection {
        sessions: &args.session,
        since: args.since,
        until: args.until,
        agent: args.agent.as_deref(),
    };
    let sessions = store::export::select_sessions(&pool, &filter).await?;
    if sessions.is_empty() {
        bail!("no session matches; `agentmon sessions` lists them");
    }
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, host, ended) in &sessions {
        if !ended {
            eprintln!("agentmon: export: session {id} is still live; the packet holds what is stored so far");
        }
        by_host.entry(host.clone()).or_default().push(id.clone());
    }
    let mut proofs = Vec::new();
    for (host, ids) in &by_host {
        proofs.push(host_proof(&pool, host, ids, &args.db.addr.runtime_dir).await?);
    }
    let packet = json!({
        "format": FORMAT,
        "exported_at": chain::micros(Utc::now()),
        "sessions": sessions.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        "proofs": proofs,
    });
    let report = check(&packet)
        .map_err(|e| anyhow::anyhow!("the exported packet does not verify: {e}; run `agentmon verify`"))?;
    let bytes = match args.format {
        Format::Json => chain::canonical(&packet) + "\n",
        Format::Html => html(&packet, &report),
    };
    write_atomic(&args.output, bytes.as_bytes())?;
    eprintln!(
        "agentmon: wrote {} ({} sessions, {} rows in full, {} leaves, {}, signed by key {}); a reviewer checks it with \
         `agentmon verify --packet FILE --key KEY`, KEY being the host's public key from its checkpoint log",
        args.output.display(),
        sessions.len(),
        report.rows,
        report.leaves,
        report.checkpoints_text(),
        report.keys.join(", ")
    );
    Ok(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// How long `export` waits for a checkpoint it asked the daemon for to be stored.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Ask the daemon on this machine, if it runs and writes `host`'s chain, to sign a checkpoint
/// now. Returns whether it did (or one already covers its head).
async fn ask_for_checkpoint(host: &str, runtime_dir: &std::path::Path) -> bool {
    let dir = runtime_dir.to_owned();
    let reply =
        tokio::task::spawn_blocking(move || crate::control::request(&dir, &crate::control::Request::Checkpoint)).await;
    matches!(reply, Ok(Ok(crate::control::Response::Checkpoint { host: h })) if h == host)
}

/// The proof for one host: its stretch of chain covering the sessions' rows.
async fn host_proof(
    pool: &sqlx::PgPool,
    host: &str,
    ids: &[String],
    runtime_dir: &std::path::Path,
) -> anyhow::Result<Value> {
    let (lo, hi) = store::export::session_span(pool, host, ids).await.context("finding the sessions' rows")?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        bail!("the sessions on {host} have no chained rows (written before the chain existed?)")
    };
    let mut checkpoint = store::export::covering_checkpoint(pool, host, hi).await?;
    if checkpoint.is_none() && ask_for_checkpoint(host, runtime_dir).await {
        // Right after an incident: the daemon has just signed one; wait until it is stored.
        eprintln!("agentmon: export: no signed checkpoint covers these sessions yet; the daemon is signing one (waiting up to {} s)", CHECKPOINT_WAIT.as_secs());
        let until = std::time::Instant::now() + CHECKPOINT_WAIT;
        while checkpoint.is_none() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            checkpoint = store::export::covering_checkpoint(pool, host, hi).await?;
        }
    }
    let Some(checkpoint) = checkpoint else {
        bail!("no signed checkpoint covers these sessions yet (the daemon writes one every few seconds while records flow, and at least once a minute); try again shortly")
    };
    let covers = checkpoint["covers_seq"].as_i64().context("checkpoint without covers_seq")?;
    let fingerprint = checkpoint["key_fingerprint"].as_str().unwrap_or_default().to_owned();
    let public_key = store::export::public_key(pool, host, &fingerprint).await?;
    let public_key =
        public_key.with_context(|| format!("the key {fingerprint} that signed the checkpoint is not registered"))?;
    let prev: Hash = if lo <= 1 {
        GENESIS
    } else {
        let h = store::export::chain_hash_at(pool, host, lo - 1).await?;
        h.and_then(|h| h.try_into().ok()).with_context(|| {
            format!("the chain of {host} has no row {} before the sessions; run `agentmon verify`", lo - 1)
        })?
    };
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut entries = Vec::new();
    let mut rows = std::pin::pin!(crate::store::verify::chain_rows(pool, host, lo as u64));
    let mut last_note = std::time::Instant::now();
    while let Some(r) = rows.next().await {
        let r = r.context("reading the chain")?;
        if r.seq > covers as u64 {
            break;
        }
        let key = packet::SESSION_TABLES.iter().find(|(t, _)| *t == r.table).map(|(_, k)| *k);
        let mine = key.and_then(|k| r.row[k].as_str()).is_some_and(|id| wanted.contains(id));
        entries.push(if mine {
            json!({"seq": r.seq, "row": r.row})
        } else {
            json!({"seq": r.seq, "leaf": hex(&crate::verify::row_leaf(&r))})
        });
        if last_note.elapsed().as_secs() >= 2 {
            last_note = std::time::Instant::now();
            eprintln!("agentmon: export: {host}: {} of {} rows read", r.seq - lo as u64 + 1, covers - lo + 1);
        }
    }
    Ok(
        json!({"host": host, "first_seq": lo, "prev_hash": hex(&prev), "entries": entries, "checkpoint": checkpoint, "public_key": public_key}),
    )
}

/// `agentmon verify --packet FILE [--key HEX]...`; returns the exit code: 0 when it verifies
/// and is signed by a key given, `EXIT_UNAUTHENTICATED` when it is consistent but no key was
/// given, `EXIT_FAILED` otherwise.
pub fn verify_packet(path: &Path, keys: &[String], json_out: bool) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the packet {}", path.display()))?;
    let (code, line, object) = match packet::verify_text(&text, keys) {
        Ok(r) => {
            let mut o = json!({
                "ok": r.authenticated, "authenticated": r.authenticated, "rows": r.rows, "leaves": r.leaves,
                "checkpoints": r.checkpoints.iter().map(|(h, s)| json!({"host": h, "covers_seq": s})).collect::<Vec<_>>(),
                "keys": r.keys,
            });
            let proof = format!(
                "{} rows in full and {} leaf hashes chain to the signed {} (key {})",
                r.rows,
                r.leaves,
                r.checkpoints_text(),
                r.keys.join(", ")
            );
            if r.authenticated {
                (0, format!("packet verifies: {proof}"), o)
            } else {
                let why = "that key came with the packet, and anyone can sign a packet with a key of their own: \
                           pass the host's public key (or its fingerprint), obtained apart from the packet, with --key";
                o["error"] = json!(format!("unauthenticated: no --key given; {why}"));
                (super::EXIT_UNAUTHENTICATED, format!("packet is UNAUTHENTICATED: {proof}, but {why}"), o)
            }
        }
        Err(e) => (super::EXIT_FAILED, format!("packet does NOT verify: {e}"), json!({"ok": false, "error": e})),
    };
    if json_out {
        println!("{}", super::table::json_line(&object)?);
    } else {
        println!("{}", super::table::visible(&line));
    }
    Ok(code)
}
