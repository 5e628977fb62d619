//! `agentmon verify`: recompute each host's chain from the stored rows and check the signed
//! checkpoints. [`Verifier`] is the pure check (fed rows in chain order, unit-tested);
//! `store::verify::chain_rows` streams them from the database, merged across tables by
//! `chain_seq`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    chain::{self, GENESIS},
    record::{ChainLink, Checkpoint, Hash, RetentionCut},
    text::hex,
};

/// The `table` of a row retention removed: only its leaf is left (`row` is
/// `{"table": <its table>, "leaf": <hex>}`), under the cut named by `id`.
pub const RETAINED: &str = "retained";

/// One stored row, as `verify` reads it.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub table: String,
    pub id: String,
    pub seq: u64,
    /// The stored `chain_hash` (None when missing or not 32 bytes).
    pub hash: Option<Hash>,
    /// The row object of `chain::ROW_SQL`.
    pub row: Value,
}

/// One problem found, with the row it concerns.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub host: String,
    /// `modified`, `missing`, `inserted`, `unchained`, `checkpoint_mismatch`, `bad_signature`,
    /// `unknown_key`, `key_changed`, `truncated_tail`, `no_checkpoint`, `after_stop`,
    /// `witness_mismatch`, `witness_bad_signature`, `cut_mismatch`.
    pub kind: &'static str,
    pub table: Option<String>,
    pub id: Option<String>,
    pub seq: Option<u64>,
    pub detail: String,
}

/// A checkpoint kept off the host: one line of the daemon's external checkpoint log.
#[derive(Debug, Clone, Deserialize)]
pub struct WitnessLine {
    pub host: String,
    pub covers_seq: u64,
    pub head_hash: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub next_within_secs: u64,
    pub key_fingerprint: String,
    pub public_key: String,
    pub signature: String,
}

impl WitnessLine {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            id: uuid::Uuid::nil(),
            covers_seq: self.covers_seq,
            head_hash: self.head_hash.clone(),
            at: self.at,
            kind: self.kind.clone(),
            next_within_secs: self.next_within_secs,
            key_fingerprint: self.key_fingerprint.clone(),
            signature: self.signature.clone(),
            chain: ChainLink::default(),
        }
    }
}

/// What a host's check found, besides its findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub host: String,
    pub rows: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: u64,
    pub last_checkpoint_at: Option<DateTime<Utc>>,
    pub last_checkpoint_kind: Option<String>,
    /// Rows after the newest checkpoint: chained, not yet signed.
    pub unsigned_rows: u64,
    pub keys: Vec<String>,
    pub witness_checked: u64,
    /// Rows removed by retention, checked through the leaves their cuts kept.
    #[serde(default)]
    pub retained_rows: u64,
    /// Signed retention cuts in this chain.
    #[serde(default)]
    pub cuts: u64,
    pub findings: u64,
}

/// A row's leaf: hashed from its row object, or, for a row retention removed, the leaf kept.
pub fn row_leaf(r: &ChainRow) -> Hash {
    if r.table == RETAINED {
        r.row["leaf"].as_str().and_then(crate::record::parse_hash).unwrap_or([0; 32])
    } else {
        chain::leaf(&r.row)
    }
}

/// The chain check of one host. Feed it every row with `chain_seq >= start`, in order.
pub struct Verifier {
    host: String,
    /// Registered public keys by fingerprint.
    keys: HashMap<String, String>,
    /// Witness head hashes by the sequence they cover.
    witness: BTreeMap<u64, WitnessLine>,
    next_seq: u64,
    /// The stored hash of the last accepted row (what the next row must link from).
    prev: Hash,
    /// The position before the last accepted row, and its hash, to judge duplicates.
    before_prev: (u64, Hash),
    last_key: Option<String>,
    /// The last accepted row's table and id.
    last_row: (String, String),
    last_checkpoint: Option<(ChainRow, Checkpoint)>,
    stopped_at: Option<u64>,
    /// Ids of the chained retention cuts in the database (any host's).
    known_cuts: std::collections::HashSet<String>,
    /// The cuts found in this chain whose signature verified.
    pub cuts: Vec<RetentionCut>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
}

impl Verifier {
    /// `start` is the first sequence to check and `prev` the hash before it (from a signed
    /// checkpoint when checking from `--since`, else the genesis).
    pub fn new(host: &str, keys: HashMap<String, String>, witness: Vec<WitnessLine>, start: u64, prev: Hash) -> Self {
        let mut summary = Summary { host: host.to_owned(), ..Summary::default() };
        summary.keys = keys.keys().cloned().collect();
        summary.keys.sort();
        Self {
            host: host.to_owned(),
            keys,
            witness: witness
                .into_iter()
                .filter(|w| w.host == host && w.covers_seq >= start.saturating_sub(1))
                .map(|w| (w.covers_seq, w))
                .collect(),
            next_seq: start,
            prev,
            before_prev: (start.saturating_sub(1), prev),
            last_key: None,
            last_row: (String::new(), String::new()),
            last_checkpoint: None,
            stopped_at: None,
            known_cuts: std::collections::HashSet::new(),
            cuts: Vec::new(),
            summary,
            findings: Vec::new(),
        }
    }

    /// The retention cuts the database holds: a removed row's leaf counts only under one.
    pub fn set_known_cuts(&mut self, ids: impl IntoIterator<Item = String>) {
        self.known_cuts = ids.into_iter().collect();
    }

    fn find(&mut self, kind: &'static str, r: Option<&ChainRow>, seq: Option<u64>, detail: String) {
        self.findings.push(Finding {
            host: self.host.clone(),
            kind,
            table: r.map(|r| r.table.clone()),
            id: r.map(|r| r.id.clone()),
            seq: seq.or(r.map(|r| r.seq)),
            detail,
        });
    }

    /// Check one row.
    pub fn feed(&mut self, r: &ChainRow) {
        self.summary.rows += 1;
        self.summary.first_seq.get_or_insert(r.seq);
        let stored = r.hash.unwrap_or([0; 32]);
        let leaf = row_leaf(r);
        let computed_from = |prev: &Hash| chain::link(prev, &leaf);
        if r.seq + 1 == self.next_seq && self.summary.last_seq == Some(r.seq) {
            // A second row at a position already taken: whichever of the two links from the
            // row before it is the original.
            if computed_from(&self.before_prev.1) == stored {
                let (table, id) = self.last_row.clone();
                self.findings.push(Finding {
                    host: self.host.clone(),
                    kind: "inserted",
                    table: Some(table),
                    id: Some(id),
                    seq: Some(r.seq),
                    detail: format!("a second row at this position; {} {} is the one that links", r.table, r.id),
                });
            } else {
                self.find("inserted", Some(r), None, "a second row at a position already taken".into());
            }
            return;
        }
        if r.seq < self.next_seq {
            self.find("inserted", Some(r), None, "out of order".into());
            return;
        }
        if r.seq > self.next_seq {
            let n = r.seq - self.next_seq;
            self.find(
                "missing",
                Some(r),
                None,
                format!("{n} row(s) deleted before this one: chain_seq {}..={}", self.next_seq, r.seq - 1),
            );
        } else if r.hash.is_none() || computed_from(&self.prev) != stored {
            let why =
                if r.hash.is_none() { "no chain hash stored" } else { "its content does not match its chain hash" };
            self.find("modified", Some(r), None, why.into());
        }
        if let Some(stop) = self.stopped_at.take() {
            if !(r.table == "checkpoints" && r.row["kind"] == "start") {
                self.find(
                    "after_stop",
                    Some(r),
                    None,
                    format!("written after the stop checkpoint at chain_seq {stop} and before the next start"),
                );
            }
        }
        self.before_prev = (r.seq.saturating_sub(1), self.prev);
        self.prev = stored;
        self.last_row = (r.table.clone(), r.id.clone());
        self.next_seq = r.seq + 1;
        self.summary.last_seq = Some(r.seq);
        if let Some(w) = self.witness.remove(&r.seq) {
            self.check_witness(&w, Some(r));
        }
        if r.table == "checkpoints" {
            self.checkpoint(r);
        }
        if r.table == "retention_cuts" {
            self.cut(r);
        }
        if r.table == RETAINED {
            self.summary.retained_rows += 1;
            if !self.known_cuts.contains(&r.id) {
                self.find(
                    "missing",
                    Some(r),
                    None,
                    format!(
                        "a {} row removed under cut {}, which is not a chained retention cut",
                        r.row["table"].as_str().unwrap_or("?"),
                        r.id
                    ),
                );
            }
        }
    }

    fn cut(&mut self, r: &ChainRow) {
        let c = match cut_fields(&r.row) {
            Ok(c) => c,
            Err(e) => {
                self.find("modified", Some(r), None, format!("not a readable retention cut: {e}"));
                return;
            }
        };
        self.summary.cuts += 1;
        match self.keys.get(&c.key_fingerprint) {
            None => self.find(
                "unknown_key",
                Some(r),
                None,
                format!("retention cut signed by key {}, which is not registered for this host", c.key_fingerprint),
            ),
            Some(pk) if !chain::cut_signature_valid(&self.host, &c, pk) => {
                self.find(
                    "bad_signature",
                    Some(r),
                    None,
                    format!("the retention cut's signature does not verify with key {}", c.key_fingerprint),
                );
            }
            Some(_) => {
                if c.covers_seq + 1 != r.seq || c.head_hash != hex(&self.before_prev.1) {
                    self.find(
                        "checkpoint_mismatch",
                        Some(r),
                        None,
                        format!(
                            "the retention cut signs head {} at chain_seq {}, but the chain differs there",
                            short(&c.head_hash),
                            c.covers_seq
                        ),
                    );
                }
                if let Some(detail) = crate::retention::cut_too_early(&c) {
                    self.find("cut_too_early", Some(r), None, detail);
                }
                self.cuts.push(c);
            }
        }
    }

    fn checkpoint(&mut self, r: &ChainRow) {
        let c: Checkpoint = match serde_json::from_value(checkpoint_fields(&r.row)) {
            Ok(c) => c,
            Err(e) => {
                self.find("modified", Some(r), None, format!("not a readable checkpoint: {e}"));
                return;
            }
        };
        self.summary.checkpoints += 1;
        if c.covers_seq + 1 != r.seq || c.head_hash != hex(&self.before_prev.1) {
            self.find(
                "checkpoint_mismatch",
                Some(r),
                None,
                format!(
                    "signs chain_seq {} with head {}, but the chain has {} there",
                    c.covers_seq,
                    short(&c.head_hash),
                    short(&hex(&self.before_prev.1))
                ),
            );
        }
        match self.keys.get(&c.key_fingerprint) {
            None => self.find(
                "unknown_key",
                Some(r),
                None,
                format!("signed by key {}, which is not registered for this host", c.key_fingerprint),
            ),
            Some(pk) if !chain::signature_valid(&self.host, &c, pk) => {
                self.find(
                    "bad_signature",
                    Some(r),
                    None,
                    format!("the signature does not verify with key {}", c.key_fingerprint),
                );
            }
            Some(_) => {}
        }
        if let Some(last) = self.last_key.as_ref().filter(|k| **k != c.key_fingerprint) {
            let detail = format!("signing key changed from {last} to {}", c.key_fingerprint);
            self.find("key_changed", Some(r), None, detail);
        }
        self.last_key = Some(c.key_fingerprint.clone());
        if c.kind == "stop" {
            self.stopped_at = Some(r.seq);
        }
        self.last_checkpoint = Some((ChainRow { row: Value::Null, ..r.clone() }, c));
    }

    fn check_witness(&mut self, w: &WitnessLine, at: Option<&ChainRow>) {
        self.summary.witness_checked += 1;
        let c = w.checkpoint();
        if chain::key_fingerprint(&crate::text::unhex(&w.public_key).unwrap_or_default()) != w.key_fingerprint
            || !chain::signature_valid(&self.host, &c, &w.public_key)
        {
            self.find(
                "witness_bad_signature",
                at,
                Some(w.covers_seq),
                format!("the witness checkpoint of {} does not verify", w.at),
            );
            return;
        }
        match at {
            Some(r) if r.hash.map(|h| hex(&h)).as_deref() == Some(w.head_hash.as_str()) => {}
            Some(r) => {
                let stored = r.hash.map_or_else(|| "none".to_owned(), |h| short(&hex(&h)));
                self.find(
                    "witness_mismatch",
                    Some(r),
                    None,
                    format!(
                        "the witness checkpoint of {} has head {} here, the database {stored}",
                        w.at,
                        short(&w.head_hash)
                    ),
                );
            }
            None => self.find(
                "witness_mismatch",
                None,
                Some(w.covers_seq),
                format!("the witness checkpoint of {} covers a row the database does not have", w.at),
            ),
        }
    }

    /// End of the stream: the tail and the witness lines never reached.
    pub fn finish(&mut self, now: DateTime<Utc>) {
        let witness = std::mem::take(&mut self.witness);
        for w in witness.into_values().filter(|w| w.covers_seq > 0) {
            self.check_witness(&w, None);
        }
        match self.last_checkpoint.take() {
            None if self.summary.rows > 0 => {
                self.find(
                    "no_checkpoint",
                    None,
                    self.summary.last_seq,
                    "no signed checkpoint covers these rows".into(),
                );
            }
            None => {}
            Some((at, c)) => {
                self.summary.unsigned_rows = self.summary.last_seq.map_or(0, |l| l.saturating_sub(at.seq));
                self.summary.last_checkpoint_at = Some(c.at);
                self.summary.last_checkpoint_kind = Some(c.kind.clone());
                let allowed = c.next_within_secs + (c.next_within_secs / 2).max(5);
                let age = (now - c.at).num_seconds();
                if c.kind != "stop" && age > allowed as i64 {
                    self.find(
                        "truncated_tail",
                        Some(&at),
                        None,
                        format!("the newest checkpoint ({}, {}) is {age}s old, more than the {allowed}s its heartbeat allows, and no stop was recorded: the tail was cut, or the daemon died", c.kind, c.at.format("%Y-%m-%d %H:%M:%S UTC")),
                    );
                }
            }
        }
        self.summary.findings = self.findings.len() as u64;
    }
}

fn short(h: &str) -> String {
    h.chars().take(16).collect()
}

/// The checkpoint record's fields from its row object.
pub fn checkpoint_fields(row: &Value) -> Value {
    let mut v = row.clone();
    if let Some(m) = v.as_object_mut() {
        // Stored as microseconds; the record has a time.
        let at = m.get("at").and_then(Value::as_i64).and_then(DateTime::from_timestamp_micros);
        m.insert("at".into(), serde_json::to_value(at).unwrap_or(Value::Null));
    }
    v
}

/// A retention cut from its row object.
pub fn cut_fields(row: &Value) -> Result<RetentionCut, serde_json::Error> {
    let t = |k: &str| {
        serde_json::to_value(row[k].as_i64().and_then(DateTime::from_timestamp_micros)).unwrap_or(Value::Null)
    };
    serde_json::from_value(serde_json::json!({
        "id": row["id"], "table": row["table_name"], "partition": row["partition_name"], "range_from": t("range_from"),
        "range_to": t("range_to"), "tier": row["tier"], "rows": row["rows"], "chained_rows": row["chained_rows"],
        "first_seq": row["first_seq"], "last_seq": row["last_seq"], "leaves_hash": row["leaves_hash"],
        "archive_file": row["archive_file"], "archive_sha256": row["archive_sha256"], "covers_seq": row["covers_seq"],
        "head_hash": row["head_hash"], "at": t("at"), "key_fingerprint": row["key_fingerprint"], "signature": row["signature"],
        "hot_secs": row.get("hot_secs"), "warm_secs": row.get("warm_secs"),
    }))
}

/// A cut's kept leaves (`cut_leaves`) must be exactly those it signed (`leaves_hash`,
/// `chained_rows`). A cut with none kept was never applied (its drop failed and was rolled back).
pub fn check_cut(host: &str, c: &RetentionCut, leaves: &[chain::RetainedLeaf]) -> Option<Finding> {
    if leaves.is_empty() {
        return None;
    }
    let mut h = chain::LeavesHasher::default();
    for l in leaves {
        h.add(l);
    }
    let (n, got) = (leaves.len() as u64, h.finish());
    (n != c.chained_rows || got != c.leaves_hash).then(|| Finding {
        host: host.to_owned(),
        kind: "cut_mismatch",
        table: Some("retention_cuts".into()),
        id: Some(c.id.to_string()),
        seq: Some(c.chain.seq),
        detail: format!(
            "the cut of {} signed {} leaves with hash {}; the database keeps {n} with hash {}",
            c.partition,
            c.chained_rows,
            short(&c.leaves_hash),
            short(&got)
        ),
    })
}

/// Where to start for `--since`: after `checkpoint` (the row of the newest checkpoint at or
/// before `since`, from `store::verify::checkpoint_before`) once its signature verifies, else
/// the start of the chain.
#[expect(clippy::implicit_hasher, reason = "the map comes from `store::verify::keys`")]
pub fn start_at(host: &str, checkpoint: Option<&Value>, keys: &HashMap<String, String>) -> anyhow::Result<(u64, Hash)> {
    let Some(row) = checkpoint else { return Ok((1, GENESIS)) };
    let c: Checkpoint = serde_json::from_value(checkpoint_fields(row))?;
    let valid = keys.get(&c.key_fingerprint).is_some_and(|pk| chain::signature_valid(host, &c, pk));
    let hash = crate::record::parse_hash(&c.head_hash).filter(|_| valid);
    match hash {
        Some(h) => Ok((c.covers_seq + 1, h)),
        None => anyhow::bail!(
            "the checkpoint before --since (chain_seq {}) does not verify; check the whole chain without --since",
            c.covers_seq
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use serde_json::json;

    const HOST: &str = "h";

    /// A tiny chain built the way the daemon builds it.
    struct Fixture {
        rows: Vec<ChainRow>,
        key: ed25519_dalek::SigningKey,
        head: Hash,
    }

    impl Fixture {
        fn new() -> Self {
            Self { rows: Vec::new(), key: ed25519_dalek::SigningKey::from_bytes(&[3; 32]), head: GENESIS }
        }

        fn keys(&self) -> HashMap<String, String> {
            let pk = self.key.verifying_key();
            HashMap::from([(chain::key_fingerprint(pk.as_bytes()), hex(pk.as_bytes()))])
        }

        fn push(&mut self, table: &str, mut row: Value) {
            let seq = self.rows.len() as u64 + 1;
            row["table"] = json!(table);
            row["chain_seq"] = json!(seq);
            self.head = chain::link(&self.head, &chain::leaf(&row));
            self.rows.push(ChainRow { table: table.into(), id: format!("id{seq}"), seq, hash: Some(self.head), row });
        }

        fn checkpoint(&mut self, kind: &str, at: DateTime<Utc>) -> WitnessLine {
            let key = self.key.clone();
            let mut c = Checkpoint {
                id: uuid::Uuid::nil(),
                covers_seq: self.rows.len() as u64,
                head_hash: hex(&self.head),
                at,
                kind: kind.into(),
                next_within_secs: 60,
                key_fingerprint: chain::key_fingerprint(key.verifying_key().as_bytes()),
                signature: String::new(),
                chain: ChainLink::default(),
            };
            c.signature = hex(&key.sign(&chain::checkpoint_message(HOST, &c)).to_bytes());
            let row = chain::checkpoint_row(HOST, &c, self.rows.len() as u64 + 1);
            self.push("checkpoints", row);
            WitnessLine {
                host: HOST.into(),
                covers_seq: c.covers_seq,
                head_hash: c.head_hash,
                at,
                kind: c.kind,
                next_within_secs: 60,
                key_fingerprint: c.key_fingerprint,
                public_key: hex(key.verifying_key().as_bytes()),
                signature: c.signature,
            }
        }

        fn verify(&self, rows: &[ChainRow], witness: Vec<WitnessLine>) -> Vec<(&'static str, Option<u64>)> {
            let mut v = Verifier::new(HOST, self.keys(), witness, 1, GENESIS);
            for r in rows {
                v.feed(r);
            }
            v.finish(Utc::now());
            v.findings.iter().map(|f| (f.kind, f.seq)).collect()
        }
    }

    fn sample() -> (Fixture, Vec<WitnessLine>) {
        let mut f = Fixture::new();
        let mut w = vec![f.checkpoint("start", Utc::now())];
        for i in 0..5 {
            f.push("actions", json!({"argv": ["echo", i.to_string()]}));
        }
        w.push(f.checkpoint("periodic", Utc::now()));
        f.push("events", json!({"data": {"path": "/etc/passwd"}}));
        w.push(f.checkpoint("stop", Utc::now()));
        (f, w)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (f, w) = sample();
        assert_eq!(f.verify(&f.rows, w), vec![]);
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let (f, _) = sample();
        let mut edited = f.rows.clone();
        edited[2].row["argv"] = json!(["echo", "innocent"]);
        assert_eq!(f.verify(&edited, vec![]), vec![("modified", Some(3))]);

        let mut deleted = f.rows.clone();
        deleted.remove(3);
        assert_eq!(f.verify(&deleted, vec![]), vec![("missing", Some(5))]);

        let mut inserted = f.rows.clone();
        let mut fake = inserted[2].clone();
        fake.row["argv"] = json!(["rm", "-rf", "/"]);
        fake.id = "fake".into();
        inserted.insert(3, fake);
        let found = f.verify(&inserted, vec![]);
        assert!(found.contains(&("inserted", Some(3))), "{found:?}");

        let mut cut = f.rows.clone();
        cut.truncate(cut.len() - 2);
        let mut v = Verifier::new(HOST, f.keys(), vec![], 1, GENESIS);
        for r in &cut {
            v.feed(r);
        }
        v.finish(Utc::now() + chrono::Duration::seconds(600));
        assert_eq!(v.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec!["truncated_tail"]);
    }

    /// `rows` with rows 3 and 4 removed by retention: their leaves kept under cut `cut`.
    fn with_retained(rows: &[ChainRow], cut: &str) -> Vec<ChainRow> {
        rows.iter()
            .map(|r| {
                if r.seq == 3 || r.seq == 4 {
                    ChainRow {
                        table: RETAINED.into(),
                        id: cut.into(),
                        row: json!({"table": r.table, "leaf": hex(&chain::leaf(&r.row))}),
                        ..r.clone()
                    }
                } else {
                    r.clone()
                }
            })
            .collect()
    }

    #[test]
    fn rows_removed_under_a_cut_are_checked_through_their_leaves() {
        let (f, _) = sample();
        let check = |rows: &[ChainRow], cuts: &[&str]| {
            let mut v = Verifier::new(HOST, f.keys(), vec![], 1, GENESIS);
            v.set_known_cuts(cuts.iter().map(|c| (*c).to_owned()));
            for r in rows {
                v.feed(r);
            }
            v.finish(Utc::now());
            (v.findings.iter().map(|f| (f.kind, f.seq)).collect::<Vec<_>>(), v.summary.retained_rows)
        };
        let retained = with_retained(&f.rows, "cut1");
        assert_eq!(check(&retained, &["cut1"]), (vec![], 2));
        // A leaf under no chained cut: removed by someone else.
        assert_eq!(check(&retained, &[]), (vec![("missing", Some(3)), ("missing", Some(4))], 2));
        // A row edited before it was removed: its leaf no longer links.
        let mut edited = f.rows.clone();
        edited[3].row["argv"] = json!(["echo", "innocent"]);
        let mut retained = with_retained(&edited, "cut1");
        retained[3].hash = f.rows[3].hash;
        assert_eq!(check(&retained, &["cut1"]).0, vec![("modified", Some(4))]);
    }

    #[test]
    fn a_cut_keeps_exactly_the_leaves_it_signed() {
        let leaf = |seq, b| chain::RetainedLeaf { host: HOST.into(), seq, leaf: [b; 32], chain_hash: Some([b; 32]) };
        let kept = vec![leaf(3, 1), leaf(4, 2)];
        let mut h = chain::LeavesHasher::default();
        for l in &kept {
            h.add(l);
        }
        let t = Utc::now();
        let c = RetentionCut {
            id: uuid::Uuid::nil(),
            table: "events".into(),
            partition: "events_p20261204".into(),
            range_from: t,
            range_to: t,
            tier: "warm".into(),
            rows: 2,
            chained_rows: 2,
            first_seq: Some(3),
            last_seq: Some(4),
            leaves_hash: h.finish(),
            archive_file: None,
            archive_sha256: None,
            covers_seq: 9,
            head_hash: String::new(),
            at: t,
            hot_secs: None,
            warm_secs: None,
            key_fingerprint: String::new(),
            signature: String::new(),
            chain: ChainLink::default(),
        };
        assert_eq!(check_cut(HOST, &c, &kept), None);
        assert_eq!(check_cut(HOST, &c, &[]), None, "never applied");
        let kind = |leaves: &[chain::RetainedLeaf]| check_cut(HOST, &c, leaves).map(|f| f.kind);
        assert_eq!(kind(&[leaf(3, 1), leaf(4, 7)]), Some("cut_mismatch"), "a leaf changed");
        assert_eq!(kind(&[leaf(3, 1)]), Some("cut_mismatch"), "a leaf removed");
        assert_eq!(kind(&[leaf(3, 1), leaf(4, 2), leaf(5, 3)]), Some("cut_mismatch"), "a leaf added");
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_caught() {
        let (mut f, _) = sample();
        let good_keys = f.keys();
        f.key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        f.checkpoint("periodic", Utc::now());
        let mut v = Verifier::new(HOST, good_keys, vec![], 1, GENESIS);
        for r in &f.rows {
            v.feed(r);
        }
        v.finish(Utc::now());
        let kinds: Vec<_> = v.findings.iter().map(|f| f.kind).collect();
        assert!(
            kinds.contains(&"unknown_key") && kinds.contains(&"key_changed") && kinds.contains(&"after_stop"),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_rebuilt_chain_passes_alone_but_not_against_a_witness() {
        let (f, witness) = sample();
        // Rewrite history with the host's own key: edit a row and re-chain and re-sign all.
        let mut g = Fixture::new();
        g.key = f.key.clone();
        g.checkpoint("start", Utc::now());
        for i in 0..5 {
            g.push("actions", json!({"argv": ["echo", if i == 2 { "innocent".to_owned() } else { i.to_string() }]}));
        }
        g.checkpoint("periodic", Utc::now());
        g.push("events", json!({"data": {"path": "/etc/passwd"}}));
        g.checkpoint("stop", Utc::now());
        assert_eq!(g.verify(&g.rows, vec![]), vec![]);
        let found = g.verify(&g.rows, witness);
        assert!(found.iter().any(|(k, _)| *k == "witness_mismatch"), "{found:?}");
    }

    #[test]
    fn a_cut_row_reads_back_as_the_cut_it_was_made_from() {
        // What `verify` reads must be what was signed, tiers included, or no signature verifies.
        let t = DateTime::from_timestamp_micros(1_764_000_000_000_000).expect("time");
        let mut c = RetentionCut {
            id: uuid::Uuid::nil(),
            table: "events".into(),
            partition: "events_p20251124".into(),
            range_from: t,
            range_to: t,
            tier: "cold".into(),
            rows: 3,
            chained_rows: 2,
            first_seq: Some(1),
            last_seq: None,
            leaves_hash: "ab".into(),
            archive_file: Some("a.jsonl.gz".into()),
            archive_sha256: None,
            covers_seq: 9,
            head_hash: "cd".into(),
            at: t,
            hot_secs: Some(86_400),
            warm_secs: Some(3 * 86_400),
            key_fingerprint: "ef".into(),
            signature: "01".into(),
            chain: ChainLink::default(),
        };
        let back = cut_fields(&chain::cut_row(HOST, &c, 7)).expect("reads back");
        assert_eq!(chain::cut_message(HOST, &back), chain::cut_message(HOST, &c));
        c.hot_secs = None;
        c.warm_secs = None;
        let back = cut_fields(&chain::cut_row(HOST, &c, 7)).expect("reads back");
        assert_eq!((back.hot_secs, back.warm_secs), (None, None));
        assert_eq!(chain::cut_message(HOST, &back), chain::cut_message(HOST, &c));
    }
}
