//! Prometheus metrics: `GET /metrics` on `--metrics-listen`, in the text exposition format.
//!
//! A scrape asks the main loop for its [`Status`] through the control socket's command channel,
//! so the metrics and `agentmon status --json` are the same numbers. The responder is minimal
//! HTTP/1.1: one request per connection, `GET`/`HEAD /metrics`, 404 for other paths, 405 for
//! other methods, then the connection closes.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Semaphore},
};
use tracing::{debug, info, warn};

use super::control::Command;
use crate::control::{Request, Response, Status};

/// Scrapes answered at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request, and the main loop to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Listen on `--metrics-listen`, else `metrics_listen` (both checked when parsed), if either
/// is set and not `off`, and answer scrapes through the main loop's command channel.
pub async fn start(listen: Option<&str>, tx: &mpsc::Sender<Command>) -> anyhow::Result<()> {
    let Some(addr) = listen.and_then(|a| crate::config::metrics_addr(a).ok().flatten()) else { return Ok(()) };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr} (--metrics-listen, metrics_listen)"))?;
    info!(address = %addr, "serving Prometheus metrics at /metrics");
    tokio::spawn(serve(listener, tx.clone()));
    Ok(())
}

async fn serve(listener: TcpListener, tx: mpsc::Sender<Command>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_mins(1)) {
                    warn!(error = %e, "metrics accept failed; retrying every 100 ms");
                    last_warning = Some(std::time::Instant::now());
                }
                drop(slot);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &tx).await {
                debug!(error = %e, "metrics connection failed");
            }
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, tx: &mpsc::Sender<Command>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, body) = match route(&head) {
        Route::Metrics { head_only } => match status(tx).await {
            Some(st) => ("200 OK", Some((render(&st), head_only))),
            None => ("503 Service Unavailable", None),
        },
        Route::NotFound => ("404 Not Found", None),
        Route::BadMethod => ("405 Method Not Allowed", None),
        Route::BadRequest => ("400 Bad Request", None),
    };
    let (body, head_only) = body.unwrap_or_else(|| (format!("{status}\n"), false));
    let content_type =
        if status.starts_with("200") { prometheus_text::CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let allow = if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// The request line and headers, up to the blank line (at most [`MAX_HEAD`] bytes).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") && head.len() < MAX_HEAD
    {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else { return Route::BadRequest };
    let parts: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
    let [method, target, version] = parts[..] else { return Route::BadRequest };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::BadMethod,
    };
    match target.split_once('?').map_or(target, |(path, _)| path) {
        "/metrics" => Route::Metrics { head_only },
        _ => Route::NotFound,
    }
}

/// The main loop's status, as `agentmon status` gets it (no peer: nothing privileged).
async fn status(tx: &mpsc::Sender<Command>) -> Option<Status> {
    let (reply, rx) = oneshot::channel();
    tx.send(Command { req: Request::Status, peer_pid: 0, peer_uid: u32::MAX, peer_start: None, reply }).await.ok()?;
    match tokio::time::timeout(TIMEOUT, rx).await {
        Ok(Ok(Response::Status(st))) => Some(*st),
        _ => None,
    }
}

type Labels = Vec<(String, String)>;

/// Metrics registered under `agentmon_`; counters get `_total` from the encoder.
struct Metrics(Registry);

impl Metrics {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let g: Gauge<u64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn counters(&mut self, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, u64)>) {
        let f: Family<Labels, Counter> = Family::default();
        for (labels, v) in values {
            f.get_or_create(&labels).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauges(&mut self, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, i64)>) {
        let f: Family<Labels, Gauge> = Family::default();
        for (labels, v) in values {
            f.get_or_create(&labels).set(v);
        }
        self.0.register(name, help, f);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Every counter and gauge of `status`, in the Prometheus text format (0.0.4).
pub fn render(st: &Status) -> String {
    let mut m = Metrics(Registry::with_prefix("agentmon"));
    daemon(&mut m, st);
    sessions(&mut m, st);
    events(&mut m, st);
    backlog(&mut m, st);
    storage(&mut m, st);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &m.0);
    out
}

/// The build, the daemon and its probes.
fn daemon(m: &mut Metrics, st: &Status) {
    // `0.1.0 (abc1234)`, from build.rs.
    let revision = env!("AGENTMON_VERSION").split_once(" (").map_or("unknown", |(_, r)| r.trim_end_matches(')'));
    m.0.register(
        "build",
        "The agentmon build: version, git revision and eBPF object",
        Info::new(labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", revision),
            ("programs_version", &st.programs_version),
        ])),
    );
    let pid = st.pid.to_string();
    m.0.register(
        "daemon",
        "The daemon: host, pid, how it came by its programs, and its checkpoint signing key",
        Info::new(labels(&[
            ("host", &st.host),
            ("pid", &pid),
            ("programs", &st.programs),
            ("signing_key", &st.signing_key),
        ])),
    );
    m.gauge("capturing", "1 while the daemon is capturing (it serves metrics only then)", u64::from(st.capturing));
    m.gauge_f64(
        "start_time_seconds",
        "When the daemon started, in seconds since the Unix epoch",
        (st.started_at - chrono::DateTime::UNIX_EPOCH).as_seconds_f64(),
    );
    m.gauges(
        "probes_attached",
        "Programs attached, by kind of hook",
        st.probe_kinds.iter().map(|(k, n)| (labels(&[("kind", k)]), *n as i64)),
    );
}

/// The sessions: how many, and each live one.
fn sessions(m: &mut Metrics, st: &Status) {
    m.gauge("sessions_live", "Live sessions", st.sessions.len() as u64);
    m.gauge(
        "sessions_closing",
        "Sessions whose known processes all exited, waiting for the kernel's count to reach 0",
        st.sessions_closing as u64,
    );
    m.counter("sessions_ended", "Sessions ended since the daemon started", st.sessions_ended);
    let session = |s: &crate::control::LiveSession| labels(&[("session", &s.id.to_string()), ("agent", &s.agent)]);
    m.gauges(
        "session_info",
        "A live session: its cgroup id and root pid (0 when none) as labels",
        st.sessions.iter().map(|s| {
            let mut l = session(s);
            l.push(("cgroup_id".into(), s.cgroup_id.to_string()));
            l.push(("root_pid".into(), s.root_pid.unwrap_or(0).to_string()));
            (l, 1)
        }),
    );
    m.gauges(
        "session_processes",
        "A live session's processes the daemon knows",
        st.sessions.iter().map(|s| (session(s), i64::from(s.processes))),
    );
    m.gauges(
        "session_kernel_processes",
        "A live session's processes the kernel tracks that the daemon did not seed from /proc",
        st.sessions.iter().map(|s| (session(s), s.kernel_processes)),
    );
    m.counters(
        "session_events_lost",
        "A live session's events lost so far: kernel ring drops (of every daemon) plus shed events",
        st.sessions.iter().map(|s| (session(s), s.events_lost)),
    );
}

/// The events read from the kernel, and what the kernel could not do.
fn events(m: &mut Metrics, st: &Status) {
    m.counter(
        "events_read",
        "Records read from the ring buffers: events correlated, unattributed and undecodable",
        st.events_read,
    );
    m.counter("events_dropped", "Events the kernel could not put in a ring buffer, all rings", st.events_dropped);
    m.counters(
        "events_dropped_by_kind",
        "Events the kernel could not put in a ring buffer, by ring and kind: lifecycle (exec, fork, exit), file, net",
        [("lifecycle", st.dropped_lifecycle), ("file", st.dropped_file), ("net", st.dropped_net)]
            .map(|(k, v)| (labels(&[("kind", k)]), v)),
    );
    m.counter("decode_errors", "Records that failed to decode and were skipped", st.decode_errors);
    m.counter("events_unattributed", "Events for a cgroup the daemon has no live session for", st.unattributed);
    m.counter(
        "kernel_read_errors",
        "Failed kernel or user memory reads in the probes (the event was sent with what could be read)",
        st.kernel_read_errors,
    );
    m.counter("track_failures", "Processes the kernel could not add to its tracked set (map full)", st.track_failures);
    m.counter("stale_tracked", "Tracked-set entries found stale (pid reused) and dropped", st.stale_tracked);
    m.counter(
        "tag_failures",
        "New cgroups the kernel could not hold pending for the cgroup rules (session map full)",
        st.tag_failures,
    );
    m.counter(
        "pending_discarded",
        "Events of new cgroups held pending for the cgroup rules that matched none (dropped, not lost)",
        st.pending_discarded,
    );
}

/// The records waiting for the database: the memory queue and the spool.
fn backlog(m: &mut Metrics, st: &Status) {
    m.gauge("queue_records", "Records waiting in memory for the database", st.queue_records);
    m.gauge("queue_bytes", "Approximate heap bytes of the records waiting in memory", st.queue_bytes);
    m.gauge("queue_max_bytes", "Bound of the memory queue (--queue-memory-mb)", st.queue_max_bytes);
    m.gauge("spool_records", "Records waiting in the on-disk spool", st.spool_records);
    m.gauge("spool_bytes", "Bytes of the spool's files", st.spool_bytes);
    m.gauge("spool_segments", "Files of the spool", st.spool_segments);
    m.gauge("spool_max_bytes", "Bound of the spool (--spool-max-mb)", st.spool_max_bytes);
    m.counter("spool_corrupt_records", "Spooled records found truncated or corrupt", st.spool_corrupt_records);
    m.gauge_f64(
        "oldest_unstored_seconds",
        "Age of the oldest record not yet stored (0 when everything is stored)",
        st.oldest_unstored_secs.unwrap_or(0.0),
    );
    m.counter("events_shed", "Raw events not stored because memory and spool were full", st.events_shed);
}

/// The records stored, the chain, redaction and alerts.
fn storage(m: &mut Metrics, st: &Status) {
    m.counter("records_stored", "Records committed to the database since the daemon started", st.records_stored);
    m.counter("db_write_failures", "Failed batch writes to the database (each is retried)", st.db_write_failures);
    m.counter("db_records_rejected", "Records the database refused as invalid", st.db_records_rejected);
    m.counter("actions_written", "Actions completed since the daemon started", st.actions_written);
    m.counter(
        "processes_early",
        "Processes of open actions stored before their action (the action held its in-memory share)",
        st.processes_early,
    );
    m.counter(
        "control_busy",
        "Control connections refused because their uid held its share of the connections",
        st.control_busy,
    );
    m.gauge("chain_seq", "The host chain's head: the last sequence number given to a record", st.chain_seq);
    m.counter("checkpoints_written", "Signed checkpoints queued since the daemon started", st.checkpoints_written);
    m.counter(
        "records_redacted",
        "Records in which a redaction rule replaced something, since the daemon started",
        st.records_redacted,
    );
    m.counter("alerts_raised", "Alert rows written since the daemon started", st.alerts_raised);
    m.counter("webhook_delivered", "Alerts the webhook accepted", st.webhook_delivered);
    m.counter("webhook_failures", "Webhook delivery attempts that failed (each alert is retried)", st.webhook_failures);
    m.gauge("webhook_waiting", "Alerts waiting for the webhook", st.webhook_waiting);
    m.counter(
        "webhook_dropped",
        "Alerts dropped from a full webhook queue (they are still stored)",
        st.webhook_dropped,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        let mut st: Status = serde_json::from_str(
            r#"{
            "capturing": true, "pid": 42, "host": "h\"q", "started_at": "2026-01-02T03:04:05.5Z", "probes": [],
            "programs": "loaded", "programs_version": "v1", "sessions": [], "sessions_closing": 29, "events_read": 32,
            "events_dropped": 3, "dropped_lifecycle": 4, "dropped_file": 5, "dropped_net": 6, "decode_errors": 7,
            "unattributed": 8, "kernel_read_errors": 9, "queue_records": 10, "queue_bytes": 11, "queue_max_bytes": 12,
            "spool_records": 13, "spool_bytes": 14, "spool_segments": 15, "spool_max_bytes": 16,
            "spool_corrupt_records": 17, "oldest_unstored_secs": 1.5, "events_shed": 18, "db_write_failures": 19,
            "db_records_rejected": 20, "records_stored": 21, "track_failures": 22, "stale_tracked": 23,
            "actions_written": 24, "sessions_ended": 25, "chain_seq": 26, "signing_key": "k", "checkpoints_written": 27,
            "records_redacted": 28, "alerts_raised": 33, "webhook_delivered": 34, "webhook_failures": 35, "webhook_waiting": 36, "webhook_dropped": 37, "processes_early": 38, "control_busy": 39, "tag_failures": 30, "pending_discarded": 31, "probe_kinds": { "raw_tracepoint": 2 }
        }"#,
        )
        .expect("status");
        st.sessions.push(
            serde_json::from_value(serde_json::json!({
                "id": "0190b2a4-0000-7000-8000-000000000001", "agent": "claude", "cgroup_id": 99, "root_pid": null,
                "processes": 3, "kernel_processes": -1, "events_lost": 5,
            }))
            .expect("session"),
        );
        st
    }

    #[test]
    fn every_field_is_a_metric_with_help_and_type() {
        let text = render(&status());
        for line in [
            "agentmon_events_dropped_total 3",
            "agentmon_events_dropped_by_kind_total{kind=\"net\"} 6",
            "agentmon_oldest_unstored_seconds 1.5",
            "agentmon_records_redacted_total 28",
            "agentmon_events_read_total 32",
            "agentmon_start_time_seconds 1767323045.5",
            "agentmon_probes_attached{kind=\"raw_tracepoint\"} 2",
            "agentmon_session_kernel_processes{session=\"0190b2a4-0000-7000-8000-000000000001\",agent=\"claude\"} -1",
            "agentmon_session_events_lost_total{session=\"0190b2a4-0000-7000-8000-000000000001\",agent=\"claude\"} 5",
            "agentmon_session_info{session=\"0190b2a4-0000-7000-8000-000000000001\",agent=\"claude\",cgroup_id=\"99\",root_pid=\"0\"} 1",
            "agentmon_daemon_info{host=\"h\\\"q\",pid=\"42\",programs=\"loaded\",signing_key=\"k\"} 1",
            &format!(
                "agentmon_build_info{{version=\"{}\",revision=\"{}\",programs_version=\"v1\"}} 1",
                env!("CARGO_PKG_VERSION"),
                env!("AGENTMON_VERSION").split(['(', ')']).nth(1).expect("revision")
            ),
            "# TYPE agentmon_events_read_total counter",
            "# TYPE agentmon_queue_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        // Each family: HELP, then TYPE, then its samples; counters end in _total.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().expect("name").to_owned();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert_eq!(name, family, "TYPE follows its HELP");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            } else {
                assert!(line.starts_with(&family), "sample {line} is in family {family}");
            }
        }
        // Every number of status has a sample equal to it (the sum of its series, for families).
        let json = serde_json::to_value(status()).expect("json");
        let numbers = json.as_object().expect("object").iter().filter(|(_, v)| v.is_number());
        for (field, v) in numbers {
            assert!(
                v.as_f64().is_some_and(|n| n > 1.0),
                "give {field} a distinct value in this test's status, and a metric in render()"
            );
            let shown = v.as_u64().map_or_else(|| v.to_string(), |n| n.to_string());
            let sample = |l: &str| {
                !l.starts_with('#') && (l.ends_with(&format!(" {shown}")) || l.contains(&format!("=\"{shown}\"")))
            };
            assert!(text.lines().any(sample), "status field {field} = {shown} has no sample:\n{text}");
        }
    }

    #[test]
    fn probes_are_counted_by_kind_loaded_or_adopted() {
        let names = [
            "raw_tp/sched_process_exec",
            "tracepoint/syscalls/sys_enter_openat",
            "tracepoint/io_uring/io_uring_complete",
            "sched_process_exec-sched_process_exec",
            "sys_enter_tracked-sys_enter_openat",
            "compat_sys_enter-sys_enter",
            "io_uring_complete-io_uring_complete",
        ];
        let kinds = crate::ebpf::probe_kinds(&names.map(str::to_owned));
        let want =
            [("raw_tracepoint", 3), ("syscall_tracepoint", 2), ("tracepoint", 2)].map(|(k, n)| (k.to_owned(), n));
        assert_eq!(kinds, want.into_iter().collect());
    }

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head_only: true });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }
}
