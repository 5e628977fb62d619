//! The systemd notify protocol (`Type=notify`), without libsystemd: datagrams to
//! `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`). `READY=1` once the programs
//! are attached and the database is reachable, `STOPPING=1` when a stop begins, and
//! `WATCHDOG=1` while the main loop is alive. Without `NOTIFY_SOCKET` nothing is sent.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// Send one notification (`READY=1`, `STOPPING=1`, `STATUS=...`); errors are ignored, as with
/// `sd_notify`.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process per `WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The main loop's heartbeat: it beats every turn; the watchdog pings only while it is fresh,
/// so a wedged loop stops the pings and systemd restarts the service.
#[derive(Clone)]
pub struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        Duration::from_millis(
            (self.start.elapsed().as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// Ping `WATCHDOG=1` at half the interval while the heartbeat is younger than half of it.
pub fn spawn_watchdog(heartbeat: Heartbeat) {
    let Some(interval) = watchdog_interval() else { return };
    let half = interval / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(half);
        loop {
            tick.tick().await;
            if heartbeat.age() < half {
                notify("WATCHDOG=1");
            } else {
                tracing::warn!(
                    stalled_ms = heartbeat.age().as_millis() as u64,
                    "the main loop is stalled: no watchdog ping"
                );
            }
        }
    });
}
