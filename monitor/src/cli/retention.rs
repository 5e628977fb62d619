//! `agentmon retention` (asks the daemon, which signs the cuts) and `agentmon verify --archive`
//! (checks a cold archive against its signed cut). The core is `crate::retention`, the task `crate::daemon::retention`.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use serde_json::json;

use super::{table, EXIT_FAILED};
use crate::{
    chain,
    control::{self, Request, Response},
    retention::{self, Report},
};

/// Returns the exit code: 0 when every planned partition was removed (or, with `dry_run`,
/// listed), 1 when one failed (it stays, and is retried at the next run).
pub fn run(runtime_dir: &Path, dry_run: bool, json: bool) -> anyhow::Result<i32> {
    if !dry_run {
        eprintln!("agentmon: retention: signing cuts and dropping partitions (large partitions take a while)...");
    }
    let resp = control::request_within(runtime_dir, &Request::Retention { dry_run }, Duration::from_hours(6))?;
    let Response::Retention(r) = resp else { anyhow::bail!("unexpected reply from the daemon: {resp:?}") };
    let failed = r.items.iter().filter(|i| i.error.is_some()).count();
    if json {
        for i in &r.items {
            let mut o = serde_json::to_value(i)?;
            o["type"] = "partition".into();
            println!("{}", table::json_line(&o)?);
        }
        println!(
            "{}",
            table::json_line(
                &json!({"type": "summary", "as_of": r.as_of, "dry_run": r.dry_run, "partitions": r.items.len(), "failed": failed, "expired_archives": r.expired_archives})
            )?
        );
    } else {
        print_human(&r);
    }
    Ok(i32::from(failed > 0))
}

fn print_human(r: &Report) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.items.is_empty() {
        println!("nothing to remove as of {}", table::local_time(r.as_of));
    } else {
        let rows: Vec<Vec<String>> = r
            .items
            .iter()
            .map(|i| {
                vec![
                    i.partition.clone(),
                    i.tier.clone(),
                    i.rows.to_string(),
                    i.error.as_ref().map_or_else(|| i.status.clone(), |e| format!("failed: {e}")),
                    i.cut_id.map_or("-".into(), |c| c.to_string()),
                    i.archive_file.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table::print(&["PARTITION", "TIER", "ROWS", "STATUS", "CUT", "ARCHIVE"], &rows);
        let ok = r.items.iter().filter(|i| i.error.is_none()).count();
        println!("\n{verb} {ok} of {} partitions as of {}", r.items.len(), table::local_time(r.as_of));
    }
    for f in &r.expired_archives {
        println!(
            "{} archive past the cold tier: {}",
            if r.dry_run { "would delete" } else { "deleted" },
            table::visible(f)
        );
    }
}

/// `verify --archive FILE`: the file's SHA-256 is the one a signed cut recorded, and its rows
/// are the ones the cut counted, with the leaves it signed. Returns the exit code.
pub async fn verify_archive(pool: &sqlx::PgPool, path: &Path, json: bool) -> anyhow::Result<i32> {
    let sha = retention::file_sha256(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".jsonl.gz"))
        .unwrap_or_default()
        .to_owned();
    let row = crate::store::retention::archive_cut(pool, &sha, &name).await?;
    let mut problems = Vec::new();
    let mut out = json!({"file": path.display().to_string(), "sha256": sha});
    match row {
        None => problems.push(format!("no retention cut records an archive with SHA-256 {sha} or of partition {name}")),
        Some(row) => {
            let host = row["host"].as_str().unwrap_or_default().to_owned();
            let c = crate::verify::cut_fields(&row).context("reading the retention cut")?;
            out["cut_id"] = json!(c.id);
            out["host"] = json!(host);
            out["partition"] = json!(c.partition);
            out["tier"] = json!(c.tier);
            out["chain_seq"] = row["chain_seq"].clone();
            out["rows"] = json!(c.rows);
            if c.archive_sha256.as_deref() != Some(sha.as_str()) {
                problems.push(format!(
                    "its SHA-256 is {sha}; the cut of {} signed {}",
                    c.partition,
                    c.archive_sha256.as_deref().unwrap_or("no archive")
                ));
            }
            match crate::store::verify::keys(pool, &host).await?.get(&c.key_fingerprint) {
                None => problems.push(format!(
                    "the cut is signed by key {}, which is not registered for {host}",
                    c.key_fingerprint
                )),
                Some(k) if !chain::cut_signature_valid(&host, &c, k) => {
                    problems.push("the cut's signature does not verify".into());
                }
                Some(_) => {}
            }
            let kept = crate::store::verify::cut_leaves(pool, c.id).await?;
            if let Some(f) = crate::verify::check_cut(&host, &c, &kept) {
                problems.push(f.detail);
            }
            match retention::read_archive(path) {
                Err(e) => problems.push(format!("{e:#}")),
                Ok(lines) => problems.extend(retention::check_archive_lines(&lines, &c, &kept)),
            }
        }
    }
    out["ok"] = json!(problems.is_empty());
    out["problems"] = json!(problems);
    if json {
        println!("{}", table::json_line(&out)?);
    } else if problems.is_empty() {
        let line = format!(
            "archive verified: {} rows of {} ({} tier), cut {} at chain_seq {} of {}, SHA-256 {sha}",
            out["rows"],
            out["partition"].as_str().unwrap_or("-"),
            out["tier"].as_str().unwrap_or("-"),
            out["cut_id"].as_str().unwrap_or("-"),
            out["chain_seq"],
            out["host"].as_str().unwrap_or("-")
        );
        println!("{}", table::visible(&line));
    } else {
        println!("archive FAILED: {}", table::visible(&path.display().to_string()));
        for p in &problems {
            println!("  {}", table::visible(p));
        }
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_FAILED })
}
