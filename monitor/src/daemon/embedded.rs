//! The embedded default database: with no database configured, the daemon runs a private
//! `PostgreSQL` cluster under `<state dir>/postgres` (see [`crate::pgcluster`]), started before
//! anything is captured and stopped after the final flush. A supervisor thread restarts the
//! server if it dies (the spool holds records meanwhile).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Child,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::pgcluster::Cluster;

/// Only part of the socket's name: the cluster listens on no TCP port.
const PORT: u16 = 5432;
const DATABASE: &str = "agentmon";

pub struct Embedded {
    pub url: String,
    stopping: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    supervisor: Option<JoinHandle<()>>,
}

/// Create (first start) and start the cluster under `state/postgres`. The state directory
/// stays root:root and becomes 0711, so the server (which runs as postgres) can pass through
/// to its own directory: nothing in it can be listed, and everything else in it is root-only
/// (files 0600, the spool and archive directories 0700).
///
/// Its owner must stay root: systemd's `StateDirectory=` re-owns the whole tree, recursively,
/// to the unit's user (root) at every start when the directory's owner or group differs, which
/// used to take the cluster away from postgres after the first restart. (The cluster's own
/// tree is repaired anyway, see [`Cluster::init`].)
pub fn start(state: &Path) -> anyhow::Result<Embedded> {
    std::os::unix::fs::chown(state, Some(0), Some(0)).with_context(|| format!("securing {}", state.display()))?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("letting the postgres user reach {}", state.display()))?;
    let cluster = Cluster::new(state.join("postgres"), PORT);
    cluster.init(false, &|m| info!("{m}"))?;
    info!(dir = %cluster.dir.display(), "starting the private PostgreSQL (no database configured)");
    let child = cluster.start(&[])?;
    cluster.create_db(DATABASE)?;
    let url = cluster.url(DATABASE);
    let stopping = Arc::new(AtomicBool::new(false));
    let child = Arc::new(Mutex::new(Some(child)));
    let supervisor = {
        let (stopping, child) = (stopping.clone(), child.clone());
        std::thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || supervise(&cluster, &stopping, &child))?
    };
    Ok(Embedded { url, stopping, child, supervisor: Some(supervisor) })
}

/// Restart the server whenever it exits while the daemon runs, backing off to 30 s.
fn supervise(cluster: &Cluster, stopping: &AtomicBool, child: &Mutex<Option<Child>>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let exited = {
            let mut guard = child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("not running".to_owned()),
                Some(Ok(None)) => None,
            }
        };
        let Some(why) = exited else { continue };
        if stopping.load(Ordering::Acquire) {
            return;
        }
        warn!(status = %why, log = %cluster.log().display(), "the private PostgreSQL exited; restarting it (records wait in the spool)");
        match cluster.start(&[]) {
            Ok(c) => {
                *child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
                backoff = Duration::from_secs(1);
                info!("the private PostgreSQL is running again");
            }
            Err(e) => {
                *child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                error!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot restart the private PostgreSQL");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

impl Embedded {
    /// Stop the server (after the daemon's final flush).
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Cluster::stop_child(&mut c);
            info!("stopped the private PostgreSQL");
        }
    }
}
