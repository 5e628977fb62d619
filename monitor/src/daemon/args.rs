//! The daemon's command line, merged once with the config file and the defaults into the
//! [`Settings`] every other part of the daemon reads.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    config::{self, ConfigError, FileConfig},
    ebpf::ProbeOptions,
    rules::Rules,
};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// `PostgreSQL` URL (else `DATABASE_URL`, else `database_url` in the config file).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// cgroup under which `run` creates session cgroups for callers in the root cgroup (others get theirs under their own cgroup) [default: <cgroup2 mount>/agentmon].
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// Directory for the control socket.
    #[arg(long, env = "AGENTMON_RUNTIME_DIR", default_value = config::DEFAULT_RUNTIME_DIR, value_name = "DIR")]
    pub runtime_dir: PathBuf,
    /// Directory for the spool and the restart handoff [default: `state_dir` in the config file, else /var/lib/agentmon].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory where programs, maps and rings are pinned [default: `pin_dir` in the config file, else /sys/fs/bpf/agentmon].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Group whose members may start sessions [default: agentmon, if it exists].
    #[arg(long)]
    pub group: Option<String>,
    /// File/network ring-buffer size in MiB (a power of two) [default: 64].
    #[arg(long, value_parser = ring_size)]
    pub ring_buffer_mb: Option<u32>,
    /// Lifecycle (exec, fork, exit) ring-buffer size in MiB (a power of two) [default: 8].
    #[arg(long, value_parser = ring_size)]
    pub lifecycle_ring_mb: Option<u32>,
    /// Heap bytes of records that may wait in memory for the database, in MiB; past it they go
    /// to the on-disk spool [default: `queue_memory_mb` in the config file, else 16].
    #[arg(long, value_name = "MIB")]
    pub queue_memory_mb: Option<u64>,
    /// Disk bytes the spool may use, in MiB; past it raw events are shed and counted
    /// [default: `spool_max_mb` in the config file, else 4096].
    #[arg(long, value_name = "MIB")]
    pub spool_max_mb: Option<u64>,
    /// Where signed checkpoints are copied besides the database: a file (one JSON object per
    /// line, what `verify --witness` reads) or `journal` [default: `checkpoint_log` in the
    /// config file, else <state-dir>/checkpoints.jsonl].
    #[arg(long, value_name = "PATH|journal")]
    pub checkpoint_log: Option<String>,
    /// Seconds between checkpoints while records flow [default: 5].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub checkpoint_secs: Option<u64>,
    /// Longest time between checkpoints when idle; `verify` reports a tail older than this
    /// (plus half, at least 5 s) with no stop checkpoint as cut [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub heartbeat_secs: Option<u64>,
    /// Capture 32-bit (`int 0x80`) syscalls: adds a cheap check to every syscall on the host
    /// [default: `capture_compat` in the config file, else true].
    #[arg(long, value_name = "BOOL")]
    pub capture_compat: Option<bool>,
    /// Capture syscalls with fexit programs on the kernel's syscall functions where the kernel
    /// allows it (probed at start, else the syscall tracepoints; `status` says which), so
    /// processes outside every session pay nothing for syscalls agentmon does not hook
    /// [default: `capture_fexit` in the config file, else true].
    #[arg(long, value_name = "BOOL")]
    pub capture_fexit: Option<bool>,
    /// Processes the kernel can track at once; a process past it is reported as a
    /// `track_failed` tamper event and its session marked incomplete
    /// [default: `max_tracked_processes` in the config file, else 65536].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_tracked_processes: Option<u32>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`: `IP:PORT`, or a port alone for
    /// loopback; the flag alone means 127.0.0.1:9464, `off` none [default: `metrics_listen` in
    /// the config file, else off].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "on", value_parser = metrics_listen)]
    pub metrics_listen: Option<String>,
    /// Tests only: read retention's "now" from this root-owned file (an RFC 3339 time) instead
    /// of the system clock.
    #[arg(long, hide = true, value_name = "FILE")]
    pub retention_clock: Option<PathBuf>,
    /// Tests only: the `resolv.conf` whose name servers are the host's resolvers (only their
    /// DNS answers name connects) [default: /etc/resolv.conf].
    #[arg(long, hide = true, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Config file; only the default may be absent.
    #[arg(long, default_value = config::CONFIG_PATH)]
    pub config: PathBuf,
}

fn ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of MiB"))?;
    config::check_ring_mb(n)?;
    Ok(n)
}

fn metrics_listen(s: &str) -> Result<String, String> {
    config::metrics_addr(s).map(|_| s.to_owned())
}

/// What the daemon runs with: each value from its flag, else the config file, else the default.
pub struct Settings {
    /// The config file, and what it holds besides the values merged below.
    pub config: PathBuf,
    pub file: FileConfig,
    /// Session rules (`[[rule]]`), compiled.
    pub rules: Rules,
    pub database_url: Option<String>,
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Where `run` makes session cgroups; None: `<cgroup2 mount>/agentmon`.
    pub cgroup_root: Option<PathBuf>,
    /// The kernel side: pins, ring sizes, compat capture, tracked processes, kernel rules.
    pub probes: ProbeOptions,
    pub queue_memory_bytes: u64,
    pub spool_max_bytes: u64,
    /// A file, or `journal`.
    pub checkpoint_log: String,
    pub checkpoint_every: Duration,
    pub heartbeat: Duration,
    /// The group allowed to start sessions, and whether it was named (then it must exist).
    pub group: String,
    pub group_named: bool,
    pub metrics_listen: Option<String>,
    /// Tests only (`--retention-clock`).
    pub retention_clock: Option<PathBuf>,
    /// Where the host's DNS resolvers are listed.
    pub resolv_conf: PathBuf,
}

impl Settings {
    /// Load the config file and merge it with the flags.
    pub fn resolve(args: DaemonArgs) -> Result<Self, ConfigError> {
        let file = FileConfig::load(&args.config)?;
        let rules = Rules::compile(&file.rules)
            .map_err(|(key, message)| ConfigError::Key { path: args.config.clone(), key, message }.located())?;
        let state_dir = args.state_dir.or(file.state_dir.clone()).unwrap_or_else(|| config::DEFAULT_STATE_DIR.into());
        let probes = ProbeOptions {
            pin_dir: args.pin_dir.or(file.pin_dir.clone()).unwrap_or_else(|| config::DEFAULT_PIN_DIR.into()),
            ring_bytes: args.ring_buffer_mb.or(file.ring_buffer_mb).unwrap_or(64) << 20,
            lifecycle_ring_bytes: args.lifecycle_ring_mb.or(file.lifecycle_ring_mb).unwrap_or(16) << 20,
            compat: args.capture_compat.or(file.capture_compat).unwrap_or(true),
            fexit: args.capture_fexit.or(file.capture_fexit).unwrap_or(true),
            max_tracked: args.max_tracked_processes.or(file.max_tracked_processes).unwrap_or(65536),
            rules: rules.kernel(),
        };
        let secs =
            |flag: Option<u64>, file: Option<u64>, default| Duration::from_secs(flag.or(file).unwrap_or(default));
        Ok(Self {
            checkpoint_log: args
                .checkpoint_log
                .or(file.checkpoint_log.clone())
                .unwrap_or_else(|| state_dir.join("checkpoints.jsonl").display().to_string()),
            checkpoint_every: secs(args.checkpoint_secs, file.checkpoint_secs, 5),
            heartbeat: secs(args.heartbeat_secs, file.heartbeat_secs, 60),
            queue_memory_bytes: args.queue_memory_mb.or(file.queue_memory_mb).unwrap_or(16) << 20,
            spool_max_bytes: args.spool_max_mb.or(file.spool_max_mb).unwrap_or(4096) << 20,
            group_named: args.group.is_some() || file.group.is_some(),
            group: args.group.or(file.group.clone()).unwrap_or_else(|| "agentmon".into()),
            metrics_listen: args.metrics_listen.or(file.metrics_listen.clone()),
            retention_clock: args.retention_clock,
            resolv_conf: args.resolv_conf,
            database_url: args.database_url,
            cgroup_root: args.cgroup_root,
            runtime_dir: args.runtime_dir,
            config: args.config,
            state_dir,
            probes,
            rules,
            file,
        })
    }

    /// agentmon's own paths: writes to them by a session process are tamper events. The config's
    /// directory is protected when it is agentmon's own (`/etc/agentmon`), else the file itself.
    pub fn protected_paths(&self) -> Vec<String> {
        let abs = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()))
                .display()
                .to_string()
        };
        let config = match self.config.parent() {
            Some(d) if d.file_name().is_some_and(|n| n == "agentmon") => abs(d),
            _ => abs(&self.config),
        };
        vec![
            abs(&self.state_dir),
            abs(&self.probes.pin_dir),
            abs(&self.runtime_dir),
            config,
            "/etc/agentmon".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_is_validated() {
        assert_eq!(ring_size("64"), Ok(64));
        assert!(ring_size("48").is_err());
        assert!(ring_size("0").is_err());
        assert!(ring_size("big").is_err());
    }
}
