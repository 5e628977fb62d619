//! The real daemon binary refuses a bad config file with one line naming the file and the key:
//! no panic, no backtrace, a non-zero exit. (It needs root only to get past its root check.)

use std::process::Command;

use integration_tests::{bin, require_root, scratch};

/// Run `agentmon ARGS --config PATH`; returns (exit code, stderr).
fn agentmon(args: &[&str], config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_BACKTRACE", "1")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run agentmon");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_config_files_get_one_line() {
    require_root();
    let dir = scratch("config-errors");
    let file = dir.join("agentmon.toml");
    let f = file.display();
    let cases: Vec<(&str, String)> = vec![
        ("database_url = \n", format!("{f}: line 1, column 16: not valid TOML: invalid string; expected `\"`, `'`")),
        ("group = \"x\"\n\n[redaction]\nrulez = []\n", format!("{f}: unknown key `redaction.rulez` (line 4); valid keys: rules, allow, disable")),
        ("ring_buffer_mb = \"64\"\n", format!("{f}: key `ring_buffer_mb`: expected an integer from 0 to 4294967295, found string \"64\" (line 1)")),
        ("\n\nring_buffer_mb = 48\n", format!("{f}: key `ring_buffer_mb`: 48 MiB: a ring buffer must be a power of two between 1 and 1024 MiB (line 3)")),
        (
            "metrics_listen = \"everywhere\"\n",
            format!("{f}: key `metrics_listen`: `everywhere` is not an address: expected IP:PORT (e.g. 127.0.0.1:9464), [IPv6]:PORT, a port alone for loopback, on, or off (line 1)"),
        ),
        // Session rules are checked when the daemon compiles them, and get their line too.
        ("[[rule]]\nagent = \"a\"\nunit = \"\"\n", format!("{f}: key `rule[0].unit`: empty glob: name a unit, e.g. \"claude-*.service\" (line 3)")),
        (
            "[[rule]]\nagent = \"a\"\nunit = \"a.service\"\n\n[[rule]]\nagent = \"b\"\nexe = [\"/nonexistent/agentmon/claude\"]\n",
            format!("{f}: key `rule[1].exe`: /nonexistent/agentmon/claude does not exist (install the program first, or remove the path) (line 7)"),
        ),
    ];
    for (text, want) in &cases {
        std::fs::write(&file, text).expect("write config");
        let (code, stderr) = agentmon(&["daemon"], &file);
        assert_ne!(code, Some(0), "the daemon refuses {text:?}");
        assert_eq!(stderr, format!("agentmon: {want}\n"), "daemon, config {text:?}");
    }
    // An unknown top-level key: the message lists every valid key (the list grows with the
    // config, so only its start and a few members are checked).
    std::fs::write(&file, "database_url = \"postgres://x\"\n\ndatabse_url = \"y\"\n").expect("write config");
    let (code, stderr) = agentmon(&["daemon"], &file);
    assert_ne!(code, Some(0));
    assert!(
        stderr.starts_with(&format!(
            "agentmon: {f}: unknown key `databse_url` (line 3); valid keys: database_url, group, "
        )),
        "{stderr}"
    );
    assert!(stderr.contains(", metrics_listen,") && stderr.ends_with('\n') && stderr.lines().count() == 1, "{stderr}");

    // A file named with --config must exist; a directory cannot be read.
    let missing = dir.join("missing.toml");
    let (code, stderr) = agentmon(&["daemon"], &missing);
    assert_ne!(code, Some(0));
    assert_eq!(
        stderr,
        format!(
            "agentmon: {}: no such file (only the default /etc/agentmon/agentmon.toml may be absent)\n",
            missing.display()
        )
    );
    let (code, stderr) = agentmon(&["daemon"], &dir);
    assert_ne!(code, Some(0));
    assert_eq!(stderr, format!("agentmon: {}: cannot read: Is a directory (os error 21)\n", dir.display()));

    // The query commands read the same file and say the same.
    std::fs::write(&file, "ring_buffer_mb = \"64\"\n").expect("write config");
    let (code, stderr) = agentmon(&["sessions"], &file);
    assert_ne!(code, Some(0));
    assert_eq!(stderr, format!("agentmon: {f}: key `ring_buffer_mb`: expected an integer from 0 to 4294967295, found string \"64\" (line 1)\n"));
}
