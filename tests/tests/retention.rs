//! Root integration test of retention with proof: a real daemon with short tiers (hot 1d,
//! warm 3d), a real session, and `agentmon retention` with a stand-in clock. Hot → warm drops
//! only the raw events; cold archives every partition of the day, then drops it; `verify`
//! passes after each step and `verify --archive` checks each archive. A partition dropped by
//! hand, with no signed cut, makes `verify` fail, and the writer role cannot drop one at all.

use std::{path::Path, process::Command};

use chrono::{Duration, Utc};
use integration_tests::{json_lines, scratch, Daemon};
use monitor::retention;
use serde_json::Value;

const TABLES: [&str; 6] = ["events", "alerts", "processes", "actions", "session_ends", "sessions"];

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

/// `agentmon retention --json [--dry-run] --as-of T`: the exit code and the partition lines.
fn retention(d: &Daemon, as_of: &str, dry_run: bool) -> (i32, Vec<Value>) {
    let mut args = vec!["retention", "--json", "--as-of", as_of];
    if dry_run {
        args.push("--dry-run");
    }
    let out = d.cli(&args);
    assert!(out.status.code().is_some(), "retention: {out:?}");
    let items = json_lines(&out).into_iter().filter(|l| l["type"] == "partition").collect();
    (out.status.code().unwrap_or(-1), items)
}

/// One partition that cold retention archived and dropped (`i`, its line of `retention --json`):
/// its archive is in `archive_dir` with the signed hash and every row, and verifies; the
/// partition is gone. Returns the archive's rows.
async fn check_cold_archive(d: &Daemon, archive_dir: &Path, i: &Value) -> i64 {
    assert_eq!((&i["tier"], &i["status"]), (&"cold".into(), &"dropped".into()), "{i}");
    let file = std::path::PathBuf::from(i["archive_file"].as_str().expect("archive"));
    assert_eq!(file, archive_dir.join(format!("{}.jsonl.gz", i["partition"].as_str().expect("name"))));
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
    let archive_dir = dir.join("archive");
    let cfg = dir.join("agentmon.toml");
    std::fs::write(
        &cfg,
        format!(
            "[retention]\nhot = \"1d\"\nwarm = \"3d\"\ncold = \"30d\"\narchive_dir = \"{}\"\n",
            archive_dir.display()
        ),
    )
    .expect("config");
    let d = Daemon::start("retention", &["--config", cfg.to_str().expect("utf8")]).await;
    let (id, out) = d.run_agent(
        "ops/retention",
        &dir,
        &["/bin/sh", "-c", "cat /etc/hostname > /dev/null; ls / > /dev/null; /bin/true"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let today = Utc::now().date_naive().format("%Y%m%d").to_string();
    let part = |t: &str| format!("{t}_p{today}");
    for t in TABLES {
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
    let (code, items) = retention(&d, &warm_at, true);
    assert_eq!(code, 0);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(
        (&items[0]["partition"], &items[0]["tier"], &items[0]["status"], &items[0]["rows"]),
        (&part("events").into(), &"warm".into(), &"planned".into(), &events_today.into())
    );
    assert_eq!(counts(&d.pool, &id).await, before, "a dry run changes nothing");

    let (code, items) = retention(&d, &warm_at, false);
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
    let (code, items) = retention(&d, &warm_at, false);
    assert_eq!((code, items.len()), (0, 0), "applied once: {items:#?}");

    // Past warm (3d): every partition of the day is archived, then dropped.
    let cold_at = (Utc::now() + Duration::days(5)).to_rfc3339();
    let (code, items) = retention(&d, &cold_at, false);
    assert_eq!(code, 0, "{items:#?}");
    let names: Vec<&str> = items.iter().map(|i| i["partition"].as_str().expect("name")).collect();
    assert_eq!(
        names,
        TABLES[1..].iter().map(|t| part(t)).collect::<Vec<_>>(),
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
