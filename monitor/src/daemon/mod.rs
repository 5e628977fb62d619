//! `agentmon daemon`: a pipeline from the kernel to `PostgreSQL`.
//!
//! ```text
//! pinned programs ─▶ reader.rs ─▶ correlate (crate::correlate) ─▶ queue.rs ─▶ store.rs ─▶ PostgreSQL
//!  (crate::ebpf)     two rings,     sessions, actions,             memory,      one tx
//!                    time-merged    process trees                  spool.rs     per batch
//! ```
//!
//! `control.rs` serves the control socket; `handoff.rs` carries the correlation state from one
//! daemon to the next across a graceful restart. This file wires the stages and owns the
//! sessions: start, tag, re-adopt after a restart, and end (when the kernel agrees).

pub mod chain;
pub mod control;
pub mod embedded;
pub mod handoff;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod reader;
pub mod redact;
pub mod retention;
pub mod spool;
pub mod store;
pub mod webhook;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use chrono::Utc;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    cgroup,
    config::{self, FileConfig},
    control::{LiveSession, Request, Response, SessionStarted, Status},
    correlate::{Clock, Correlator, SessionInfo},
    ebpf::{decode::Event, Attachment, ProbeOptions, Probes},
    procscan,
    record::{Output, SessionStart},
};
use control::{proc_start_ticks, Command};
use queue::Queue;
use reader::Reader;
use store::{lock, SharedQueue, StoreMode, StoreStats};

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

/// Ring polls (up to 1 MiB each per ring) per turn of the main loop.
const PUMP_POLLS: u32 = 16;
/// Spool segment size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// How long a stopping daemon waits for the database before it spools what it holds.
const STOP_FLUSH: Duration = Duration::from_secs(10);

/// What the daemon remembers about a session beyond the correlator.
struct SessionMeta {
    id: Uuid,
    path: PathBuf,
    /// Created by us (`run`), so we remove the cgroup when the session ends.
    owned: bool,
    /// Raw events shed for it by earlier daemons (from the handoff).
    shed_before: u64,
    /// Started by a unit or cgroup rule: it lasts as long as its cgroup (a unit's processes
    /// may all exit between `ExecStartPre` and `ExecStart`).
    rule_cgroup: bool,
}

fn is_rule_cgroup(source: &str) -> bool {
    matches!(source, "unit" | "cgroup")
}

struct Daemon {
    probes: Probes,
    redactor: crate::redact::Redactor,
    chain: chain::Chain,
    records_redacted: u64,
    checkpoints_written: u64,
    correlator: Correlator,
    queue: SharedQueue,
    store_stats: Arc<StoreStats>,
    host: String,
    boot_id: String,
    state_dir: PathBuf,
    cgroup_mount: PathBuf,
    cgroup_root: PathBuf,
    sessions: HashMap<u64, SessionMeta>,
    /// Sessions found with no process at start-up: ended after the first drain of the rings,
    /// unless the rings held some of their processes.
    orphans: Vec<u64>,
    decode_errors: u64,
    started_at: chrono::DateTime<Utc>,
    /// Session rules from the config file.
    rules: crate::rules::Rules,
    /// Beats every turn of the main loop; the systemd watchdog pings only while it is fresh.
    heartbeat: notify::Heartbeat,
    /// Alert rules, evaluated on every record (`crate::alerts`), and where alerts go.
    alerts: crate::alerts::Engine,
    webhook: Option<webhook::Webhook>,
    /// The retention task, when `[retention]` is set.
    retention: Option<mpsc::Sender<retention::RunRequest>>,
}

fn clock() -> anyhow::Result<(Clock, String)> {
    let now = |id| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(id, &raw mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let boot_unix_ns = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let boot_id =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").context("reading boot id")?.trim().to_owned();
    let boot_tag = u32::from_str_radix(&boot_id.replace('-', "")[..8], 16).unwrap_or(0);
    Ok((Clock { boot_unix_ns, ns_per_tick: 1_000_000_000 / hz, boot_tag }, boot_id))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".into(), |h| h.trim().to_owned())
}

/// Create the state directory, root-only (it holds the spool and the handoff).
fn state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let hint = "agentmon keeps its signing key, spool and handoff there: fix it or set state_dir / --state-dir";
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {} ({hint})", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot secure the state directory {} ({hint})", dir.display()))?;
    let probe = dir.join(".agentmon-write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("the state directory {} is not writable ({hint})", dir.display()))?;
    Ok(())
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "agentmon daemon must run as root: it loads eBPF programs and manages cgroups (try `sudo agentmon daemon`)"
        );
    }
    let file = FileConfig::load(&args.config)?;
    let rules = crate::rules::Rules::compile(&file.rules)
        .map_err(|(key, message)| config::ConfigError::Key { path: args.config.clone(), key, message }.located())?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); agentmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    }
    let state = args.state_dir.clone().or(file.state_dir.clone()).unwrap_or_else(|| config::DEFAULT_STATE_DIR.into());
    state_dir(&state)?;
    crate::ebpf::ensure_mounts().map_err(|e| {
        anyhow::anyhow!("cannot mount tracefs at /sys/kernel/tracing or bpffs at /sys/fs/bpf ({e}): agentmon needs both (`mount -t bpf bpf /sys/fs/bpf`)")
    })?;
    // No database configured: the private cluster under the state directory, for as long as
    // the daemon runs (stopped after the final flush, or after a failed start).
    let (url, embedded) = match config::daemon_database_url(args.database_url.as_deref(), &file) {
        Ok(url) => (url, None),
        Err(config::ConfigError::NoDatabase) => {
            let e = embedded::start(&state)
                .context("no database configured, and the private PostgreSQL could not start")?;
            (e.url.clone(), Some(e))
        }
        Err(e) => return Err(e.into()),
    };
    let result = capture(args, file, rules, state, url).await;
    if let Some(e) = embedded {
        e.stop();
    }
    result
}

/// Everything from the database connection to the final flush.
async fn capture(
    args: DaemonArgs,
    file: FileConfig,
    rules: crate::rules::Rules,
    state: PathBuf,
    url: String,
) -> anyhow::Result<()> {
    let redactor = redact::open(&state, &file.redaction)?;
    info!(rules = redactor.rule_names().len(), "secrets are redacted before anything is stored");
    let host = hostname();
    let chain = open_chain(&args, &file, &state, &host)?;
    info!(database = %crate::store::redact_url(&url), "connecting to the database");
    let admin = crate::store::connect(&url).await?;
    crate::store::migrate(&admin).await?;
    admin.close().await;
    // Everything after the migration appends through the writer role.
    let pool = crate::store::connect_as(&url, crate::store::Role::Writer).await?;

    let cgroup_mount = cgroup::cgroup2_mount()?;
    let cgroup_root = args.cgroup_root.clone().unwrap_or_else(|| cgroup_mount.join("agentmon"));
    if !cgroup_root.starts_with(&cgroup_mount) {
        bail!("--cgroup-root {} is not under the cgroup2 mount {}", cgroup_root.display(), cgroup_mount.display());
    }
    std::fs::create_dir_all(&cgroup_root).with_context(|| format!("creating cgroup root {}", cgroup_root.display()))?;
    raise_memlock();

    let opts = ProbeOptions {
        pin_dir: args.pin_dir.clone().or(file.pin_dir.clone()).unwrap_or_else(|| config::DEFAULT_PIN_DIR.into()),
        ring_bytes: args.ring_buffer_mb.or(file.ring_buffer_mb).unwrap_or(64) << 20,
        lifecycle_ring_bytes: args.lifecycle_ring_mb.or(file.lifecycle_ring_mb).unwrap_or(8) << 20,
        compat: args.capture_compat.or(file.capture_compat).unwrap_or(true),
        max_tracked: args.max_tracked_processes.or(file.max_tracked_processes).unwrap_or(65536),
        rules: rules.kernel(),
    };
    let mut probes = Probes::open(&opts).context("loading the eBPF programs")?;
    if let Err(e) = probes.set_daemon(std::process::id()) {
        warn!(error = %e, "cannot tell the programs the daemon's pid: signals to it will not be reported");
    }
    match &probes.attachment {
        Attachment::Loaded => {
            info!(programs = %probes.version, pins = %probes.pin_path.display(), attached = probes.attached.len(), "programs loaded, attached and pinned")
        }
        Attachment::Adopted => {
            info!(programs = %probes.version, pins = %probes.pin_path.display(), "adopted the pinned programs: capture never stopped")
        }
        Attachment::Replaced { old_version } => {
            info!(programs = %probes.version, old = %old_version, "replaced the pinned programs of another build with no gap");
        }
    }
    let (lifecycle, events) = probes.take_rings().context("ring buffers missing")?;
    let mut reader = Reader::new(lifecycle, events);
    let mut replaced = std::mem::take(&mut probes.replaced_rings);
    if !replaced.is_empty() {
        reader.drain_replaced(&mut replaced, probes.replaced_at_ns);
        drop(replaced);
        probes.finish_replacement();
    }

    let memory_bytes = args.queue_memory_mb.or(file.queue_memory_mb).unwrap_or(16) << 20;
    let spool_max = args.spool_max_mb.or(file.spool_max_mb).unwrap_or(4096) << 20;
    let front = spool::Spool::open(&state.join("spool-front"), u64::MAX, SEGMENT_BYTES)?;
    let main = spool::Spool::open(&state.join("spool"), spool_max, SEGMENT_BYTES)?;
    let queue: SharedQueue = Arc::new(Mutex::new(Queue::new(front, main, memory_bytes, spool_max)));
    let store_stats = Arc::new(StoreStats::default());
    let (mode_tx, mode_rx) = tokio::sync::watch::channel(StoreMode::Run);
    let store_task = tokio::spawn(store::run(pool.clone(), host.clone(), queue.clone(), store_stats.clone(), mode_rx));
    let sync_task = tokio::spawn(store::sync_spool(queue.clone()));

    let (clock, boot_id) = clock()?;
    let sensitive = crate::sensitive::Sensitive::new(&file.sensitive, protected_paths(&args, &state, &opts.pin_dir))
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let alert_rules = crate::alerts::Rules::new(&file.alerts).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    info!(rules = ?alert_rules.names(), "alert rules");
    let mut daemon = Daemon {
        probes,
        redactor,
        chain,
        records_redacted: 0,
        checkpoints_written: 0,
        correlator: Correlator::new(clock),
        queue,
        store_stats,
        host,
        boot_id,
        state_dir: state.clone(),
        cgroup_mount,
        cgroup_root,
        sessions: HashMap::new(),
        orphans: Vec::new(),
        decode_errors: 0,
        started_at: Utc::now(),
        rules,
        heartbeat: notify::Heartbeat::default(),
        alerts: crate::alerts::Engine::new(alert_rules, sensitive.clone()),
        webhook: None,
        retention: None,
    };
    let (cut_tx, cut_rx) = mpsc::channel::<retention::CutRequest>(4);
    if let Some(policy) =
        crate::retention::Policy::new(&file.retention, &state).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?
    {
        info!(hot_days = policy.hot.num_days(), warm_days = ?policy.warm.map(|w| w.num_days()), cold_days = ?policy.cold.map(|c| c.num_days()), archive = %policy.archive_dir.display(), "retention is on: applied daily");
        let (run_tx, run_rx) = mpsc::channel(4);
        daemon.retention = Some(run_tx);
        tokio::spawn(retention::run(pool.clone(), policy, run_rx, cut_tx));
    }
    daemon.correlator.set_sensitive(sensitive);
    if let Some(url) = &file.alerts.webhook {
        let target = crate::alerts::parse_webhook_url(url).map_err(|m| anyhow::anyhow!("alerts.webhook: {m}"))?;
        let retry = file
            .alerts
            .webhook_retry_max
            .as_deref()
            .map_or(Ok(chrono::Duration::seconds(60)), crate::alerts::parse_duration)
            .map_err(|m| anyhow::anyhow!("alerts.webhook_retry_max: {m}"))?;
        daemon.webhook = Some(webhook::Webhook::start(
            target,
            file.alerts.webhook_format.as_deref() == Some("slack"),
            retry.to_std().unwrap_or(Duration::from_secs(60)),
        ));
        info!(webhook = %url.split('?').next().unwrap_or(""), "alerts are posted to a webhook");
    }
    daemon.correlator.set_protected(protected_paths(&args, &state, &opts.pin_dir), {
        let mut roots = vec![daemon.cgroup_mount.display().to_string(), "/sys/fs/cgroup".to_owned()];
        roots.dedup();
        roots
    });
    daemon.readopt(&pool, &mut reader).await?;

    let group = args.group.clone().or(file.group.clone()).unwrap_or_else(|| "agentmon".into());
    let allowed_gid = control::group_gid(&group);
    if (args.group.is_some() || file.group.is_some()) && allowed_gid.is_none() {
        bail!("group `{group}` (from --group or the config file) does not exist: create it with `groupadd {group}` or name another");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let listener = control::bind_socket(&args.runtime_dir, allowed_gid)?;
    write_private(&args.runtime_dir.join(config::DATABASE_URL_FILE), &url)?;
    metrics::start(args.metrics_listen.as_deref(), file.metrics_listen.as_deref(), &cmd_tx).await?;
    tokio::spawn(control::serve(listener, cmd_tx, allowed_gid));
    info!(socket = %crate::control::socket_path(&args.runtime_dir).display(), "capturing");
    notify::notify(&format!(
        "READY=1\nSTATUS=capturing: {} programs, {} live sessions",
        daemon.probes.attached.len(),
        daemon.sessions.len()
    ));
    notify::spawn_watchdog(daemon.heartbeat.clone());

    let result = daemon.main_loop(&mut reader, cmd_rx, cut_rx).await;
    // No daemon from here until the next one says so: its pid may be reused meanwhile.
    let _ = daemon.probes.set_daemon(0);

    let _ = std::fs::remove_file(crate::control::socket_path(&args.runtime_dir));
    let _ = std::fs::remove_file(args.runtime_dir.join(config::DATABASE_URL_FILE));
    // Grouped repeats still waiting for their window are written now.
    let last = daemon.alerts.tick(Utc::now(), true);
    daemon.enqueue_alerts(last);
    // The last record of the chain: "stopped", as opposed to "the tail was cut".
    daemon.checkpoint("stop");
    daemon.hand_over();
    // Store what the database takes in time; spool the rest for the next daemon.
    let _ = mode_tx.send(StoreMode::Drain);
    let mut store_task = store_task;
    if tokio::time::timeout(STOP_FLUSH, &mut store_task).await.is_err() {
        let _ = mode_tx.send(StoreMode::Abort);
        let _ = store_task.await;
    }
    sync_task.abort();
    let mut q = lock(&daemon.queue);
    let lost = q.spill();
    let st = q.stats();
    if st.spool_records > 0 {
        info!(records = st.spool_records, "records spooled for the next daemon");
    }
    if lost > 0 {
        warn!(records = lost, "{lost} records could not be spooled at shutdown and are lost");
    }
    if let Some(w) = daemon.webhook.take() {
        w.stop(Duration::from_secs(3));
    }
    info!("stopped; the programs stay attached and keep capturing into the pinned rings");
    result
}

/// The chain stage: the signing key (made on first start), the external checkpoint log and
/// the checkpoint intervals. Its head is set once the spool is stored (`readopt`).
fn open_chain(args: &DaemonArgs, file: &FileConfig, state: &Path, host: &str) -> anyhow::Result<chain::Chain> {
    let (key, new_key) = chain::load_or_create_key(state)?;
    let log = chain::CheckpointLog::parse(
        &args
            .checkpoint_log
            .clone()
            .or(file.checkpoint_log.clone())
            .unwrap_or_else(|| state.join("checkpoints.jsonl").display().to_string()),
    );
    let secs = |flag: Option<u64>, file: Option<u64>, default| Duration::from_secs(flag.or(file).unwrap_or(default));
    let chain = chain::Chain::new(
        host.to_owned(),
        None,
        key,
        log.clone(),
        secs(args.checkpoint_secs, file.checkpoint_secs, 5),
        secs(args.heartbeat_secs, file.heartbeat_secs, 60),
    );
    info!(key = %chain.fingerprint, public_key = %chain.public_key, new = new_key, log = ?log, "checkpoints are signed with this ed25519 key");
    Ok(chain)
}

fn raise_memlock() {
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit pointer. Not needed on 6.x kernels (memcg accounting), kept for older ones.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const r) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// Write a root-only file, created with its final mode (the URL may carry a password, and
/// monitored users must not get write access to the evidence through it).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

impl Daemon {
    async fn main_loop(
        &mut self,
        reader: &mut Reader,
        mut cmds: mpsc::Receiver<Command>,
        mut cuts: mpsc::Receiver<retention::CutRequest>,
    ) -> anyhow::Result<()> {
        let err = |e: std::io::Error| anyhow::anyhow!("polling the ring buffers: {e}");
        // SAFETY (both): the fds belong to rings owned by `reader`, which outlives this loop and
        // with it the registrations.
        let mut lifecycle = unsafe { AsyncFd::register(RingFd(std::os::fd::AsRawFd::as_raw_fd(&reader.lifecycle))) }
            .map_err(|e| anyhow::anyhow!("polling the lifecycle ring: {e}"))?;
        let mut events = unsafe { AsyncFd::register(RingFd(std::os::fd::AsRawFd::as_raw_fd(&reader.events))) }
            .map_err(|e| anyhow::anyhow!("polling the file and network ring: {e}"))?;
        // Producers skip wake-ups below a backlog threshold, so also drain on a timer.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // Cgroups held pending while no daemon ran: those whose event is still in the rings are
        // decided as it is read; any left pending once the rings are read had their event lost.
        let pending_at_start = self.probes.pending_cgroups();
        self.scan_rule_cgroups();
        let mut more = self.pump(reader, false);
        self.end_orphans();
        // Pending cgroups are settled once the rings have been read to the end (their events,
        // if any, are then decided).
        let mut settled = false;
        let mut rule_check = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.heartbeat.beat();
            tokio::select! {
                // A storm left more to read: go round at once (commands still get their turn).
                () = std::future::ready(()), if more => {}
                guard = lifecycle.readable_mut() => guard.map_err(err)?.clear_ready(),
                guard = events.readable_mut() => guard.map_err(err)?.clear_ready(),
                _ = tick.tick() => {}
                _ = rule_check.tick() => {
                    if !settled && !more {
                        self.settle_pending(&pending_at_start);
                        settled = true;
                    }
                    // Only with the rings read: a removed cgroup's last events may still be in them.
                    if !more {
                        self.end_removed_rule_cgroups();
                    }
                }
                Some(req) = cuts.recv() => {
                    // A retention cut: signed over the head and queued like any record.
                    let cut = self.chain.cut(req.cut);
                    lock(&self.queue).push(cut);
                    let _ = req.queued.send(());
                }
                Some(cmd) = cmds.recv() => {
                    if let Request::Retention { dry_run, as_of } = cmd.req {
                        self.retention(dry_run, as_of, cmd.peer_uid, cmd.reply);
                        continue;
                    }
                    // Drain first so a session's earlier events are handled before new state.
                    self.pump(reader, false);
                    let resp = self.command(cmd.req, cmd.peer_pid, cmd.peer_uid, cmd.peer_start);
                    let _ = cmd.reply.send(resp);
                }
                () = &mut shutdown => {
                    notify::notify("STOPPING=1\nSTATUS=storing the last records");
                    info!("shutting down");
                    self.pump(reader, true);
                    return Ok(());
                }
            }
            more = self.pump(reader, false);
            let grouped = self.alerts.tick(Utc::now(), false);
            self.enqueue_alerts(grouped);
            if let Some(kind) = self.chain.due() {
                self.checkpoint(kind);
            }
        }
    }

    /// Sign and queue a checkpoint of the chain's head (also copied to the external log).
    fn checkpoint(&mut self, kind: &str) {
        let c = self.chain.checkpoint(kind);
        lock(&self.queue).push(c);
        self.checkpoints_written += 1;
    }

    /// Read, correlate and queue until the rings are drained (or `all` at shutdown), or for at
    /// most [`PUMP_POLLS`] polls so commands are served during a storm. Returns whether the
    /// rings hold more.
    fn pump(&mut self, reader: &mut Reader, all: bool) -> bool {
        let mut events = Vec::new();
        let mut polls = 0;
        let more = loop {
            let more = reader.poll(&mut events, all);
            let mut out = Vec::with_capacity(events.len() + 4);
            for ev in events.drain(..) {
                match &ev {
                    Event::Cgroup(c) => {
                        self.enqueue(std::mem::take(&mut out));
                        self.on_new_cgroup(c);
                        continue;
                    }
                    Event::Exec(e) if e.session_start && !self.correlator.has_session(e.hdr.session_cgroup) => {
                        self.enqueue(std::mem::take(&mut out));
                        self.start_exe_session(e);
                    }
                    _ => {}
                }
                out.extend(self.correlator.handle(&ev));
            }
            let (probes, sessions) = (&self.probes, &self.sessions);
            // A rule's cgroup session lasts as long as the cgroup.
            let cgroup_gone = |cg: u64| sessions.get(&cg).is_none_or(|m| !m.rule_cgroup || !m.path.exists());
            out.extend(self.correlator.end_idle_sessions(|cg| probes.kernel_live(cg) <= 0 && cgroup_gone(cg)));
            self.enqueue(out);
            polls += 1;
            if !more || (!all && polls >= PUMP_POLLS) {
                break more;
            }
        };
        self.decode_errors = reader.decode_errors;
        more
    }

    /// A cgroup the kernel held pending for the cgroup rules: a session when its path matches
    /// a rule (and it is not inside a session already), else released.
    fn on_new_cgroup(&mut self, c: &crate::ebpf::decode::CgroupOp) {
        if self.sessions.contains_key(&c.id) {
            return; // `run`'s own cgroup, or found by the start-up scan.
        }
        let dir = self.cgroup_mount.join(c.path.trim_start_matches('/'));
        let rule = self.rules.match_cgroup(&c.path).cloned();
        let inside = self.session_above(&dir);
        // A cgroup already removed (a short-lived unit, or a backlog read after a restart) is
        // still its session: its processes were held from its first instant.
        let current = match cgroup::cgroup_id(&dir) {
            Ok(id) => id == c.id,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        let kept = match (rule, inside) {
            (Some(rule), None) if current => {
                match self.register_id(c.id, Uuid::now_v7(), &dir, &rule.agent, rule.label.clone(), 0, rule.source()) {
                    Ok(_) => {
                        self.seed(c.id, &dir);
                        info!(agent = %rule.agent, rule = rule.source(), cgroup = %dir.display(), "session started by a rule");
                        true
                    }
                    Err(e) => {
                        warn!(cgroup = %dir.display(), error = %e, "a cgroup matched a rule but could not become a session");
                        false
                    }
                }
            }
            (Some(_), Some(outer)) => {
                info!(cgroup = %dir.display(), session = %outer, "a cgroup matched a rule inside a session: recorded in the outer session");
                false
            }
            _ => false,
        };
        if !kept {
            self.probes.untag(c.id);
            self.correlator.discard(c.id);
        }
    }

    /// The session whose cgroup holds `dir`, if any.
    fn session_above(&self, dir: &Path) -> Option<Uuid> {
        self.sessions
            .values()
            .find(|m| !m.path.as_os_str().is_empty() && dir.starts_with(&m.path) && dir != m.path)
            .map(|m| m.id)
    }

    /// An exec the kernel matched to an exe rule started a session: register it before the
    /// correlator sees the exec, so the exec is its first record.
    fn start_exe_session(&mut self, e: &crate::ebpf::decode::Exec) {
        let session = e.hdr.session_cgroup;
        let rule = self.rules.match_exec(&e.filename, &e.argv).cloned();
        let (agent, label) = rule.map_or_else(|| ("unknown".to_owned(), None), |r| (r.agent, r.label));
        let path = cgroup::path_of_pid(&self.cgroup_mount, e.hdr.tgid).unwrap_or_default();
        let id = Uuid::now_v7();
        self.correlator.start_session(SessionInfo {
            id,
            cgroup_id: session,
            agent: agent.clone(),
            events_before: 0,
            actions_before: 0,
            cgroup: path.display().to_string(),
        });
        self.sessions.insert(
            session,
            SessionMeta { id, path: PathBuf::new(), owned: false, shed_before: 0, rule_cgroup: false },
        );
        self.enqueue(vec![Output::SessionStart(SessionStart {
            id,
            agent: agent.clone(),
            label,
            cgroup: path.display().to_string(),
            cgroup_id: session,
            uid: e.uid,
            source: "exe".to_owned(),
            started_at: self.correlator.clock().wall(e.hdr.ts_ns),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        })]);
        info!(session = %id, agent, pid = e.hdr.tgid, exe = %e.filename, "session started by an exe rule");
    }

    /// Start-up: every existing cgroup a rule matches becomes a session with its processes, and
    /// cgroups left pending with no event (lost) are released. Pending ones whose event is still
    /// in the ring are decided when it is read.
    fn scan_rule_cgroups(&mut self) {
        if !self.rules.kernel().cgroups {
            return;
        }
        let mount = self.cgroup_mount.clone();
        for dir in cgroup::walk(&mount) {
            let rel = format!("/{}", dir.strip_prefix(&mount).unwrap_or(&dir).display());
            let Some(rule) = self.rules.match_cgroup(&rel).cloned() else { continue };
            let Ok(id) = cgroup::cgroup_id(&dir) else { continue };
            if self.sessions.contains_key(&id) || self.session_above(&dir).is_some() {
                continue;
            }
            match self.register(Uuid::now_v7(), &dir, &rule.agent, rule.label.clone(), 0, rule.source()) {
                Ok(_) => {
                    self.seed(id, &dir);
                    info!(agent = %rule.agent, rule = rule.source(), cgroup = %dir.display(), "existing cgroup matched a rule: session started");
                }
                Err(e) => {
                    warn!(cgroup = %dir.display(), error = %e, "a cgroup matched a rule but could not become a session")
                }
            }
        }
    }

    /// Cgroups pending since start-up that no event decided (it was lost): the start-up scan
    /// made every matching cgroup a session, so these match no rule and are released.
    fn settle_pending(&mut self, at_start: &[u64]) {
        let now = self.probes.pending_cgroups();
        for &id in at_start {
            if self.sessions.contains_key(&id) || !now.contains(&id) {
                continue;
            }
            self.probes.untag(id);
            self.correlator.discard(id);
        }
    }

    /// Rule sessions whose cgroup was removed with nothing left running in it.
    fn end_removed_rule_cgroups(&mut self) {
        let now = Utc::now();
        let gone: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(cg, m)| {
                m.rule_cgroup
                    && !m.path.exists()
                    && self.correlator.session_live(**cg).unwrap_or(0) == 0
                    && self.probes.kernel_live(**cg) <= 0
            })
            .map(|(cg, _)| *cg)
            .collect();
        for cg in gone {
            let out = self.correlator.end_session(cg, now);
            self.enqueue(out);
        }
    }

    /// Queue records, in order; a session end also gets its losses (counted once every record
    /// before it is queued) and releases the session's kernel state and cgroup.
    fn enqueue(&mut self, out: Vec<Output>) {
        if out.is_empty() {
            return;
        }
        let queue = self.queue.clone();
        let mut q = lock(&queue);
        for mut o in out {
            if let Output::SessionEnd(end) = &mut o {
                let meta = self.sessions.remove(&end.cgroup_id);
                end.events_lost = self.probes.untag(end.cgroup_id).total()
                    + q.take_shed(end.session_id)
                    + meta.as_ref().map_or(0, |m| m.shed_before);
                if let Some(meta) = meta.filter(|m| m.owned) {
                    if let Err(e) = cgroup::remove_tree(&meta.path) {
                        warn!(cgroup = %meta.path.display(), error = %e, "could not remove session cgroup");
                    }
                }
                info!(session = %end.session_id, actions = end.actions, lost = end.events_lost, "session ended");
            }
            // Redact, then chain, then queue: nothing unredacted or unchained reaches the
            // spool, the database or the log.
            let data = redact::apply(&self.redactor, &mut o);
            if o.redacted() {
                self.records_redacted += 1;
            }
            // Alert rules see the redacted record (an event's facts are its unredacted
            // paths and argv, never stored; the alert's own text is redacted below).
            let alerts = self.alerts.observe(&o);
            if let Output::Event(e) = &mut o {
                e.facts = None;
            }
            let before = self.chain.head();
            self.chain.seal(&mut o, data);
            if !q.push(o) {
                // Shed (counted against its session): it takes no place in the chain.
                self.chain.rewind(before);
            }
            for a in alerts {
                self.raise(&mut q, a);
            }
        }
    }

    fn enqueue_alerts(&mut self, alerts: Vec<crate::record::AlertRecord>) {
        if alerts.is_empty() {
            return;
        }
        let queue = self.queue.clone();
        let mut q = lock(&queue);
        for a in alerts {
            self.raise(&mut q, a);
        }
    }

    /// Redact, chain and queue an alert, then log it and hand it to the webhook.
    fn raise(&mut self, q: &mut Queue, a: crate::record::AlertRecord) {
        let mut o = Output::Alert(a);
        redact::apply(&self.redactor, &mut o);
        self.chain.seal(&mut o, None);
        let Output::Alert(a) = &o else { return };
        let payload = crate::alerts::payload(&self.host, a);
        warn!(target: "agentmon::alert", rule = %a.rule, severity = %a.severity, session = ?a.session_id, count = a.count, alert = %payload, "{}", a.summary);
        if let Some(w) = &self.webhook {
            w.send(payload);
        }
        // Alerts are never shed (only raw events are).
        q.push(o);
    }

    /// End sessions re-adopted with no process, if the first drain found none of theirs.
    fn end_orphans(&mut self) {
        let now = Utc::now();
        for cg in std::mem::take(&mut self.orphans) {
            if self.correlator.session_live(cg) == Some(0) && self.probes.kernel_live(cg) <= 0 {
                let out = self.correlator.end_session(cg, now);
                self.enqueue(out);
                info!(cgroup_id = cg, "closed a session that ended while no daemon was running");
            }
        }
    }

    /// Graceful stop: hand the correlation state and sessions to the next daemon.
    fn hand_over(&mut self) {
        let mut q = lock(&self.queue);
        let sessions = self
            .sessions
            .iter()
            .map(|(cg, m)| handoff::SessionHandoff {
                cgroup_id: *cg,
                session_id: m.id,
                path: m.path.clone(),
                owned: m.owned,
                shed: m.shed_before + q.take_shed(m.id),
                rule_cgroup: m.rule_cgroup,
            })
            .collect();
        drop(q);
        let h = handoff::Handoff::new(self.boot_id.clone(), self.host.clone(), sessions, self.correlator.take_state());
        let saved = serde_json::to_value(&h).map_err(std::io::Error::from).and_then(|mut v| {
            // The state holds in-flight argv and paths: redacted like records before it is written.
            redact::state(&self.redactor, &mut v["correlator"]);
            handoff::save(&self.state_dir, &v)
        });
        match saved {
            Ok(()) => info!(sessions = h.sessions.len(), "correlation state handed over for the next daemon"),
            Err(e) => warn!(error = %e, "could not write the handoff; the next daemon re-seeds sessions from /proc"),
        }
    }

    fn command(&mut self, req: Request, peer_pid: u32, peer_uid: u32, peer_start: Option<u64>) -> Response {
        let r = match req {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::Checkpoint => {
                // Only a head that no checkpoint covers yet gets one: a client asking in a
                // loop adds at most one checkpoint per new row.
                if self.chain.uncovered() {
                    self.checkpoint("requested");
                }
                Ok(Response::Checkpoint { host: self.host.clone() })
            }
            // Served by the main loop before it gets here.
            Request::Retention { .. } => Err("retention requests are served by the retention task".into()),
            Request::StartSession { agent, label } => self.start_session(&agent, label, peer_pid, peer_uid, peer_start),
            Request::Tag { cgroup, agent, label } => {
                if peer_uid == 0 {
                    self.tag(&cgroup, &agent, label, peer_uid)
                } else {
                    Err("only root may tag an existing cgroup".into())
                }
            }
        };
        r.unwrap_or_else(|message| Response::Error { message })
    }

    /// Hand `agentmon retention` to the retention task, which replies when done.
    fn retention(
        &self,
        dry_run: bool,
        as_of: Option<chrono::DateTime<Utc>>,
        peer_uid: u32,
        reply: tokio::sync::oneshot::Sender<Response>,
    ) {
        let refuse = |reply: tokio::sync::oneshot::Sender<Response>, message: &str| {
            let _ = reply.send(Response::Error { message: message.into() });
        };
        if peer_uid != 0 {
            return refuse(reply, "only root may apply retention");
        }
        let Some(tx) = &self.retention else {
            return refuse(reply, "retention is not configured: set [retention] hot (and warm, cold) in the config file and restart the daemon");
        };
        match tx.try_send(retention::RunRequest { dry_run, as_of, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(r)) => {
                refuse(r.reply, "retention runs are already waiting; try again when they end")
            }
            Err(mpsc::error::TrySendError::Closed(r)) => {
                refuse(r.reply, "the retention task stopped (see the daemon log); restart the daemon")
            }
        }
    }

    fn status(&self) -> Status {
        let k = self.probes.counters();
        let st = self.correlator.stats;
        let q = lock(&self.queue);
        let qs = q.stats();
        let now = queue::now_ms();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Status {
            capturing: true,
            pid: std::process::id(),
            host: self.host.clone(),
            started_at: self.started_at,
            probes: self.probes.attached.clone(),
            probe_kinds: crate::ebpf::probe_kinds(&self.probes.attached),
            capture_paths: crate::ebpf::capture_paths(&self.probes.attached),
            programs: match &self.probes.attachment {
                Attachment::Loaded => "loaded".into(),
                Attachment::Adopted => "adopted".into(),
                Attachment::Replaced { old_version } => format!("replaced {old_version}"),
            },
            programs_version: self.probes.version.clone(),
            sessions: self
                .correlator
                .live_sessions()
                .into_iter()
                .map(|(id, agent, cgroup_id, root_pid, processes)| LiveSession {
                    id,
                    agent,
                    cgroup_id,
                    root_pid,
                    processes,
                    kernel_processes: self.probes.kernel_live(cgroup_id),
                    events_lost: self.probes.session_lost(cgroup_id).total()
                        + q.shed_of(id)
                        + self.sessions.get(&cgroup_id).map_or(0, |m| m.shed_before),
                })
                .collect(),
            sessions_closing: self.correlator.idle_sessions(),
            events_read: st.events + st.unattributed + st.pending_discarded + self.decode_errors,
            events_dropped: k.dropped(),
            dropped_lifecycle: k.dropped_lifecycle,
            dropped_file: k.dropped_file,
            dropped_net: k.dropped_net,
            decode_errors: self.decode_errors,
            unattributed: st.unattributed,
            kernel_read_errors: k.read_errors,
            queue_records: qs.records,
            queue_bytes: qs.bytes,
            queue_max_bytes: qs.max_bytes,
            spool_records: qs.spool_records,
            spool_bytes: qs.spool_bytes,
            spool_segments: qs.spool_segments,
            spool_max_bytes: qs.spool_max_bytes,
            spool_corrupt_records: qs.spool_corrupt,
            oldest_unstored_secs: qs.oldest_ms.map(|t| now.saturating_sub(t) as f64 / 1000.0),
            events_shed: qs.shed,
            db_write_failures: load(&self.store_stats.failures),
            db_records_rejected: load(&self.store_stats.rejected),
            records_stored: load(&self.store_stats.stored),
            track_failures: k.track_failures,
            stale_tracked: k.stale_tracked,
            pending_discarded: st.pending_discarded,
            tag_failures: k.tag_failures,
            actions_written: st.actions_written,
            sessions_ended: st.sessions_ended,
            chain_seq: self.chain.head().seq,
            signing_key: self.chain.fingerprint.clone(),
            checkpoints_written: self.checkpoints_written,
            records_redacted: self.records_redacted,
            alerts_raised: self.alerts.raised,
            webhook_delivered: self
                .webhook
                .as_ref()
                .map_or(0, |w| w.stats.delivered.load(std::sync::atomic::Ordering::Relaxed)),
            webhook_failures: self
                .webhook
                .as_ref()
                .map_or(0, |w| w.stats.failures.load(std::sync::atomic::Ordering::Relaxed)),
            webhook_waiting: self
                .webhook
                .as_ref()
                .map_or(0, |w| w.stats.waiting.load(std::sync::atomic::Ordering::Relaxed)),
            webhook_dropped: self
                .webhook
                .as_ref()
                .map_or(0, |w| w.stats.dropped.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Register a session for a cgroup: kernel filter, correlator, database.
    fn register(
        &mut self,
        id: Uuid,
        path: &Path,
        agent: &str,
        label: Option<String>,
        uid: u32,
        source: &'static str,
    ) -> Result<u64, String> {
        let cgroup_id = cgroup::cgroup_id(path).map_err(|e| format!("cgroup {}: {e}", path.display()))?;
        self.register_id(cgroup_id, id, path, agent, label, uid, source)
    }

    /// [`Self::register`] with the cgroup id known (a rule's cgroup that may be gone already).
    #[allow(clippy::too_many_arguments)]
    fn register_id(
        &mut self,
        cgroup_id: u64,
        id: Uuid,
        path: &Path,
        agent: &str,
        label: Option<String>,
        uid: u32,
        source: &'static str,
    ) -> Result<u64, String> {
        if self.sessions.contains_key(&cgroup_id) {
            return Err(format!("cgroup {} is already a session", path.display()));
        }
        self.probes.tag(cgroup_id).map_err(|e| e.to_string())?;
        self.correlator.start_session(SessionInfo {
            id,
            cgroup_id,
            agent: agent.to_owned(),
            events_before: 0,
            actions_before: 0,
            cgroup: path.display().to_string(),
        });
        self.sessions.insert(
            cgroup_id,
            SessionMeta {
                id,
                path: path.to_owned(),
                owned: source == "run",
                shed_before: 0,
                rule_cgroup: is_rule_cgroup(source),
            },
        );
        self.enqueue(vec![Output::SessionStart(SessionStart {
            id,
            agent: agent.to_owned(),
            label,
            cgroup: path.display().to_string(),
            cgroup_id,
            uid,
            source: source.to_owned(),
            started_at: Utc::now(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        })]);
        Ok(cgroup_id)
    }

    /// Move the asking process into a new session cgroup, `agentmon-<id>` under the cgroup it is
    /// in (see [`cgroup::session_parent`]), so `run` keeps every limit the caller had.
    ///
    /// The pid is checked and moved through a pidfd. A pid alone can be reused between the
    /// check and the move, and the move would then capture an unrelated process. So: open a
    /// pidfd first (it names one process for good), then check the start time (the pidfd is the
    /// process that connected), then move by pid, then ask the pidfd whether that process is still
    /// unreaped. If it is, the pid was never free between the check and the move, so the process
    /// moved is the one checked. If it is not, the move may have caught a newcomer with the same
    /// pid: put whatever was moved back, end the session, and fail.
    fn start_session(
        &mut self,
        agent: &str,
        label: Option<String>,
        pid: u32,
        uid: u32,
        start: Option<u64>,
    ) -> Result<Response, String> {
        const GONE: &str = "the process that asked is gone (or its pid was reused); nothing was moved";
        crate::rules::valid_session_names(agent, label.as_deref())?;
        let pidfd = cgroup::PidFd::open(pid).map_err(|_| GONE.to_owned())?;
        if pid == 0 || start.is_none() || proc_start_ticks(pid) != start {
            return Err(GONE.into());
        }
        if let Some(session) = self.probes.tracked_session(pid) {
            return Err(format!(
                "this process is already inside a session (cgroup id {session}); nested sessions are not supported"
            ));
        }
        let parent = cgroup::session_parent(&self.cgroup_mount, &self.cgroup_root, pid)
            .map_err(|e| format!("finding the cgroup of pid {pid}: {e}"))?;
        let id = Uuid::now_v7();
        let dir = parent.join(format!("agentmon-{id}"));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup_id = match self.register(id, &dir, agent, label, uid, "run") {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let moved = cgroup::move_pid(&dir, pid).map_err(|e| format!("moving pid {pid} into {}: {e}", dir.display()));
        let moved = moved.and_then(|()| if pidfd.alive() { Ok(()) } else { Err(GONE.to_owned()) });
        if let Err(e) = moved {
            // Whatever landed in the cgroup goes back where the caller was, then the session
            // ends at once (nothing of the caller ran in it) and its cgroup is removed.
            for p in cgroup::procs_recursive(&dir).unwrap_or_default() {
                let _ = cgroup::move_pid(&parent, p);
            }
            let out = self.correlator.end_session(cgroup_id, Utc::now());
            self.enqueue(out);
            return Err(e);
        }
        info!(session = %id, agent, pid, uid, cgroup = %dir.display(), "session started");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    fn tag(&mut self, cgroup_arg: &str, agent: &str, label: Option<String>, uid: u32) -> Result<Response, String> {
        crate::rules::valid_session_names(agent, label.as_deref())?;
        let p = Path::new(cgroup_arg);
        let dir = if p.starts_with(&self.cgroup_mount) {
            p.to_owned()
        } else {
            self.cgroup_mount.join(p.strip_prefix("/").unwrap_or(p))
        };
        if !dir.join("cgroup.procs").exists() {
            return Err(format!(
                "{} is not a cgroup2 directory (paths are relative to {})",
                dir.display(),
                self.cgroup_mount.display()
            ));
        }
        let id = Uuid::now_v7();
        let cgroup_id = self.register(id, &dir, agent, label, uid, "tag")?;
        self.seed(cgroup_id, &dir);
        info!(session = %id, agent, cgroup = %dir.display(), "cgroup tagged");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    /// Adopt the processes already running in a session cgroup.
    fn seed(&mut self, cgroup_id: u64, dir: &Path) {
        self.seed_pids(cgroup_id, cgroup::procs_recursive(dir).unwrap_or_default());
    }

    fn seed_pids(&mut self, cgroup_id: u64, pids: Vec<u32>) {
        let seeds: Vec<_> = pids.into_iter().filter_map(procscan::seed_process).collect();
        for s in &seeds {
            if let Err(e) = self.probes.track(s.tgid, cgroup_id, s.start_ticks) {
                warn!(pid = s.tgid, error = %e, "could not track process");
            }
        }
        self.correlator.seed(cgroup_id, seeds);
    }

    /// Sessions left open by an earlier daemon on this host. Those in its handoff continue
    /// exactly; the others (after a crash) are re-seeded from `/proc`, and their events still in
    /// the pinned rings are read; one with no process left is closed after the first drain.
    async fn readopt(&mut self, pool: &sqlx::PgPool, reader: &mut Reader) -> anyhow::Result<()> {
        if let Some(h) = handoff::take(&self.state_dir, &self.boot_id, &self.host) {
            info!(sessions = h.sessions.len(), saved = %h.saved_at, "continuing from the last daemon's handoff");
            self.correlator.restore(h.correlator);
            for s in h.sessions {
                self.sessions.insert(
                    s.cgroup_id,
                    SessionMeta {
                        id: s.session_id,
                        path: s.path,
                        owned: s.owned,
                        shed_before: s.shed,
                        rule_cgroup: s.rule_cgroup,
                    },
                );
            }
        }
        // Open sessions' seq and counts come from the database: store what the last daemon
        // spooled first.
        let mut waited = 0u32;
        while !lock(&self.queue).is_empty() {
            if waited.is_multiple_of(50) {
                let n = lock(&self.queue).stats().spool_records;
                info!(records = n, "storing records spooled by the last daemon before re-adopting sessions");
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The chain continues from the newest stored row: the spool is stored, so that is the
        // last record any earlier daemon kept. A start checkpoint signs it before anything new.
        let head = crate::store::chain_head(pool, &self.host).await?;
        self.chain.set_head(head);
        info!(seq = head.map_or(0, |h| h.seq), "chain head");
        self.checkpoint("start");
        let registered: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM signing_keys WHERE host = $1 AND fingerprint = $2")
                .bind(&self.host)
                .bind(&self.chain.fingerprint)
                .fetch_optional(pool)
                .await?;
        if registered.is_none() {
            self.enqueue(vec![self.chain.key_record()]);
        }
        let rows: Vec<(Uuid, String, String, i64, String, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.agent, s.cgroup, s.cgroup_id, s.source, \
               COALESCE((SELECT max(seq) FROM events e WHERE e.session_id = s.id), 0), \
               (SELECT count(*) FROM actions a WHERE a.session_id = s.id) FROM sessions s \
             WHERE s.host = $1 AND NOT EXISTS (SELECT 1 FROM session_ends e WHERE e.session_id = s.id)",
        )
        .bind(&self.host)
        .fetch_all(pool)
        .await?;
        // /proc first, then the rings: a process forked after the scan is not seeded, and one
        // forked before it has its fork in the rings by the time they are read, so it is not
        // seeded either and comes through the rings with its start.
        let rows: Vec<_> = rows.into_iter().filter(|r| !self.correlator.has_session(r.3 as u64)).collect();
        let scanned: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let dir = Path::new(&r.2);
                if r.3 as u64 & monitor_common::EXE_SESSION != 0 {
                    // Started by an exe rule: its processes are the ones the kernel tracks.
                    self.probes.tracked_pids(r.3 as u64)
                } else if cgroup::cgroup_id(dir).ok() == Some(r.3 as u64) {
                    cgroup::procs_recursive(dir).unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let forked = if rows.is_empty() { HashSet::new() } else { reader.prefetch() };
        for ((id, agent, path, cgroup_id, source, events_before, actions_before), pids) in rows.into_iter().zip(scanned)
        {
            let cgroup_id = cgroup_id as u64;
            if cgroup_id & monitor_common::EXE_SESSION == 0 {
                self.probes.tag(cgroup_id)?;
            }
            self.alerts.session(id, &agent);
            self.correlator.start_session(SessionInfo {
                id,
                cgroup_id,
                agent,
                events_before: events_before as u64,
                actions_before: actions_before as u64,
                cgroup: path.clone(),
            });
            // An exe rule's session has no cgroup of its own (as in `start_exe_session`).
            let own = if cgroup_id & monitor_common::EXE_SESSION == 0 { PathBuf::from(&path) } else { PathBuf::new() };
            self.sessions.insert(
                cgroup_id,
                SessionMeta {
                    id,
                    path: own,
                    owned: source == "run",
                    shed_before: 0,
                    rule_cgroup: is_rule_cgroup(&source),
                },
            );
            if pids.is_empty() {
                self.orphans.push(cgroup_id);
            } else {
                self.seed_pids(cgroup_id, pids.into_iter().filter(|p| !forked.contains(p)).collect());
                info!(session = %id, "re-adopted a running session from /proc");
            }
        }
        Ok(())
    }
}

/// agentmon's own paths: writes to them by a session process are tamper events. The config's
/// directory is protected when it is agentmon's own (`/etc/agentmon`), else the file itself.
fn protected_paths(args: &DaemonArgs, state: &Path, pin_dir: &Path) -> Vec<String> {
    let abs = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()))
            .display()
            .to_string()
    };
    let config = match args.config.parent() {
        Some(d) if d.file_name().is_some_and(|n| n == "agentmon") => abs(d),
        _ => abs(&args.config),
    };
    vec![abs(state), abs(pin_dir), abs(&args.runtime_dir), config, "/etc/agentmon".to_owned()]
}

/// A ring buffer's fd, for readiness only (the ring itself is read through the reader).
struct RingFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RingFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
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
