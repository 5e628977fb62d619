//! Root integration tests of the Prometheus endpoint: a real daemon with `--metrics-listen`,
//! real sessions, and a scrape compared with `agentmon status --json` number by number.
#![expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "the samples are whole numbers far below 2^53: exact in f64"
)]

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
};

use integration_tests::{scratch, wait_for, Daemon};
use serde_json::Value;

/// The fields of `status --json` that are one unlabelled sample, and that sample's series.
const SAMPLES: &[(&str, &str)] = &[
    ("sessions_closing", "agentmon_sessions_closing"),
    ("sessions_ended", "agentmon_sessions_ended_total"),
    ("events_read", "agentmon_events_read_total"),
    ("events_dropped", "agentmon_events_dropped_total"),
    ("dropped_lifecycle", "agentmon_events_dropped_by_kind_total{kind=\"lifecycle\"}"),
    ("dropped_file", "agentmon_events_dropped_by_kind_total{kind=\"file\"}"),
    ("dropped_net", "agentmon_events_dropped_by_kind_total{kind=\"net\"}"),
    ("decode_errors", "agentmon_decode_errors_total"),
    ("unattributed", "agentmon_events_unattributed_total"),
    ("kernel_read_errors", "agentmon_kernel_read_errors_total"),
    ("track_failures", "agentmon_track_failures_total"),
    ("stale_tracked", "agentmon_stale_tracked_total"),
    ("tag_failures", "agentmon_tag_failures_total"),
    ("pending_discarded", "agentmon_pending_discarded_total"),
    ("queue_records", "agentmon_queue_records"),
    ("queue_bytes", "agentmon_queue_bytes"),
    ("queue_max_bytes", "agentmon_queue_max_bytes"),
    ("spool_records", "agentmon_spool_records"),
    ("spool_bytes", "agentmon_spool_bytes"),
    ("spool_segments", "agentmon_spool_segments"),
    ("spool_max_bytes", "agentmon_spool_max_bytes"),
    ("spool_corrupt_records", "agentmon_spool_corrupt_records_total"),
    ("oldest_unstored_secs", "agentmon_oldest_unstored_seconds"),
    ("events_shed", "agentmon_events_shed_total"),
    ("records_stored", "agentmon_records_stored_total"),
    ("db_write_failures", "agentmon_db_write_failures_total"),
    ("db_records_rejected", "agentmon_db_records_rejected_total"),
    ("actions_written", "agentmon_actions_written_total"),
    ("processes_early", "agentmon_processes_early_total"),
    ("control_busy", "agentmon_control_busy_total"),
    ("chain_seq", "agentmon_chain_seq"),
    ("checkpoints_written", "agentmon_checkpoints_written_total"),
    ("records_redacted", "agentmon_records_redacted_total"),
    ("alerts_raised", "agentmon_alerts_raised_total"),
    ("webhook_delivered", "agentmon_webhook_delivered_total"),
    ("webhook_failures", "agentmon_webhook_failures_total"),
    ("webhook_waiting", "agentmon_webhook_waiting"),
    ("webhook_dropped", "agentmon_webhook_dropped_total"),
];

/// One HTTP/1.1 request to the daemon's metrics port; returns (status line, headers, body).
fn http(port: u16, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.write_all(request.as_bytes()).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("the server answers and closes");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {reply:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn scrape(port: u16) -> String {
    let (status, headers, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{headers}");
    assert!(headers.contains(&format!("Content-Length: {}", body.len())), "{headers}");
    body
}

/// Samples by series (`name{labels}`), and the HELP and TYPE lines by family.
struct Scrape {
    samples: BTreeMap<String, f64>,
    help: HashSet<String>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Scrape {
    let mut s = Scrape { samples: BTreeMap::new(), help: HashSet::new(), types: BTreeMap::new() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(help.len() > 10, "HELP of {name} says something: {help}");
            s.help.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            s.types.insert(name.to_owned(), kind.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line}"));
            s.samples.insert(series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line}")));
        }
    }
    s
}

/// The local TCP ports `pid` listens on: its socket fds matched against its namespace's tables.
/// The port of the daemon's OTLP receiver, as `status` reports it (none when it did not bind).
fn otlp_port(d: &Daemon) -> Option<u16> {
    d.status()["account"]["otlp_listen"].as_str().and_then(|a| a.rsplit(':').next()?.parse().ok())
}

fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("daemon fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).expect("tcp table");
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            // st 0A is LISTEN; f[9] is the socket's inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit_once(':').expect("addr:port").1;
                ports.push(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A scrape between two equal `status --json` reads (nothing moved in between), so every
/// number must match exactly.
fn quiet_scrape(d: &Daemon, port: u16) -> (Value, String) {
    wait_for(60, "two equal status reads around a scrape", || {
        let before = d.status();
        let text = scrape(port);
        (d.status() == before).then_some((before, text))
    })
}

/// The per-session series of each live session in `st`, and the daemon's and the build's info
/// series, against `st` and `agentmon --version`.
fn assert_info_samples(d: &Daemon, st: &Value, sample: &dyn Fn(&str) -> f64) {
    for s in st["sessions"].as_array().expect("sessions") {
        let labels =
            format!("session=\"{}\",agent=\"{}\"", s["id"].as_str().expect("id"), s["agent"].as_str().expect("agent"));
        assert_eq!(sample(&format!("agentmon_session_processes{{{labels}}}")), s["processes"].as_f64().expect("n"));
        assert_eq!(
            sample(&format!("agentmon_session_kernel_processes{{{labels}}}")),
            s["kernel_processes"].as_f64().expect("n")
        );
        assert_eq!(
            sample(&format!("agentmon_session_events_lost_total{{{labels}}}")),
            s["events_lost"].as_f64().expect("n")
        );
        let info = format!(
            "agentmon_session_info{{{labels},cgroup_id=\"{}\",root_pid=\"{}\"}}",
            s["cgroup_id"],
            s["root_pid"].as_u64().unwrap_or(0)
        );
        assert_eq!(sample(&info), 1.0);
    }
    assert!(st["sessions"].as_array().expect("sessions").iter().any(|s| s["agent"] == "metrics-idle"));
    let daemon = format!(
        "agentmon_daemon_info{{host=\"{}\",pid=\"{}\",programs=\"{}\",signing_key=\"{}\"}}",
        st["host"].as_str().expect("host"),
        st["pid"],
        st["programs"].as_str().expect("programs"),
        st["signing_key"].as_str().expect("key")
    );
    assert_eq!(sample(&daemon), 1.0);
    // `agentmon --version` is `agentmon 0.1.0 (abc1234)`.
    let version = String::from_utf8_lossy(&d.cli(&["--version"]).stdout).trim().to_owned();
    let (number, revision) =
        version.trim_start_matches("agentmon ").split_once(" (").unwrap_or_else(|| panic!("version {version}"));
    let build = format!(
        "agentmon_build_info{{version=\"{number}\",revision=\"{}\",programs_version=\"{}\"}}",
        revision.trim_end_matches(')'),
        st["programs_version"].as_str().expect("v")
    );
    assert_eq!(sample(&build), 1.0);
}

/// The human status is a summary: probes counted by kind, no list of programs. With no daemon
/// at its runtime directory (under `dir`), `status` exits 1.
fn assert_human_status(d: &Daemon, st: &Value, dir: &Path) {
    let human = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    let n = st["probes"].as_array().expect("probes").len();
    let probes = text.lines().find(|l| l.starts_with("probes ")).unwrap_or_else(|| panic!("no probes line:\n{text}"));
    assert!(probes.contains(&format!(" {n} attached: ")) && probes.contains("syscall tracepoints"), "{probes}");
    assert!(!text.contains("tracepoint/") && !text.contains("raw_tp/"), "programs are listed only in --json:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("SESSION ")) && text.contains("metrics-idle"), "{text}");
    println!("{text}");
    let none = Command::new(integration_tests::bin())
        .args(["status", "--runtime-dir"])
        .arg(dir.join("no-daemon"))
        .output()
        .expect("status");
    assert_eq!(none.status.code(), Some(1), "status exits 1 when nothing captures");
}

/// Only GET and HEAD of /metrics: 404 for other paths, 405 for other methods, 400 for nonsense.
fn assert_only_get_and_head(port: u16) {
    let (status, headers, body) = http(port, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.is_empty() && headers.contains("Content-Length: ") && !headers.contains("Content-Length: 0"),
        "{headers}"
    );
    assert_eq!(http(port, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(port, "GET /metrics/x HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"), "{headers}");
    assert_eq!(http(port, "nonsense\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_equal_status() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start("metrics", &["--metrics-listen", &addr]).await;
    let mut want = vec![port];
    want.extend(otlp_port(&d));
    want.sort_unstable();
    let mut have = listening_ports(d.daemon_pid());
    have.sort_unstable();
    assert_eq!(have, want, "the daemon listens on the metrics port (and the OTLP receiver's) only");

    // Activity that ends, then a session that stays live and idle, so per-session series exist.
    let dir = scratch("metrics");
    let (done, out) =
        d.run_agent("metrics-busy", &dir, &["sh", "-c", "cat /etc/hostname > out.txt; ls -la > /dev/null; true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&done);
    let mut idle = Command::new(integration_tests::bin())
        .args(["run", "--agent", "metrics-idle", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentmon run");
    wait_for(20, "the idle session", || {
        let st = d.status();
        let s = st["sessions"].as_array()?.iter().find(|s| s["agent"] == "metrics-idle")?.clone();
        (s["processes"] == 1
            && st["queue_records"] == 0
            && st["spool_records"] == 0
            && st["oldest_unstored_secs"].is_null())
        .then_some(())
    });

    let (st, text) = quiet_scrape(&d, port);
    let m = parse(&text);
    let sample = |series: &str| *m.samples.get(series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));

    // Every numeric field of status has its sample, equal to it.
    let covered: HashSet<&str> = SAMPLES.iter().map(|(f, _)| *f).chain(["pid"]).collect();
    for (field, v) in st.as_object().expect("status object") {
        if v.is_number() {
            assert!(
                covered.contains(field.as_str()),
                "status field {field} has no metric in this test's table (and maybe none in the daemon)"
            );
        }
    }
    for (field, series) in SAMPLES {
        let want = st[*field].as_f64().unwrap_or(0.0);
        assert_eq!(sample(series), want, "{series} vs status {field}");
    }
    assert!(
        st["events_read"].as_u64().expect("events_read") > 0 && st["records_stored"].as_u64().expect("stored") > 0,
        "the activity was counted: {st}"
    );
    assert_eq!(sample("agentmon_capturing"), 1.0);
    assert_eq!(sample("agentmon_sessions_live"), st["sessions"].as_array().expect("sessions").len() as f64);
    let started = chrono::DateTime::parse_from_rfc3339(st["started_at"].as_str().expect("started_at")).expect("time");
    assert!((sample("agentmon_start_time_seconds") - started.timestamp_millis() as f64 / 1000.0).abs() < 0.002);
    // This kernel (6.18) has every primary hook: no fallback, nothing missing.
    let paths = st["capture_paths"].as_array().expect("capture_paths");
    for what in ["process exit", "io_uring submissions", "32-bit syscalls"] {
        assert!(
            paths.iter().any(|p| p["what"] == what && p["state"] == "primary"),
            "{what} on its primary hook: {paths:?}"
        );
    }
    // Except what needs fexit, which this VM refuses (the tracepoints), and syscalls this
    // kernel does not have (no module or kexec support here): `missing`, each exactly when
    // tracefs has no such event.
    let fexit_only =
        ["syscalls", "path operations", "raw and packet send destinations", "names as given", "unix socket peers"];
    let absent = |p: &Value| {
        p["state"] == "missing"
            && p["what"].as_str().and_then(|w| w.strip_prefix("syscall ")).is_some_and(|sc| {
                !std::path::Path::new(&format!("/sys/kernel/tracing/events/syscalls/sys_enter_{sc}")).exists()
            })
    };
    let fallback = |p: &Value| fexit_only.contains(&p["what"].as_str().unwrap_or(""));
    assert!(paths.iter().all(|p| p["state"] == "primary" || fallback(p) || absent(p)), "{paths:?}");
    assert!(paths.iter().any(|p| p["what"] == "syscalls" && p["state"] == "fallback"), "{paths:?}");
    let kinds = st["probe_kinds"].as_object().expect("probe_kinds");
    assert_eq!(
        kinds.values().filter_map(Value::as_u64).sum::<u64>(),
        st["probes"].as_array().expect("probes").len() as u64,
        "every probe has a kind"
    );
    for (kind, n) in kinds {
        assert_eq!(
            sample(&format!("agentmon_probes_attached{{kind=\"{kind}\"}}")),
            n.as_f64().expect("count"),
            "{kind}"
        );
    }
    // The per-session series, and the daemon's and the build's info.
    assert_info_samples(&d, &st, &sample);

    // The human status is a summary: probes counted by kind, no list of programs.
    assert_human_status(&d, &st, &dir);

    // Each family has HELP and TYPE; counters, and only they, end in _total.
    for series in m.samples.keys() {
        let family = series.split('{').next().expect("name");
        assert!(m.help.contains(family), "no HELP for {family}");
        let kind = m.types.get(family).unwrap_or_else(|| panic!("no TYPE for {family}"));
        assert!(kind == "counter" || kind == "gauge", "{family}: {kind}");
        assert_eq!(kind == "counter", family.ends_with("_total"), "{family} is a {kind}");
    }

    // Only GET and HEAD of /metrics.
    assert_only_get_and_head(port);

    let _ = idle.kill();
    let _ = idle.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_metrics_without_the_flag() {
    let d = Daemon::start("nometrics", &[]).await;
    // Its one TCP port, if any, is the agents' OTLP receiver (on by default; another test's
    // daemon may hold its default port, and then it has none).
    assert_eq!(
        listening_ports(d.daemon_pid()),
        otlp_port(&d).into_iter().collect::<Vec<_>>(),
        "without --metrics-listen the daemon listens on no TCP port but the OTLP receiver's"
    );
}
