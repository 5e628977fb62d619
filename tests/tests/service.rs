//! Root integration tests of the daemon as a service: the systemd notify protocol (without
//! systemd: the test owns the notify socket), the embedded private `PostgreSQL` under the state
//! directory, a central database over TLS with `sslmode=verify-full`, and the start-up checks
//! that must fail fast.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{bin, cgroup2_mount, fresh_database, json_lines, require_root, scratch, wait_for};

/// A daemon started by hand (own runtime, state and pin dirs, cgroup root), for tests that set
/// its environment or database themselves. Detached and cleaned up on drop.
struct Bare {
    name: String,
    dir: PathBuf,
    pin_dir: PathBuf,
    cgroup_root: PathBuf,
    child: Option<Child>,
}

impl Bare {
    fn new(name: &str) -> Self {
        require_root();
        let dir = PathBuf::from(format!("/tmp/agentmon-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("empty.toml"), "").expect("config");
        Self {
            name: name.to_owned(),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/agentmon-test-{name}-{}", std::process::id())),
            cgroup_root: cgroup2_mount().join(format!("agentmon-test-{name}-{}", std::process::id())),
            dir,
            child: None,
        }
    }

    fn runtime(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `agentmon daemon` with this test's dirs, an empty config file, no inherited database,
    /// and `extra` flags; `env` is added to its environment.
    fn command(&self, extra: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(bin());
        c.arg("daemon")
            .arg("--config")
            .arg(self.dir.join("empty.toml"))
            .arg("--runtime-dir")
            .arg(self.runtime())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("AGENTMON_LOG", "info")
            .envs(env.iter().copied());
        c
    }

    fn spawn(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).expect("log");
        self.child = Some(self.command(extra, env).stdout(Stdio::null()).stderr(log).spawn().expect("spawn daemon"));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("AGENTMON_RUNTIME_DIR", self.runtime())
            .env_remove("DATABASE_URL")
            .output()
            .expect("agentmon")
    }

    fn wait_capturing(&mut self) {
        let start = Instant::now();
        while !self.cli(&["status", "--json"]).status.success() {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} daemon exited with {st}:\n{}", self.name, self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(90), "daemon did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait")
    }

    fn run_agent(&self, agent: &str) -> String {
        let out = Command::new(bin())
            .args(["run", "--agent", agent, "--", "ls", "/"])
            .env("AGENTMON_RUNTIME_DIR", self.runtime())
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session line").trim().to_owned()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = Command::new(bin()).args(["unload", "--force", "--pin-dir"]).arg(&self.pin_dir).output();
        let _ = std::fs::remove_dir(&self.cgroup_root);
        if std::thread::panicking() {
            eprintln!("daemon log for {}:\n{}", self.name, self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Notifications received on `sock` until `until` matches one, or `secs` pass.
fn recv_until(sock: &UnixDatagram, secs: u64, until: impl Fn(&str) -> bool) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(secs) {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&m);
            got.push(m);
            if done {
                break;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_ready_after_attach_watchdog_and_stopping() {
    let mut d = Bare::new("notify");
    let url = fresh_database("notify").await;
    let sock_path = d.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    d.spawn(
        &["--database-url", &url],
        &[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")), ("WATCHDOG_USEC", "1000000")],
    );

    let got = recv_until(&sock, 90, |m| m.contains("READY=1"));
    let ready =
        got.iter().find(|m| m.contains("READY=1")).unwrap_or_else(|| panic!("no READY=1 (got {got:?}):\n{}", d.log()));
    // At READY the programs are attached (their links are pinned) and the control socket answers.
    let links = std::fs::read_dir(&d.pin_dir)
        .expect("pin dir")
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("link-"))
        .count();
    assert!(links > 50, "READY before the programs were attached: {links} links");
    assert!(d.cli(&["status", "--json"]).status.success(), "READY before the control socket answers");
    assert!(ready.contains("STATUS=capturing"), "{ready}");
    assert!(got.iter().all(|m| !m.contains("WATCHDOG=1")), "a watchdog ping before READY: {got:?}");

    // Watchdog pings at half the interval.
    let pings = recv_until(&sock, 5, |_| false).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 5, "expected a WATCHDOG=1 every 0.5 s, got {pings} in 5 s");

    // SIGTERM: STOPPING=1, then a clean exit.
    let mut c = d.child.take().expect("running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let after = recv_until(&sock, 30, |m| m.contains("STOPPING=1"));
    assert!(after.iter().any(|m| m.starts_with("STOPPING=1")), "no STOPPING=1: {after:?}");
    let status = c.wait().expect("wait");
    assert!(status.success(), "daemon exited with {status}:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_postgres_under_the_state_dir() {
    let mut d = Bare::new("embedded");
    d.spawn(&[], &[]);
    d.wait_capturing();
    let pg = d.state().join("postgres");
    assert!(pg.join("data/PG_VERSION").exists(), "the cluster is under the state dir:\n{}", d.log());
    // Private: the cluster is postgres's alone; the state dir stays root's (systemd re-owns a
    // state dir of another owner recursively), passable but not listable.
    let meta = |p: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(p).expect("metadata");
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    let (mode, uid, _) = meta(&pg);
    assert_eq!(mode, 0o700);
    assert_ne!(uid, 0, "owned by postgres");
    assert_eq!(meta(&d.state()), (0o711, 0, 0));
    assert!(d.log().contains("starting the private PostgreSQL"), "{}", d.log());

    let id = d.run_agent("embedded");
    // The query commands find the daemon's database through its runtime dir.
    let row = wait_for(30, "the session in the embedded database", || {
        let out = d.cli(&["sessions", "--json"]);
        out.status
            .success()
            .then(|| json_lines(&out))
            .and_then(|rows| rows.into_iter().find(|s| s["id"] == id.as_str() && !s["ended_at"].is_null()))
    });
    assert_eq!(row["agent"], "embedded");
    let status = d.stop();
    assert!(status.success(), "{status}:\n{}", d.log());
    assert!(d.log().contains("stopped the private PostgreSQL"), "{}", d.log());
    let left = Command::new("pgrep")
        .args(["-f", &format!("postgres -D {}", pg.join("data").display())])
        .output()
        .expect("pgrep");
    assert!(!left.status.success(), "a postgres is left running: {}", String::from_utf8_lossy(&left.stdout));

    // What systemd's StateDirectory= does to a state dir of another owner: everything
    // re-owned to root, recursively. The next start gives the cluster back to postgres.
    assert!(Command::new("chown").args(["-R", "root:root"]).arg(d.state()).status().expect("chown").success());
    d.spawn(&[], &[]);
    d.wait_capturing();
    assert!(d.log().contains("giving") && d.log().contains("back to the postgres user"), "{}", d.log());
    assert_ne!(meta(&pg.join("data/PG_VERSION")).1, 0, "the cluster is postgres's again");
    let status = d.stop();
    assert!(status.success(), "{status}:\n{}", d.log());

    // A second start reuses the cluster and its data.
    d.spawn(&[], &[]);
    d.wait_capturing();
    let rows = json_lines(&d.cli(&["sessions", "--json"]));
    assert!(rows.iter().any(|s| s["id"] == id.as_str()), "the first session is still there");
    assert!(d.stop().success());
}

/// Run `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed CA certificate `STEM.pem` (key `STEM.key`) in `dir`, for the subject `/CN=CN`.
fn self_signed_ca(dir: &Path, cn: &str, stem: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{stem}.key"),
            "-out",
            &format!("{stem}.pem"),
        ],
    );
}

/// A server certificate `server.pem` (key `server.key`) for `localhost` only (no IP address in
/// it), signed by the CA `ca.pem` in `dir`.
fn localhost_certificate_signed_by_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Our own cluster with TLS on (`server.pem`, `server.key` from `dir`), listening on loopback
/// TCP, with a login `tester` (password `tls-test-pw`) and a database `agentmon_tls`.
fn tls_cluster(dir: &Path) -> (monitor::pgcluster::Cluster, Child) {
    let cluster = monitor::pgcluster::Cluster::new(dir.join("pg"), free_port());
    cluster.init(true, &|m| eprintln!("{m}")).expect("initdb");
    let (uid, gid) = monitor::pgcluster::postgres_ids().expect("postgres user");
    for f in ["server.pem", "server.key"] {
        let to = cluster.data().join(f);
        std::fs::copy(dir.join(f), &to).expect("copy cert");
        std::os::unix::fs::chown(&to, Some(uid), Some(gid)).expect("chown");
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    }
    let hba = "local all all peer map=agentmon\nhostssl all tester 127.0.0.1/32 scram-sha-256\nhostssl all tester ::1/128 scram-sha-256\n";
    std::fs::write(cluster.data().join("pg_hba.conf"), hba).expect("hba");
    let extra: Vec<String> = [
        "-c",
        "ssl=on",
        "-c",
        "ssl_cert_file=server.pem",
        "-c",
        "ssl_key_file=server.key",
        "-c",
        "listen_addresses=127.0.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let server = cluster.start(&extra).expect("start the TLS cluster");
    for sql in
        ["CREATE ROLE tester LOGIN SUPERUSER PASSWORD 'tls-test-pw'", "CREATE DATABASE agentmon_tls OWNER tester"]
    {
        let psql = Command::new("psql")
            .arg("-h")
            .arg(cluster.socket_dir())
            .args([
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(psql.status.success(), "{sql}: {}", String::from_utf8_lossy(&psql.stderr));
    }
    (cluster, server)
}

/// Stops the TLS cluster when the test ends, however it ends.
struct Stop<'a>(&'a mut Child);
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        monitor::pgcluster::Cluster::stop_child(self.0);
    }
}

/// The server certificate `PostgreSQL`'s documentation makes (`openssl req -new -x509 …
/// -subj "/CN=…"`: self-signed, a CA certificate, the host name only in the CN), given as
/// `sslrootcert`, alone or inside a bundle of other CAs: what psql accepts with
/// `sslmode=verify-full`, agentmon accepts; another host name is refused by both.
#[tokio::test(flavor = "multi_thread")]
async fn tls_accepts_what_libpq_accepts_for_sslrootcert() {
    require_root();
    let dir = scratch("tls-libpq");
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-nodes",
            "-text",
            "-out",
            "server.pem",
            "-keyout",
            "server.key",
            "-subj",
            "/CN=localhost",
        ],
    );
    let text = std::fs::read_to_string(dir.join("server.pem")).expect("cert");
    assert!(
        text.contains("CA:TRUE") && !text.contains("Subject Alternative Name"),
        "the documented certificate is a CA certificate with no SAN:\n{text}"
    );
    // A bundle: two unrelated CAs around the server's certificate.
    for ca in ["other1", "other2"] {
        self_signed_ca(&dir, ca, ca);
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("pem");
    std::fs::write(dir.join("bundle.pem"), read("other1.pem") + &read("server.pem") + &read("other2.pem"))
        .expect("bundle");
    let (cluster, mut server) = tls_cluster(&dir);
    let _stop = Stop(&mut server);
    let url = |host: &str, root: &str| {
        format!(
            "postgres://tester:tls-test-pw@{host}:{}/agentmon_tls?sslmode=verify-full&sslrootcert={}",
            cluster.port,
            dir.join(root).display()
        )
    };
    let psql = |u: &str| {
        Command::new("psql")
            .arg(u)
            .args(["-tAc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
            .output()
            .expect("psql")
    };
    let agentmon = |u: &str| {
        Command::new(bin())
            .args(["sessions", "--json", "--database-url", u])
            .env_remove("DATABASE_URL")
            .output()
            .expect("agentmon")
    };
    for root in ["server.pem", "bundle.pem"] {
        let good = url("localhost", root);
        let p = psql(&good);
        assert!(p.status.success(), "psql accepts {root}: {}", String::from_utf8_lossy(&p.stderr));
        let m = Command::new(bin())
            .args(["migrate", "--database-url", &good])
            .env_remove("DATABASE_URL")
            .output()
            .expect("migrate");
        assert!(
            m.status.success(),
            "agentmon migrate accepts {root} as psql does: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        let out = agentmon(&good);
        assert!(out.status.success(), "agentmon sessions accepts {root}: {}", String::from_utf8_lossy(&out.stderr));
        let bad = url("127.0.0.1", root);
        assert!(!psql(&bad).status.success(), "psql refuses another host name with {root}");
        let out = agentmon(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cannot connect to the database"),
            "agentmon refuses another host name with {root}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A bundle without the server's certificate is refused.
    let out = agentmon(&url("localhost", "other1.pem"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to the database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_full_connects_and_refuses_a_mismatched_certificate() {
    require_root();
    let dir = scratch("tls");
    // A CA, and a server certificate for `localhost` only (no IP address in it).
    self_signed_ca(&dir, "agentmon test CA", "ca");
    localhost_certificate_signed_by_ca(&dir);

    let (cluster, mut server) = tls_cluster(&dir);
    let _stop = Stop(&mut server);

    let ca = dir.join("ca.pem");
    let url = |host: &str| {
        format!(
            "postgres://tester:tls-test-pw@{host}:{}/agentmon_tls?sslmode=verify-full&sslrootcert={}",
            cluster.port,
            ca.display()
        )
    };
    let good = url("localhost");
    let bad = url("127.0.0.1");

    // The connection really is TLS.
    let pool = sqlx::PgPool::connect(&good).await.expect("connect over TLS");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");

    // The daemon records a session over TLS; a query command reads it over TLS.
    let mut d = Bare::new("tls");
    d.spawn(&["--database-url", &good], &[]);
    d.wait_capturing();
    let id = d.run_agent("tls");
    let row = wait_for(30, "the session over TLS", || {
        let out = Command::new(bin()).args(["sessions", "--json", "--database-url", &good]).output().expect("sessions");
        assert!(out.status.success(), "sessions over TLS: {}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out).into_iter().find(|s| s["id"] == id.as_str())
    });
    assert_eq!(row["agent"], "tls");
    let tls_backends: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'agentmon_tls' AND s.ssl")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(tls_backends >= 2, "the daemon's connections are TLS too ({tls_backends})");
    assert!(d.stop().success(), "{}", d.log());
    pool.close().await;

    // A server whose certificate does not name the host connected to is refused: by a query
    // command, and by the daemon (which exits with one line and attaches nothing).
    let q = Command::new(bin()).args(["sessions", "--json", "--database-url", &bad]).output().expect("sessions");
    let err = String::from_utf8_lossy(&q.stderr);
    assert!(
        !q.status.success()
            && err.contains("cannot connect to the database")
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let mut d2 = Bare::new("tlsbad");
    let out = d2.command(&["--database-url", &bad], &[]).output().expect("daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon accepted a mismatched certificate");
    assert!(err.contains("cannot connect to the database") && err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("tls-test-pw"), "the password is not printed: {err}");
    d2.child = None;
}

#[test]
fn start_fails_fast_with_one_line() {
    // Not root.
    let d = Bare::new("failfast");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["daemon", "--config"])
        .arg(d.dir.join("empty.toml"))
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim(), "agentmon: agentmon daemon must run as root: it loads eBPF programs and manages cgroups (try `sudo agentmon daemon`)");

    // A state directory that cannot be written (a file is in the way).
    std::fs::write(d.state(), "not a directory").expect("file");
    let out = d.command(&[], &[]).output().expect("daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("agentmon: cannot create the state directory {}", d.state().display())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A read-only state directory.
    std::fs::remove_file(d.state()).expect("rm");
    std::fs::create_dir(d.state()).expect("mkdir");
    let ro = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,mode=0700", "tmpfs"])
        .arg(d.state())
        .status()
        .expect("mount");
    assert!(ro.success(), "mount a read-only tmpfs");
    let out = d.command(&[], &[]).output().expect("daemon");
    let _ = Command::new("umount").arg(d.state()).status();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the state directory {}", d.state().display()))
            || err.contains("cannot secure the state directory"),
        "{err}"
    );
    assert!(!d.pin_dir.exists(), "nothing was attached");
}
