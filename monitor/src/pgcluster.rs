//! A private `PostgreSQL` cluster made from the system's binaries (`/usr/lib/postgresql/*/bin`):
//! the daemon's embedded default (under its state directory), and the clusters `cargo xtask`
//! runs the tests and the benchmark against. `xtask` compiles this same file (`#[path]`), so it
//! uses only `std`, `anyhow` and `libc`.
//!
//! It holds evidence, so other local users (the monitored agents among them) must not reach
//! it: unix socket only (no TCP), the cluster and socket directories are owned by `postgres`
//! with mode 0700 (root passes anyway), the socket itself is 0700, and authentication is `peer`
//! with a map that admits only the OS users root and postgres, as the database user postgres.
//! No `trust` anywhere. `postgres` runs as the `postgres` user (it refuses root), as a child of
//! whoever starts it, so the daemon can supervise and stop it (std drops root's supplementary
//! groups when it switches the uid).

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// The cluster's directory (`data/`, `run/` for the socket, `postgres.log`) and its port (only
/// part of the socket's name: nothing listens on TCP).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

/// The newest installed server's binaries.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql is missing): install the `postgresql` package (`apt install postgresql`), or set database_url")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).context("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install the `postgresql` package, or set database_url")
}

/// uid and gid of the `postgres` user.
pub fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let name = c"postgres";
    // SAFETY: a valid C string; the result is read at once, before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("there is no `postgres` user to run the private PostgreSQL as: install the `postgresql` package, or set database_url");
    }
    // SAFETY: non-null pointer to a passwd entry.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// `chown -R`, without following symbolic links.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to the postgres user", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", entry.path().display()))?;
        }
    }
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to the postgres user", path.display()))
}

impl Cluster {
    pub fn new(dir: PathBuf, port: u16) -> Self {
        Self { dir, port }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A URL for database `db` over the socket, as the database user postgres (peer
    /// authentication: only root and postgres get in).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@localhost/{db}?host={}&port={}", self.socket_dir().display(), self.port)
    }

    /// Create the cluster if needed (`fresh` wipes it first), and (re)write its authentication
    /// rules. `note` gets a progress line before the slow first-time `initdb`.
    pub fn init(&self, fresh: bool, note: &dyn Fn(&str)) -> anyhow::Result<()> {
        let bin = bin_dir()?;
        let (uid, gid) = postgres_ids()?;
        if fresh {
            self.stop_stale();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(self.socket_dir())
            .with_context(|| format!("creating {}", self.socket_dir().display()))?;
        for d in [&self.dir, &self.socket_dir()] {
            chown(d, uid, gid)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("securing {}", d.display()))?;
        }
        // Everything in the cluster is the postgres user's. A tree re-owned by someone else
        // (systemd's StateDirectory= does that to a state directory whose owner differs from
        // the unit's user, recursively) would never start again: give it back.
        if std::fs::metadata(self.data()).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) != uid) {
            note(&format!("giving {} back to the postgres user (it was re-owned)", self.dir.display()));
            chown_tree(&self.dir, uid, gid)?;
        }
        if !self.data().join("PG_VERSION").exists() {
            note(&format!(
                "creating a private PostgreSQL cluster in {} (first start; a few seconds)",
                self.data().display()
            ));
            let _ = std::fs::remove_dir_all(self.data());
            let out = Command::new(bin.join("initdb"))
                .args(["--auth-local=peer", "--auth-host=reject", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
                .arg(self.data())
                .uid(uid)
                .gid(gid)
                .current_dir("/")
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed (the postgres user must be able to reach {}): {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ")
                );
            }
        }
        let hba = "# Written by agentmon: local socket only, peer authentication through the map below.\n\
                   local all all peer map=agentmon\n";
        let ident = "# OS user -> database user. Nobody else may connect.\n\
                     agentmon root postgres\n\
                     agentmon postgres postgres\n";
        for (name, text) in [("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
            let path = self.data().join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            chown(&path, uid, gid)?;
        }
        Ok(())
    }

    /// Start `postgres` as a child process (as the postgres user), with `extra` server
    /// arguments, logging to `postgres.log`, and wait until it accepts connections.
    pub fn start(&self, extra: &[String]) -> anyhow::Result<Child> {
        let bin = bin_dir()?;
        let (uid, gid) = postgres_ids()?;
        // A server that died without cleaning up leaves its pid file; a live one keeps the
        // socket's lock file, and postgres itself refuses to start over a running server.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .with_context(|| format!("opening {}", self.log().display()))?;
        chown(&self.log(), uid, gid)?;
        let mut child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"])
            .args(extra)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting postgres")?;
        if let Err(e) = self.wait_ready(&bin, &mut child) {
            Self::stop_child(&mut child);
            return Err(e);
        }
        Ok(child)
    }

    fn wait_ready(&self, bin: &Path, child: &mut Child) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                bail!("postgres exited with {st} while starting: see {}", self.log().display());
            }
            let ok = Command::new(bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if start.elapsed() > Duration::from_mins(1) {
                bail!("postgres did not accept connections within 60 s: see {}", self.log().display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop a server left running on this cluster by a process that is gone (its pid is the
    /// first line of `postmaster.pid`).
    fn stop_stale(&self) {
        let Some(pid) = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        else {
            return;
        };
        let ours = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| e.file_name().is_some_and(|n| n == "postgres"));
        if !ours {
            return;
        }
        // SAFETY: kill has no memory preconditions; the pid is a postgres server (checked above).
        unsafe { libc::kill(pid, libc::SIGINT) };
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT: running transactions are rolled back, then a checkpoint), then
    /// SIGKILL after 30 s.
    pub fn stop_child(child: &mut Child) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Create database `name` if it does not exist (as root, through peer authentication).
    pub fn create_db(&self, name: &str) -> anyhow::Result<()> {
        let bin = bin_dir()?;
        let psql = |sql: &str| {
            Command::new(bin.join("psql"))
                .arg("-h")
                .arg(self.socket_dir())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-tAc",
                    sql,
                ])
                .output()
                .context("running psql")
        };
        let exists = psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let out = psql(&format!("CREATE DATABASE \"{name}\""))?;
        if !out.status.success() {
            bail!("creating database {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}
