//! Root integration test of the incident packet: a real session exported as JSON and HTML,
//! checked offline by `verify --packet` (no database), broken by a one-byte change, and the
//! HTML rendered by a real headless Chromium with the session's commands visible.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{scratch, wait_for, Daemon};
use serde_json::Value;

fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium-headless-shell");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup` (it installs Debian's chromium-headless-shell)",
        p.display()
    );
    p
}

/// `agentmon verify --packet FILE` with no database in reach: (exit code, stdout).
fn verify_packet(file: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(integration_tests::bin())
        .args(["verify", "--packet"])
        .arg(file)
        .args(extra)
        .env_remove("DATABASE_URL")
        .env("AGENTMON_RUNTIME_DIR", "/nonexistent")
        .output()
        .expect("run verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Export until a signed checkpoint covers the sessions (one comes within a second here).
fn export(d: &Daemon, args: &[&str]) {
    wait_for(30, "an export covered by a checkpoint", || {
        let out = d.cli(&[&["export"], args].concat());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            return Some(());
        }
        assert!(err.contains("no signed checkpoint covers"), "export failed: {err}");
        None
    });
}

fn flip(src: &Path, dst: &Path, find: &str, replace: &str) {
    let text = std::fs::read_to_string(src).expect("read");
    assert!(text.contains(find), "{find} not in {}", src.display());
    std::fs::write(dst, text.replacen(find, replace, 1)).expect("write");
}

/// A real browser renders the packet `html` offline, with the commands, the alerts and the
/// verification on the page; its screenshot goes to `dir`, and to `AGENTMON_KEEP_SCREENSHOT` if set.
fn assert_renders_in_chromium(chromium: &Path, html: &Path, dir: &Path) {
    let dom = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.status.success() && dom_text.contains("</html>"), "{}", String::from_utf8_lossy(&dom.stderr));
    for want in [
        "rm -rf /var/lib/agentmon-export-missing",
        "sleep 2",
        "wc -l",
        "recursive_delete",
        "sensitive_data",
        "Verified",
        "export-agent",
        "exit 1",
        "out.txt",
    ] {
        assert!(dom_text.contains(want), "the rendered page lacks {want}");
    }
    let shot = dir.join("packet.png");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a screenshot with content: {} bytes", png.len());
    if let Ok(keep) = std::env::var("AGENTMON_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packet_verifies_offline_fails_on_one_changed_byte_and_renders_in_chromium() {
    let chromium = chromium();
    let dir = scratch("export");
    std::fs::write(dir.join(".env"), "X=1\n").expect(".env");
    std::fs::write(
        dir.join("agent.sh"),
        "echo built > out.txt\n\
         cat .env > /dev/null\n\
         sh -c 'ls | wc -l' > /dev/null\n\
         sleep 2\n\
         rm -rf /var/lib/agentmon-export-missing\n\
         /bin/false\n\
         exit 0\n",
    )
    .expect("script");
    let d = Daemon::start("export", &["--checkpoint-secs", "1"]).await;
    let (id, out) = d.run_agent("export-agent", &dir, &["/bin/sh", "agent.sh"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let session = d.wait_session_end(&id);
    let json_path = dir.join("packet.json");
    export(&d, &["--session", &id[..8], "-o", json_path.to_str().expect("utf8")]);

    // The packet holds the session's rows in full and verifies with no database.
    let (code, text) = verify_packet(&json_path, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("packet verifies:"), "{text}");
    let packet: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read")).expect("json");
    assert_eq!(packet["format"], "agentmon-packet/1");
    assert_eq!(packet["sessions"], serde_json::json!([id]));
    let proof = &packet["proofs"][0];
    let rows: Vec<&Value> = proof["entries"].as_array().expect("entries").iter().filter_map(|e| e.get("row")).collect();
    let count = |t: &str| rows.iter().filter(|r| r["table"] == t).count();
    assert_eq!(count("sessions"), 1);
    assert_eq!(count("session_ends"), 1);
    assert_eq!(count("actions") as i64, session["actions"].as_i64().expect("actions"), "every action");
    assert_eq!(count("events") as i64, session["events"].as_i64().expect("events"), "every raw event");
    assert!(count("processes") > count("actions"), "the process trees (the agent and `sh -c` children)");
    let commands: Vec<&str> =
        rows.iter().filter(|r| r["table"] == "actions").filter_map(|r| r["command"].as_str()).collect();
    assert!(commands.contains(&"rm -rf /var/lib/agentmon-export-missing"), "{commands:?}");
    let alerts: Vec<&&Value> = rows.iter().filter(|r| r["table"] == "alerts").collect();
    assert!(alerts.iter().any(|a| a["rule"] == "recursive_delete"), "{alerts:?}");
    assert!(alerts.iter().any(|a| a["rule"] == "sensitive_data"), "{alerts:?}");
    assert!(
        rows.iter().all(|r| r["table"] == "sessions" && r["id"] == id.as_str() || r["session_id"] == id.as_str()),
        "only this session's rows in full"
    );
    let leaves = proof["entries"].as_array().expect("entries").iter().filter(|e| e.get("leaf").is_some()).count();
    assert!(leaves > 0, "the checkpoints signed during the session's 2 s sleep are leaves");
    let key = proof["public_key"].as_str().expect("key").to_owned();

    // The right key passes; another does not.
    assert_eq!(verify_packet(&json_path, &["--key", &key]).0, 0);
    let (code, text) = verify_packet(&json_path, &["--key", &"ab".repeat(32)]);
    assert_eq!(code, 3, "{text}");

    // One changed byte anywhere fails: in a command, in a leaf hash, in the layout.
    let bad = dir.join("bad.json");
    for (find, replace) in [
        ("agentmon-export-missing", "agentmon-export-mission"),
        ("\"leaf\":\"", "\"leaF\":\""),
        ("\"format\":", "\"format\" :"),
        (
            &format!("\"public_key\":\"{}", &key[..2]),
            &format!("\"public_key\":\"{}", if &key[..2] == "00" { "01" } else { "00" }),
        ),
    ] {
        flip(&json_path, &bad, find, replace);
        let (code, text) = verify_packet(&bad, &[]);
        assert_eq!(code, 3, "{find} -> {replace}: {text}");
        assert!(text.contains("does NOT verify"), "{text}");
    }
    let mut bytes = std::fs::read(&json_path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&bad, &bytes).expect("write");
    assert_eq!(verify_packet(&bad, &[]).0, 3, "a flipped bit in the middle");

    // The HTML form verifies too, and a changed byte on the page fails.
    let html = dir.join("packet.html");
    export(&d, &["--session", &id, "--format", "html", "-o", html.to_str().expect("utf8")]);
    let (code, text) = verify_packet(&html, &[]);
    assert_eq!(code, 0, "{text}");
    let bad_html = dir.join("bad.html");
    flip(&html, &bad_html, "<h3>Timeline", "<h3>Timelinf");
    assert_eq!(verify_packet(&bad_html, &[]).0, 3);

    // A real browser renders it offline: the commands, the alerts, the verification.
    assert_renders_in_chromium(&chromium, &html, &dir);

    // Several sessions by agent and time go into one packet.
    let (id2, out) = d.run_agent("export-agent", &dir, &["/bin/sh", "-c", "true; ls > /dev/null"]);
    assert!(out.status.success());
    d.wait_session_end(&id2);
    let multi = dir.join("multi.json");
    export(&d, &["--agent", "export-agent", "--since", "10m", "-o", multi.to_str().expect("utf8")]);
    assert_eq!(verify_packet(&multi, &[]).0, 0);
    let packet: Value = serde_json::from_str(&std::fs::read_to_string(&multi).expect("read")).expect("json");
    assert_eq!(packet["sessions"], serde_json::json!([id, id2]));

    // Bad input: no selection, an unknown session.
    let none = d.cli(&["export", "-o", "/tmp/x.json"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("say which sessions"));
    let unknown = d.cli(&["export", "--session", "ffffffff", "-o", "/tmp/x.json"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", String::from_utf8_lossy(&unknown.stderr));
}

/// Right after an incident no periodic checkpoint covers the session yet (here none would for
/// an hour): `export` asks the running daemon for one, says so, and writes the packet at once.
#[tokio::test(flavor = "multi_thread")]
async fn export_right_after_a_session_asks_the_daemon_for_a_checkpoint() {
    let dir = scratch("export_now");
    let d = Daemon::start("export_now", &["--checkpoint-secs", "3600", "--heartbeat-secs", "3600"]).await;
    let (id, out) = d.run_agent("export-now", &dir, &["/bin/sh", "-c", "echo incident > out.txt"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let path = dir.join("packet.json");
    let out = d.cli(&["export", "--session", &id, "-o", path.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "one export, no retry: {err}");
    assert!(err.contains("the daemon is signing one"), "the progress note: {err}");
    let (code, text) = verify_packet(&path, &[]);
    assert_eq!(code, 0, "{text}");
    // Asked again with nothing new sealed, the daemon signs no second checkpoint.
    let before = d.status()["checkpoints_written"].as_u64().expect("checkpoints_written");
    let again = d.cli(&["export", "--session", &id, "-o", path.to_str().expect("utf8")]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(d.status()["checkpoints_written"].as_u64(), Some(before));
}
