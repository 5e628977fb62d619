//! Root integration tests of retention with proof: a real daemon with short tiers (hot 1d,
//! warm 3d), a real session, and `agentmon retention` with the daemon's clock set ahead (the
//! hidden test-only `--retention-clock` file; a client never says what time it is). Hot → warm drops
//! only the raw events; cold archives every partition of the day, then drops it; `verify`
//! passes after each step and `verify --archive` checks each archive. A partition dropped by
//! hand, with no signed cut, makes `verify` fail, and the writer role cannot drop one at all.

use std::{path::Path, process::Command};

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::Signer as _;
use integration_tests::{json_lines, scratch, Daemon};
use monitor::retention;
use serde_json::Value;

const TABLES: [&str; 6] = ["events", "alerts", "processes", "actions", "session_ends", "sessions"];
/// Every day-partitioned table, children before parents (as `monitor::retention::TABLES`):
/// the agents' reports and tool calls are partitioned and dropped like the rest.
const PARTITIONED: [&str; 8] =
    ["events", "agent_reports", "tool_calls", "alerts", "processes", "actions", "session_ends", "sessions"];

/// Rows of `session` in each table (alerts: 0, none are raised).
async fn counts(pool: &sqlx::PgPool, session: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in TABLES {
        let key = if t == "sessions" { "id" } else { "session_id" };
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE {key}::text = $1"))
            .bind(session)
            .fetch_one(pool)
            .await
            .expect("count");
        out.push((t.to_owned(), n));
    }
    out
}

async fn exists(pool: &sqlx::PgPool, relation: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(relation)
        .fetch_one(pool)
        .await
        .expect("regclass")
}

/// `agentmon verify --json`: the exit code, the findings and the summary.
fn verify(d: &Daemon, extra: &[&str]) -> (i32, Vec<Value>, Value) {
    let out = d.cli(&[&["verify", "--json"], extra].concat());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 3, "verify failed to run: {}", String::from_utf8_lossy(&out.stderr));
    let findings = lines.iter().filter(|l| l["type"] == "finding").cloned().collect();
    let summary = lines.iter().find(|l| l["type"] == "summary").cloned().unwrap_or(Value::Null);
    (code, findings, summary)
}

/// A daemon with the config `cfg` whose retention clock is the file `<dir>/clock`, set to `now`.
async fn start_with_clock(name: &str, dir: &Path, cfg: &Path, now: DateTime<Utc>) -> (Daemon, std::path::PathBuf) {
    let clock = dir.join("clock");
    std::fs::write(&clock, now.to_rfc3339()).expect("clock");
    let args = ["--config", cfg.to_str().expect("utf8"), "--retention-clock", clock.to_str().expect("utf8")];
    (Daemon::start(name, &args).await, clock)
}

/// `agentmon retention --json [--dry-run]` with the daemon's retention clock (`clock`, the file
/// it was started with) at `as_of`: the exit code and the partition lines.
fn retention(d: &Daemon, clock: &Path, as_of: &str, dry_run: bool) -> (i32, Vec<Value>) {
    std::fs::write(clock, as_of).expect("retention clock");
    let mut args = vec!["retention", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    let out = d.cli(&args);
    assert!(out.status.code().is_some(), "retention: {out:?}");
    let items = json_lines(&out).into_iter().filter(|l| l["type"] == "partition").collect();
    (out.status.code().unwrap_or(-1), items)
}

fn mode(p: &Path) -> u32 {
    std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(p).expect("stat")) & 0o7777
}

/// One partition that cold retention archived and dropped (`i`, its line of `retention --json`):
/// its archive is in `archive_dir` (0700), mode 0600, with the signed hash and every row, and
/// verifies; the partition is gone. Returns the archive's rows.
async fn check_cold_archive(d: &Daemon, archive_dir: &Path, i: &Value) -> i64 {
    assert_eq!((&i["tier"], &i["status"]), (&"cold".into(), &"dropped".into()), "{i}");
    let file = std::path::PathBuf::from(i["archive_file"].as_str().expect("archive"));
    assert_eq!(file, archive_dir.join(format!("{}.jsonl.gz", i["partition"].as_str().expect("name"))));
    assert_eq!((mode(archive_dir), mode(&file)), (0o700, 0o600), "{}", file.display());
    assert_eq!(
        retention::file_sha256(&file).expect("sha"),
        i["archive_sha256"].as_str().expect("sha"),
        "the signed hash is the file's"
    );
    let lines = retention::read_archive(&file).expect("archive");
    assert_eq!(lines.len() as u64, i["rows"].as_u64().expect("rows"), "{i}");
    let out = d.cli(&["verify", "--json", "--archive", file.to_str().expect("utf8")]);
    let v = &json_lines(&out)[0];
    assert_eq!((out.status.code(), &v["ok"]), (Some(0), &true.into()), "{v}");
    assert!(!exists(&d.pool, i["partition"].as_str().expect("name")).await);
    lines.len() as i64
}

/// One changed row in the archive `name` (of `lines`), written under `dir`: the hash no longer
/// matches, nor does the row's leaf.
fn a_changed_archive_row_fails(d: &Daemon, dir: &Path, name: &str, lines: &[String]) {
    let bad_dir = dir.join("tampered");
    std::fs::create_dir_all(&bad_dir).expect("dir");
    let bad = bad_dir.join(name);
    let text = lines.join("\n").replacen("/etc/hostname", "/etc/hostnamf", 1) + "\n";
    let gz = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c > {}", bad.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    std::io::Write::write_all(&mut gz.stdin.as_ref().expect("stdin"), text.as_bytes()).expect("write");
    assert!(gz.wait_with_output().expect("gzip").status.success());
    let out = d.cli(&["verify", "--json", "--archive", bad.to_str().expect("utf8")]);
    let v: &Value = &serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!((out.status.code(), &v["ok"]), (Some(3), &false.into()), "{v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("SHA-256") && problems.contains("differs from the row the cut removed"), "{v}");
}

/// Only retention removes a partition (`actions_today`, today's of `actions`): the writer may
/// not drop one or cut without a stored cut, nobody may truncate one, and one dropped by hand
/// makes `verify` fail.
async fn only_retention_removes_a_partition(d: &Daemon, dir: &Path, actions_today: &str) {
    let (id2, out) = d.run_agent("ops/retention", dir, &["/bin/sh", "-c", "/bin/true; /bin/true"]);
    assert!(out.status.success());
    d.wait_session_end(&id2);
    assert!(exists(&d.pool, actions_today).await, "a late row of the day makes its partition again");
    let as_writer = |sql: String| {
        let pool = d.pool.clone();
        async move {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("SET LOCAL ROLE agentmon_writer").execute(&mut *tx).await.expect("role");
            sqlx::query(&sql).execute(&mut *tx).await.expect_err(&sql).to_string()
        }
    };
    assert!(as_writer(format!("DROP TABLE {actions_today}")).await.contains("must be owner"));
    let e = as_writer(format!(
        "SELECT agentmon_retention_drop('actions', '{}', gen_random_uuid())",
        Utc::now().date_naive()
    ))
    .await;
    assert!(e.contains("no stored, chained retention cut"), "{e}");
    let e = sqlx::query(&format!("TRUNCATE {actions_today}")).execute(&d.pool).await.expect_err("truncate").to_string();
    assert!(e.contains("append-only"), "{e}");
    let (code, findings, _) = verify(d, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");

    // A partition dropped by hand (by its owner), with no cut: verify names the gap.
    sqlx::query(&format!("DROP TABLE {actions_today}")).execute(&d.pool).await.expect("drop by hand");
    let (code, findings, _) = verify(d, &[]);
    assert_eq!(code, 3, "{findings:#?}");
    // The day's two actions of the second session, each a gap in the chain.
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert!(
        findings
            .iter()
            .all(|f| f["kind"] == "missing" && f["detail"].as_str().is_some_and(|d| d.starts_with("1 row(s) deleted"))),
        "{findings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_drops_raw_events_cold_archives_then_drops_and_only_a_signed_cut_passes_verify() {
    let dir = scratch("retention");
    // Outside the state directory, made by hand as mkdir does (0755): agentmon narrows it.
    let archive_dir = dir.join("archive");
    std::fs::create_dir(&archive_dir).expect("archive dir");
    std::fs::set_permissions(&archive_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let cfg = dir.join("agentmon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[retention]\nhot = \"1d\"\nwarm = \"3d\"\ncold = \"30d\"\narchive_dir = \"{}\"\n",
            archive_dir.display()
        ),
    )
    .expect("config");
    let (d, clock) = start_with_clock("retention", &dir, &cfg, Utc::now()).await;
    let (id, out) = d.run_agent(
        "ops/retention",
        &dir,
        &["/bin/sh", "-c", "cat /etc/hostname > /dev/null; ls / > /dev/null; /bin/true"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let today = Utc::now().date_naive().format("%Y%m%d").to_string();
    let part = |t: &str| format!("{t}_p{today}");
    for t in PARTITIONED {
        assert!(exists(&d.pool, &part(t)).await, "the daemon made today's partition of {t}");
    }
    let before = counts(&d.pool, &id).await;
    let n_events = before[0].1;
    assert!(n_events > 0 && before[3].1 >= 3, "{before:?}");
    let in_partition = |t: &str| format!("SELECT count(*) FROM {}", part(t));
    let events_today: i64 = sqlx::query_scalar(&in_partition("events")).fetch_one(&d.pool).await.expect("count");
    let (code, findings, _) = verify(&d, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");

    // A day past hot (1d), not past warm (3d): only its raw events go. The dry run only lists.
    let warm_at = (Utc::now() + Duration::days(2)).to_rfc3339();
    let (code, items) = retention(&d, &clock, &warm_at, true);
    assert_eq!(code, 0);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(
        (&items[0]["partition"], &items[0]["tier"], &items[0]["status"], &items[0]["rows"]),
        (&part("events").into(), &"warm".into(), &"planned".into(), &events_today.into())
    );
    assert_eq!(counts(&d.pool, &id).await, before, "a dry run changes nothing");

    let (code, items) = retention(&d, &clock, &warm_at, false);
    assert_eq!(code, 0, "{items:#?}");
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!((&items[0]["status"], &items[0]["rows"]), (&"dropped".into(), &events_today.into()), "{items:#?}");
    let cut = items[0]["cut_id"].as_str().expect("cut id").to_owned();
    let after = counts(&d.pool, &id).await;
    assert_eq!(after[0], ("events".to_owned(), 0));
    assert_eq!(after[1..], before[1..], "warm keeps sessions, actions, processes, ends and alerts");
    assert!(!exists(&d.pool, &part("events")).await);
    let (tier, rows, seq): (String, i64, Option<i64>) =
        sqlx::query_as("SELECT tier, rows, chain_seq FROM retention_cuts WHERE id::text = $1")
            .bind(&cut)
            .fetch_one(&d.pool)
            .await
            .expect("cut");
    assert_eq!((tier.as_str(), rows), ("warm", events_today));
    assert!(seq.is_some(), "the cut is a row of the chain");
    let leaves: i64 = sqlx::query_scalar("SELECT count(*) FROM retained_leaves WHERE cut_id::text = $1")
        .bind(&cut)
        .fetch_one(&d.pool)
        .await
        .expect("leaves");
    assert_eq!(leaves, events_today, "a leaf for every chained row removed");
    let (code, findings, summary) = verify(&d, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");
    assert_eq!((&summary["retained_rows"], &summary["cuts"]), (&events_today.into(), &1.into()), "{summary}");
    let (code, items) = retention(&d, &clock, &warm_at, false);
    assert_eq!((code, items.len()), (0, 0), "applied once: {items:#?}");

    // Past warm (3d): every partition of the day is archived, then dropped.
    let cold_at = (Utc::now() + Duration::days(5)).to_rfc3339();
    let (code, items) = retention(&d, &clock, &cold_at, false);
    assert_eq!(code, 0, "{items:#?}");
    let names: Vec<&str> = items.iter().map(|i| i["partition"].as_str().expect("name")).collect();
    assert_eq!(
        names,
        PARTITIONED[1..].iter().map(|t| part(t)).collect::<Vec<_>>(),
        "children before parents; events already gone"
    );
    let mut retained = events_today;
    for i in &items {
        retained += check_cold_archive(&d, &archive_dir, i).await;
    }
    assert_eq!(counts(&d.pool, &id).await.iter().map(|c| c.1).sum::<i64>(), 0, "the day is gone from the database");
    // The actions archive holds the agent's commands, as stored.
    let actions = retention::read_archive(&archive_dir.join(format!("{}.jsonl.gz", part("actions")))).expect("archive");
    let rows: Vec<Value> = actions.iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(rows.len() as i64, before[3].1);
    assert!(
        rows.iter().any(|r| r["argv"] == serde_json::json!(["cat", "/etc/hostname"]) && r["session_id"] == id.as_str()),
        "{rows:#?}"
    );
    let (code, findings, summary) = verify(&d, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");
    assert_eq!(
        (&summary["retained_rows"], &summary["cuts"]),
        (&retained.into(), &(1 + items.len()).into()),
        "{summary}"
    );

    // One changed row in an archive: the hash no longer matches, nor does the row's leaf.
    a_changed_archive_row_fails(&d, &dir, &format!("{}.jsonl.gz", part("actions")), &actions);

    // Only retention removes a partition: the writer may not drop one or cut without a stored
    // cut, nobody may truncate one, and one dropped by hand (with no cut) fails `verify`.
    only_retention_removes_a_partition(&d, &dir, &part("actions")).await;
}

/// Issue 20, finding 1: an agent that is root in its session asks the daemon to apply
/// retention (with the daemon's clock 400 days ahead, so an accepted request would remove
/// today's partitions, as a dry run from outside shows) and to tag a cgroup, and runs
/// `unload --force`. All three are refused; the two daemon requests are recorded in its session as tamper events (with a `tamper` alert), and nothing is
/// removed. Then a cut forged with an early range, signed with the host's own key and chained
/// correctly, is reported by `verify` as `cut_too_early`.
#[tokio::test(flavor = "multi_thread")]
async fn retention_from_inside_a_session_is_refused_recorded_and_removes_nothing() {
    let dir = scratch("retention_attack");
    let cfg = dir.join("agentmon.toml");
    std::fs::write(&cfg, "[retention]\nhot = \"7d\"\nwarm = \"30d\"\ncold = \"365d\"\n").expect("config");
    let (mut d, _clock) = start_with_clock("retention_attack", &dir, &cfg, Utc::now() + Duration::days(400)).await;
    let (victim, out) = d.run_agent("ops/victim", &dir, &["/bin/sh", "-c", "cat /etc/hostname > /dev/null"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&victim);
    let before = counts(&d.pool, &victim).await;
    assert!(before.iter().any(|(t, n)| t == "actions" && *n >= 1), "{before:?}");
    // From outside every session the request would go through: today's partitions are planned.
    let dry = json_lines(&d.cli(&["retention", "--json", "--dry-run"]));
    assert!(dry.iter().filter(|l| l["type"] == "partition").count() >= 5, "{dry:#?}");

    let bin = integration_tests::bin();
    let bin = bin.to_str().expect("utf8");
    let pins = d.pin_dir.display();
    let script = format!(
        "{bin} retention --json; echo \"retention rc=$?\"; {bin} tag --cgroup / --agent x; echo \"tag rc=$?\"; \
         {bin} unload --force --pin-dir {pins}; echo \"unload rc=$?\""
    );
    let (attacker, out) = d.run_agent("ops/attacker", &dir, &["/bin/sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("retention rc=1") && stdout.contains("tag rc=1") && stdout.contains("unload rc=1"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("refused: `retention` changes the trail")
            && stderr.contains("refused: `tag` changes the trail")
            && stderr.contains("refused: this process is part of an agent session"),
        "{stderr}"
    );
    assert!(d.pin_dir.exists(), "unload --force from inside the session removed nothing");
    d.wait_session_end(&attacker);

    // Recorded in the attacker's session, and alerted on.
    let refused: Vec<(String, i64)> = sqlx::query_as(
        "SELECT data->>'request', (data->>'uid')::bigint FROM events \
         WHERE session_id::text = $1 AND kind = 'tamper' AND data->>'tamper' = 'control_refused' ORDER BY seq",
    )
    .bind(&attacker)
    .fetch_all(&d.pool)
    .await
    .expect("tamper events");
    assert_eq!(refused, vec![("retention".to_owned(), 0), ("tag".to_owned(), 0)]);
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE session_id::text = $1 AND rule = 'tamper'")
        .bind(&attacker)
        .fetch_one(&d.pool)
        .await
        .expect("alerts");
    assert!(alerts >= 1, "a tamper alert for the refused requests");

    // Nothing was removed: every partition of today is there, the victim's rows too.
    let today = Utc::now().date_naive().format("%Y%m%d").to_string();
    for t in TABLES {
        assert!(exists(&d.pool, &format!("{t}_p{today}")).await, "{t} of today is still there");
    }
    assert_eq!(counts(&d.pool, &victim).await, before);
    let cuts: i64 = sqlx::query_scalar("SELECT count(*) FROM retention_cuts").fetch_one(&d.pool).await.expect("cuts");
    assert_eq!(cuts, 0);
    let (code, findings, _) = verify(&d, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");

    // A cut of today's events, forged with the host's own key and chained as the daemon would:
    // its signature and chain are fine, but it removed rows far younger than its tiers allow.
    d.stop();
    forge_early_cut(&d).await;
    let (code, findings, _) = verify(&d, &[]);
    assert_eq!(code, 3);
    let early: Vec<&Value> = findings.iter().filter(|f| f["kind"] == "cut_too_early").collect();
    assert_eq!(early.len(), 1, "{findings:#?}");
    assert!(early[0]["detail"].as_str().is_some_and(|t| t.contains("hot = 7d")), "{early:#?}");
    assert!(
        findings.iter().all(|f| ["cut_too_early", "after_stop", "truncated_tail", "no_checkpoint"]
            .contains(&f["kind"].as_str().unwrap_or(""))),
        "the forged cut is otherwise a valid row of the chain: {findings:#?}"
    );
}

/// Append to the stopped daemon's chain a retention cut of today's `events`, signed with its
/// key (as a root attacker who read it could), tiers hot 7d / warm 30d, made "now".
async fn forge_early_cut(d: &Daemon) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_owned();
    let seed: [u8; 32] = std::fs::read(d.state_dir.join("signing.key")).expect("key").try_into().expect("32-byte key");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let head = monitor::store::chain_head(&d.pool, &host).await.expect("head").expect("a chain");
    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut c = monitor::record::RetentionCut {
        id: uuid::Uuid::now_v7(),
        table: "events".into(),
        partition: format!("events_p{}", today.format("%Y%m%d")),
        range_from: today,
        range_to: today + Duration::days(1),
        tier: "warm".into(),
        rows: 0,
        chained_rows: 0,
        first_seq: None,
        last_seq: None,
        leaves_hash: monitor::chain::LeavesHasher::default().finish(),
        archive_file: None,
        archive_sha256: None,
        covers_seq: head.seq,
        head_hash: monitor::text::hex(&head.hash),
        at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now"),
        hot_secs: Some(7 * 86_400),
        warm_secs: Some(30 * 86_400),
        key_fingerprint: monitor::chain::key_fingerprint(key.verifying_key().as_bytes()),
        signature: String::new(),
        chain: monitor::record::ChainLink::default(),
    };
    c.signature = monitor::text::hex(&key.sign(&monitor::chain::cut_message(&host, &c)).to_bytes());
    let seq = head.seq + 1;
    let hash = monitor::chain::link(&head.hash, &monitor::chain::leaf(&monitor::chain::cut_row(&host, &c, seq)));
    sqlx::query(
        "INSERT INTO retention_cuts (id, host, table_name, partition_name, range_from, range_to, tier, rows, chained_rows, \
         leaves_hash, covers_seq, head_hash, at, key_fingerprint, signature, chain_seq, chain_hash, hot_secs, warm_secs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(c.id)
    .bind(&host)
    .bind(&c.table)
    .bind(&c.partition)
    .bind(c.range_from)
    .bind(c.range_to)
    .bind(&c.tier)
    .bind(&c.leaves_hash)
    .bind(c.covers_seq as i64)
    .bind(&c.head_hash)
    .bind(c.at)
    .bind(&c.key_fingerprint)
    .bind(&c.signature)
    .bind(seq as i64)
    .bind(hash.to_vec())
    .bind(c.hot_secs)
    .bind(c.warm_secs)
    .execute(&d.pool)
    .await
    .expect("insert the forged cut");
}

#[test]
fn every_partitioned_table_is_listed() {
    let tables: Vec<&str> = monitor::retention::TABLES.iter().map(|(t, _)| *t).collect();
    assert_eq!(PARTITIONED.to_vec(), tables);
}
