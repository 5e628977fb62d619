//! A private `PostgreSQL` cluster from the system's binaries: unix socket only, on its own port,
//! owned by the `postgres` user (initdb and postgres refuse to run as root).
//!
//! It holds evidence, so other local users (the monitored agents among them) must not reach
//! it: the cluster and socket directories are `postgres`-only (mode 0700; root passes
//! anyway), the socket itself is 0700, and authentication is `peer` with a map that admits only
//! the OS users root and postgres, as the database user postgres. No `trust` anywhere.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{run, step};

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

fn pg_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql is missing): run `cargo xtask setup`")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).context("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
}

fn as_postgres(bin: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin);
    c
}

impl Cluster {
    pub fn new(dir: PathBuf, port: u16) -> Self {
        Self { dir, port }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@localhost/{db}?host={}&port={}", self.sock().display(), self.port)
    }

    fn running(&self, bin: &Path) -> bool {
        as_postgres(&bin.join("pg_ctl")).arg("status").arg("-D").arg(self.data()).output().is_ok_and(|o| o.status.success())
    }

    /// Start the cluster, creating it if needed; `fresh` wipes it first (tests).
    pub fn ensure_running(&self, fresh: bool) -> anyhow::Result<()> {
        let bin = pg_bin()?;
        if fresh {
            if self.data().exists() && self.running(&bin) {
                self.stop();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(self.sock())?;
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&self.dir))?;
        for d in [&self.dir, &self.sock()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("securing {}", d.display()))?;
        }
        if !self.data().join("PG_VERSION").exists() {
            step(&format!("creating a private PostgreSQL cluster in {}", self.data().display()));
            let out = as_postgres(&bin.join("initdb"))
                .args(["--auth-local=peer", "--auth-host=reject", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
                .arg(self.data())
                .output()?;
            if !out.status.success() {
                bail!(
                    "initdb failed (the postgres user must be able to reach {}): {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        self.secure_auth()?;
        if self.running(&bin) {
            // A cluster made by an older checkout (which trusted every local connection).
            return run(as_postgres(&bin.join("pg_ctl")).args(["-D"]).arg(self.data()).args(["-s", "reload"]));
        }
        step(&format!("starting PostgreSQL on port {} (socket in {})", self.port, self.sock().display()));
        let opts = format!("-p {} -k {} -c listen_addresses='' -c unix_socket_permissions=0700", self.port, self.sock().display());
        run(as_postgres(&bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("postgres.log"))
            .arg("start"))
        .with_context(|| format!("starting PostgreSQL (log: {})", self.dir.join("postgres.log").display()))
    }

    /// Peer authentication only, for root and postgres, as the database user postgres.
    fn secure_auth(&self) -> anyhow::Result<()> {
        let hba = "# Written by cargo xtask: local socket only, peer authentication through the map below.\n\
                   local all all peer map=agentmon\n";
        let ident = "# OS user -> database user. Nobody else may connect.\n\
                     agentmon root postgres\n\
                     agentmon postgres postgres\n";
        for (name, text) in [("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
            let path = self.data().join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            run(Command::new("chown").arg("postgres:postgres").arg(&path))?;
        }
        Ok(())
    }

    pub fn create_db(&self, name: &str) -> anyhow::Result<()> {
        let bin = pg_bin()?;
        let exists = Command::new(bin.join("psql"))
            .args(["-h"])
            .arg(self.sock())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-tAc"])
            .arg(format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))
            .output()?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        run(Command::new(bin.join("createdb"))
            .arg("-h")
            .arg(self.sock())
            .args(["-p", &self.port.to_string(), "-U", "postgres", name]))
    }

    pub fn stop(&self) {
        if let Ok(bin) = pg_bin() {
            let _ = as_postgres(&bin.join("pg_ctl")).args(["-m", "fast", "-w", "-D"]).arg(self.data()).arg("stop").output();
        }
    }
}
