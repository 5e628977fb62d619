//! A private PostgreSQL cluster from the system's binaries: unix socket only, on its own port,
//! owned by the `postgres` user (initdb and postgres refuse to run as root).

use std::{
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
        } else if self.running(&bin) {
            return Ok(());
        }
        std::fs::create_dir_all(self.sock())?;
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&self.dir))?;
        if !self.data().join("PG_VERSION").exists() {
            step(&format!("creating a private PostgreSQL cluster in {}", self.data().display()));
            let out = as_postgres(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
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
        step(&format!("starting PostgreSQL on port {} (socket in {})", self.port, self.sock().display()));
        let opts = format!("-p {} -k {} -c listen_addresses=''", self.port, self.sock().display());
        run(as_postgres(&bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("postgres.log"))
            .arg("start"))
        .with_context(|| format!("starting PostgreSQL (log: {})", self.dir.join("postgres.log").display()))
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
