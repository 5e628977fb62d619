//! `agentmon daemon`: capture from the kernel's rings to `PostgreSQL`. The record path and
//! its stage order are in `pipeline.rs`; this file starts the stages, runs the main loop and
//! serves the control commands.
//!
//! - `args.rs`: the command line, merged with the config file into `Settings`.
//! - `pipeline.rs`: read → correlate → redact → alerts → chain → queue/spool → store, using
//!   `reader.rs`, `crate::correlate`, `redact.rs`, `crate::alerts`, `chain.rs`, `queue.rs` and
//!   `spool.rs`, and `store.rs`.
//! - `sessions.rs`: sessions start, are re-adopted after a restart, and end.
//! - `status.rs`: what `agentmon status` and the metrics report.
//! - `control.rs` (the control socket), `metrics.rs` (Prometheus), `notify.rs` (systemd),
//!   `handoff.rs` (the state carried across a graceful restart), `retention.rs` (the daily
//!   task), `webhook.rs` (alert delivery), `embedded.rs` (the private `PostgreSQL`), `otlp.rs`
//!   (the OTLP/HTTP receiver of agents' logs and metrics).

pub mod args;
pub mod chain;
pub mod control;
pub mod embedded;
pub mod handoff;
pub mod intake;
pub mod metrics;
pub mod notify;
pub mod otlp;
pub mod pipeline;
pub mod queue;
pub mod reader;
pub mod redact;
mod reports;
pub mod retention;
pub mod sessions;
pub mod spool;
mod status;
pub mod store;
pub mod webhook;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use chrono::Utc;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::{info, warn};

pub use args::DaemonArgs;
use args::Settings;
use control::Command;
use pipeline::Pipeline;
use queue::Queue;
use reader::Reader;
use sessions::Sessions;
use store::{lock, SharedQueue, StoreMode, StoreStats};

use crate::{
    cgroup, config,
    control::{Request, Response},
    correlate::{Clock, Correlator},
    ebpf::{Attachment, Probes},
};

/// Spool segment size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// How long a stopping daemon waits for the database before it spools what it holds.
const STOP_FLUSH: Duration = Duration::from_secs(10);

struct Daemon {
    probes: Probes,
    correlator: Correlator,
    sessions: Sessions,
    /// Everything after correlation: redact, alerts, chain, queue.
    pipeline: Pipeline,
    store_stats: Arc<StoreStats>,
    /// The control socket's refusals (its server runs on a task of its own).
    control_stats: Arc<control::ControlStats>,
    boot_id: String,
    state_dir: std::path::PathBuf,
    decode_errors: u64,
    started_at: chrono::DateTime<Utc>,
    /// Beats every turn of the main loop; the systemd watchdog pings only while it is fresh.
    heartbeat: notify::Heartbeat,
    /// The retention task, when `[retention]` is set.
    retention: Option<mpsc::Sender<retention::RunRequest>>,
    /// The host's resolvers, re-read when the file changes.
    resolvers: Resolvers,
    /// The agents' own account: reports in, verdicts out (`reports.rs`).
    reports: reports::Reports,
    intake_stats: Arc<intake::IntakeStats>,
    otlp_stats: Arc<otlp::OtlpStats>,
}

/// The host's DNS resolvers, from `resolv.conf`: only their answers name connects.
struct Resolvers {
    path: std::path::PathBuf,
    /// Read at least once, and the file's modification time then (`None`: it was missing).
    read: bool,
    modified: Option<std::time::SystemTime>,
}

impl Resolvers {
    /// The name servers, when the file changed since the last read (or on the first).
    fn changed(&mut self) -> Option<Vec<std::net::IpAddr>> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if self.read && self.modified == modified {
            return None;
        }
        (self.read, self.modified) = (true, modified);
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let servers = crate::correlate::resources::parse_resolv_conf(&text);
        info!(file = %self.path.display(), resolvers = ?servers, "DNS answers name connects only from these resolvers");
        Some(servers)
    }
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
    let settings = Settings::resolve(args)?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); agentmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    }
    state_dir(&settings.state_dir)?;
    crate::ebpf::ensure_mounts().map_err(|e| {
        anyhow::anyhow!("cannot mount tracefs at /sys/kernel/tracing or bpffs at /sys/fs/bpf ({e}): agentmon needs both (`mount -t bpf bpf /sys/fs/bpf`)")
    })?;
    // No database configured: the private cluster under the state directory, for as long as
    // the daemon runs (stopped after the final flush, or after a failed start).
    let (url, embedded) = match config::daemon_database_url(settings.database_url.as_deref(), &settings.file) {
        Ok(url) => (url, None),
        Err(config::ConfigError::NoDatabase) => {
            let e = embedded::start(&settings.state_dir)
                .context("no database configured, and the private PostgreSQL could not start")?;
            (e.url.clone(), Some(e))
        }
        Err(e) => return Err(e.into()),
    };
    let result = capture(settings, url).await;
    if let Some(e) = embedded {
        e.stop();
    }
    result
}

/// Everything from the database connection to the final flush.
async fn capture(settings: Settings, url: String) -> anyhow::Result<()> {
    let state = settings.state_dir.clone();
    let redactor = redact::open(&state, &settings.file.redaction)?;
    info!(rules = redactor.rule_names().len(), "secrets are redacted before anything is stored");
    let host = hostname();
    let chain = chain::open(&settings, &host)?;
    info!(database = %crate::store::redact_url(&url), "connecting to the database");
    let admin = crate::store::connect(&url).await?;
    crate::store::migrate(&admin).await?;
    admin.close().await;
    // Everything after the migration appends through the writer role.
    let pool = crate::store::connect_as(&url, crate::store::Role::Writer).await?;

    let (cgroup_mount, cgroup_root) = cgroup_dirs(&settings)?;
    raise_memlock();

    let mut probes = load_probes(&settings)?;
    let mut reader = ring_reader(&mut probes)?;

    let front = spool::Spool::open(&state.join("spool-front"), u64::MAX, SEGMENT_BYTES)?;
    let main = spool::Spool::open(&state.join("spool"), settings.spool_max_bytes, SEGMENT_BYTES)?;
    let queue: SharedQueue =
        Arc::new(Mutex::new(Queue::new(front, main, settings.queue_memory_bytes, settings.spool_max_bytes)));
    let store_stats = Arc::new(StoreStats::default());
    let (mode_tx, mode_rx) = tokio::sync::watch::channel(StoreMode::Run);
    let store_task = tokio::spawn(store::run(pool.clone(), host.clone(), queue.clone(), store_stats.clone(), mode_rx));
    let sync_task = tokio::spawn(store::sync_spool(queue.clone()));

    let (clock, boot_id) = clock()?;
    let protected = settings.protected_paths();
    let sensitive = crate::sensitive::Sensitive::new(&settings.file.sensitive, protected.clone())
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let alert_rules = crate::alerts::Rules::new(&settings.file.alerts).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    info!(rules = ?alert_rules.names(), "alert rules");
    let webhook = start_webhook(&settings.file.alerts)?;
    let mut correlator = Correlator::new(clock);
    correlator.set_sensitive(sensitive.clone());
    correlator.set_protected(protected, {
        let mut roots = vec![cgroup_mount.display().to_string(), "/sys/fs/cgroup".to_owned()];
        roots.dedup();
        roots
    });
    let mut daemon = Daemon {
        probes,
        correlator,
        sessions: Sessions::new(cgroup_mount, cgroup_root, settings.rules.clone()),
        pipeline: Pipeline {
            redactor,
            alerts: crate::alerts::Engine::new(alert_rules, sensitive),
            webhook,
            chain,
            queue,
            host,
            records_redacted: 0,
            checkpoints_written: 0,
        },
        store_stats,
        control_stats: Arc::default(),
        boot_id,
        state_dir: state.clone(),
        decode_errors: 0,
        started_at: Utc::now(),
        heartbeat: notify::Heartbeat::default(),
        retention: None,
        resolvers: Resolvers { path: settings.resolv_conf.clone(), read: false, modified: None },
        reports: reports::Reports::new(&settings.file.agents, crate::agents::installed(Path::new("/"))),
        intake_stats: Arc::default(),
        otlp_stats: Arc::default(),
    };
    if let Some(r) = daemon.resolvers.changed() {
        daemon.correlator.set_resolvers(r);
    }
    let clock = retention::Clock(settings.retention_clock.clone());
    let cut_rx = start_retention(&mut daemon, &settings.file.retention, &settings.state_dir, clock, &pool)?;
    daemon.restore_handoff();
    daemon.resume_chain(&pool).await?;
    let open = crate::store::open_sessions(&pool, &daemon.pipeline.host).await?;
    daemon.readopt(open, &mut reader)?;

    let allowed_gid = control::group_gid(&settings.group);
    if settings.group_named && allowed_gid.is_none() {
        let group = &settings.group;
        bail!("group `{group}` (from --group or the config file) does not exist: create it with `groupadd {group}` or name another");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let runtime_dir = &settings.runtime_dir;
    let listener = control::bind_socket(runtime_dir, allowed_gid)?;
    write_private(&runtime_dir.join(config::DATABASE_URL_FILE), &url)?;
    metrics::start(settings.metrics_listen.as_deref(), &cmd_tx).await?;
    tokio::spawn(control::serve(listener, cmd_tx, allowed_gid, daemon.control_stats.clone()));
    let (intake_rx, otlp_rx) = start_account(&mut daemon, runtime_dir, &settings).await?;
    info!(socket = %crate::control::socket_path(runtime_dir).display(), "capturing");
    notify::notify(&format!(
        "READY=1\nSTATUS=capturing: {} programs, {} live sessions",
        daemon.probes.attached.len(),
        daemon.sessions.by_cgroup.len()
    ));
    notify::spawn_watchdog(daemon.heartbeat.clone());

    let result = daemon.main_loop(&mut reader, cmd_rx, cut_rx, intake_rx, otlp_rx).await;
    stop(&mut daemon, runtime_dir, &mode_tx, store_task, &sync_task).await;
    result
}

/// The intake socket and the OTLP receiver, each with the channel its reports come in on. A
/// receiver that cannot bind its address is reported and left off; the daemon still captures.
async fn start_account(
    daemon: &mut Daemon,
    runtime_dir: &Path,
    settings: &Settings,
) -> anyhow::Result<(mpsc::Receiver<intake::HookReport>, mpsc::Receiver<otlp::Received>)> {
    let (intake_tx, intake_rx) = mpsc::channel(1024);
    let listener = intake::bind(runtime_dir)?;
    tokio::spawn(intake::serve(listener, intake_tx, daemon.intake_stats.clone()));
    let (otlp_tx, otlp_rx) = mpsc::channel(256);
    if let Some(addr) = settings.file.agents.otlp_listen() {
        match otlp::bind(&addr).await {
            Ok(l) => {
                let local = l.local_addr().map_or(addr.clone(), |a| a.to_string());
                info!(listen = %local, "OTLP/HTTP receiver for the agents' telemetry");
                daemon.reports.otlp_listen = Some(local);
                tokio::spawn(otlp::serve(l, otlp_tx, daemon.otlp_stats.clone()));
            }
            Err(e) => {
                warn!(listen = %addr, error = %e, "cannot bind the OTLP receiver (agents.otlp_listen): the agents' telemetry is not received");
            }
        }
    }
    Ok((intake_rx, otlp_rx))
}

/// The retention task, when `[retention]` is set; the receiver of the cuts it asks the main
/// loop to sign.
fn start_retention(
    daemon: &mut Daemon,
    cfg: &crate::retention::RetentionConfig,
    state_dir: &Path,
    clock: retention::Clock,
    pool: &sqlx::PgPool,
) -> anyhow::Result<mpsc::Receiver<retention::CutRequest>> {
    let (cut_tx, cut_rx) = mpsc::channel::<retention::CutRequest>(4);
    if let Some(policy) = crate::retention::Policy::new(cfg, state_dir).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))? {
        info!(hot_days = policy.hot.num_days(), warm_days = ?policy.warm.map(|w| w.num_days()), cold_days = ?policy.cold.map(|c| c.num_days()), archive = %policy.archive_dir.display(), "retention is on: applied daily");
        let (run_tx, run_rx) = mpsc::channel(4);
        daemon.retention = Some(run_tx);
        tokio::spawn(retention::run(pool.clone(), policy, clock, run_rx, cut_tx));
    }
    Ok(cut_rx)
}

/// The cgroup2 mount and the directory under it that session cgroups go in, created.
fn cgroup_dirs(settings: &Settings) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cgroup_mount = cgroup::cgroup2_mount()?;
    let cgroup_root = settings.cgroup_root.clone().unwrap_or_else(|| cgroup_mount.join("agentmon"));
    if !cgroup_root.starts_with(&cgroup_mount) {
        bail!("--cgroup-root {} is not under the cgroup2 mount {}", cgroup_root.display(), cgroup_mount.display());
    }
    std::fs::create_dir_all(&cgroup_root).with_context(|| format!("creating cgroup root {}", cgroup_root.display()))?;
    Ok((cgroup_mount, cgroup_root))
}

/// The programs loaded and attached, or the pinned ones adopted, and told the daemon's pid.
fn load_probes(settings: &Settings) -> anyhow::Result<Probes> {
    let mut probes = Probes::open(&settings.probes).context("loading the eBPF programs")?;
    if let Err(e) = probes.set_daemon(std::process::id()) {
        warn!(error = %e, "cannot tell the programs the daemon's pid: signals to it will not be reported");
    }
    match &probes.attachment {
        Attachment::Loaded => {
            info!(programs = %probes.version, pins = %probes.pin_path.display(), attached = probes.attached.len(), "programs loaded, attached and pinned");
        }
        Attachment::Adopted => {
            info!(programs = %probes.version, pins = %probes.pin_path.display(), "adopted the pinned programs: capture never stopped");
        }
        Attachment::Replaced { old_version } => {
            info!(programs = %probes.version, old = %old_version, "replaced the pinned programs of another build with no gap");
        }
    }
    Ok(probes)
}

/// The reader of the programs' rings, once the rings of any programs they replaced are drained.
fn ring_reader(probes: &mut Probes) -> anyhow::Result<Reader> {
    let (lifecycle, events) = probes.take_rings().context("ring buffers missing")?;
    let mut reader = Reader::new(lifecycle, events);
    let mut replaced = std::mem::take(&mut probes.replaced_rings);
    if !replaced.is_empty() {
        reader.drain_replaced(&mut replaced, probes.replaced_at_ns);
        drop(replaced);
        probes.finish_replacement();
    }
    Ok(reader)
}

/// After the main loop: the control socket goes, the chain ends with a "stop" checkpoint, the
/// correlation state is handed over, and the store gets `STOP_FLUSH` to write what it holds
/// before the rest is spooled for the next daemon.
async fn stop(
    daemon: &mut Daemon,
    runtime_dir: &Path,
    mode_tx: &tokio::sync::watch::Sender<StoreMode>,
    mut store_task: tokio::task::JoinHandle<()>,
    sync_task: &tokio::task::JoinHandle<()>,
) {
    // No daemon from here until the next one says so: its pid may be reused meanwhile.
    let _ = daemon.probes.set_daemon(0);

    let _ = std::fs::remove_file(crate::control::socket_path(runtime_dir));
    let _ = std::fs::remove_file(crate::intake::socket_path(runtime_dir));
    let _ = std::fs::remove_file(runtime_dir.join(config::DATABASE_URL_FILE));
    // Grouped repeats still waiting for their window are written now.
    let waiting = daemon.pipeline.alerts.tick(Utc::now(), true);
    daemon.pipeline.push_alerts(waiting);
    // The last record of the chain: "stopped", as opposed to "the tail was cut".
    daemon.pipeline.checkpoint("stop");
    daemon.hand_over();
    // Store what the database takes in time; spool the rest for the next daemon.
    let _ = mode_tx.send(StoreMode::Drain);
    if tokio::time::timeout(STOP_FLUSH, &mut store_task).await.is_err() {
        let _ = mode_tx.send(StoreMode::Abort);
        let _ = store_task.await;
    }
    sync_task.abort();
    let mut q = lock(&daemon.pipeline.queue);
    let lost = q.spill();
    let st = q.stats();
    if st.spool_records > 0 {
        info!(records = st.spool_records, "records spooled for the next daemon");
    }
    if lost > 0 {
        warn!(records = lost, "{lost} records could not be spooled at shutdown and are lost");
    }
    drop(q);
    if let Some(w) = daemon.pipeline.webhook.take() {
        w.stop(Duration::from_secs(3));
    }
    info!("stopped; the programs stay attached and keep capturing into the pinned rings");
}

/// The webhook's delivery thread, when `alerts.webhook` is set.
fn start_webhook(alerts: &crate::alerts::AlertConfig) -> anyhow::Result<Option<webhook::Webhook>> {
    let Some(url) = &alerts.webhook else { return Ok(None) };
    let target = crate::alerts::parse_webhook_url(url).map_err(|m| anyhow::anyhow!("alerts.webhook: {m}"))?;
    let retry = alerts
        .webhook_retry_max
        .as_deref()
        .map_or(Ok(chrono::Duration::seconds(60)), crate::alerts::parse_duration)
        .map_err(|m| anyhow::anyhow!("alerts.webhook_retry_max: {m}"))?;
    // Scheme and host only: the path of a webhook URL is often its secret token.
    info!(webhook = %target.origin(), "alerts are posted to a webhook");
    Ok(Some(webhook::Webhook::start(
        target,
        alerts.webhook_format.as_deref() == Some("slack"),
        retry.to_std().unwrap_or(Duration::from_mins(1)),
    )))
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
        mut intake: mpsc::Receiver<intake::HookReport>,
        mut otlp: mpsc::Receiver<otlp::Received>,
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
        let mut out = Vec::new();
        self.scan_rule_cgroups(&mut out);
        self.emit(out);
        let mut more = self.pump(reader, false);
        let mut out = Vec::new();
        self.end_orphans(&mut out);
        self.emit(out);
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
                    if let Some(r) = self.resolvers.changed() {
                        self.correlator.set_resolvers(r);
                    }
                    if !settled && !more {
                        self.settle_pending(&pending_at_start);
                        settled = true;
                    }
                    self.account_tick();
                    // Only with the rings read: a removed cgroup's last events may still be in them.
                    if !more {
                        let mut out = Vec::new();
                        self.end_removed_rule_cgroups(&mut out);
                        self.emit(out);
                    }
                }
                // A report: the rings first, so the sender's processes are known.
                Some(r) = intake.recv() => {
                    self.pump(reader, false);
                    self.hook_report(r);
                }
                // Telemetry comes from the agent process, usually known long before: it is
                // bound before the rings are read, so a last batch sent just before the agent
                // exits still finds its sender; a sender not known yet (a new process) is
                // looked for again once the rings are read.
                Some(r) = otlp.recv() => {
                    if !self.otlp_request(&r, false) {
                        self.pump(reader, false);
                        self.otlp_request(&r, true);
                    }
                }
                Some(req) = cuts.recv() => {
                    self.pipeline.cut(req.cut);
                    let _ = req.queued.send(());
                }
                Some(cmd) = cmds.recv() => {
                    // Drain first so a session's earlier events are handled before new state.
                    self.pump(reader, false);
                    if let Some(refusal) = self.refuse_from_session(&cmd) {
                        let _ = cmd.reply.send(refusal);
                        continue;
                    }
                    if let Request::Retention { dry_run } = cmd.req {
                        self.retention(dry_run, cmd.peer_uid, cmd.reply);
                        continue;
                    }
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
            let grouped = self.pipeline.alerts.tick(Utc::now(), false);
            self.pipeline.push_alerts(grouped);
            if let Some(kind) = self.pipeline.chain.due() {
                self.pipeline.checkpoint(kind);
            }
        }
    }

    /// The chain continues from the newest stored row. Open sessions' counts and the chain's
    /// head come from the database, so what the last daemon spooled is stored first; then a
    /// start checkpoint signs the head before anything new, and a new key is registered.
    async fn resume_chain(&mut self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        let mut waited = 0u32;
        while !lock(&self.pipeline.queue).is_empty() {
            if waited.is_multiple_of(50) {
                let n = lock(&self.pipeline.queue).stats().spool_records;
                info!(records = n, "storing records spooled by the last daemon before re-adopting sessions");
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let host = self.pipeline.host.clone();
        let head = crate::store::chain_head(pool, &host).await?;
        self.pipeline.chain.set_head(head);
        info!(seq = head.map_or(0, |h| h.seq), "chain head");
        self.pipeline.checkpoint("start");
        if !crate::store::key_registered(pool, &host, &self.pipeline.chain.fingerprint).await? {
            let key = self.pipeline.chain.key_record();
            self.emit(vec![key]);
        }
        Ok(())
    }

    /// Serve one control request from the peer process `pid` (of user `uid`, started at `start`).
    fn command(&mut self, req: Request, pid: u32, uid: u32, start: Option<u64>) -> Response {
        let mut out = Vec::new();
        let r = match req {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::Checkpoint => {
                // Only a head that no checkpoint covers yet gets one: a client asking in a
                // loop adds at most one checkpoint per new row.
                if self.pipeline.chain.uncovered() {
                    self.pipeline.checkpoint("requested");
                }
                Ok(Response::Checkpoint { host: self.pipeline.host.clone() })
            }
            // Served by the main loop before it gets here.
            Request::Retention { .. } => Err("retention requests are served by the retention task".into()),
            Request::StartSession { agent, label } => self.start_session(&agent, label, pid, uid, start, &mut out),
            Request::Tag { cgroup, agent, label } => {
                if uid == 0 {
                    self.tag(&cgroup, &agent, label, uid, &mut out)
                } else {
                    Err("only root may tag an existing cgroup".into())
                }
            }
        };
        self.emit(out);
        r.unwrap_or_else(Response::error)
    }

    /// A request that changes the trail, from a process the kernel tracks as part of a session
    /// (whatever its uid): refused, and recorded in that session as a tamper event.
    fn refuse_from_session(&mut self, cmd: &Command) -> Option<Response> {
        if !cmd.req.changes_trail() {
            return None;
        }
        let session = self.probes.tracked_session_of(cmd.peer_pid, cmd.peer_start)?;
        let request = cmd.req.name();
        warn!(
            pid = cmd.peer_pid,
            uid = cmd.peer_uid,
            request,
            cgroup_id = session,
            "refused a control request from inside a session"
        );
        let data = serde_json::json!({
            "tamper": "control_refused", "request": request, "result": "refused",
            "uid": cmd.peer_uid, "pid": cmd.peer_pid,
        });
        let out = self.correlator.daemon_tamper(session, cmd.peer_pid, &data);
        self.emit(out);
        Some(Response::error(format!(
            "refused: `{request}` changes the trail, and this process is part of an agent session; run it from outside every session"
        )))
    }

    /// Hand `agentmon retention` to the retention task, which replies when done.
    fn retention(&self, dry_run: bool, peer_uid: u32, reply: tokio::sync::oneshot::Sender<Response>) {
        let refuse = |reply: tokio::sync::oneshot::Sender<Response>, message: &str| {
            let _ = reply.send(Response::error(message));
        };
        if peer_uid != 0 {
            return refuse(reply, "only root may apply retention");
        }
        let Some(tx) = &self.retention else {
            return refuse(reply, "retention is not configured: set [retention] hot (and warm, cold) in the config file and restart the daemon");
        };
        match tx.try_send(retention::RunRequest { dry_run, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(r)) => {
                refuse(r.reply, "retention runs are already waiting; try again when they end");
            }
            Err(mpsc::error::TrySendError::Closed(r)) => {
                refuse(r.reply, "the retention task stopped (see the daemon log); restart the daemon");
            }
        }
    }
}

/// A ring buffer's fd, for readiness only (the ring itself is read through the reader).
struct RingFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RingFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}
