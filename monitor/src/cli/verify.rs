//! `agentmon verify [--host H] [--since WHEN] [--witness FILE] [--json]`: recompute each
//! host's chain and check its signed checkpoints (`crate::verify`), then print the findings.

use std::{
    io::BufRead as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use futures_util::StreamExt as _;

use crate::{
    cli::{query, table, DbArgs, EXIT_FAILED},
    store,
    verify::{self, Finding, Summary, Verifier, WitnessLine},
};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only this host's chain [default: every host in the database].
    #[arg(long)]
    pub host: Option<String>,
    /// Start at the newest signed checkpoint at or before WHEN (a duration ago or a time).
    #[arg(long, value_parser = query::parse_when)]
    pub since: Option<chrono::DateTime<Utc>>,
    /// Checkpoints kept elsewhere (the daemon's checkpoint log, copied off the host): each must
    /// agree with the database.
    #[arg(long, value_name = "FILE", conflicts_with = "packet")]
    pub witness: Option<PathBuf>,
    /// Check a cold retention archive (`<partition>.jsonl.gz`) against its signed cut.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["packet", "witness", "since", "host"])]
    pub archive: Option<PathBuf>,
    /// Check an incident packet (`agentmon export`) offline, with no database.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["host", "since"])]
    pub packet: Option<PathBuf>,
    /// With --packet: the host's ed25519 public key (64 hex digits) or its fingerprint (16),
    /// obtained apart from the packet (the `public_key` of the host's checkpoint log, or the
    /// KEYS of `agentmon verify` on the host). Repeat it for a packet of several hosts. Without
    /// it the packet is unauthenticated (exit 4).
    #[arg(long, value_name = "HEX", requires = "packet", value_parser = parse_key)]
    pub key: Vec<String>,
    #[command(flatten)]
    pub db: DbArgs,
}

/// A public key (64 hex digits) or a key fingerprint (16), lowercased.
fn parse_key(s: &str) -> Result<String, String> {
    let k = s.trim().to_ascii_lowercase();
    if (k.len() == 64 || k.len() == 16) && k.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(k)
    } else {
        Err("expected the host's public key (64 hex digits) or its fingerprint (16 hex digits)".into())
    }
}

fn read_witness(path: &PathBuf) -> anyhow::Result<Vec<WitnessLine>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read the witness file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let w: WitnessLine = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not a checkpoint line ({e}); pass the daemon's checkpoint log",
                path.display(),
                i + 1
            )
        })?;
        out.push(w);
    }
    Ok(out)
}

/// Returns the exit code.
pub async fn run(args: &VerifyArgs) -> anyhow::Result<i32> {
    if let Some(p) = &args.packet {
        return super::export::verify_packet(p, &args.key, args.db.json);
    }
    if let Some(a) = &args.archive {
        let pool = super::pool(&args.db).await?;
        return super::retention::verify_archive(&pool, a, args.db.json).await;
    }
    let witness = args.witness.as_ref().map(read_witness).transpose()?;
    let pool = super::pool(&args.db).await?;
    let hosts = match &args.host {
        Some(h) => vec![h.clone()],
        None => store::verify::hosts(&pool).await.context("listing hosts")?,
    };
    let mut failed = false;
    let mut reports = Vec::new();
    for host in &hosts {
        let keys = store::verify::keys(&pool, host).await?;
        let checkpoint = match args.since {
            Some(since) => store::verify::checkpoint_before(&pool, host, since).await?,
            None => None,
        };
        let (start, prev) = verify::start_at(host, checkpoint.as_ref(), &keys)?;
        let mut v = Verifier::new(host, keys, witness.clone().unwrap_or_default(), start, prev);
        v.set_known_cuts(store::verify::known_cuts(&pool).await?);
        let t0 = Instant::now();
        let mut last_note = Instant::now();
        let mut rows = std::pin::pin!(store::verify::chain_rows(&pool, host, start));
        while let Some(r) = rows.next().await {
            v.feed(&r.context("reading the chain")?);
            if last_note.elapsed() >= Duration::from_secs(2) {
                last_note = Instant::now();
                let n = v.summary.rows;
                eprintln!(
                    "agentmon: verify: {host}: {n} rows checked ({:.0} rows/s)",
                    rate(n, t0.elapsed().as_secs_f64())
                );
            }
        }
        for (table, id) in store::verify::unchained(&pool, host).await? {
            v.findings.push(Finding {
                host: host.clone(),
                kind: "unchained",
                table: Some(table),
                id: Some(id),
                seq: None,
                detail: "no place in the chain: inserted by hand, or written before the chain existed".into(),
            });
        }
        for c in std::mem::take(&mut v.cuts) {
            let leaves = store::verify::cut_leaves(&pool, c.id).await?;
            v.findings.extend(verify::check_cut(host, &c, &leaves));
        }
        v.finish(Utc::now());
        if args.host.is_some() && v.summary.rows == 0 && v.summary.keys.is_empty() {
            anyhow::bail!(
                "host `{host}` has no evidence in this database (hosts are listed by `agentmon verify` without --host)"
            );
        }
        let secs = t0.elapsed().as_secs_f64();
        failed |= !v.findings.is_empty();
        reports.push((v.summary, v.findings, secs));
    }
    if args.db.json {
        for (summary, findings, secs) in &reports {
            for f in findings {
                let mut o = serde_json::to_value(f)?;
                o["type"] = "finding".into();
                println!("{}", table::json_line(&o)?);
            }
            let mut o = serde_json::to_value(summary)?;
            o["type"] = "summary".into();
            o["ok"] = findings.is_empty().into();
            o["rows_per_sec"] = rate(summary.rows, *secs).round().into();
            println!("{}", table::json_line(&o)?);
        }
    } else {
        print_human(&reports);
    }
    Ok(if failed { EXIT_FAILED } else { 0 })
}

#[expect(clippy::cast_precision_loss, reason = "a rate for people to read")]
fn rate(rows: u64, secs: f64) -> f64 {
    rows as f64 / secs.max(1e-9)
}

fn print_human(reports: &[(Summary, Vec<Finding>, f64)]) {
    let all: Vec<&Finding> = reports.iter().flat_map(|r| &r.1).collect();
    if !all.is_empty() {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|f| {
                vec![
                    f.host.clone(),
                    f.kind.to_owned(),
                    f.table.clone().unwrap_or_else(|| "-".into()),
                    f.id.clone().unwrap_or_else(|| "-".into()),
                    f.seq.map_or("-".into(), |s| s.to_string()),
                    f.detail.clone(),
                ]
            })
            .collect();
        table::print(&["HOST", "PROBLEM", "TABLE", "ID", "SEQ", "DETAIL"], &rows);
        println!();
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|(s, f, secs)| {
            vec![
                s.host.clone(),
                if f.is_empty() { "verified".into() } else { format!("FAILED ({} problems)", f.len()) },
                s.rows.to_string(),
                match (s.first_seq, s.last_seq) {
                    (Some(a), Some(b)) => format!("{a}..{b}"),
                    _ => "-".into(),
                },
                s.checkpoints.to_string(),
                s.last_checkpoint_at.map_or("-".into(), |t| {
                    format!("{} ({})", table::local_time(t), s.last_checkpoint_kind.as_deref().unwrap_or("-"))
                }),
                s.unsigned_rows.to_string(),
                s.keys.join(","),
                format!("{:.0}", rate(s.rows, *secs)),
            ]
        })
        .collect();
    table::print(
        &["HOST", "RESULT", "ROWS", "SEQ", "CHECKPOINTS", "LAST CHECKPOINT", "UNSIGNED", "KEYS", "ROWS/S"],
        &rows,
    );
}
