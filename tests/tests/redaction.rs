//! Root integration test of issue 20, section 3: redaction replaces only what has the shape of a
//! secret. A fake key header hides no script, the new secret forms are replaced in a real
//! session, and a command of which redaction replaced most is marked `large_share`.

use std::process::Command;

use integration_tests::{scratch, strs, Daemon};
use serde_json::Value;

const CURL_PW: &str = "hunter2CurlPw";
const DOCKER_PW: &str = "hunter2DockerPw";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ";
const API_KEY: &str = "k3yApiSecret77";
const COOKIE: &str = "sidSecret88";
const URL_TOKEN: &str = "abcdef0123456789abcdef0123456789";
/// Text in a quoted value, so hidden like a secret: its command is marked.
const QUOTED: &str = "echo hidden-by-quote-1; echo hidden-by-quote-2; echo hidden-by-quote-3";

fn hidden() -> [&'static str; 7] {
    [CURL_PW, DOCKER_PW, AWS_SECRET, API_KEY, COOKIE, URL_TOKEN, "hidden-by-quote"]
}

/// The action whose argv starts with `argv0` and contains `word`.
fn action<'a>(actions: &'a [Value], argv0: &str, word: &str) -> &'a Value {
    actions
        .iter()
        .find(|a| {
            let argv = strs(&a["argv"]);
            argv[0].ends_with(argv0) && argv.iter().any(|x| x.contains(word))
        })
        .unwrap_or_else(|| panic!("no {argv0} action with {word}: {actions:#?}"))
}

/// Whether `s` is `prefix`, a `[REDACTED:<rule>:<12 hex>]` token, then `suffix`.
fn token_between(s: &str, prefix: &str, rule: &str, suffix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix).and_then(|r| r.strip_prefix(&format!("[REDACTED:{rule}:"))) else {
        return false;
    };
    rest.len() == 13 + suffix.len()
        && rest[..12].bytes().all(|b| b.is_ascii_hexdigit())
        && rest[12..].strip_prefix(']') == Some(suffix)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fake_key_header_hides_nothing_and_new_secret_forms_are_redacted() {
    let d = Daemon::start("redaction", &[]).await;
    let dir = scratch("redaction");
    // Stand-ins for the clients, so their argv is captured: each is /bin/true under its name.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for name in ["curl", "docker", "aws", "git"] {
        std::os::unix::fs::symlink("/bin/true", bin.join(name)).expect("symlink");
    }
    let script = format!(
        "PATH={bin}:$PATH\n\
         /bin/sh -c '# -----BEGIN PRIVATE KEY-----; echo visible-marker'\n\
         /bin/sh -c '# -----BEGIN RSA PRIVATE KEY-----\necho visible-marker-2'\n\
         curl -u user:{CURL_PW} https://example.test/\n\
         curl -H 'X-Api-Key: {API_KEY}' -H 'Cookie: sid={COOKIE}; theme=dark' http://127.0.0.1:9/\n\
         docker login -u me -p {DOCKER_PW} registry.example\n\
         aws configure set aws_secret_access_key {AWS_SECRET}\n\
         git clone https://{URL_TOKEN}@github.com/o/r.git\n\
         /bin/sh -c \"X_TOKEN='{QUOTED}'; true\"\n\
         exit 0",
        bin = bin.display(),
    );
    let (id, out) = d.run_agent("claude", &dir, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (`#` comments out the rest of the first one's line; the second one's script runs.)
    assert_eq!(String::from_utf8_lossy(&out.stdout), "visible-marker-2\n", "the script ran");
    d.wait_session_end(&id);
    let actions = d.actions(&id);

    // The fake header: the script is stored as it was, nothing redacted.
    let fake = action(&actions, "/bin/sh", "; echo visible-marker");
    assert_eq!(strs(&fake["argv"]), ["/bin/sh", "-c", "# -----BEGIN PRIVATE KEY-----; echo visible-marker"]);
    assert_eq!(fake["command"], "/bin/sh -c '# -----BEGIN PRIVATE KEY-----; echo visible-marker'");
    assert_eq!(strs(&fake["redacted"]), Vec::<String>::new());
    let fake = action(&actions, "/bin/sh", "visible-marker-2");
    assert_eq!(strs(&fake["argv"]), ["/bin/sh", "-c", "# -----BEGIN RSA PRIVATE KEY-----\necho visible-marker-2"]);
    assert_eq!(strs(&fake["redacted"]), Vec::<String>::new());

    // Each secret replaced, the rest of its command as it was.
    let curl_u = action(&actions, "curl", "-u");
    let argv = strs(&curl_u["argv"]);
    assert_eq!((argv.len(), argv[1].as_str(), argv[3].as_str()), (4, "-u", "https://example.test/"), "{argv:?}");
    assert!(token_between(&argv[2], "user:", "password_option", ""), "{argv:?}");
    assert_eq!(strs(&curl_u["redacted"]), ["password_option"]);

    let curl_h = action(&actions, "curl", "-H");
    let argv = strs(&curl_h["argv"]);
    assert_eq!(argv.len(), 6, "{argv:?}");
    assert!(token_between(&argv[2], "X-Api-Key: ", "secret_assignment", ""), "{argv:?}");
    let cookie = argv[4].strip_prefix("Cookie: sid=").expect("cookie header");
    let (sid, theme) = cookie.split_once("; theme=").expect("both cookies, names kept");
    assert!(token_between(sid, "", "cookie", "") && token_between(theme, "", "cookie", ""), "{argv:?}");
    assert_eq!(argv[5], "http://127.0.0.1:9/");
    assert_eq!(strs(&curl_h["redacted"]), ["cookie", "secret_assignment"]);

    let docker = action(&actions, "docker", "login");
    let argv = strs(&docker["argv"]);
    assert_eq!(argv[..5], ["docker", "login", "-u", "me", "-p"], "{argv:?}");
    assert!(token_between(&argv[5], "", "password_option", "") && argv[6] == "registry.example", "{argv:?}");
    assert_eq!(strs(&docker["redacted"]), ["password_option"]);

    let aws = action(&actions, "aws", "configure");
    let argv = strs(&aws["argv"]);
    assert_eq!(argv[..4], ["aws", "configure", "set", "aws_secret_access_key"], "{argv:?}");
    assert!(token_between(&argv[4], "", "config_value", ""), "{argv:?}");
    assert_eq!(strs(&aws["redacted"]), ["config_value"]);

    let git = action(&actions, "git", "clone");
    let argv = strs(&git["argv"]);
    assert!(token_between(&argv[2], "https://", "url_token", "@github.com/o/r.git"), "{argv:?}");
    assert_eq!(strs(&git["redacted"]), ["url_token"]);

    // Most of this command was a quoted value: replaced, the rest visible, and marked.
    let quoted = action(&actions, "/bin/sh", "X_TOKEN");
    let argv = strs(&quoted["argv"]);
    assert!(token_between(&argv[2], "X_TOKEN='", "secret_assignment", "'; true"), "{argv:?}");
    assert_eq!(strs(&quoted["redacted"]), ["large_share", "secret_assignment"]);
    // ... and found by SQL, as the only such action (a lone short secret is not marked).
    let marked: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM actions WHERE session_id = $1::uuid AND 'large_share' = ANY(redacted)",
    )
    .bind(&id)
    .fetch_all(&d.pool)
    .await
    .expect("query");
    assert_eq!(marked, [quoted["id"].as_str().expect("id")]);

    // Nothing hidden anywhere in the database; the fake header's script is there.
    let dump = Command::new("pg_dump").arg("--dbname").arg(&d.db_url).output().expect("pg_dump");
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    for h in hidden() {
        assert!(!dump.contains(h), "{h} is in the database");
    }
    assert!(dump.contains("# -----BEGIN PRIVATE KEY-----; echo visible-marker"));
    assert!(dump.contains("echo visible-marker-2"));
}
