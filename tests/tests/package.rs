//! The Debian package. `cargo xtask test` builds it (`cargo xtask package --dev`) and passes its
//! path in `AGENTMON_TEST_DEB`.
//!
//! Root test: install it with `dpkg -i`, check every file with its owner and mode, the group,
//! the state directory, `--version`, the completions and man pages, and `systemd-analyze verify`
//! on the installed unit; run the installed daemon on the default pins, stop it (the programs
//! stay attached), and purge: every file, the group and the pins must be gone, and no program
//! or link of that daemon may still be loaded. An existing /etc/agentmon or /var/lib/agentmon
//! is moved aside for the test and put back.
//!
//! Without root: the default config lists every key, and with every example uncommented it
//! still parses.

use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use aya::programs::links::{FdLink, PinnedLink};
use integration_tests::{bin, cgroup2_mount, fresh_database, require_root, scratch, wait_for};

const CONFIG: &str = "/etc/agentmon/agentmon.toml";
const PIN_DIR: &str = "/sys/fs/bpf/agentmon";
const STATE_DIR: &str = "/var/lib/agentmon";
const RUNTIME_DIR: &str = "/run/agentmon";
const UNIT: &str = "/usr/lib/systemd/system/agentmon.service";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/agentmon.service";
const BASH: &str = "/usr/share/bash-completion/completions/agentmon";
const ZSH: &str = "/usr/share/zsh/vendor-completions/_agentmon";
const FISH: &str = "/usr/share/fish/vendor_completions.d/agentmon.fish";
const MAN: &str = "/usr/share/man/man1/agentmon.1.gz";
const MAN_DAEMON: &str = "/usr/share/man/man1/agentmon-daemon.1.gz";

fn deb() -> PathBuf {
    let p = std::env::var_os("AGENTMON_TEST_DEB").map_or_else(
        || panic!("AGENTMON_TEST_DEB is not set: run the tests through `cargo xtask test`, which builds the package"),
        PathBuf::from,
    );
    assert!(p.is_file(), "AGENTMON_TEST_DEB={} does not exist", p.display());
    p
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run `cmd`, which must succeed; its stdout and stderr together.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed with {}:\n{text}", out.status);
    text
}

/// dpkg knows the package (installed, or its config files left).
fn known_to_dpkg() -> bool {
    output(Command::new("dpkg-query").args(["-W", "agentmon"])).status.success()
}

/// The gid of the group `agentmon`, if it exists.
fn agentmon_gid() -> Option<u32> {
    let out = output(Command::new("getent").args(["group", "agentmon"]));
    out.status.success().then(|| {
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        line.split(':').nth(2).and_then(|g| g.trim().parse().ok()).unwrap_or_else(|| panic!("bad group line {line}"))
    })
}

/// `path` is a regular file (or directory) owned by root:root with exactly `mode`.
fn root_owned(path: &str, dir: bool, mode: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(meta.is_dir(), dir, "{path}: wrong file type");
    assert!(dir || meta.file_type().is_file(), "{path} is not a regular file");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} must belong to root:root");
    assert_eq!(meta.mode() & 0o7777, mode, "{path} has mode {:o}, not {mode:o}", meta.mode() & 0o7777);
}

fn gunzip(path: &str) -> String {
    ok(Command::new("gzip").args(["-dc", path]))
}

/// Moves an existing path aside for the test and puts it back when dropped (after the purge).
struct Aside {
    path: PathBuf,
    backup: Option<PathBuf>,
}

impl Aside {
    fn new(path: &str) -> Self {
        let path = PathBuf::from(path);
        let backup = path.exists().then(|| {
            let b = PathBuf::from(format!("{}.package-test-{}", path.display(), std::process::id()));
            std::fs::rename(&path, &b).unwrap_or_else(|e| panic!("moving {} aside: {e}", path.display()));
            eprintln!("moved {} aside to {} for the test", path.display(), b.display());
            b
        });
        Self { path, backup }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if let Some(b) = &self.backup {
            let _ = std::fs::remove_dir_all(&self.path);
            if let Err(e) = std::fs::rename(b, &self.path) {
                eprintln!("could not put {} back from {}: {e}", self.path.display(), b.display());
            }
        }
    }
}

/// Purges the package if a failed test left it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if known_to_dpkg() {
            let _ = Command::new("dpkg").args(["--purge", "agentmon"]).status();
        }
    }
}

/// The installed daemon; killed if the test fails while it runs.
struct InstalledDaemon(Option<Child>);

impl Drop for InstalledDaemon {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The (link id, program id) of every link pinned under the pin directory.
fn pinned_links() -> Vec<(u32, u32)> {
    let mut ids = Vec::new();
    for set in std::fs::read_dir(PIN_DIR).expect("pin dir").flatten() {
        for pin in std::fs::read_dir(set.path()).into_iter().flatten().flatten() {
            if pin.file_name().to_string_lossy().starts_with("link-") {
                let link = FdLink::from(
                    PinnedLink::from_pin(pin.path()).unwrap_or_else(|e| panic!("{}: {e}", pin.path().display())),
                );
                let info = link.info().expect("link info");
                ids.push((info.id(), info.program_id()));
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn package_installs_verifies_and_purges_cleanly() {
    require_root();
    let deb = deb();
    // The test installs and purges the real package: it must not take over a real installation.
    assert!(!known_to_dpkg(), "agentmon is installed on this machine; the package test installs and purges it: remove it first (dpkg --purge agentmon)");
    assert!(
        !Path::new(PIN_DIR).exists(),
        "{PIN_DIR} exists: a daemon with the default pins is attached here; stop it and run `agentmon unload` first"
    );
    assert!(
        !Path::new(RUNTIME_DIR).exists(),
        "{RUNTIME_DIR} exists: a daemon with the default runtime directory may be running; stop it first"
    );
    assert!(
        agentmon_gid().is_none(),
        "the group agentmon exists; the package test creates and deletes it: remove it first (delgroup agentmon)"
    );
    let db_url = fresh_database("package").await;
    let logs = scratch("package");
    let config_aside = Aside::new("/etc/agentmon");
    let state_aside = Aside::new(STATE_DIR);
    let installed = Installed;

    ok(Command::new("dpkg").arg("-i").arg(&deb));
    let gid = check_installed_files();
    check_version();
    check_completions_and_man();
    verify_unit();
    let links = run_installed_daemon(&db_url, &logs, gid);

    // Purge: prerm detaches the programs, postrm removes the state and the group.
    let purged = ok(Command::new("dpkg").args(["--purge", "agentmon"]));
    assert!(purged.contains("detached"), "prerm did not run `agentmon unload`:\n{purged}");
    check_purged(&links);
    drop(installed);
    drop(state_aside);
    drop(config_aside);
}

/// Files, owners, modes, conffile, group, enabled unit, and a config that changes no default.
/// Returns the group's gid.
fn check_installed_files() -> u32 {
    root_owned("/usr/bin/agentmon", false, 0o755);
    root_owned(UNIT, false, 0o644);
    root_owned("/etc/agentmon", true, 0o755);
    root_owned(CONFIG, false, 0o600);
    for f in [BASH, ZSH, FISH, MAN, MAN_DAEMON] {
        root_owned(f, false, 0o644);
    }
    root_owned(STATE_DIR, true, 0o711);
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "agentmon"]));
    assert!(conffiles.contains(CONFIG), "the config is not a conffile: {conffiles}");
    let gid = agentmon_gid().expect("postinst creates the group agentmon");
    assert!((100..1000).contains(&gid), "agentmon is not a system group (gid {gid})");
    let enabled =
        std::fs::read_link(ENABLED_LINK).unwrap_or_else(|e| panic!("the service is not enabled ({ENABLED_LINK}: {e})"));
    assert!(enabled.ends_with("agentmon.service"), "{ENABLED_LINK} -> {}", enabled.display());
    // All comments: it changes no default of the daemon or of the other tests.
    let text = std::fs::read_to_string(CONFIG).expect("config");
    assert!(
        text.lines().all(|l| l.trim().is_empty() || l.starts_with('#')),
        "{CONFIG} has a line that is not a comment"
    );
    let cfg = monitor::config::FileConfig::load(Path::new(CONFIG)).expect("the packaged config loads");
    assert!(cfg.database_url.is_none() && cfg.state_dir.is_none() && cfg.pin_dir.is_none());
    gid
}

/// The installed binary names its version and git revision, the same as the build's.
fn check_version() {
    let version = ok(Command::new("/usr/bin/agentmon").arg("--version"));
    let rev = version
        .trim()
        .strip_prefix(&format!("agentmon {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`agentmon --version` printed {version:?}"));
    let hash = rev.strip_suffix("-dirty").unwrap_or(rev);
    assert!(hash.len() >= 7 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "no git revision in {version:?}");
    ok(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "cat-file", "-e", &format!("{hash}^{{commit}}")]));
    assert_eq!(version, ok(Command::new(bin()).arg("--version")), "the package holds another build than AGENTMON_BIN");
}

fn check_completions_and_man() {
    // bash loads its completions; the zsh and fish files are theirs.
    let complete = ok(Command::new("bash").args(["-c", &format!("source {BASH} && complete -p agentmon")]));
    assert!(complete.contains("_agentmon"), "bash completion not registered: {complete}");
    assert!(std::fs::read_to_string(ZSH).expect("zsh").starts_with("#compdef agentmon"));
    let fish = std::fs::read_to_string(FISH).expect("fish");
    assert!(fish.contains("complete -c agentmon") && fish.contains("sessions"), "fish completions: {fish}");
    // Man pages: gzipped roff, one for the tool and one per command.
    assert!(gunzip(MAN).contains(".TH agentmon 1"), "{MAN} is not agentmon(1)");
    assert!(gunzip(MAN_DAEMON).contains("state\\-dir"), "{MAN_DAEMON} does not document the daemon's flags");
}

/// The installed unit passes systemd's own check (with its man pages, when man is there).
fn verify_unit() {
    let unit = std::fs::read_to_string(UNIT).expect("unit");
    for d in [
        "Type=notify",
        "ExecStart=/usr/bin/agentmon daemon",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "StateDirectory=agentmon",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(d)), "the unit has no {d}");
    }
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    if output(Command::new("sh").args(["-c", "command -v man"])).status.success() {
        verify.arg("--man=yes");
    } else {
        eprintln!("man is not installed: systemd-analyze verify --man=no");
        verify.arg("--man=no");
    }
    let verified = ok(verify.arg(UNIT));
    assert!(!verified.contains("agentmon.service:"), "systemd-analyze verify warns about the unit:\n{verified}");
}

/// The installed daemon on the defaults (pins, state, runtime dir, cgroup root), as the unit
/// runs it, stopped with SIGTERM: its programs stay attached. Returns its pinned links.
fn run_installed_daemon(db_url: &str, logs: &Path, gid: u32) -> Vec<(u32, u32)> {
    let log = std::fs::File::create(logs.join("daemon.log")).expect("log");
    let mut daemon = InstalledDaemon(Some(
        Command::new("/usr/bin/agentmon")
            .args(["daemon", "--database-url", db_url])
            .env("AGENTMON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the installed daemon"),
    ));
    let read_log = || std::fs::read_to_string(logs.join("daemon.log")).unwrap_or_default();
    wait_for(120, "the installed daemon to capture", || {
        if let Some(status) = daemon.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("the installed daemon exited with {status}:\n{}", read_log());
        }
        output(Command::new("/usr/bin/agentmon").args(["status", "--json"])).status.success().then_some(())
    });
    let socket = std::fs::metadata(monitor::control::socket_path(Path::new(RUNTIME_DIR))).expect("control socket");
    assert!(socket.file_type().is_socket() && socket.gid() == gid, "the control socket belongs to the agentmon group");
    let links = pinned_links();
    assert!(!links.is_empty(), "the daemon pinned no link under {PIN_DIR}");
    let mut child = daemon.0.take().expect("daemon");
    // SAFETY: signalling our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for the daemon");
    assert!(status.success(), "the installed daemon exited with {status}:\n{}", read_log());
    assert_eq!(pinned_links(), links, "a stopped daemon leaves its programs attached");
    assert!(
        std::fs::read_dir(STATE_DIR).expect("state dir").next().is_some(),
        "the daemon wrote nothing to {STATE_DIR}"
    );
    links
}

/// Every file, the group and the pins are gone, and none of the daemon's links or programs is
/// still loaded.
fn check_purged(links: &[(u32, u32)]) {
    assert!(!known_to_dpkg(), "dpkg still knows agentmon after the purge");
    for p in [
        "/usr/bin/agentmon",
        UNIT,
        "/etc/agentmon",
        STATE_DIR,
        RUNTIME_DIR,
        BASH,
        ZSH,
        FISH,
        MAN,
        MAN_DAEMON,
        ENABLED_LINK,
        "/etc/systemd/system/agentmon.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/agentmon.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/agentmon.service",
        PIN_DIR,
    ] {
        assert!(std::fs::symlink_metadata(p).is_err(), "{p} is left after the purge");
    }
    let cgroup_root = cgroup2_mount().join("agentmon");
    assert!(!cgroup_root.exists(), "{} is left after the purge", cgroup_root.display());
    assert!(agentmon_gid().is_none(), "the group agentmon is left after the purge");
    let loaded_links: Vec<u32> = aya::programs::loaded_links().filter_map(Result::ok).map(|l| l.id()).collect();
    let loaded_programs: Vec<u32> = aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).collect();
    for (link, prog) in links {
        assert!(!loaded_links.contains(link), "link {link} is still attached after the purge");
        assert!(!loaded_programs.contains(prog), "program {prog} is still loaded after the purge");
    }
}

/// Lines of the shipped config that are commented-out settings, uncommented: `#key = ...`,
/// `#[table]`, and array elements `#  "..."` / `#  { ... }`. Prose (`# text`) stays a comment.
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
            Some(rest) if rest.starts_with("  \"") || rest.starts_with("  {") => rest,
            _ => l,
        })
        .fold(String::new(), |acc, l| acc + l + "\n")
}

/// The keys serde expects where `toml_text` has an unknown one (from its error message).
fn known_keys(toml_text: &str) -> Vec<String> {
    let err =
        toml::from_str::<monitor::config::FileConfig>(toml_text).expect_err("an unknown key is rejected").to_string();
    let list = err.split_once("expected").unwrap_or_else(|| panic!("no key list in {err}")).1;
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn default_config_lists_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agentmon.toml");
    let text = std::fs::read_to_string(path).expect("packaging/agentmon.toml");
    assert!(
        text.lines().all(|l| l.trim().is_empty() || l.starts_with('#')),
        "{path}: every setting must be commented out"
    );
    let has = |line: &str| text.lines().any(|l| l.starts_with(line));
    let top = known_keys("zz_unknown = 1\n");
    assert!(top.len() > 10 && top.iter().any(|k| k == "database_url"), "top-level keys: {top:?}");
    for k in &top {
        match k.as_str() {
            "redaction" => assert!(has("#[redaction]"), "{path} has no #[redaction]"),
            "rule" => assert!(has("#[[rule]]"), "{path} has no #[[rule]]"),
            "sensitive" => assert!(has("#[sensitive]"), "{path} has no #[sensitive]"),
            "alerts" => assert!(has("#[alerts]"), "{path} has no #[alerts]"),
            "retention" => assert!(has("#[retention]"), "{path} has no #[retention]"),
            "agents" => assert!(has("#[agents]"), "{path} has no #[agents]"),
            k => assert!(has(&format!("#{k} = ")), "{path} does not list `{k}`"),
        }
    }
    for k in known_keys("[agents]\nzz_unknown = 1\n") {
        match k.as_str() {
            "prices" => assert!(has("#[agents.prices."), "{path} has no #[agents.prices.MODEL]"),
            "profile" => assert!(has("#[agents.profile."), "{path} has no #[agents.profile.KIND]"),
            k => assert!(has(&format!("#{k} = ")), "{path} does not list agents `{k}`"),
        }
    }
    for k in known_keys("[redaction]\nzz_unknown = 1\n") {
        assert!(has(&format!("#{k} = ")), "{path} does not list redaction `{k}`");
    }
    for k in known_keys("[[rule]]\nzz_unknown = 1\n") {
        assert!(has(&format!("#{k} = ")), "{path} does not list rule `{k}`");
    }
    for k in known_keys("[sensitive]\nzz_unknown = 1\n") {
        assert!(has(&format!("#{k} = ")), "{path} does not list sensitive `{k}`");
    }
    for k in known_keys("[alerts]\nzz_unknown = 1\n") {
        match k.as_str() {
            "rule" => assert!(has("#[[alerts.rule]]"), "{path} has no #[[alerts.rule]]"),
            k => assert!(has(&format!("#{k} = ")), "{path} does not list alerts `{k}`"),
        }
    }
    for k in known_keys("[retention]\nzz_unknown = 1\n") {
        assert!(has(&format!("#{k} = ")), "{path} does not list retention `{k}`");
    }
    for k in known_keys("[[alerts.rule]]\nzz_unknown = 1\n") {
        assert!(has(&format!("#{k} = ")), "{path} does not list alerts.rule `{k}`");
    }
    // The examples are valid: every commented setting uncommented still parses, and the
    // redaction example compiles.
    let uncommented = uncomment(&text);
    let cfg: monitor::config::FileConfig = toml::from_str(&uncommented)
        .unwrap_or_else(|e| panic!("{path} uncommented does not parse: {e}\n{uncommented}"));
    assert!(cfg.database_url.is_some() && cfg.metrics_listen.is_some(), "the examples were not uncommented");
    monitor::redact::Redactor::new(&[0; 32], &cfg.redaction).expect("the redaction example compiles");
    monitor::sensitive::Sensitive::new(&cfg.sensitive, Vec::new()).expect("the sensitive example compiles");
    let alerts = monitor::alerts::Rules::new(&cfg.alerts).expect("the alerts example compiles");
    let retention = monitor::retention::Policy::new(&cfg.retention, std::path::Path::new("/var/lib/agentmon"))
        .expect("the retention example is valid");
    assert_eq!(
        retention.map(|p| (p.hot.num_days(), p.warm.map(|w| w.num_days()), p.cold.map(|c| c.num_days()))),
        Some((7, Some(30), Some(365)))
    );
    assert!(alerts.names().iter().any(|n| n == "psql"), "the alert rule examples were not uncommented");
    // The agents' usual install paths are among the examples.
    for p in [
        "/usr/local/bin/claude",
        "/usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js",
        "/home/*/.local/bin/claude",
        "/root/.local/bin/claude",
        "/usr/local/bin/codex",
        "/usr/local/lib/node_modules/@openai/codex/bin/codex.js",
        "/usr/local/bin/gemini",
        "/usr/local/lib/node_modules/@google/gemini-cli/dist/index.js",
        "/home/*/.local/bin/aider",
        "/usr/local/bin/aider",
    ] {
        assert!(uncommented.contains(&format!("\"{p}\"")), "{path} has no exe example {p}");
    }
}
