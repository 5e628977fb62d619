//! Harness for the root integration tests and the benchmark: a real daemon with the real eBPF
//! programs, its own database, runtime dir and cgroup root, and helpers to run agent sessions
//! and read back what was stored.
//!
//! Run through `cargo xtask test`, which provides `AGENTMON_BIN` and
//! `AGENTMON_TEST_DATABASE_URL`. Without root or those variables the tests fail loudly.
#![expect(clippy::missing_panics_doc, reason = "test harness: panics are test failures")]

use std::{
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod agents;
pub mod records;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "integration tests need root (they load eBPF programs): run `sudo cargo xtask test`"
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through `cargo xtask test`"))
}

pub fn bin() -> PathBuf {
    let p = PathBuf::from(env("AGENTMON_BIN"));
    assert!(p.exists(), "AGENTMON_BIN={} does not exist", p.display());
    p
}

/// The cgroup2 mount, from mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if !right.starts_with("cgroup2 ") {
                return None;
            }
            left.split(' ').nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 mount")
}

pub struct Daemon {
    pub name: String,
    /// The database, for the test's own queries and the CLI.
    pub db_url: String,
    /// The URL the daemon uses (through a proxy, when there is one).
    pub daemon_url: String,
    pub runtime_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// This daemon's bpffs pins (its own, so tests running at once never share programs).
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    child: Child,
    /// False once the test stopped or killed the daemon (its pid may be reused).
    running: bool,
    pub pool: sqlx::PgPool,
    extra: Vec<String>,
}

fn spawn_daemon(db_url: &str, runtime_dir: &Path, cgroup_root: &Path, pin_dir: &Path, extra: &[&str]) -> Child {
    // Appended, so a restarted daemon's log follows the first one's.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(runtime_dir.join("daemon.log")).expect("log");
    Command::new(bin())
        .arg("daemon")
        .arg("--database-url")
        .arg(db_url)
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .arg("--cgroup-root")
        .arg(cgroup_root)
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("--state-dir")
        .arg(runtime_dir.join("state"))
        .args(extra)
        .env("AGENTMON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn daemon")
}

/// Replace the database name in a `postgres://user@host/DB?...` URL.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let slash = base.rfind('/').expect("url has a database part");
    format!("{}/{db}?{query}", &base[..slash])
}

/// A stand-in for the database's unix socket that the test can take down and bring back: an
/// outage, as the daemon sees it, without stopping the `PostgreSQL` that other tests share.
/// While down, every open connection is cut and new ones are closed at once.
pub struct DbProxy {
    pub dir: PathBuf,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl DbProxy {
    /// Listen beside the socket of `url` (`...?host=DIR&port=PORT`).
    pub fn start(name: &str, url: &str) -> Self {
        let param = |k: &str| {
            url.split(['?', '&'])
                .find_map(|p| p.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {url}"))
                .to_owned()
        };
        let (host, port) = (param("host="), param("port="));
        let target = PathBuf::from(host).join(format!(".s.PGSQL.{port}"));
        let dir = PathBuf::from(format!("/tmp/agentmon-dbproxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("proxy dir");
        let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}"))).expect("proxy socket");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !u.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = UnixStream::connect(&target) else { continue };
                let mut list = c.lock().expect("conns");
                for s in [&client, &server] {
                    list.push(s.try_clone().expect("clone"));
                }
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { dir, up, conns }
    }

    /// The database URL through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (base, query) = url.split_once('?').expect("url has parameters");
        let rest: Vec<&str> = query.split('&').filter(|p| !p.starts_with("host=")).collect();
        format!("{base}?host={}&{}", self.dir.display(), rest.join("&"))
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.conns.lock().expect("conns").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty database `t_<name>_<pid>` in the test `PostgreSQL`; returns its URL.
pub async fn fresh_database(name: &str) -> String {
    let admin_url = env("AGENTMON_TEST_DATABASE_URL");
    let db = format!("t_{name}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}")).execute(&admin).await.expect("drop db");
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.expect("create db");
    admin.close().await;
    with_db(&admin_url, &db)
}

impl Daemon {
    /// Start a daemon with a fresh database. `extra` are more daemon flags.
    pub async fn start(name: &str, extra: &[&str]) -> Daemon {
        Self::start_with(name, extra, false).await.0
    }

    /// As `start`, with the daemon reaching its database through a [`DbProxy`] when `proxied`.
    pub async fn start_with(name: &str, extra: &[&str], proxied: bool) -> (Daemon, Option<DbProxy>) {
        require_root();
        let db_url = fresh_database(name).await;
        let proxy = proxied.then(|| DbProxy::start(name, &db_url));
        let daemon_url = proxy.as_ref().map_or_else(|| db_url.clone(), |p| p.url(&db_url));
        let runtime_dir = PathBuf::from(format!("/tmp/agentmon-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
        let cgroup_root = cgroup2_mount().join(format!("agentmon-test-{name}-{}", std::process::id()));
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/agentmon-test-{name}-{}", std::process::id()));
        let state_dir = runtime_dir.join("state");
        let child = spawn_daemon(&daemon_url, &runtime_dir, &cgroup_root, &pin_dir, extra);
        let pool = sqlx::PgPool::connect(&db_url).await.expect("connect test db");
        let mut d = Daemon {
            name: name.into(),
            db_url,
            daemon_url,
            runtime_dir,
            cgroup_root,
            pin_dir,
            state_dir,
            child,
            running: true,
            pool,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        d.wait_capturing();
        (d, proxy)
    }

    /// Stop the daemon with SIGTERM, as systemd would, and wait for it; it must exit cleanly.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for daemon");
        self.running = false;
        assert!(status.success(), "daemon exited with {status}:\n{}", self.log());
    }

    /// Kill the daemon with SIGKILL (a crash) and wait for it.
    pub fn kill(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        self.running = false;
    }

    /// Start a new daemon on the same database, runtime, state and pin dirs, and cgroup root,
    /// with `extra` flags instead of the first daemon's when given.
    pub fn start_again(&mut self, extra: Option<&[&str]>) {
        if let Some(e) = extra {
            self.extra = e.iter().map(|s| (*s).to_owned()).collect();
        }
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn_daemon(&self.daemon_url, &self.runtime_dir, &self.cgroup_root, &self.pin_dir, &extra);
        self.running = true;
        self.wait_capturing();
    }

    /// Stop the daemon (SIGTERM) and start a new one on the same state.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again(None);
    }

    /// `agentmon status --json` of the running daemon.
    pub fn status(&self) -> Value {
        json_lines(&self.cli(&["status", "--json"])).into_iter().next().expect("status line")
    }

    pub fn daemon_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.runtime_dir.join("daemon.log")).unwrap_or_default()
    }

    fn wait_capturing(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            let st = self.cli(&["status", "--json"]);
            if st.status.success() {
                return;
            }
            assert!(start.elapsed() < Duration::from_mins(1), "daemon did not start capturing:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run an agentmon subcommand against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("AGENTMON_RUNTIME_DIR", &self.runtime_dir)
            .env("DATABASE_URL", &self.db_url)
            .output()
            .expect("run agentmon")
    }

    /// `agentmon run --agent AGENT -- CMD...` in `cwd`; returns the session id and the output.
    pub fn run_agent(&self, agent: &str, cwd: &Path, cmd: &[&str]) -> (String, Output) {
        let out = Command::new(bin())
            .args(["run", "--agent", agent, "--"])
            .args(cmd)
            .current_dir(cwd)
            .env("AGENTMON_RUNTIME_DIR", &self.runtime_dir)
            .output()
            .expect("run agentmon run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let id = stderr
            .lines()
            .find_map(|l| l.strip_prefix("agentmon: session "))
            .unwrap_or_else(|| panic!("no session line in run's stderr: {stderr}"))
            .trim()
            .to_owned();
        (id, out)
    }

    /// Wait until the session's end record is stored; returns its `sessions --json` row.
    pub fn wait_session_end(&self, id: &str) -> Value {
        self.wait_session_end_within(id, 30)
    }

    /// As `wait_session_end`, waiting up to `secs`.
    pub fn wait_session_end_within(&self, id: &str, secs: u64) -> Value {
        let start = Instant::now();
        loop {
            let rows = json_lines(&self.cli(&["sessions", "--json"]));
            if let Some(s) = rows.into_iter().find(|s| s["id"] == id) {
                if !s["ended_at"].is_null() {
                    return s;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(secs), "session {id} did not end:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `agentmon actions --json --session ID`.
    pub fn actions(&self, session: &str) -> Vec<Value> {
        json_lines(&self.cli(&["actions", "--json", "--session", session]))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running {
            // SAFETY: signalling our own child, which has not been waited for.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        // The programs stay attached after a daemon stops: detach this test's.
        let _ = Command::new(bin()).args(["unload", "--force", "--pin-dir"]).arg(&self.pin_dir).output();
        let _ = std::fs::remove_dir(&self.cgroup_root);
        if std::thread::panicking() {
            eprintln!("daemon log for {}:\n{}", self.name, self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.runtime_dir);
        }
    }
}

/// Parse `--json` output: one object per line.
pub fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "agentmon failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// A scratch directory for a test, removed when the test passes (kept for a look when it fails).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn scratch(name: &str) -> Scratch {
    let d = PathBuf::from(format!("/tmp/agentmon-scratch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    Scratch(d)
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_owned()).collect()
}

/// Poll `f` every 100 ms until it returns `Some`, failing after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process's `RssAnon` (heap) in KiB.
pub fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("RssAnon:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The unprivileged user `agentmontest`, in the group `agentmontest`: made if missing, and put
/// back in the group if an earlier run left it out.
pub fn test_user() -> (&'static str, &'static str) {
    let (user, group) = ("agentmontest", "agentmontest");
    if Command::new("getent").args(["group", group]).output().is_ok_and(|o| !o.status.success()) {
        assert!(Command::new("groupadd").arg(group).status().expect("groupadd").success());
    }
    if Command::new("id").arg(user).output().is_ok_and(|o| !o.status.success()) {
        assert!(Command::new("useradd")
            .args(["-M", "-N", "-g", "nogroup", "-G", group, "-s", "/bin/sh", user])
            .status()
            .expect("useradd")
            .success());
    }
    let groups = Command::new("id").args(["-nG", user]).output().expect("id");
    if !String::from_utf8_lossy(&groups.stdout).split_whitespace().any(|g| g == group) {
        assert!(Command::new("usermod").args(["-aG", group, user]).status().expect("usermod").success());
    }
    (user, group)
}

/// A network namespace with loopback up and a `resolv.conf` naming 127.0.0.1, removed on drop.
pub struct Netns(pub String);

impl Netns {
    /// `ip netns add NAME`, `lo` up, and `/etc/netns/NAME/resolv.conf`.
    pub fn with_resolver(name: &str) -> Self {
        let ns = Netns(name.to_owned());
        assert!(
            Command::new("ip").args(["netns", "add", &ns.0]).status().expect("ip").success(),
            "ip netns add failed"
        );
        assert!(Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
            .status()
            .expect("ip")
            .success());
        std::fs::create_dir_all(format!("/etc/netns/{}", ns.0)).expect("netns etc");
        std::fs::write(
            format!("/etc/netns/{}/resolv.conf", ns.0),
            "nameserver 127.0.0.1\noptions single-request attempts:1 timeout:2\n",
        )
        .expect("resolv.conf");
        ns
    }
}

impl Netns {
    /// The namespace's `resolv.conf`: its resolver (127.0.0.1) is the one a daemon started with
    /// `--resolv-conf` this file trusts, as the host's own would be.
    pub fn resolv_conf(&self) -> String {
        format!("/etc/netns/{}/resolv.conf", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
    }
}
