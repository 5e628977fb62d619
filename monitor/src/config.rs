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
    /// A config file named with `--config` that does not exist (the default one may be absent).
    #[error("{path}: no such file (only the default {CONFIG_PATH} may be absent)")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML at all.
    #[error("{path}: line {line}, column {column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: unknown key `{key}` (line {line}); valid keys: {valid}")]
    UnknownKey { path: PathBuf, key: String, line: usize, valid: String },
    #[error("{path} holds a database password but other users can read it (mode {mode:o}, owner uid {uid}): run `chown root {path} && chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32, uid: u32 },
    /// A key whose value is unusable (names the file and the key, e.g. `rule[2].exe`).
    #[error("{path}: key `{key}`: {message}")]
    Key { path: PathBuf, key: String, message: String },
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
    /// Capture syscalls at the kernel's functions (fexit) where the kernel allows it, else at
    /// the syscall tracepoints; on by default (`--capture-fexit`).
    pub capture_fexit: Option<bool>,
    /// Size of the kernel's tracked-process map (`--max-tracked-processes`).
    pub max_tracked_processes: Option<u32>,
    /// Where to serve Prometheus metrics: `HOST:PORT`, or a port alone for loopback
    /// (`--metrics-listen`); unset = no metrics.
    pub metrics_listen: Option<String>,
    /// Extra redaction rules, allowlist and disabled built-in rules.
    #[serde(default)]
    pub redaction: crate::redact::RedactConfig,
    /// Which files and endpoints are sensitive (see `crate::sensitive`).
    #[serde(default)]
    pub sensitive: crate::sensitive::SensitiveConfig,
    /// Alert rules, webhook (see `crate::alerts`).
    #[serde(default)]
    pub alerts: crate::alerts::AlertConfig,
    /// Retention tiers (see `crate::retention`); unset = keep everything.
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// The agents' own account: OTLP receiver, prompts, prices, profiles (see `crate::account`).
    #[serde(default)]
    pub agents: crate::account::AgentsConfig,
    /// Session rules: `[[rule]]` tables (see `crate::rules`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::rules::RuleConfig>,
}

impl FileConfig {
    /// The config file. Only the default path may be absent (then everything is default); a
    /// path given with `--config` must exist. Every error is one line naming the file (and the
    /// key, with its line, when one is at fault).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(CONFIG_PATH) => {
                return Ok(Self::default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing { path: path.to_owned() })
            }
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        let cfg: Self = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        cfg.check_private(path)?;
        cfg.validate(path).map_err(|e| e.with_line(&text))?;
        Ok(cfg)
    }

    /// What the types cannot check. Each failure is a [`ConfigError::Key`] naming the key
    /// (dotted, with `[i]` for array items, e.g. `rule[2].exe`); `load` adds its line.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let key = |key: &str, message: String| ConfigError::Key { path: path.to_owned(), key: key.to_owned(), message };
        for (name, mb) in [("ring_buffer_mb", self.ring_buffer_mb), ("lifecycle_ring_mb", self.lifecycle_ring_mb)] {
            if let Some(mb) = mb {
                check_ring_mb(mb).map_err(|m| key(name, m))?;
            }
        }
        for (name, secs, max) in
            [("checkpoint_secs", self.checkpoint_secs, 3600), ("heartbeat_secs", self.heartbeat_secs, 86400)]
        {
            if let Some(secs) = secs.filter(|s| !(1..=max).contains(s)) {
                return Err(key(name, format!("{secs}: expected 1 to {max} seconds")));
            }
        }
        if let Some(n) = self.max_tracked_processes.filter(|n| *n < 16) {
            return Err(key("max_tracked_processes", format!("{n}: expected at least 16")));
        }
        if let Some(addr) = &self.metrics_listen {
            metrics_addr(addr).map_err(|m| key("metrics_listen", m))?;
        }
        crate::sensitive::Sensitive::new(&self.sensitive, Vec::new()).map_err(|(k, m)| key(&k, m))?;
        crate::alerts::Rules::new(&self.alerts).map_err(|(k, m)| key(&k, m))?;
        if let Some(url) = &self.alerts.webhook {
            crate::alerts::parse_webhook_url(url).map_err(|m| key("alerts.webhook", m))?;
        }
        if let Some(f) = self.alerts.webhook_format.as_deref().filter(|f| !["json", "slack"].contains(f)) {
            return Err(key("alerts.webhook_format", format!("`{f}`: expected json or slack")));
        }
        if let Some(d) = &self.alerts.webhook_retry_max {
            crate::alerts::parse_duration(d).map_err(|m| key("alerts.webhook_retry_max", m))?;
        }
        crate::retention::Policy::new(&self.retention, Path::new(DEFAULT_STATE_DIR)).map_err(|(k, m)| key(&k, m))?;
        Ok(())
    }
}

impl ConfigError {
    /// A [`ConfigError::Key`] found after parsing (by [`FileConfig::validate`] or later, e.g.
    /// when the session rules are compiled) with ` (line N)` added from the file's text.
    #[must_use]
    pub fn with_line(self, text: &str) -> Self {
        match self {
            ConfigError::Key { path, key, message } => {
                let message = match line_of_key(text, &key) {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                };
                ConfigError::Key { path, key, message }
            }
            other => other,
        }
    }

    /// As [`ConfigError::with_line`], reading the file the error names.
    #[must_use]
    pub fn located(self) -> Self {
        let text = match &self {
            ConfigError::Key { path, .. } => std::fs::read_to_string(path).unwrap_or_default(),
            _ => return self,
        };
        self.with_line(&text)
    }
}

/// A ring buffer size in MiB (`--ring-buffer-mb`, `--lifecycle-ring-mb` and their keys).
pub fn check_ring_mb(mb: u32) -> Result<(), String> {
    if mb == 0 || !mb.is_power_of_two() || mb > 1024 {
        return Err(format!("{mb} MiB: a ring buffer must be a power of two between 1 and 1024 MiB"));
    }
    Ok(())
}

/// The metrics port when `--metrics-listen` is given no address.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// Where to serve metrics (`--metrics-listen`, `metrics_listen`): `IP:PORT`, `[IPv6]:PORT`,
/// `localhost:PORT`, `PORT`/`:PORT` alone for loopback, `on` for loopback port 9464, `off`
/// for none.
pub fn metrics_addr(s: &str) -> Result<Option<std::net::SocketAddr>, String> {
    use std::net::{Ipv4Addr, SocketAddr};
    let s = s.trim();
    match s {
        "off" => return Ok(None),
        "on" => return Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_METRICS_PORT)))),
        _ => {}
    }
    let port = s.strip_prefix("localhost:").or_else(|| s.strip_prefix(':')).unwrap_or(s);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    }
    s.parse().map(Some).map_err(|_| format!("`{s}` is not an address: expected IP:PORT (e.g. 127.0.0.1:{DEFAULT_METRICS_PORT}), [IPv6]:PORT, a port alone for loopback, on, or off"))
}

/// A `toml` error as one line: where, which key, what is wrong.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let path = path.to_owned();
    let at = e.span().map_or(0, |s| s.start);
    let (line, column) = line_column(text, at);
    let message = e.message().trim().replace('\n', "; ");
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return ConfigError::Syntax { path, line, column, message: format!("not valid TOML: {message}") };
    };
    let Some(key) = key_at(doc.as_table(), at, "") else {
        return ConfigError::Syntax { path, line, column, message };
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let valid = rest.split_once(", expected ").map_or("none", |(_, v)| v);
        let valid = valid.strip_prefix("one of ").unwrap_or(valid).replace('`', "");
        return ConfigError::UnknownKey { path, key, line, valid };
    }
    ConfigError::Key { path, key, message: format!("{} (line {line})", plain_serde_message(&message)) }
}

/// serde's wording for people: `invalid type: string "x", expected u32` becomes
/// `expected an integer from 0 to 4294967295, found string "x"`.
fn plain_serde_message(message: &str) -> String {
    let message = message
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected u64", "expected an integer from 0 to 18446744073709551615")
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected a sequence", "expected an array");
    match message.strip_prefix("invalid type: ").and_then(|m| m.split_once(", expected ")) {
        Some((found, expected)) => {
            let found = match found {
                "map" => "a table",
                "sequence" => "an array",
                other => other,
            };
            format!("expected {expected}, found {found}")
        }
        None => message,
    }
}

/// 1-based line and column (in characters) of byte `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

fn contains(span: Option<std::ops::Range<usize>>, at: usize) -> bool {
    span.is_some_and(|s| s.contains(&at) || (s.is_empty() && s.start == at))
}

/// The path (`a.b`, `rule[1].exe`) of the innermost key whose name or value holds byte `at`.
fn key_at(table: &dyn toml_edit::TableLike, at: usize, prefix: &str) -> Option<String> {
    use toml_edit::{Item, Value};
    for (name, _) in table.iter() {
        let (key, item) = table.get_key_value(name)?;
        let path = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
        if contains(key.span(), at) {
            return Some(path);
        }
        let inner = match item {
            Item::ArrayOfTables(tables) => tables.iter().enumerate().find_map(|(i, t)| {
                let p = format!("{path}[{i}]");
                key_at(t, at, &p).or_else(|| contains(t.span(), at).then_some(p))
            }),
            Item::Value(Value::Array(values)) => values.iter().enumerate().find_map(|(i, v)| {
                let p = format!("{path}[{i}]");
                v.as_inline_table().and_then(|t| key_at(t, at, &p)).or_else(|| contains(v.span(), at).then_some(p))
            }),
            other => other.as_table_like().and_then(|t| key_at(t, at, &path)),
        };
        if inner.is_some() {
            return inner;
        }
        if contains(item.span(), at) {
            return Some(path);
        }
    }
    None
}

/// The line of a key path as [`key_at`] writes it (`rule[2].exe`), if the file has it.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let parts: Vec<&str> = key.split('.').collect();
    span_of(doc.as_table(), &parts).map(|s| line_column(text, s.start).0)
}

fn span_of(table: &dyn toml_edit::TableLike, parts: &[&str]) -> Option<std::ops::Range<usize>> {
    let (first, rest) = parts.split_first()?;
    let (name, index) = match first.split_once('[') {
        Some((name, i)) => (name, Some(i.trim_end_matches(']').parse::<usize>().ok()?)),
        None => (*first, None),
    };
    let (key, item) = table.get_key_value(name)?;
    let found = match (index, item) {
        (None, item) => item.as_table_like().and_then(|t| span_of(t, rest)),
        (Some(i), toml_edit::Item::ArrayOfTables(tables)) => {
            let t = tables.get(i)?;
            span_of(t, rest).or_else(|| t.span())
        }
        (Some(i), item) => {
            let v = item.as_array()?.get(i)?;
            v.as_inline_table().and_then(|t| span_of(t, rest)).or_else(|| v.span())
        }
    };
    found.or_else(|| key.span())
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
    flag.map(str::to_owned).or_else(|| file.database_url.clone()).ok_or(ConfigError::NoDatabase)
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
        assert!(err.contains("agentmon.toml: key `database_url`: expected a string"), "{err}");
        std::fs::write(&p, "databse_url = \"x\"\n").expect("write");
        assert!(FileConfig::load(&p).is_err(), "unknown keys are rejected");
        std::fs::write(&p, "database_url = \"postgres://x\"\n").expect("write");
        let f = FileConfig::load(&p).expect("good");
        assert_eq!(daemon_database_url(None, &f).expect("url"), "postgres://x");
        assert_eq!(daemon_database_url(Some("postgres://flag"), &f).expect("url"), "postgres://flag");
        assert!(
            matches!(FileConfig::load(&dir.join("missing.toml")), Err(ConfigError::Missing { .. })),
            "a named file must exist"
        );
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

    /// Each error is one line that names the file, and the key and its line when one is at fault.
    #[test]
    fn every_config_error_names_the_file_and_key() {
        let dir = std::env::temp_dir().join(format!("agentmon-cfg-msg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("agentmon.toml");
        let f = p.display();
        let cases = [
            ("database_url = \n", format!("{f}: line 1, column 16: not valid TOML: invalid string; expected `\"`, `'`")),
            ("database_url = \"a\"\ndatabase_url = \"b\"\n", format!("{f}: line 2, column 1: not valid TOML: duplicate key `database_url` in document root")),
            (
                "group = \"x\"\n\ndatabse_url = \"x\"\n",
                // The list goes on with every key (checked below).
                format!("{f}: unknown key `databse_url` (line 3); valid keys: database_url, group, state_dir, pin_dir, ring_buffer_mb, "),
            ),
            ("[redaction]\nrulez = 1\n", format!("{f}: unknown key `redaction.rulez` (line 2); valid keys: rules, allow, disable")),
            ("ring_buffer_mb = \"big\"\n", format!("{f}: key `ring_buffer_mb`: expected an integer from 0 to 4294967295, found string \"big\" (line 1)")),
            ("ring_buffer_mb = -1\n", format!("{f}: key `ring_buffer_mb`: invalid value: integer `-1`, expected an integer from 0 to 4294967295 (line 1)")),
            ("queue_memory_mb = 1.5\n", format!("{f}: key `queue_memory_mb`: expected an integer from 0 to 18446744073709551615, found floating point `1.5` (line 1)")),
            ("capture_compat = 1\n", format!("{f}: key `capture_compat`: expected a boolean, found integer `1` (line 1)")),
            ("[group]\nx = 1\n", format!("{f}: key `group`: expected a string, found a table (line 1)")),
            ("[redaction]\nrules = [{ name = \"n\" }]\n", format!("{f}: key `redaction.rules[0]`: missing field `pattern` (line 2)")),
            ("[redaction]\nrules = [{ name = \"n\", pattern = 3 }]\n", format!("{f}: key `redaction.rules[0].pattern`: expected a string, found integer `3` (line 2)")),
            ("\nring_buffer_mb = 48\n", format!("{f}: key `ring_buffer_mb`: 48 MiB: a ring buffer must be a power of two between 1 and 1024 MiB (line 2)")),
            ("lifecycle_ring_mb = 2048\n", format!("{f}: key `lifecycle_ring_mb`: 2048 MiB: a ring buffer must be a power of two between 1 and 1024 MiB (line 1)")),
            ("checkpoint_secs = 0\n", format!("{f}: key `checkpoint_secs`: 0: expected 1 to 3600 seconds (line 1)")),
            ("heartbeat_secs = 90000\n", format!("{f}: key `heartbeat_secs`: 90000: expected 1 to 86400 seconds (line 1)")),
            ("max_tracked_processes = 8\n", format!("{f}: key `max_tracked_processes`: 8: expected at least 16 (line 1)")),
            (
                "metrics_listen = \"nope\"\n",
                format!("{f}: key `metrics_listen`: `nope` is not an address: expected IP:PORT (e.g. 127.0.0.1:9464), [IPv6]:PORT, a port alone for loopback, on, or off (line 1)"),
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).expect("write");
            let err = FileConfig::load(&p).expect_err(text).to_string();
            if want.ends_with(' ') {
                assert!(err.starts_with(&want) && err.contains(", metrics_listen, redaction,"), "for {text:?}: {err}");
            } else {
                assert_eq!(err, want, "for {text:?}");
            }
            assert!(!err.contains('\n'));
        }
        assert_eq!(
            FileConfig::load(&dir).expect_err("a directory").to_string(),
            format!("{}: cannot read: Is a directory (os error 21)", dir.display())
        );
        let missing = dir.join("missing.toml");
        assert_eq!(
            FileConfig::load(&missing).expect_err("missing").to_string(),
            format!("{}: no such file (only the default /etc/agentmon/agentmon.toml may be absent)", missing.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_found_later_get_their_line() {
        let text = "[[rule]]\nagent = \"a\"\nexe = [\"/x\"]\n\n[[rule]]\nagent = \"b\"\nunit = \"\"\n\n[redaction]\nallow = [\"a\", \"(\"]\n";
        let key = |key: &str| {
            ConfigError::Key { path: "f.toml".into(), key: key.into(), message: "bad".into() }
                .with_line(text)
                .to_string()
        };
        assert_eq!(key("rule[1].unit"), "f.toml: key `rule[1].unit`: bad (line 7)");
        assert_eq!(key("rule[1]"), "f.toml: key `rule[1]`: bad (line 5)");
        assert_eq!(key("rule[0].exe[0]"), "f.toml: key `rule[0].exe[0]`: bad (line 3)");
        assert_eq!(key("redaction.allow[1]"), "f.toml: key `redaction.allow[1]`: bad (line 10)");
        assert_eq!(key("rule[5].unit"), "f.toml: key `rule[5].unit`: bad", "a key not in the file gets no line");
    }

    #[test]
    fn metrics_addresses() {
        let loopback = |port| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(metrics_addr("9100"), Ok(loopback(9100)));
        assert_eq!(metrics_addr(":9100"), Ok(loopback(9100)));
        assert_eq!(metrics_addr("localhost:9100"), Ok(loopback(9100)));
        assert_eq!(metrics_addr("on"), Ok(loopback(DEFAULT_METRICS_PORT)));
        assert_eq!(metrics_addr("off"), Ok(None));
        assert_eq!(metrics_addr("0.0.0.0:9464"), Ok(Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9464)))));
        assert_eq!(metrics_addr("[::1]:9464").map(|a| a.map(|a| a.is_ipv6())), Ok(Some(true)));
        assert!(metrics_addr("example.org:9464").is_err());
        assert!(metrics_addr("70000").is_err());
        let f = FileConfig { metrics_listen: Some("127.0.0.1:1".into()), ..FileConfig::default() };
        assert!(f.validate(Path::new("x")).is_ok());
    }
}
