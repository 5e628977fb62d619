//! Where settings come from: flags, then environment, then `/etc/agentmon/agentmon.toml`.

use std::path::{Path, PathBuf};

pub const CONFIG_PATH: &str = "/etc/agentmon/agentmon.toml";
pub const DEFAULT_RUNTIME_DIR: &str = "/run/agentmon";
/// The daemon's spool and restart handoff.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/agentmon";
/// Where programs, maps and rings are pinned in bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/agentmon";
/// File in the runtime dir where a running daemon records its database URL, so the query
/// commands find the same database with no configuration.
pub const DATABASE_URL_FILE: &str = "database.url";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} holds a database password but other users can read it (mode {mode:o}, owner uid {uid}): run `chown root {path} && chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32, uid: u32 },
    #[error("no database configured: pass --database-url, set DATABASE_URL, or set database_url in {CONFIG_PATH} (`cargo xtask daemon` starts a private PostgreSQL for you)")]
    NoDatabase,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    /// Group whose members may start sessions through the control socket.
    pub group: Option<String>,
    /// Spool and restart handoff (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// bpffs pin directory (`--pin-dir`).
    pub pin_dir: Option<PathBuf>,
    /// File/network ring size in MiB (`--ring-buffer-mb`).
    pub ring_buffer_mb: Option<u32>,
    /// Lifecycle ring size in MiB (`--lifecycle-ring-mb`).
    pub lifecycle_ring_mb: Option<u32>,
    /// Memory queue bound in MiB (`--queue-memory-mb`).
    pub queue_memory_mb: Option<u64>,
    /// Spool disk bound in MiB (`--spool-max-mb`).
    pub spool_max_mb: Option<u64>,
    /// Where checkpoints are copied: a file path or `journal` (`--checkpoint-log`).
    pub checkpoint_log: Option<String>,
    /// Seconds between checkpoints while records flow (`--checkpoint-secs`).
    pub checkpoint_secs: Option<u64>,
    /// Longest time between checkpoints when idle (`--heartbeat-secs`).
    pub heartbeat_secs: Option<u64>,
    /// Capture 32-bit syscalls (`--capture-compat`).
    pub capture_compat: Option<bool>,
    /// Size of the kernel's tracked-process map (`--max-tracked-processes`).
    pub max_tracked_processes: Option<u32>,
    /// Extra redaction rules, allowlist and disabled built-in rules.
    #[serde(default)]
    pub redaction: crate::redact::RedactConfig,
}

impl FileConfig {
    /// The config file, or defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned() + &e.span().map(|s| format!(" (at byte {})", s.start)).unwrap_or_default(),
                })?;
                cfg.check_private(path)?;
                Ok(cfg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
        }
    }
}

impl FileConfig {
    /// A password in the file is only safe if root alone can read it.
    fn check_private(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::MetadataExt as _;
        let Some(url) = &self.database_url else { return Ok(()) };
        if crate::store::redact_url(url) == *url {
            return Ok(());
        }
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o044 != 0 || (meta.uid() != 0 && mode & 0o400 != 0) {
            return Err(ConfigError::Exposed { path: path.to_owned(), mode, uid: meta.uid() });
        }
        Ok(())
    }
}

/// The database URL for the daemon: flag or `DATABASE_URL` (clap fills both), then the file.
pub fn daemon_database_url(flag: Option<&str>, file: &FileConfig) -> Result<String, ConfigError> {
    flag.map(str::to_owned)
        .or_else(|| file.database_url.clone())
        .ok_or(ConfigError::NoDatabase)
}

/// The database URL for queries: as for the daemon, then the URL a running daemon recorded.
pub fn query_database_url(flag: Option<&str>, file: &FileConfig, runtime_dir: &Path) -> Result<String, ConfigError> {
    daemon_database_url(flag, file).or_else(|_| {
        std::fs::read_to_string(runtime_dir.join(DATABASE_URL_FILE))
            .map(|s| s.trim().to_owned())
            .map_err(|_| ConfigError::NoDatabase)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_errors_are_clear() {
        let dir = std::env::temp_dir().join(format!("agentmon-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("agentmon.toml");
        std::fs::write(&p, "database_url = 5\n").expect("write");
        let err = FileConfig::load(&p).expect_err("bad type").to_string();
        assert!(err.contains("agentmon.toml is not valid"), "{err}");
        std::fs::write(&p, "databse_url = \"x\"\n").expect("write");
        assert!(FileConfig::load(&p).is_err(), "unknown keys are rejected");
        std::fs::write(&p, "database_url = \"postgres://x\"\n").expect("write");
        let f = FileConfig::load(&p).expect("good");
        assert_eq!(daemon_database_url(None, &f).expect("url"), "postgres://x");
        assert_eq!(daemon_database_url(Some("postgres://flag"), &f).expect("url"), "postgres://flag");
        assert!(FileConfig::load(&dir.join("missing.toml")).expect("absent is fine").database_url.is_none());
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::write(&p, "database_url = \"postgres://u:hunter2@db/x\"\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let err = FileConfig::load(&p).expect_err("a readable password is refused").to_string();
            assert!(err.contains("holds a database password but other users can read it"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            assert_eq!(FileConfig::load(&p).is_ok(), root, "mode 0600 is private only when root owns it");
            std::fs::write(&p, "[redaction]\nrules = [{ name = \"bad\", pattern = \"(\" }]\n").expect("write");
            let f = FileConfig::load(&p).expect("parsed; the rule is compiled by the daemon");
            assert_eq!(f.redaction.rules[0].name, "bad");
        }
        assert!(matches!(query_database_url(None, &FileConfig::default(), &dir), Err(ConfigError::NoDatabase)));
        std::fs::write(dir.join(DATABASE_URL_FILE), "postgres://runtime\n").expect("write");
        assert_eq!(query_database_url(None, &FileConfig::default(), &dir).expect("url"), "postgres://runtime");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
