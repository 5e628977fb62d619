//! Retention with proof (docs/storage.md, "Retention"): once a day, and on `agentmon retention`, the
//! daemon removes whole day partitions past their tier. This file is the core: the tiers,
//! the plan, the report and the archives. The daily task is `daemon/retention.rs`; its SQL is
//! `store/retention.rs`; the command is `cli/retention.rs`.
//!
//! - hot (`hot`): everything is kept.
//! - warm (past `hot`): the raw `events` partition of the day is dropped; sessions, actions,
//!   processes, session ends and alerts stay.
//! - cold (past `warm`): every partition of the day is written to a gzip JSON-lines archive
//!   (one row object of `chain::ROW_SQL` per line) with a SHA-256, then dropped.
//! - archives past `cold` are deleted from the archive directory (their cuts stay).
//!
//! Each partition is removed in three steps: read it and compute each chained row's leaf (and
//! the archive); have the main loop sign and chain a [`RetentionCut`] naming it, and wait until
//! the cut is stored; then, in one transaction, insert the leaves into `retained_leaves` and
//! call `agentmon_retention_drop`, which drops the partition only if the cut counts exactly its
//! rows and every chained row has its leaf. `verify` links through the leaves.

use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{chain, chain::RetainedLeaf, text::hex};

/// `[retention]` in the config file. Unset: nothing is ever removed.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep everything this long (e.g. `7d`); then raw events are dropped.
    pub hot: Option<String>,
    /// Keep the rest this long (e.g. `30d`); then archive and drop. Unset: never.
    pub warm: Option<String>,
    /// Keep archives this long (e.g. `365d`); then delete them. Unset: forever.
    pub cold: Option<String>,
    /// Where cold archives go (default `<state dir>/archive`).
    pub archive_dir: Option<PathBuf>,
}

/// The tiers, as durations.
#[derive(Debug, Clone)]
pub struct Policy {
    pub hot: chrono::Duration,
    pub warm: Option<chrono::Duration>,
    pub cold: Option<chrono::Duration>,
    pub archive_dir: PathBuf,
}

impl Policy {
    /// None when retention is not configured. Errors name the key.
    pub fn new(c: &RetentionConfig, state_dir: &Path) -> Result<Option<Self>, (String, String)> {
        let parse = |k: &str, v: &Option<String>| {
            v.as_deref().map(crate::alerts::parse_duration).transpose().map_err(|m| (format!("retention.{k}"), m))
        };
        let (hot, warm, cold) = (parse("hot", &c.hot)?, parse("warm", &c.warm)?, parse("cold", &c.cold)?);
        let Some(hot) = hot else {
            if warm.is_some() || cold.is_some() || c.archive_dir.is_some() {
                return Err(("retention.hot".into(), "missing: set hot (e.g. \"7d\") to turn retention on".into()));
            }
            return Ok(None);
        };
        if hot < chrono::Duration::days(1) {
            return Err(("retention.hot".into(), "must be at least 1d: retention removes whole UTC days".into()));
        }
        if let Some(w) = warm.filter(|w| *w < hot) {
            return Err((
                "retention.warm".into(),
                format!("{}d is shorter than hot; expected hot <= warm <= cold", w.num_days()),
            ));
        }
        if let Some(cold) = cold {
            match warm {
                None => {
                    return Err(("retention.cold".into(), "needs warm: archives are made when rows leave warm".into()))
                }
                Some(w) if cold < w => {
                    return Err((
                        "retention.cold".into(),
                        format!("{}d is shorter than warm; expected hot <= warm <= cold", cold.num_days()),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(Some(Self {
            hot,
            warm,
            cold,
            archive_dir: c.archive_dir.clone().unwrap_or_else(|| state_dir.join("archive")),
        }))
    }
}

/// The day-partitioned tables and their time column, children before parents.
pub const TABLES: &[(&str, &str)] = &[
    ("events", "ts"),
    ("agent_reports", "received_at"),
    ("tool_calls", "started_at"),
    ("alerts", "first_at"),
    ("processes", "started_at"),
    ("actions", "started_at"),
    ("session_ends", "ended_at"),
    ("sessions", "started_at"),
];

pub fn time_column(table: &str) -> Option<&'static str> {
    TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c)
}

pub fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

/// `<table>_pYYYYMMDD` → (table, day).
pub fn parse_partition(name: &str) -> Option<(&'static str, NaiveDate)> {
    let (table, day) = name.rsplit_once("_p")?;
    let table = TABLES.iter().find(|(t, _)| *t == table)?.0;
    (day.len() == 8).then(|| NaiveDate::parse_from_str(day, "%Y%m%d").ok()).flatten().map(|d| (table, d))
}

pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// What to do with each partition at `as_of`: a day is past a tier once its whole day is.
pub fn plan(
    parts: &[(&'static str, NaiveDate)],
    p: &Policy,
    as_of: DateTime<Utc>,
) -> Vec<(&'static str, NaiveDate, &'static str)> {
    let mut out: Vec<_> = parts
        .iter()
        .filter_map(|&(table, day)| {
            let end = day_start(day) + chrono::Duration::days(1);
            if p.warm.is_some_and(|w| end <= as_of - w) {
                Some((table, day, "cold"))
            } else if table == "events" && end <= as_of - p.hot {
                Some((table, day, "warm"))
            } else {
                None
            }
        })
        .collect();
    let order = |t: &str| TABLES.iter().position(|(x, _)| *x == t).unwrap_or(usize::MAX);
    out.sort_by_key(|(t, d, _)| (*d, order(t)));
    out
}

/// One partition in a retention run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub table: String,
    pub partition: String,
    pub day: NaiveDate,
    /// `warm` (raw events dropped) or `cold` (archived, then dropped).
    pub tier: String,
    pub rows: u64,
    /// `planned` (dry run), `dropped`, or `failed`.
    pub status: String,
    pub cut_id: Option<Uuid>,
    pub archive_file: Option<String>,
    pub archive_sha256: Option<String>,
    pub error: Option<String>,
}

/// What `agentmon retention` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub as_of: DateTime<Utc>,
    pub dry_run: bool,
    pub items: Vec<Item>,
    /// Archives past `cold`, deleted (or, in a dry run, to be deleted).
    pub expired_archives: Vec<String>,
}

/// A chained row's retained leaf: what `verify` links through once the row is gone.
pub fn retained(host: String, seq: i64, hash: Option<Vec<u8>>, row: &Value) -> RetainedLeaf {
    RetainedLeaf { host, seq: seq as u64, leaf: chain::leaf(row), chain_hash: hash.and_then(|h| h.try_into().ok()) }
}

/// A cold archive being written: gzip of one canonical row object per line, to a temporary
/// name renamed into place once synced.
pub struct Archive {
    tmp: PathBuf,
    path: PathBuf,
    gz: flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>,
}

/// Make sure only this user can read, add, replace or remove what is in the archive
/// directory `dir`: made 0700 when missing; refused when it is not a directory of this user;
/// narrowed to 0700 when it lets others in.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the archive directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("reading the archive directory {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        anyhow::bail!(
            "the archive directory {} must be a directory of uid {me} (the daemon's), so no one else can replace an archive; it is {} of uid {}",
            dir.display(),
            if meta.is_dir() { "a directory" } else { "not a directory" },
            meta.uid()
        );
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making the archive directory {} private (0700)", dir.display()))?;
    }
    Ok(())
}

impl Archive {
    /// Start the archive of `partition` in `dir` (see [`private_dir`]). The file is created new
    /// (`O_EXCL`: never through a link or into a file already there), mode 0600, under a
    /// temporary name that [`Archive::finish`] renames into place.
    pub fn create(dir: &Path, partition: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        private_dir(dir)?;
        let path = dir.join(format!("{partition}.jsonl.gz"));
        let tmp = dir.join(format!(".{partition}.jsonl.gz.tmp"));
        // Left by a run that stopped half-way.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", tmp.display()));
            }
            _ => {}
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            tmp,
            path,
            gz: flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default()),
        })
    }

    pub fn line(&mut self, row: &Value) -> std::io::Result<()> {
        self.gz.write_all(chain::canonical(row).as_bytes())?;
        self.gz.write_all(b"\n")
    }

    pub fn finish(self) -> anyhow::Result<(PathBuf, String)> {
        let f = self.gz.finish()?.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        let sha = file_sha256(&self.path)?;
        Ok((self.path, sha))
    }
}

/// The SHA-256 of a file, lowercase hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// The lines of an archive, in order: each the canonical text of a row object, so a row's
/// leaf is the SHA-256 of its line.
pub fn read_archive(path: &Path) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = std::io::BufReader::new(flate2::read::GzDecoder::new(f));
    r.lines().collect::<Result<_, _>>().with_context(|| format!("{}: not a gzip archive, or cut short", path.display()))
}

/// Delete archives of days that ended before `before`.
pub fn expire_archives(dir: &Path, before: DateTime<Utc>, dry_run: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, day)) = name.strip_suffix(".jsonl.gz").and_then(parse_partition) else { continue };
        if day_start(day) + chrono::Duration::days(1) <= before && (dry_run || std::fs::remove_file(e.path()).is_ok()) {
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

/// The archive's rows against the cut: their count, their table, and each chained row's leaf
/// against the one the cut kept (which `check_cut` ties to the signed leaves hash).
pub fn check_archive_lines(lines: &[String], c: &crate::record::RetentionCut, kept: &[RetainedLeaf]) -> Vec<String> {
    let mut problems = Vec::new();
    let kept: std::collections::HashMap<(&str, u64), &RetainedLeaf> =
        kept.iter().map(|l| ((l.host.as_str(), l.seq), l)).collect();
    let mut chained = 0u64;
    for (i, line) in lines.iter().enumerate() {
        let row: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("line {}: not a JSON row ({e})", i + 1));
                continue;
            }
        };
        if row["table"].as_str() != Some(c.table.as_str()) {
            problems.push(format!("line {}: a row of {} in an archive of {}", i + 1, row["table"], c.table));
        }
        if let (Some(host), Some(seq)) = (row["host"].as_str(), row["chain_seq"].as_u64()) {
            chained += 1;
            // The line is the row's canonical text, so its leaf is the line's hash.
            match kept.get(&(host, seq)) {
                Some(l) if l.leaf == chain::leaf_of_text(line) => {}
                Some(_) => problems
                    .push(format!("line {}: {host} chain_seq {seq} differs from the row the cut removed", i + 1)),
                None => problems.push(format!("line {}: {host} chain_seq {seq} is not a row the cut removed", i + 1)),
            }
        }
    }
    if lines.len() as u64 != c.rows || chained != c.chained_rows {
        problems.push(format!(
            "{} rows ({chained} chained); the cut counted {} ({} chained)",
            lines.len(),
            c.rows,
            c.chained_rows
        ));
    }
    problems
}
/// Whether a cut removed rows younger than its own tiers allow: a `warm` cut's day must have
/// ended `hot` before the cut's time, a `cold` cut's `warm` before it, and never less than a
/// day (retention removes whole UTC days). Cuts made before the tiers were recorded are held to
/// that one-day minimum. Returns the finding's text.
pub fn cut_too_early(c: &crate::record::RetentionCut) -> Option<String> {
    const DAY: i64 = 86_400;
    let (name, secs) = match c.tier.as_str() {
        "warm" => ("hot", c.hot_secs),
        "cold" => ("warm", c.warm_secs),
        other => return Some(format!("the cut of {} names an unknown tier `{other}`", c.partition)),
    };
    let age = secs.unwrap_or(DAY).max(DAY);
    let limit = c.at - chrono::Duration::seconds(age);
    (c.range_to > limit).then(|| {
        let tiers = secs.map_or_else(|| "the one-day minimum".to_owned(), |s| format!("{name} = {}", days(s)));
        format!(
            "the {} cut of {} removed rows up to {}, but with {tiers} they could go only once older than {} (the cut's time {} minus {})",
            c.tier,
            c.partition,
            c.range_to.to_rfc3339(),
            limit.to_rfc3339(),
            c.at.to_rfc3339(),
            days(age)
        )
    })
}

/// Seconds as whole days when they are (`7d`), else seconds.
fn days(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hot: i64, warm: Option<i64>) -> Policy {
        Policy {
            hot: chrono::Duration::days(hot),
            warm: warm.map(chrono::Duration::days),
            cold: None,
            archive_dir: PathBuf::from("/nonexistent"),
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn a_day_leaves_a_tier_only_once_all_of_it_is_past() {
        let parts = [
            ("events", d("2026-12-01")),
            ("actions", d("2026-12-01")),
            ("events", d("2026-11-20")),
            ("sessions", d("2026-11-20")),
            ("events", d("2026-12-04")),
        ];
        let p = policy(1, Some(15));
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        // 2026-12-01 ends at 12-02 00:00; hot 1d: warm from 12-03 00:00, not a microsecond before.
        assert_eq!(plan(&parts, &p, at("2026-12-02T23:59:59Z")), vec![("events", d("2026-11-20"), "warm")]);
        assert_eq!(
            plan(&parts, &p, at("2026-12-03T00:00:00Z")),
            vec![("events", d("2026-11-20"), "warm"), ("events", d("2026-12-01"), "warm")]
        );
        // 2026-11-20 ends 11-21; warm 15d: cold from 12-06, every table of the day, events first.
        assert_eq!(
            plan(&parts, &p, at("2026-12-06T00:00:00Z")),
            vec![
                ("events", d("2026-11-20"), "cold"),
                ("sessions", d("2026-11-20"), "cold"),
                ("events", d("2026-12-01"), "warm"),
                ("events", d("2026-12-04"), "warm")
            ]
        );
        assert!(plan(&parts, &policy(1, None), at("2030-01-01T00:00:00Z"))
            .iter()
            .all(|(t, _, tier)| *t == "events" && *tier == "warm"));
    }

    #[test]
    fn partition_names_round_trip_and_others_are_ignored() {
        assert_eq!(
            parse_partition(&partition_name("session_ends", d("2026-01-31"))),
            Some(("session_ends", d("2026-01-31")))
        );
        assert_eq!(parse_partition("events_default"), None);
        assert_eq!(parse_partition("checkpoints_p20260101"), None);
        assert_eq!(parse_partition("events_p2026011"), None);
        assert_eq!(parse_partition("events_p20261341"), None);
    }

    #[test]
    fn tiers_are_checked() {
        let cfg = |hot: Option<&str>, warm: Option<&str>, cold: Option<&str>| RetentionConfig {
            hot: hot.map(Into::into),
            warm: warm.map(Into::into),
            cold: cold.map(Into::into),
            archive_dir: None,
        };
        let st = Path::new("/var/lib/agentmon");
        assert!(Policy::new(&cfg(None, None, None), st).expect("off").is_none());
        let p = Policy::new(&cfg(Some("7d"), Some("30d"), Some("365d")), st).expect("ok").expect("on");
        assert_eq!((p.hot.num_days(), p.warm.map(|w| w.num_days()), p.archive_dir), (7, Some(30), st.join("archive")));
        assert_eq!(Policy::new(&cfg(None, Some("30d"), None), st).expect_err("no hot").0, "retention.hot");
        assert_eq!(Policy::new(&cfg(Some("12h"), None, None), st).expect_err("under a day").0, "retention.hot");
        assert_eq!(Policy::new(&cfg(Some("7d"), Some("3d"), None), st).expect_err("warm < hot").0, "retention.warm");
        assert_eq!(
            Policy::new(&cfg(Some("7d"), None, Some("30d")), st).expect_err("cold without warm").0,
            "retention.cold"
        );
        assert_eq!(Policy::new(&cfg(Some("7d"), Some("30d"), Some("2w")), st).expect_err("unit").0, "retention.cold");
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("agentmon-archive-{}", std::process::id()));
        let rows = [
            serde_json::json!({"table": "actions", "chain_seq": 4, "argv": ["a b", "é\n"]}),
            serde_json::json!({"table": "actions", "chain_seq": 9}),
        ];
        let mut a = Archive::create(&dir, "actions_p20261201").expect("create");
        for r in &rows {
            a.line(r).expect("line");
        }
        let (path, sha) = a.finish().expect("finish");
        assert_eq!(path, dir.join("actions_p20261201.jsonl.gz"));
        assert_eq!(sha, file_sha256(&path).expect("sha"));
        assert_eq!(read_archive(&path).expect("read"), rows.iter().map(chain::canonical).collect::<Vec<_>>());
        assert_eq!(
            expire_archives(&dir, day_start(d("2026-12-02")), true),
            Vec::<String>::new().into_iter().chain([path.display().to_string()]).collect::<Vec<_>>()
        );
        assert!(expire_archives(&dir, day_start(d("2026-12-01")), false).is_empty());
        assert_eq!(expire_archives(&dir, day_start(d("2026-12-02")), false).len(), 1);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cut_younger_than_its_tiers_allow_is_named() {
        const D: i64 = 86_400;
        let day = |d: &str| day_start(NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("date"));
        let cut =
            |tier: &str, range_to: &str, at: &str, hot: Option<i64>, warm: Option<i64>| crate::record::RetentionCut {
                id: Uuid::nil(),
                table: "events".into(),
                partition: "events_p20261201".into(),
                range_from: day(range_to) - chrono::Duration::days(1),
                range_to: day(range_to),
                tier: tier.into(),
                rows: 1,
                chained_rows: 1,
                first_seq: None,
                last_seq: None,
                leaves_hash: String::new(),
                archive_file: None,
                archive_sha256: None,
                covers_seq: 0,
                head_hash: String::new(),
                at: day(at),
                hot_secs: hot,
                warm_secs: warm,
                key_fingerprint: String::new(),
                signature: String::new(),
                chain: crate::record::ChainLink::default(),
            };
        // hot = 7d: a day that ended 7 days before the cut may go, one that ended 6 days before not.
        assert_eq!(cut_too_early(&cut("warm", "2026-12-01", "2026-12-08", Some(7 * D), None)), None);
        let early = cut_too_early(&cut("warm", "2026-12-02", "2026-12-08", Some(7 * D), None)).expect("too early");
        assert!(early.contains("hot = 7d") && early.contains("events_p20261201"), "{early}");
        // cold is measured by warm.
        assert_eq!(cut_too_early(&cut("cold", "2026-11-01", "2026-12-01", Some(7 * D), Some(30 * D))), None);
        assert!(cut_too_early(&cut("cold", "2026-11-05", "2026-12-01", Some(7 * D), Some(30 * D))).is_some());
        // A cut of today's rows (the attack with a forged clock) breaks even the one-day floor,
        // whatever tiers it claims, and so does an older cut without recorded tiers.
        assert!(cut_too_early(&cut("warm", "2026-12-08", "2026-12-07", Some(0), None)).is_some());
        assert!(cut_too_early(&cut("warm", "2026-12-08", "2026-12-07", None, None)).is_some());
        assert_eq!(cut_too_early(&cut("warm", "2026-12-06", "2026-12-07", None, None)), None);
        assert!(cut_too_early(&cut("hot", "2026-11-01", "2026-12-07", None, None)).is_some(), "not a tier");
    }

    fn mode(p: &Path) -> u32 {
        std::os::unix::fs::MetadataExt::mode(&std::fs::symlink_metadata(p).expect("stat")) & 0o7777
    }

    /// Archives are 0600 in a 0700 directory, wherever `archive_dir` is: a directory agentmon
    /// makes, one made too open before, and never written through a link planted at the
    /// temporary name.
    #[test]
    fn archives_are_private_and_created_exclusively() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("agentmon-archive-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("base");
        // Made by agentmon, parents included.
        let made = base.join("new/archive");
        let a = Archive::create(&made, "actions_p20261201").expect("create");
        assert_eq!((mode(&made), mode(&base.join("new"))), (0o700, 0o700));
        assert_eq!(mode(&made.join(".actions_p20261201.jsonl.gz.tmp")), 0o600, "the temporary file");
        let (path, _) = a.finish().expect("finish");
        assert_eq!(mode(&path), 0o600, "the archive");
        // There already, readable by everyone: narrowed.
        let open = base.join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // A link planted at the temporary name, to a file elsewhere.
        let victim = base.join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        std::os::unix::fs::symlink(&victim, open.join(".events_p20261201.jsonl.gz.tmp")).expect("symlink");
        let mut a = Archive::create(&open, "events_p20261201").expect("create");
        a.line(&serde_json::json!({"table": "events"})).expect("line");
        let (path, _) = a.finish().expect("finish");
        assert_eq!((mode(&open), mode(&path)), (0o700, 0o600));
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep", "the link was not followed");
        assert_eq!(read_archive(&path).expect("read"), ["{\"table\":\"events\"}"]);
        // Another user's directory is refused, and left as it is.
        // SAFETY: geteuid has no preconditions.
        let theirs = if unsafe { libc::geteuid() } == 0 {
            let d = base.join("theirs");
            std::fs::create_dir(&d).expect("mkdir");
            std::os::unix::fs::chown(&d, Some(65534), Some(65534)).expect("chown");
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            d
        } else {
            PathBuf::from("/")
        };
        let before = mode(&theirs);
        let err = Archive::create(&theirs, "actions_p20261202").err().expect("refused");
        assert!(format!("{err:#}").contains("must be a directory of uid"), "{err:#}");
        assert_eq!(mode(&theirs), before);
        assert!(!theirs.join(".actions_p20261202.jsonl.gz.tmp").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
