//! Root integration tests of the evidence: secrets redacted before anything reaches disk (spool,
//! handoff, database, log), the signed chain and `agentmon verify` against each kind of
//! tampering and a rebuilt chain (with and without a witness), and the database roles and the
//! private cluster's access rules.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use ed25519_dalek::Signer as _;
use futures_util::StreamExt as _;
use integration_tests::{scratch, strs, wait_for, Daemon};
use monitor::chain;
use serde_json::Value;

const GITHUB_TOKEN: &str = "ghp_R8xTq2Lm9VwZc4Nd7Hs1Kp6Yb3Gf5Ja0Ue2W";
const ANTHROPIC_KEY: &str = "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz-Xc9Vb8Nm7";
const BEARER: &str = "tok_abcdef1234567890XYZ";
const MYSQL_PW: &str = "S3cretPw0rd123";
const URL_PW: &str = "pw_S3cret99";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const FLAG_PW: &str = "hunter2hunter2";

fn secrets() -> [&'static str; 7] {
    [GITHUB_TOKEN, ANTHROPIC_KEY, BEARER, MYSQL_PW, URL_PW, AWS_SECRET, FLAG_PW]
}

/// Every secret that occurs in `text`.
fn leaked(text: &[u8]) -> Vec<&'static str> {
    secrets().into_iter().filter(|s| text.windows(s.len()).any(|w| w == s.as_bytes())).collect()
}

/// All bytes of the files under `dir`.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
    out
}

/// The fingerprint in the first `[REDACTED:<rule>:<fp>]` of `s`.
fn fingerprint(s: &str, rule: &str) -> Option<String> {
    let tag = format!("[REDACTED:{rule}:");
    let start = s.find(&tag)? + tag.len();
    Some(s[start..].split(']').next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_spool_the_handoff_the_database_or_the_log() {
    let (d, proxy) = Daemon::start_with("redact", &["--queue-memory-mb", "0"], true).await;
    let mut d = d;
    let proxy = proxy.expect("proxy");
    let dir = scratch("redact");
    // Stand-ins for the clients, so their argv is captured: each is /bin/true under its name.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for name in ["curl", "mysql", "psql", "aws"] {
        std::os::unix::fs::symlink("/bin/true", bin.join(name)).expect("symlink");
    }
    let secret_dir = dir.join(GITHUB_TOKEN);
    std::fs::create_dir_all(&secret_dir).expect("secret dir");
    std::fs::write(secret_dir.join("notes"), "x").expect("notes");
    let script = format!(
        "PATH={bin}:$PATH\n\
         curl -H 'Authorization: Bearer {BEARER}' http://127.0.0.1:9/\n\
         mysql -uroot -p{MYSQL_PW} db\n\
         psql postgres://u:{URL_PW}@h/db\n\
         AWS_SECRET_ACCESS_KEY={AWS_SECRET} aws s3 ls\n\
         env AWS_SECRET_ACCESS_KEY={AWS_SECRET} aws s3 ls\n\
         /bin/echo {GITHUB_TOKEN} {ANTHROPIC_KEY}\n\
         cat {notes}\n\
         exit 0",
        bin = bin.display(),
        notes = secret_dir.join("notes").display(),
    );

    // With the database away and no memory queue, every record goes through the spool.
    proxy.down();
    let (id, out) = d.run_agent("claude", &dir, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(30, "the session's records spooled", || (d.status()["sessions_ended"].as_u64() == Some(1)).then_some(()));
    // Spooled records are written out within 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    let spooled = files_under(&d.state_dir.join("spool"));
    let spool_bytes: usize = spooled.iter().map(|f| f.1.len()).sum();
    assert!(spool_bytes > 10_000, "the records should be in the spool ({spool_bytes} bytes)");
    for (path, bytes) in &spooled {
        assert_eq!(leaked(bytes), Vec::<&str>::new(), "secret in the spool file {path}");
    }
    assert!(spooled.iter().any(|f| f.1.windows(10).any(|w| w == b"[REDACTED:")), "redacted values are in the spool");
    proxy.up();
    d.wait_session_end_within(&id, 60);

    // A graceful stop in the middle of a command: its argv is in the handoff.
    let agent = std::process::Command::new(integration_tests::bin())
        .args(["run", "--agent", "claude", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "bash", "-c", &format!("sleep 3; echo --password={FLAG_PW} >/dev/null")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent");
    std::thread::sleep(Duration::from_millis(800));
    d.stop();
    let handoff = std::fs::read(d.state_dir.join("handoff.json")).expect("a graceful stop leaves a handoff");
    assert_eq!(leaked(&handoff), Vec::<&str>::new(), "secret in handoff.json");
    assert!(
        String::from_utf8_lossy(&handoff).contains("[REDACTED:password_flag:"),
        "the in-flight argv is in the handoff, redacted"
    );
    d.start_again(None);
    let out = agent.wait_with_output().expect("agent");
    let id2 = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("agentmon: session "))
        .expect("session")
        .trim()
        .to_owned();
    d.wait_session_end(&id2);

    // What was stored: redacted, with the rules named, and the same secret with the same mark.
    assert_stored_redacted(&d.actions(&id));

    // Nothing anywhere: a dump of the database, the state directory, the daemon's log.
    let dump = Command::new("pg_dump").arg("--dbname").arg(&d.db_url).output().expect("pg_dump");
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    assert!(dump.stdout.len() > 10_000);
    assert_eq!(leaked(&dump.stdout), Vec::<&str>::new(), "secret in the database");
    for (path, bytes) in files_under(&d.state_dir) {
        assert_eq!(leaked(&bytes), Vec::<&str>::new(), "secret in {path}");
    }
    assert_eq!(leaked(d.log().as_bytes()), Vec::<&str>::new(), "secret in the daemon log");
}

/// `agentmon verify --json` against `url`: the exit code and the output lines.
fn verify(url: &str, extra: &[&str]) -> (i32, Vec<Value>) {
    let out: Output = Command::new(integration_tests::bin())
        .args(["verify", "--json", "--database-url", url])
        .args(extra)
        .output()
        .expect("verify");
    let lines =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(3),
        "verify failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), lines)
}

fn findings(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "finding").collect()
}

fn named(lines: &[Value], kind: &str, table: &str, id: &str) -> bool {
    findings(lines).iter().any(|f| f["kind"] == kind && f["table"] == table && f["id"] == id)
}

/// A copy of the daemon's (stopped) database, and a superuser pool on it.
async fn copy_db(d: &Daemon, suffix: &str) -> (String, sqlx::PgPool) {
    let db = d.db_url.split('?').next().and_then(|b| b.rsplit('/').next()).expect("db name").to_owned();
    let copy = format!("{db}_{suffix}");
    // Not connected to the template itself: CREATE DATABASE ... TEMPLATE needs it unused.
    let admin = sqlx::PgPool::connect(&d.db_url.replacen(&format!("/{db}?"), "/postgres?", 1)).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {copy}")).execute(&admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {copy} TEMPLATE {db}")).execute(&admin).await.expect("copy");
    admin.close().await;
    let url = d.db_url.replacen(&format!("/{db}?"), &format!("/{copy}?"), 1);
    let pool = sqlx::PgPool::connect(&url).await.expect("copy pool");
    (url, pool)
}

/// Run SQL as a superuser with the append-only triggers switched off, as an attacker would.
async fn tamper(pool: &sqlx::PgPool, sql: &str) {
    let mut c = pool.acquire().await.expect("conn");
    sqlx::raw_sql(&format!("SET session_replication_role = replica; {sql}; RESET session_replication_role"))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_every_kind_of_tampering_and_a_witness_catches_a_rebuilt_chain() {
    let mut d = Daemon::start("chain", &["--checkpoint-secs", "1", "--heartbeat-secs", "2"]).await;
    let dir = scratch("chain");
    let (id, out) = d.run_agent("claude", &dir, &["bash", "-c", "echo one; ls /; cat /etc/hostname; echo two; exit 0"]);
    assert!(out.status.success());
    d.wait_session_end(&id);
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    let state = d.state_dir.clone();
    d.pool.close().await;

    let (code, lines) = verify(&d.db_url, &[]);
    assert_eq!((code, findings(&lines).len()), (0, 0), "an untouched database verifies: {lines:?}");
    let summary = lines.iter().find(|l| l["type"] == "summary").expect("summary");
    assert_eq!(summary["last_checkpoint_kind"], "stop");
    assert!(summary["rows"].as_u64() > Some(20) && summary["checkpoints"].as_u64() >= Some(3), "{summary}");
    let (code, lines) = verify(&d.db_url, &["--witness", &state.join("checkpoints.jsonl").display().to_string()]);
    assert_eq!((code, findings(&lines).len()), (0, 0), "and agrees with its witness: {lines:?}");

    // An edited argv.
    let (url, pool) = copy_db(&d, "edit").await;
    let action: String = sqlx::query_scalar(
        "SELECT id::text FROM actions WHERE argv[1] = 'echo' OR argv[1] = 'ls' ORDER BY chain_seq LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("an action");
    tamper(&pool, &format!("UPDATE actions SET argv = '{{echo,innocent}}' WHERE id = '{action}'")).await;
    let (code, lines) = verify(&url, &[]);
    assert_eq!(code, 3);
    assert!(named(&lines, "modified", "actions", &action), "{lines:?}");
    pool.close().await;

    // A deleted raw event, an inserted fake action.
    a_deleted_event_is_a_gap(&d, &id).await;
    an_inserted_action_is_named(&d, &action).await;

    // A checkpoint re-signed with another key (registered too, as a forger would).
    let (url, pool) = copy_db(&d, "resign").await;
    let (cp_id, row): (String, Value) = sqlx::query_as(&format!(
        "SELECT id::text, {} FROM checkpoints WHERE kind = 'periodic' ORDER BY chain_seq LIMIT 1",
        chain::ROW_SQL.iter().find(|t| t.0 == "checkpoints").expect("sql").1
    ))
    .fetch_one(&pool)
    .await
    .expect("a periodic checkpoint");
    let host = row["host"].as_str().expect("host").to_owned();
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let pk = monitor::text::hex(forger.verifying_key().as_bytes());
    let fp = chain::key_fingerprint(forger.verifying_key().as_bytes());
    let mut c = checkpoint_of(&row);
    c.key_fingerprint = fp.clone();
    let sig = monitor::text::hex(&forger.sign(&chain::checkpoint_message(&host, &c)).to_bytes());
    tamper(
        &pool,
        &format!("UPDATE checkpoints SET key_fingerprint = '{fp}', signature = '{sig}' WHERE id = '{cp_id}'"),
    )
    .await;
    tamper(&pool, &format!("INSERT INTO signing_keys (host, fingerprint, public_key, created_at) VALUES ('{host}', '{fp}', '{pk}', now())")).await;
    let (code, lines) = verify(&url, &[]);
    assert_eq!(code, 3);
    assert!(named(&lines, "key_changed", "checkpoints", &cp_id), "{lines:?}");
    assert!(named(&lines, "modified", "checkpoints", &cp_id), "{lines:?}");
    pool.close().await;

    // A chain rebuilt from scratch with the host's own key: only a witness tells.
    let (url, pool) = copy_db(&d, "rebuild").await;
    tamper(
        &pool,
        &format!("UPDATE actions SET argv = '{{echo,innocent}}', command = 'echo innocent' WHERE id = '{action}'"),
    )
    .await;
    let seed: [u8; 32] = std::fs::read(state.join("signing.key")).expect("the host key").try_into().expect("32 bytes");
    rebuild_chain(&pool, &host, &ed25519_dalek::SigningKey::from_bytes(&seed)).await;
    let (code, lines) = verify(&url, &[]);
    assert_eq!((code, findings(&lines).len()), (0, 0), "a rebuilt chain passes alone: {lines:?}");
    let (code, lines) = verify(&url, &["--witness", &state.join("checkpoints.jsonl").display().to_string()]);
    assert_eq!(code, 3);
    assert!(findings(&lines).iter().any(|f| f["kind"] == "witness_mismatch"), "{lines:?}");
    pool.close().await;

    // The newest rows deleted (the stop checkpoint among them): once the heartbeat allowance
    // has passed since the newest remaining checkpoint, the tail is reported as cut.
    let (url, pool) = copy_db(&d, "tail").await;
    let max: i64 = sqlx::query_scalar("SELECT max(chain_seq) FROM checkpoints").fetch_one(&pool).await.expect("max");
    for (t, _, _) in chain::ROW_SQL {
        tamper(&pool, &format!("DELETE FROM {t} WHERE chain_seq > {}", max - 4)).await;
    }
    let newest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(at) FROM checkpoints").fetch_one(&pool).await.expect("newest");
    let wait = (newest + chrono::Duration::seconds(9) - chrono::Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(wait);
    let (code, lines) = verify(&url, &[]);
    assert_eq!(code, 3);
    let tail =
        findings(&lines).into_iter().find(|f| f["kind"] == "truncated_tail").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(tail["table"], "checkpoints");
    pool.close().await;
}

/// The first session's stored actions: redacted, with the rules named, and the same secret with
/// the same mark.
fn assert_stored_redacted(actions: &[Value]) {
    let argv_of = |prog: &str| {
        actions
            .iter()
            .map(|a| strs(&a["argv"]))
            .find(|a| a[0].ends_with(prog))
            .unwrap_or_else(|| panic!("no {prog} action"))
    };
    let mysql = argv_of("mysql");
    assert_eq!(mysql[..2], ["mysql".to_owned(), "-uroot".to_owned()]);
    assert!(mysql[2].starts_with("-p[REDACTED:mysql_password:"), "{mysql:?}");
    let psql = argv_of("psql");
    assert!(psql[1].starts_with("postgres://u:[REDACTED:url_password:") && psql[1].ends_with("]@h/db"), "{psql:?}");
    let curl = argv_of("curl");
    assert!(curl[2].starts_with("Authorization: Bearer [REDACTED:"), "{curl:?}");
    let env = argv_of("env");
    assert!(env[1].starts_with("AWS_SECRET_ACCESS_KEY=[REDACTED:"), "{env:?}");
    let echo = actions.iter().find(|a| strs(&a["argv"])[0] == "/bin/echo").expect("echo action");
    let echo_argv = strs(&echo["argv"]);
    assert!(
        echo_argv[1].starts_with("[REDACTED:github_token:") && echo_argv[2].starts_with("[REDACTED:anthropic_api_key:"),
        "{echo_argv:?}"
    );
    assert_eq!(strs(&echo["redacted"]), ["anthropic_api_key", "github_token"]);
    assert!(!echo["command"].as_str().expect("command").contains("ghp_"), "{}", echo["command"]);
    let cat = actions.iter().find(|a| strs(&a["argv"])[0] == "cat").expect("cat action");
    let read = cat["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("/notes")))
        .expect("the notes read");
    let path = read["path"].as_str().expect("path");
    assert_eq!(
        fingerprint(path, "github_token"),
        fingerprint(&echo_argv[1], "github_token"),
        "the same token has the same fingerprint: {path}"
    );
    assert!(fingerprint(path, "github_token").is_some_and(|f| f.len() == 12));
}

/// A deleted raw event of `session`: the gap is reported at the next row, with the missing
/// positions.
async fn a_deleted_event_is_a_gap(d: &Daemon, session: &str) {
    let (url, pool) = copy_db(d, "delete").await;
    let (event, seq): (String, i64) = sqlx::query_as(
        "SELECT id::text, chain_seq FROM events WHERE session_id = $1::uuid ORDER BY seq OFFSET 2 LIMIT 1",
    )
    .bind(session)
    .fetch_one(&pool)
    .await
    .expect("an event");
    tamper(&pool, &format!("DELETE FROM events WHERE id = '{event}'")).await;
    let (code, lines) = verify(&url, &[]);
    assert_eq!(code, 3);
    let gap = findings(&lines).into_iter().find(|f| f["kind"] == "missing").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(gap["seq"].as_i64(), Some(seq + 1));
    assert!(gap["detail"].as_str().expect("detail").contains(&format!("{seq}..={seq}")), "{gap}");
    pool.close().await;
}

/// An inserted fake action, at the place of the real `action`.
async fn an_inserted_action_is_named(d: &Daemon, action: &str) {
    let (url, pool) = copy_db(d, "insert").await;
    let fake = "0193c2a4-7e21-7c3a-9f4e-000000000bad";
    tamper(
        &pool,
        &format!(
            "INSERT INTO actions (id, session_id, host, exec_id, pid, argv, argv_truncated, command, cwd, exe, uid, started_at, ended_at, \
             duration_ms, exit_code, signal, complete, files, net, redacted, chain_seq, chain_hash) SELECT '{fake}', session_id, host, exec_id, pid, '{{rm,-rf,/srv}}', argv_truncated, 'rm -rf /srv', cwd, exe, uid, \
             started_at, ended_at, duration_ms, exit_code, signal, complete, files, net, redacted, chain_seq, chain_hash FROM actions WHERE id = '{action}'"
        ),
    )
    .await;
    let (code, lines) = verify(&url, &[]);
    assert_eq!(code, 3);
    assert!(
        findings(&lines).iter().any(|f| f["id"] == fake || f["detail"].as_str().is_some_and(|d| d.contains(fake))),
        "{lines:?}"
    );
    pool.close().await;
}

fn checkpoint_of(row: &Value) -> monitor::record::Checkpoint {
    monitor::record::Checkpoint {
        id: uuid::Uuid::nil(),
        covers_seq: row["covers_seq"].as_u64().expect("covers_seq"),
        head_hash: row["head_hash"].as_str().expect("head").to_owned(),
        at: chrono::DateTime::from_timestamp_micros(row["at"].as_i64().expect("at")).expect("at"),
        kind: row["kind"].as_str().expect("kind").to_owned(),
        next_within_secs: row["next_within_secs"].as_u64().expect("next"),
        key_fingerprint: row["key_fingerprint"].as_str().expect("fp").to_owned(),
        signature: String::new(),
        chain: monitor::record::ChainLink::default(),
    }
}

/// What an attacker with the host's key can do: recompute every hash from the (edited) rows
/// and re-sign every checkpoint.
async fn rebuild_chain(pool: &sqlx::PgPool, host: &str, key: &ed25519_dalek::SigningKey) {
    let rows: Vec<_> = monitor::store::verify::chain_rows(pool, host, 1).collect::<Vec<_>>().await;
    let mut prev = chain::GENESIS;
    for r in rows {
        let mut r = r.expect("row");
        if r.table == "checkpoints" {
            let mut c = checkpoint_of(&r.row);
            c.head_hash = monitor::text::hex(&prev);
            let sig = monitor::text::hex(&key.sign(&chain::checkpoint_message(host, &c)).to_bytes());
            r.row["head_hash"] = c.head_hash.clone().into();
            r.row["signature"] = sig.clone().into();
            tamper(
                pool,
                &format!(
                    "UPDATE checkpoints SET head_hash = '{}', signature = '{sig}' WHERE id = '{}'",
                    c.head_hash, r.id
                ),
            )
            .await;
        }
        prev = chain::link(&prev, &chain::leaf(&r.row));
        let (_, _, idcol) = chain::ROW_SQL.iter().find(|t| t.0 == r.table).expect("table");
        tamper(
            pool,
            &format!(
                "UPDATE {} SET chain_hash = '\\x{}' WHERE host = '{host}' AND {idcol} = '{}'",
                r.table,
                monitor::text::hex(&prev),
                r.id
            ),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_only_appends_and_other_users_cannot_reach_the_private_cluster() {
    let d = Daemon::start("roles", &[]).await;
    let mut c = d.pool.acquire().await.expect("conn");
    sqlx::query("SET ROLE agentmon_writer").execute(&mut *c).await.expect("the roles exist");
    for sql in [
        "UPDATE sessions SET agent = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "ALTER TABLE actions ADD COLUMN x int",
        "DROP TABLE checkpoints",
        "SET session_replication_role = replica",
    ] {
        let e = sqlx::query(sql).execute(&mut *c).await.expect_err(sql);
        let code = e.as_database_error().and_then(sqlx::error::DatabaseError::code).map(std::borrow::Cow::into_owned);
        assert_eq!(code.as_deref(), Some("42501"), "{sql} must be refused for lack of privilege: {e}");
    }
    let mut tx = sqlx::Connection::begin(&mut *c).await.expect("tx");
    sqlx::query("INSERT INTO signing_keys (host, fingerprint, public_key, created_at) VALUES ('t', 'f', 'k', now())")
        .execute(&mut *tx)
        .await
        .expect("the writer appends");
    tx.rollback().await.expect("rollback");
    sqlx::query("SET ROLE agentmon_reader").execute(&mut *c).await.expect("reader");
    let e = sqlx::query(
        "INSERT INTO signing_keys (host, fingerprint, public_key, created_at) VALUES ('t', 'f', 'k', now())",
    )
    .execute(&mut *c)
    .await
    .expect_err("the reader only reads");
    assert_eq!(e.as_database_error().and_then(sqlx::error::DatabaseError::code).as_deref(), Some("42501"));
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&mut *c).await.expect("the reader reads");
    assert!(n >= 0);
    drop(c);

    // The private cluster: a postgres-only socket directory, peer authentication, no trust.
    let sock = d.db_url.split(['?', '&']).find_map(|p| p.strip_prefix("host=")).expect("socket dir").to_owned();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).expect("socket dir").permissions()) & 0o777;
    assert_eq!(mode, 0o700, "{sock}");
    let hba = std::fs::read_to_string(Path::new(&sock).parent().expect("cluster").join("data/pg_hba.conf"))
        .expect("pg_hba.conf");
    assert!(!hba.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("trust")), "{hba}");
    // A user who may even start sessions (it is in the daemon's group) still cannot connect.
    let (user, _) = integration_tests::test_user();
    for url in [d.db_url.clone(), d.db_url.replacen("postgres@", &format!("{user}@"), 1)] {
        let out =
            Command::new("runuser").args(["-u", user, "--", "psql", &url, "-tAc", "SELECT 1"]).output().expect("psql");
        assert!(
            !out.status.success(),
            "a non-root user connected to the private cluster: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Root is let in, through the peer map.
    let out = Command::new("psql").args([&d.db_url, "-tAc", "SELECT current_user"]).output().expect("psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
}
