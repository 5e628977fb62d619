//! Benchmark of the monitor, in one run, printed as one table and written as JSON to
//! `target/agentmon-bench.json`:
//!
//! 1. **Overhead**: the same workloads with no monitor at all (baseline), with a bpftrace script
//!    of equivalent probes (only when `bpftrace` is on PATH), with the daemon running but the
//!    workload outside any session (untagged), and inside `agentmon run` (tagged). Medians of
//!    interleaved rounds, reported as ratios to the baseline. Workloads: an open/close loop, an
//!    exec loop of /bin/true, a getppid loop (a syscall no program hooks), and an agent-like
//!    session script (git, grep, find, sed, gcc, python, loopback TCP, failing commands).
//! 2. **Lossless throughput**: a tagged generator of file events (and every Nth operation an
//!    exec) at controlled rates; every event it caused is either stored or counted in its
//!    session's `events_lost`. Also the raw COPY floor of the database for as many rows.
//! 3. **Latency** from an open(2) to its row being queryable, p50 and p99.
//! 4. **Daemon cost**: CPU seconds per million events read, memory idle and at the storm's peak.
//! 5. **Restart gap**: events generated while the daemon is stopped are stored after it starts.
//! 6. **Evidence**: the redact and chain stages' cost per event, on the raw events the
//!    throughput runs stored (and on exec events carrying secrets), and `agentmon verify`'s
//!    speed over the whole database in rows per second.
//! 7. **Opt-in costs** for processes outside any session, alternating daemons in one run:
//!    32-bit capture on/off (getppid, open/close) and session rules on/off (exec loop, cgroup
//!    mkdir/rmdir loop).
//! 8. **Agent reports**: `agentmon hook`'s round trip from inside a session (spawn, ~1 KB
//!    `PreToolUse` input, exit), to the daemon and with no intake socket, p50 and p99; and the
//!    OTLP/HTTP receiver's rate for back-to-back log exports from a session process.
//!
//! Run with `sudo cargo xtask bench` (`-- --quick` for a smoke run, `-- --help` for the flags).

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_tests::{bin, cgroup2_mount, Daemon};
use serde_json::{json, Value};
use uuid::Uuid;

const USAGE: &str = "\
agentmon-bench [--quick] [--rounds N] [--exec N] [--open N] [--getppid N]
               [--rates R1,R2,..] [--gen-secs S] [--gen-exec-every N]
               [--lat-rate R] [--lat-secs S] [--restart-rate R] [--restart-down-secs S]
               [--hooks N] [--otlp-secs S] [--otlp-records K]
               [--daemon-arg ARG]... [--keep-db]

  --quick              short smoke run (3 rounds, small loops, 5 s at 2 rates, 30 hooks, 2 s of OTLP)
  --rounds N           rounds of each overhead workload per mode [5]
  --exec N             /bin/true execs per exec-loop round [1000]
  --open N             open+close per open-loop round [100000]
  --getppid N          getppid calls per round [1000000]
  --rates LIST         generator rates, captured events/s [20000,50000,100000,150000]
  --gen-secs S         seconds per generator rate [30]
  --gen-exec-every N   every Nth generator operation is a /bin/true exec; 0: none [1000]
  --lat-rate R         latency probe opens per second [50]
  --lat-secs S         latency probe duration [10]
  --restart-rate R     generator rate during the restart gap [2000]
  --restart-down-secs S  how long the daemon stays stopped [3]
  --hooks N            `agentmon hook` runs to the daemon, and as many without it [200]
  --otlp-secs S        seconds of back-to-back OTLP/HTTP log exports [10]
  --otlp-records K     log records per OTLP request [10]
  --daemon-arg ARG     pass ARG to the daemon (repeatable), e.g. --daemon-arg --ring-buffer-mb=128
  --keep-db            keep the benchmark's database (dropped at the end otherwise)";

/// The file every open loop opens.
const OPEN_PATH: &str = "/etc/passwd";
/// Events the kernel side emits for one exec of /bin/true, as counted by the generator:
/// fork, exec, exit. What /bin/true itself opens (the dynamic loader) comes from calibration.
const EVENTS_PER_EXEC: u64 = 3;
/// Latency probe: how often the database is polled.
const LAT_POLL: Duration = Duration::from_millis(20);
/// The OTLP workload's first request comes this long after it started, as an agent's exporter's
/// first batch does (seconds later): the daemon binds a request to the process holding the
/// client socket as it knows it, and a process it has not yet read from the rings is in no
/// session (its request is refused and counted).
const OTLP_FIRST_AFTER: Duration = Duration::from_secs(1);
/// Hang guard for waits on the daemon and the database.
const WAIT_LIMIT: Duration = Duration::from_secs(1000);
/// Latency probe: how long to wait for its last rows after it exited.
const LAT_GIVE_UP: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------------------------
// Workloads, run as `agentmon-bench --workload KIND ARGS...` (inside a session or not).
// ---------------------------------------------------------------------------------------------

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

fn num(args: &[String], i: usize, what: &str) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        panic!("workload {}: argument {i} ({what}) must be a number, got {:?}", args[0], args.get(i))
    })
}

fn workload(args: &[String]) {
    let kind = args.first().expect("workload kind").as_str();
    match kind {
        "open" | "exec" | "getppid" | "cgroup" => println!("{}", loop_ns(kind, num(args, 1, "count"))),
        "agent" => println!("{}", agent_round(&args[1..])),
        "gen" => generate(num(args, 1, "rate"), num(args, 2, "seconds"), num(args, 3, "exec every")),
        "lat" => latency_opens(num(args, 1, "rate"), num(args, 2, "seconds"), args.get(3).expect("lat: path prefix")),
        "hooks" => hook_runs(num(args, 1, "count"), &args[2..]),
        "otlp" => otlp_posts(num(args, 1, "port"), num(args, 2, "seconds"), num(args, 3, "records per request")),
        "runs" => println!("{}", program_runs(args.get(1).expect("runs: getppid or open"), num(args, 2, "count"))),
        other => panic!("unknown workload {other}"),
    }
}

/// The kernel's own count of BPF program runs (`kernel.bpf_stats_enabled`, per program
/// `run_cnt`) summed over every loaded program, per call of an untagged `getppid` or
/// open/close loop run here: the cost for processes outside every session, independent of a
/// noisy clock. Prints one JSON object.
fn program_runs(kind: &str, n: u64) -> Value {
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before_flag = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").expect("enable kernel.bpf_stats_enabled (root)");
    let total = || -> u64 { aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.run_count()).sum() };
    let before = total();
    for _ in 0..n {
        if kind == "open" {
            drop(std::fs::File::open("/etc/hostname").expect("open /etc/hostname"));
        } else {
            // SAFETY: getppid has no preconditions.
            std::hint::black_box(unsafe { libc::getppid() });
        }
    }
    let runs = total() - before;
    let _ = std::fs::write(stats, before_flag.trim());
    serde_json::json!({"kind": kind, "calls": n, "program_runs": runs, "runs_per_call": fl(runs) / fl(n.max(1))})
}

fn run_true() {
    let st = Command::new("/bin/true").status().expect("spawn /bin/true");
    assert!(st.success(), "/bin/true failed: {st}");
}

/// Nanoseconds per operation of a loop of `n`.
fn loop_ns(kind: &str, n: u64) -> u128 {
    let cg = cgroup2_mount().join(format!("agentmon-bench-cg-{}", std::process::id()));
    let start = Instant::now();
    for _ in 0..n {
        match kind {
            "exec" => run_true(),
            "cgroup" => {
                std::fs::create_dir(&cg).expect("mkdir a cgroup");
                std::fs::remove_dir(&cg).expect("rmdir the cgroup");
            }
            "open" => drop(std::fs::File::open(OPEN_PATH).expect("open the open-loop file")),
            _ => {
                // SAFETY: getppid has no preconditions.
                std::hint::black_box(unsafe { libc::getppid() });
            }
        }
    }
    start.elapsed().as_nanos() / u128::from(n.max(1))
}

/// One round of the agent-like session: `bash SCRIPT DIR PORT PYTHON`; wall nanoseconds.
fn agent_round(args: &[String]) -> u128 {
    let start = Instant::now();
    let out = Command::new("bash").args(args).output().expect("run bash");
    assert!(
        out.status.success(),
        "agent-like session script failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_nanos()
}

/// Generate `rate` captured events per second for `secs`, paced in small slices: open+close of
/// `OPEN_PATH` (one file event: close is not hooked), and every `exec_every`th operation an exec
/// of /bin/true (fork, exec, exit). Prints `opens execs elapsed_ns`.
fn generate(rate: u64, secs: u64, exec_every: u64) {
    let dur = Duration::from_secs(secs);
    let per_slice_cap = (rate / 100).max(1); // at most 10 ms of work per slice when behind
    let (mut events, mut opens, mut execs, mut ops) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= dur {
            break;
        }
        let due = (u128::from(rate) * elapsed.as_micros() / 1_000_000) as u64;
        let target = due.min(events + per_slice_cap);
        while events < target {
            ops += 1;
            if exec_every > 0 && ops % exec_every == 0 {
                run_true();
                execs += 1;
                events += EVENTS_PER_EXEC;
            } else {
                drop(std::fs::File::open(OPEN_PATH).expect("open the generator's file"));
                opens += 1;
                events += 1;
            }
        }
        if events >= due {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    println!("{opens} {execs} {}", start.elapsed().as_nanos());
}

/// Create `PREFIX<i>` at `rate` per second for `secs`; prints `i unix_ns` per open.
fn latency_opens(rate: u64, secs: u64, prefix: &str) {
    let n = rate * secs;
    let mut lines = String::new();
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_micros(i * 1_000_000 / rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = unix_ns();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(format!("{prefix}{i}"))
            .unwrap_or_else(|e| panic!("create {prefix}{i}: {e}"));
        let _ = writeln!(lines, "{i} {t}");
    }
    print!("{lines}");
}

/// A `PreToolUse` hook input as Claude Code sends it on a hook's stdin, about 1 KB.
fn hook_input(i: u64) -> String {
    let session = "6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d";
    let command = format!(
        "cd /srv/app && git diff --stat HEAD~{} -- src/ tests/ | tail -n 20 && cargo test --quiet -p app-core \
         --lib -- --test-threads 2 parser::tests::round_trip 2>&1 | tail -n 40",
        i % 7 + 1
    );
    json!({
        "session_id": session,
        "transcript_path": format!("/home/dev/.claude/projects/-srv-app/{session}.jsonl"),
        "cwd": "/srv/app",
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {
            "command": command,
            "description": "Show what changed in src/ and tests/ since the last commits, then run the parser's \
                            round-trip tests of the core crate with two test threads and keep the last forty \
                            lines of their output, to check that the tokenizer change did not break the \
                            pretty-printer's handling of nested block comments and raw strings; if they fail, \
                            the diff shows which of the three modules touched this morning (lexer, token \
                            stream, printer) to look at first before reverting anything",
            "timeout": 120_000,
        },
        "tool_use_id": format!("toolu_01Bench{i:016}"),
    })
    .to_string()
}

/// One `agentmon hook` run: spawn, the input on its stdin, exit. Wall nanoseconds.
fn hook_once(agentmon: &str, runtime_dir: &str, input: &[u8]) -> u128 {
    use std::io::Write as _;
    let start = Instant::now();
    let mut child = Command::new(agentmon)
        .args(["hook", "--runtime-dir", runtime_dir, "--agent", "bench"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agentmon hook");
    child.stdin.take().expect("piped stdin").write_all(input).expect("write the hook's input");
    let st = child.wait().expect("wait for agentmon hook");
    let ns = start.elapsed().as_nanos();
    assert!(st.success(), "agentmon hook exited with {st}");
    ns
}

/// `hooks N AGENTMON RUNTIME_DIR NO_DAEMON_DIR`: N pairs of `agentmon hook` runs, one to the
/// daemon and one to a runtime dir without its socket (the hook fails fast), alternating.
/// Prints `to_daemon_ns no_daemon_ns` per pair.
fn hook_runs(n: u64, args: &[String]) {
    let [agentmon, runtime, absent] = args else {
        panic!("hooks: N AGENTMON RUNTIME_DIR NO_DAEMON_DIR, got {args:?}");
    };
    let mut lines = String::new();
    for i in 0..n {
        let input = hook_input(i);
        let a = hook_once(agentmon, runtime, input.as_bytes());
        let b = hook_once(agentmon, absent, input.as_bytes());
        let _ = writeln!(lines, "{a} {b}");
    }
    print!("{lines}");
}

/// An OTLP/JSON logs body of `k` Claude Code `tool_result` records.
fn otlp_body(req: u64, k: u64) -> String {
    let now = unix_ns().to_string();
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let s = |v: &str| json!({"stringValue": v});
    let kv = |k: &str, v: Value| json!({"key": k, "value": v});
    let records: Vec<Value> = (0..k)
        .map(|j| {
            json!({
                "timeUnixNano": now, "observedTimeUnixNano": now, "severityNumber": 9, "severityText": "INFO",
                "body": s("claude_code.tool_result"),
                "attributes": [
                    kv("user.id", s("3f9a0c")),
                    kv("session.id", s("6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d")),
                    kv("terminal.type", s("tmux")),
                    kv("event.name", s("tool_result")),
                    kv("event.timestamp", s(&stamp)),
                    kv("prompt.id", s(&format!("p-{req}"))),
                    kv("tool_name", s("Bash")),
                    kv("tool_use_id", s(&format!("toolu_01Otlp{req:010}{j:04}"))),
                    kv("success", s("true")),
                    kv("duration_ms", json!({"intValue": "87"})),
                    kv("decision", s("accept")),
                    kv("source", s("config")),
                    kv("tool_result_size_bytes", json!({"intValue": "412"})),
                    kv("tool_parameters", s(r#"{"bash_command":"git","full_command":"git status --short","description":"Show the working tree status"}"#)),
                ],
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [kv("service.name", s("claude-code")), kv("service.version", s("2.0.0"))]},
        "scopeLogs": [{"scope": {"name": "com.anthropic.claude_code.events", "version": "2.0.0"}, "logRecords": records}],
    }]})
    .to_string()
}

/// Read one HTTP/1.1 response (with a `Content-Length`); its status and whether the server
/// closes the connection after it.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, bool) {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let (mut len, mut close) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).expect("read a header");
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or_else(|_| panic!("bad Content-Length {v:?}"));
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("read a response body");
    (status, close)
}

/// `otlp PORT SECS K`: POST /v1/logs bodies of K records back to back over keep-alive for SECS,
/// after `OTLP_FIRST_AFTER`. Prints `requests answered_200 body_bytes elapsed_ns`.
fn otlp_posts(port: u64, secs: u64, k: u64) {
    use std::io::Write as _;
    let port = u16::try_from(port).expect("a TCP port");
    let dur = Duration::from_secs(secs);
    std::thread::sleep(OTLP_FIRST_AFTER);
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let (mut requests, mut ok, mut bytes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        let body = otlp_body(requests, k);
        let req = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (w, r) = conn.get_or_insert_with(|| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the OTLP receiver");
            s.set_nodelay(true).expect("TCP_NODELAY");
            let r = BufReader::new(s.try_clone().expect("dup the socket"));
            (s, r)
        });
        w.write_all(req.as_bytes()).expect("send a request");
        requests += 1;
        bytes += body.len() as u64;
        let (status, close) = read_response(r);
        ok += u64::from(status == 200);
        if close {
            conn = None;
        }
    }
    println!("{requests} {ok} {bytes} {}", start.elapsed().as_nanos());
}

// ---------------------------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------------------------

struct Config {
    rounds: u32,
    exec_n: u64,
    open_n: u64,
    getppid_n: u64,
    rates: Vec<u64>,
    gen_secs: u64,
    exec_every: u64,
    lat_rate: u64,
    lat_secs: u64,
    restart_rate: u64,
    down_secs: u64,
    hooks: u64,
    otlp_secs: u64,
    otlp_records: u64,
    daemon_args: Vec<String>,
    keep_db: bool,
}

impl Config {
    fn parse(args: &[String]) -> Config {
        let quick = args.iter().any(|a| a == "--quick");
        let mut c = Config {
            rounds: if quick { 3 } else { 5 },
            exec_n: if quick { 300 } else { 1000 },
            open_n: if quick { 30_000 } else { 100_000 },
            getppid_n: if quick { 300_000 } else { 1_000_000 },
            rates: if quick { vec![20_000, 100_000] } else { vec![20_000, 50_000, 100_000, 150_000] },
            gen_secs: if quick { 5 } else { 30 },
            exec_every: 1000,
            lat_rate: 50,
            lat_secs: if quick { 3 } else { 10 },
            restart_rate: 2000,
            down_secs: 3,
            hooks: if quick { 30 } else { 200 },
            otlp_secs: if quick { 2 } else { 10 },
            otlp_records: 10,
            daemon_args: Vec::new(),
            keep_db: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => continue,
                "--keep-db" => {
                    c.keep_db = true;
                    continue;
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => {}
            }
            let v = it.next().unwrap_or_else(|| panic!("{a} needs a value; usage:\n{USAGE}"));
            let n = || -> u64 { v.parse().unwrap_or_else(|_| panic!("{a} needs a number, got {v}")) };
            match a.as_str() {
                "--rounds" => c.rounds = n() as u32,
                "--exec" => c.exec_n = n(),
                "--open" => c.open_n = n(),
                "--getppid" => c.getppid_n = n(),
                "--rates" => {
                    c.rates = v
                        .split(',')
                        .map(|r| r.trim().parse().unwrap_or_else(|_| panic!("--rates: bad rate {r}")))
                        .collect();
                }
                "--gen-secs" => c.gen_secs = n(),
                "--gen-exec-every" => c.exec_every = n(),
                "--lat-rate" => c.lat_rate = n(),
                "--lat-secs" => c.lat_secs = n(),
                "--restart-rate" => c.restart_rate = n(),
                "--restart-down-secs" => c.down_secs = n(),
                "--hooks" => c.hooks = n(),
                "--otlp-secs" => c.otlp_secs = n(),
                "--otlp-records" => c.otlp_records = n(),
                "--daemon-arg" => c.daemon_args.push(v.clone()),
                _ => panic!("unknown flag {a}; usage:\n{USAGE}"),
            }
        }
        assert!(
            c.rounds > 0 && !c.rates.is_empty() && c.gen_secs > 0,
            "need at least one round, one rate and --gen-secs > 0"
        );
        assert!(c.lat_rate > 0 && c.restart_rate > 0, "--lat-rate and --restart-rate must be > 0");
        assert!(
            c.hooks > 0 && c.otlp_secs > 0 && c.otlp_records > 0,
            "--hooks, --otlp-secs and --otlp-records must be > 0"
        );
        c
    }

    /// The full command line that reproduces this run.
    fn command_line(&self) -> String {
        let rates: Vec<String> = self.rates.iter().map(u64::to_string).collect();
        let mut s = format!(
            "sudo cargo xtask bench -- --rounds {} --exec {} --open {} --getppid {} --rates {} --gen-secs {} \
             --gen-exec-every {} --lat-rate {} --lat-secs {} --restart-rate {} --restart-down-secs {} --hooks {} \
             --otlp-secs {} --otlp-records {}",
            self.rounds,
            self.exec_n,
            self.open_n,
            self.getppid_n,
            rates.join(","),
            self.gen_secs,
            self.exec_every,
            self.lat_rate,
            self.lat_secs,
            self.restart_rate,
            self.down_secs,
            self.hooks,
            self.otlp_secs,
            self.otlp_records
        );
        for a in &self.daemon_args {
            let _ = write!(s, " --daemon-arg {a}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

#[expect(clippy::cast_precision_loss, reason = "figures for display, far below 2^52")]
fn fl(x: u64) -> f64 {
    x as f64
}

fn self_exe() -> PathBuf {
    std::env::current_exe().expect("current exe")
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

fn field(st: &Value, k: &str) -> u64 {
    st[k].as_u64().unwrap_or_else(|| panic!("status has no number {k}: {st}"))
}

#[derive(Clone, Copy, Default)]
struct Mem {
    vm_rss: u64,
    anon: u64,
    file: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Mem { vm_rss: kib("VmRSS:"), anon: kib("RssAnon:"), file: kib("RssFile:") }
    }

    fn max(self, o: Mem) -> Mem {
        Mem { vm_rss: self.vm_rss.max(o.vm_rss), anon: self.anon.max(o.anon), file: self.file.max(o.file) }
    }

    fn json(self) -> Value {
        json!({"vm_rss_kib": self.vm_rss, "rss_anon_kib": self.anon, "rss_file_kib": self.file})
    }
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the daemon's /proc stat");
    let after = &s[s.rfind(')').expect("stat has a comm") + 1..];
    // Fields after the comm start at field 3 (state); utime and stime are fields 14 and 15.
    let f: Vec<u64> = after.split_whitespace().skip(11).take(2).map(|x| x.parse().expect("stat number")).collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    fl(f[0] + f[1]) / fl(ticks)
}

/// `agentmon status --json` of the daemon at `runtime_dir`, or None when it does not answer.
fn status_at(runtime_dir: &Path) -> Option<Value> {
    let out = Command::new(bin()).args(["status", "--json"]).env("AGENTMON_RUNTIME_DIR", runtime_dir).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next()?).ok()
}

/// Wait until the daemon holds nothing unstored.
fn wait_drained(d: &Daemon) {
    let start = Instant::now();
    loop {
        let st = d.status();
        if st["oldest_unstored_secs"].is_null() && field(&st, "queue_records") + field(&st, "spool_records") == 0 {
            return;
        }
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "the daemon did not store its backlog within {WAIT_LIMIT:?}: {st}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tagged workload started with `agentmon run`, its session id read from stderr.
struct Session {
    id: Uuid,
    what: String,
    child: Child,
    stderr: BufReader<ChildStderr>,
    stdout: JoinHandle<String>,
}

impl Session {
    fn start(d: &Daemon, agent: &str, w: &[String]) -> Session {
        let mut child = Command::new(bin())
            .args(["run", "--agent", agent, "--runtime-dir"])
            .arg(&d.runtime_dir)
            .arg("--")
            .arg(self_exe())
            .arg("--workload")
            .args(w)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agentmon run");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("read agentmon run's stderr");
        let Some(id) = line.trim().strip_prefix("agentmon: session ").and_then(|s| s.parse().ok()) else {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            panic!("agentmon run did not start a session for {w:?}: {line}{rest}");
        };
        Session { id, what: w.join(" "), child, stderr, stdout }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait for the workload; returns its stdout, panics when it failed.
    fn finish(mut self) -> String {
        let status = self.child.wait().expect("wait for agentmon run");
        let mut err = String::new();
        let _ = self.stderr.read_to_string(&mut err);
        let out = self.stdout.join().expect("stdout reader");
        assert!(status.success(), "tagged workload `{}` failed with {status}:\n{err}", self.what);
        out
    }
}

/// What the generator reports.
struct Gen {
    opens: u64,
    execs: u64,
    secs: f64,
}

impl Gen {
    fn parse(out: &str) -> Gen {
        let f: Vec<u64> = out
            .split_whitespace()
            .map(|x| x.parse().unwrap_or_else(|_| panic!("bad generator output {out:?}")))
            .collect();
        assert!(f.len() == 3, "bad generator output {out:?}");
        Gen { opens: f[0], execs: f[1], secs: fl(f[2]) / 1e9 }
    }

    /// Events the generator itself counted.
    fn events(&self) -> u64 {
        self.opens + self.execs * EVENTS_PER_EXEC
    }
}

fn gen_args(rate: u64, secs: u64, exec_every: u64) -> Vec<String> {
    vec!["gen".into(), rate.to_string(), secs.to_string(), exec_every.to_string()]
}

/// A session's figures once it ended and everything was stored.
struct Stored {
    rows: u64,
    lost: u64,
    /// From the call (the workload's exit) until everything was stored.
    drain_secs: f64,
}

fn wait_stored(rt: &tokio::runtime::Runtime, d: &Daemon, id: Uuid) -> Stored {
    let start = Instant::now();
    let lost: i64 = loop {
        let row: Option<i64> = rt
            .block_on(
                sqlx::query_scalar("SELECT events_lost FROM session_ends WHERE session_id = $1")
                    .bind(id)
                    .fetch_optional(&d.pool),
            )
            .expect("query session_ends");
        if let Some(l) = row {
            break l;
        }
        assert!(start.elapsed() < WAIT_LIMIT, "session {id} did not end within {WAIT_LIMIT:?}:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    wait_drained(d);
    let stored: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM events WHERE session_id = $1").bind(id).fetch_one(&d.pool))
        .expect("count the session's events");
    Stored { rows: stored as u64, lost: lost as u64, drain_secs: start.elapsed().as_secs_f64() }
}

// ---------------------------------------------------------------------------------------------
// 1. Overhead.
// ---------------------------------------------------------------------------------------------

struct Workload {
    name: &'static str,
    unit: &'static str,
    /// Nanoseconds per unit.
    scale: f64,
    args: Vec<String>,
}

enum Mode<'a> {
    Plain,
    Tagged(&'a Daemon),
    Bpftrace(&'a Path),
}

/// Run one workload in `mode`; returns what it printed (nanoseconds per op or per round).
fn measure(w: &Workload, mode: &Mode) -> u64 {
    let mut cmd = match mode {
        Mode::Plain => Command::new(self_exe()),
        Mode::Tagged(d) => {
            let mut c = Command::new(bin());
            c.args(["run", "--agent", "bench", "--runtime-dir"]).arg(&d.runtime_dir).arg("--").arg(self_exe());
            c
        }
        Mode::Bpftrace(cg) => {
            let mut c = Command::new("sh");
            c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""]).arg(cg.join("cgroup.procs")).arg(self_exe());
            c
        }
    };
    let out = cmd.arg("--workload").args(&w.args).output().expect("run workload");
    assert!(
        out.status.success(),
        "workload {} failed with {}:\n{}",
        w.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim().parse().unwrap_or_else(|_| panic!("workload {} printed {s:?}, not nanoseconds", w.name))
}

/// The agent-like session: a script of about 30 commands in a scratch dir.
const AGENT_SCRIPT: &str = r#"#!/bin/bash
# An agent-like session, about 30 commands: bash SCRIPT DIR PORT PYTHON
set -e
dir=$1 port=$2 py=$3
rm -rf "$dir/w"; mkdir -p "$dir/w/src"; cd "$dir/w"
for i in $(seq 1 50); do printf 'line %s foo\nbar %s\nfoo end\n' "$i" "$i" > "f$i.txt"; done
for i in $(seq 1 10); do printf 'def f%s(x):\n    return x * %s\n' "$i" "$i" > "src/m$i.py"; done
g() { git -c user.name=x -c user.email=x -c init.defaultBranch=main "$@"; }
g init -q .
g add .
g commit -qm init
g status --short > /dev/null
g log --oneline > /dev/null
grep -r foo . > /dev/null
grep -rl bar --include='*.txt' . > /dev/null
find . -name '*.txt' -newer f1.txt > /dev/null
find . -type f | wc -l > /dev/null
sed -i 's/foo/baz/' f*.txt
g diff --stat > /dev/null
g commit -qam edit
g log -p -n 1 > /dev/null
cat > hello.c <<'EOF'
#include <stdio.h>
int main(void) { for (int i = 0; i < 3; i++) printf("hello %d\n", i); return 0; }
EOF
gcc -O1 -o hello hello.c
./hello > /dev/null
"$py" -m compileall -q src
ls -la src > /dev/null
wc -l f*.txt > /dev/null
sort f1.txt f2.txt | uniq -c > /dev/null
tar cf ../w.tar . && rm ../w.tar
for i in 1 2 3; do echo ping > "/dev/tcp/127.0.0.1/$port"; done
cat missing.txt 2> /dev/null || true
g checkout -q no-such-branch 2> /dev/null || true
ls /nonexistent 2> /dev/null || true
"$py" -c 'import sys; sys.exit(3)' || true
head -n 2 f1.txt > /dev/null
rm -f hello
"#;

/// Set up the agent-like session: script, scratch dir, loopback listener. Returns its args.
fn agent_setup(scratch: &Path) -> Vec<String> {
    let script = scratch.join("agent-session.sh");
    std::fs::write(&script, AGENT_SCRIPT).expect("write the agent-like script");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let port = listener.local_addr().expect("listener address").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        }
    });
    let py =
        Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3 on PATH");
    assert!(py.status.success(), "python3 does not run: {}", String::from_utf8_lossy(&py.stderr));
    let py = String::from_utf8_lossy(&py.stdout).trim().to_owned();
    let gcc = Command::new("gcc").arg("--version").output();
    assert!(gcc.is_ok_and(|o| o.status.success()), "gcc is needed for the agent-like session");
    let work = scratch.join("agent");
    std::fs::create_dir_all(&work).expect("agent work dir");
    vec!["agent".into(), script.display().to_string(), work.display().to_string(), port.to_string(), py]
}

fn workloads(cfg: &Config, agent_args: Vec<String>) -> Vec<Workload> {
    let op =
        |name, kind: &str, n: u64| Workload { name, unit: "ns/op", scale: 1.0, args: vec![kind.into(), n.to_string()] };
    vec![
        op("open/close loop", "open", cfg.open_n),
        op("exec loop (/bin/true)", "exec", cfg.exec_n),
        op("getppid loop", "getppid", cfg.getppid_n),
        Workload { name: "agent-like session", unit: "ms/round", scale: 1e6, args: agent_args },
    ]
}

/// bpftrace with probes equivalent to the monitor's, filtered by one cgroup.
struct Bpftrace {
    child: Child,
    log: PathBuf,
}

/// How this bpftrace reads tracepoint fields: `args.f` since v0.20, `args->f` before.
fn bpftrace_field_op() -> &'static str {
    let out = Command::new("bpftrace")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ver: Vec<u64> = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .map(|v| v.split('.').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    if ver.first().copied().unwrap_or(0) > 0 || ver.get(1).copied().unwrap_or(0) >= 20 {
        "."
    } else {
        "->"
    }
}

fn bpftrace_script(cg: &Path) -> String {
    let f = format!("cgroup == cgroupid(\"{}\")", cg.display());
    let a = format!("args{}", bpftrace_field_op());
    format!(
        "tracepoint:sched:sched_process_fork /{f}/ {{ printf(\"fork %d %d\\n\", {a}parent_pid, {a}child_pid); }}\n\
         tracepoint:sched:sched_process_exec /{f}/ {{ printf(\"exec %d %s\\n\", pid, str({a}filename)); }}\n\
         tracepoint:sched:sched_process_exit /{f}/ {{ printf(\"exit %d\\n\", pid); }}\n\
         tracepoint:syscalls:sys_enter_openat /{f}/ {{ @path[tid] = {a}filename; }}\n\
         tracepoint:syscalls:sys_exit_openat /{f} && @path[tid]/ {{ printf(\"openat %d %s %d\\n\", pid, str(@path[tid]), {a}ret); delete(@path[tid]); }}\n\
         END {{ clear(@path); }}\n"
    )
}

impl Bpftrace {
    fn available() -> bool {
        Command::new("bpftrace").arg("--version").output().is_ok_and(|o| o.status.success())
    }

    fn start(script: &Path) -> Bpftrace {
        let log = PathBuf::from(format!("/tmp/agentmon-bench-bpftrace-{}.out", std::process::id()));
        let f = std::fs::File::create(&log).expect("bpftrace output file");
        let child = Command::new("bpftrace")
            .arg(script)
            .stdout(f.try_clone().expect("dup the bpftrace output file"))
            .stderr(f)
            .spawn()
            .expect("spawn bpftrace");
        let mut bt = Bpftrace { child, log };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&bt.log).unwrap_or_default();
            if let Ok(Some(st)) = bt.child.try_wait() {
                panic!("bpftrace exited with {st}:\n{text}");
            }
            if text.contains("Attaching") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(100), "bpftrace did not attach:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        bt
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Per-workload medians in each mode (nanoseconds).
struct Overhead {
    base: Vec<u64>,
    bpftrace: Option<Vec<u64>>,
    untagged: Vec<u64>,
    tagged: Vec<u64>,
}

/// Baseline, interleaved with bpftrace rounds (a fresh bpftrace each round) when available.
/// Runs before any daemon has attached programs.
fn overhead_plain(cfg: &Config, ws: &[Workload], bt: Option<(&Path, &Path)>) -> (Vec<u64>, Option<Vec<u64>>) {
    let mut base = vec![Vec::new(); ws.len()];
    let mut btv = vec![Vec::new(); ws.len()];
    for r in 0..cfg.rounds {
        eprintln!(
            "bench: overhead round {}/{}: baseline{}",
            r + 1,
            cfg.rounds,
            if bt.is_some() { ", bpftrace" } else { "" }
        );
        for (i, w) in ws.iter().enumerate() {
            base[i].push(measure(w, &Mode::Plain));
        }
        if let Some((cg, script)) = bt {
            let b = Bpftrace::start(script);
            for (i, w) in ws.iter().enumerate() {
                btv[i].push(measure(w, &Mode::Bpftrace(cg)));
            }
            b.stop();
        }
    }
    (base.iter().map(|v| median(v)).collect(), bt.map(|_| btv.iter().map(|v| median(v)).collect()))
}

/// Untagged and tagged rounds, interleaved; waits for the database after each tagged run.
fn overhead_daemon(cfg: &Config, ws: &[Workload], d: &Daemon) -> (Vec<u64>, Vec<u64>) {
    let mut untagged = vec![Vec::new(); ws.len()];
    let mut tagged = vec![Vec::new(); ws.len()];
    for r in 0..cfg.rounds {
        eprintln!("bench: overhead round {}/{}: untagged, tagged", r + 1, cfg.rounds);
        for (i, w) in ws.iter().enumerate() {
            untagged[i].push(measure(w, &Mode::Plain));
            tagged[i].push(measure(w, &Mode::Tagged(d)));
            wait_drained(d);
        }
    }
    (untagged.iter().map(|v| median(v)).collect(), tagged.iter().map(|v| median(v)).collect())
}

/// What 32-bit (compat) capture costs processes outside any session: the raw `sys_enter` and
/// `sys_exit` programs run on every syscall of the host. Untagged getppid and open/close loops,
/// alternating a daemon with compat capture (the default) and one without, in one run.
fn compat_cost(cfg: &Config, ws: &[Workload], d: &mut Daemon, daemon_args: &[&str]) -> Value {
    let pick: Vec<&Workload> = ws.iter().filter(|w| w.name == "getppid loop" || w.name.starts_with("open")).collect();
    let mut on = vec![Vec::new(); pick.len()];
    let mut off = vec![Vec::new(); pick.len()];
    let mut without: Vec<&str> = daemon_args.to_vec();
    without.extend(["--capture-compat", "false"]);
    for r in 0..cfg.rounds {
        eprintln!("bench: compat round {}/{}: with, without", r + 1, cfg.rounds);
        for (i, w) in pick.iter().enumerate() {
            on[i].push(measure(w, &Mode::Plain));
        }
        d.stop();
        d.start_again(Some(&without));
        for (i, w) in pick.iter().enumerate() {
            off[i].push(measure(w, &Mode::Plain));
        }
        d.stop();
        d.start_again(Some(daemon_args));
    }
    println!("\n32-bit (compat) capture, untagged processes, same run (medians of {} rounds):", cfg.rounds);
    println!("{:<24} {:>14} {:>14} {:>8}", "workload", "with compat", "without", "ratio");
    let mut rows = Vec::new();
    for (i, w) in pick.iter().enumerate() {
        let (a, b) = (median(&on[i]), median(&off[i]));
        println!("{:<24} {:>11} ns {:>11} ns {:>7.2}x", w.name, a, b, ratio(a, b));
        rows.push(
            serde_json::json!({"workload": w.name, "with_compat_ns": a, "without_compat_ns": b, "ratio": ratio(a, b)}),
        );
    }
    Value::from(rows)
}

/// What session rules cost processes outside any session: with an exe rule every exec on the
/// host is looked up in the kernel; with a unit or cgroup rule every new cgroup is held pending
/// until the daemon matches it. Untagged exec and cgroup mkdir/rmdir loops, alternating a daemon
/// with both kinds of rule (matching nothing the loops do) and one with none, in one run.
/// `base_config`: the daemon's own config file (its `--config`), which the rules are added to.
fn rules_cost(cfg: &Config, ws: &[Workload], d: &mut Daemon, daemon_args: &[&str], base_config: &Path) -> Value {
    let scratch = base_config.parent().expect("the config's dir");
    let never = scratch.join("bin/never-run-agent");
    std::fs::create_dir_all(scratch.join("bin")).expect("bin dir");
    std::fs::write(&never, "#!/bin/sh\n").expect("rule target");
    let rules = scratch.join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "{}\n[[rule]]\nagent = \"bench\"\nexe = [\"{}\"]\n[[rule]]\nagent = \"bench\"\nunit = \"agentmon-bench-never-*.service\"\n",
            std::fs::read_to_string(base_config).expect("read the daemon's config"),
            never.display()
        ),
    )
    .expect("rules config");
    let cgroup_loop = Workload {
        name: "cgroup mkdir/rmdir loop",
        unit: "ns/op",
        scale: 1.0,
        args: vec!["cgroup".into(), (cfg.exec_n * 2).to_string()],
    };
    let mut pick: Vec<&Workload> = ws.iter().filter(|w| w.name.starts_with("exec")).collect();
    pick.push(&cgroup_loop);
    let mut on = vec![Vec::new(); pick.len()];
    let mut off = vec![Vec::new(); pick.len()];
    let with = with_config(daemon_args, rules.to_str().expect("utf-8 path"));
    for r in 0..cfg.rounds {
        eprintln!("bench: rules round {}/{}: without, with", r + 1, cfg.rounds);
        for (i, w) in pick.iter().enumerate() {
            off[i].push(measure(w, &Mode::Plain));
        }
        d.stop();
        d.start_again(Some(&with));
        for (i, w) in pick.iter().enumerate() {
            on[i].push(measure(w, &Mode::Plain));
        }
        d.stop();
        d.start_again(Some(daemon_args));
    }
    println!("\nSession rules, untagged processes, same run (medians of {} rounds):", cfg.rounds);
    println!("{:<24} {:>14} {:>14} {:>8}", "workload", "with rules", "without", "ratio");
    let mut rows = Vec::new();
    for (i, w) in pick.iter().enumerate() {
        let (a, b) = (median(&on[i]), median(&off[i]));
        println!("{:<24} {:>11} ns {:>11} ns {:>7.2}x", w.name, a, b, ratio(a, b));
        rows.push(
            serde_json::json!({"workload": w.name, "with_rules_ns": a, "without_rules_ns": b, "ratio": ratio(a, b)}),
        );
    }
    Value::from(rows)
}

/// `args` with the value of its `--config` replaced by `file` (added when it has none).
fn with_config<'a>(args: &[&'a str], file: &'a str) -> Vec<&'a str> {
    let mut out = args.to_vec();
    match out.iter().position(|a| *a == "--config") {
        Some(i) if i + 1 < out.len() => out[i + 1] = file,
        _ => out.extend(["--config", file]),
    }
    out
}

fn ratio(x: u64, base: u64) -> f64 {
    fl(x) / fl(base.max(1))
}

fn overhead_json(ws: &[Workload], o: &Overhead) -> Value {
    let rows: Vec<Value> = ws
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let v = |ns: u64| fl(ns) / w.scale;
            let bt = o.bpftrace.as_ref().map(|b| b[i]);
            json!({
                "workload": w.name, "unit": w.unit,
                "baseline": v(o.base[i]), "bpftrace": bt.map(v), "untagged": v(o.untagged[i]), "tagged": v(o.tagged[i]),
                "bpftrace_ratio": bt.map(|b| ratio(b, o.base[i])),
                "untagged_ratio": ratio(o.untagged[i], o.base[i]), "tagged_ratio": ratio(o.tagged[i], o.base[i]),
            })
        })
        .collect();
    Value::Array(rows)
}

fn print_overhead(cfg: &Config, ws: &[Workload], o: &Overhead, bt_note: &str) {
    println!("\n== 1. overhead: median of {} interleaved rounds; ratio = mode / baseline ==", cfg.rounds);
    println!(
        "{:<22} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "workload", "unit", "baseline", "bpftrace", "untagged", "tagged", "bpf/base", "untag/b", "tagged/b"
    );
    let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    for (i, w) in ws.iter().enumerate() {
        let v = |ns: u64| format!("{:.0}", fl(ns) / w.scale);
        let bt = o.bpftrace.as_ref().map(|b| b[i]);
        println!(
            "{:<22} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9.2} {:>9.2}",
            w.name,
            w.unit,
            v(o.base[i]),
            opt(bt.map(v)),
            v(o.untagged[i]),
            v(o.tagged[i]),
            opt(bt.map(|b| format!("{:.2}", ratio(b, o.base[i])))),
            ratio(o.untagged[i], o.base[i]),
            ratio(o.tagged[i], o.base[i]),
        );
    }
    println!("{bt_note}");
}

// ---------------------------------------------------------------------------------------------
// 2. Lossless throughput, 4. daemon cost.
// ---------------------------------------------------------------------------------------------

/// Events a generator session produces beyond the generator's own count: a fixed part (the
/// session's start: exec, dynamic loader, runtime) and a part per exec (what /bin/true opens).
struct Calibration {
    fixed: u64,
    per_exec: u64,
}

impl Calibration {
    fn expected(&self, g: &Gen) -> u64 {
        g.events() + self.fixed + self.per_exec * g.execs
    }
}

/// Two slow, lossless generator sessions, without and with execs.
fn calibrate(rt: &tokio::runtime::Runtime, d: &Daemon) -> Calibration {
    let run = |exec_every: u64| {
        let s = Session::start(d, "bench-calibrate", &gen_args(2000, 1, exec_every));
        let id = s.id;
        let g = Gen::parse(&s.finish());
        let st = wait_stored(rt, d, id);
        assert!(st.lost == 0, "calibration session {id} (2000 events/s) lost {} events", st.lost);
        (g, st.rows)
    };
    let (a, stored_a) = run(0);
    let fixed = stored_a
        .checked_sub(a.events())
        .unwrap_or_else(|| panic!("calibration: {stored_a} stored < {} generated", a.events()));
    let (b, stored_b) = run(10);
    assert!(b.execs > 0, "calibration generator made no execs");
    let extra = stored_b
        .checked_sub(b.events() + fixed)
        .unwrap_or_else(|| panic!("calibration: {stored_b} stored < {} expected", b.events() + fixed));
    if extra % b.execs != 0 {
        eprintln!("bench: warning: {extra} extra events for {} execs is not a whole number per exec", b.execs);
    }
    Calibration { fixed, per_exec: (extra + b.execs / 2) / b.execs }
}

/// Peaks seen while a generator ran and drained.
#[derive(Default, Clone, Copy)]
struct Peak {
    mem: Mem,
    backlog: u64,
    queue_bytes: u64,
}

struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peak>,
}

impl Sampler {
    /// Sample the daemon's memory every 100 ms and its status every 500 ms.
    fn start(pid: u32, runtime_dir: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut p = Peak::default();
            let mut next_status = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                p.mem = p.mem.max(Mem::of(pid));
                if Instant::now() >= next_status {
                    next_status += Duration::from_millis(500);
                    if let Some(st) = status_at(&runtime_dir) {
                        let n = |k: &str| st[k].as_u64().unwrap_or(0);
                        p.backlog = p.backlog.max(n("queue_records") + n("spool_records"));
                        p.queue_bytes = p.queue_bytes.max(n("queue_bytes"));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            p
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

struct RateRun {
    rate: u64,
    achieved: f64,
    expected: u64,
    stored: u64,
    lost: u64,
    dropped: u64,
    shed: u64,
    drain_secs: f64,
    peak: Peak,
    session: Uuid,
}

impl RateRun {
    fn shortfall(&self) -> i64 {
        self.expected as i64 - self.stored as i64
    }

    fn accounted(&self) -> bool {
        self.shortfall() == self.lost as i64
    }

    fn lossless(&self) -> bool {
        self.lost == 0 && self.stored == self.expected
    }

    fn saturated(&self) -> bool {
        self.achieved < 0.95 * fl(self.rate)
    }
}

/// The lossless run with the highest achieved rate.
fn best_lossless(runs: &[RateRun]) -> Option<&RateRun> {
    runs.iter().filter(|r| r.lossless()).max_by(|a, b| a.achieved.total_cmp(&b.achieved))
}

struct Cost {
    cpu_secs: f64,
    events_read: u64,
    idle: Mem,
    peak: Mem,
}

fn throughput(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    d: &Daemon,
    cal: &Calibration,
    idle: Mem,
) -> (Vec<RateRun>, Cost) {
    let pid = d.daemon_pid();
    let cpu0 = cpu_secs(pid);
    let read0 = field(&d.status(), "events_read");
    let mut runs = Vec::new();
    let mut peak_mem = Mem::default();
    for &rate in &cfg.rates {
        eprintln!("bench: throughput at {rate} events/s for {} s", cfg.gen_secs);
        let st0 = d.status();
        let sampler = Sampler::start(pid, d.runtime_dir.clone());
        let s = Session::start(d, "bench-gen", &gen_args(rate, cfg.gen_secs, cfg.exec_every));
        let id = s.id;
        let g = Gen::parse(&s.finish());
        let stored = wait_stored(rt, d, id);
        let peak = sampler.finish();
        peak_mem = peak_mem.max(peak.mem);
        let st1 = d.status();
        let delta = |k: &str| field(&st1, k).saturating_sub(field(&st0, k));
        runs.push(RateRun {
            rate,
            achieved: fl(g.events()) / g.secs,
            expected: cal.expected(&g),
            stored: stored.rows,
            lost: stored.lost,
            dropped: delta("events_dropped"),
            shed: delta("events_shed"),
            drain_secs: stored.drain_secs,
            peak,
            session: id,
        });
    }
    let cost = Cost {
        cpu_secs: cpu_secs(pid) - cpu0,
        events_read: field(&d.status(), "events_read") - read0,
        idle,
        peak: peak_mem,
    };
    (runs, cost)
}

/// Escape one field for COPY's text format (as the daemon does).
fn copy_field(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One `COPY ... FROM STDIN` (text) of `rows` copies of a real file event into a scratch table
/// like `events`; returns (rows copied, seconds).
async fn copy_floor(pool: &sqlx::PgPool, template_session: Uuid, rows: u64) -> (u64, f64) {
    use sqlx::Row as _;
    let t = sqlx::query(
        "SELECT host, action_id::text AS action, exec_id, ts::text AS ts, kind, pid, tid, data::text AS data \
         FROM events WHERE session_id = $1 AND kind = 'file' ORDER BY seq DESC LIMIT 1",
    )
    .bind(template_session)
    .fetch_one(pool)
    .await
    .expect("a file event to copy");
    let get = |c: &str| -> String { t.try_get(c).expect("template column") };
    let action: Option<String> = t.try_get("action").expect("template action_id");
    let (pid, tid): (i64, i64) = (t.try_get("pid").expect("pid"), t.try_get("tid").expect("tid"));
    let mut head = String::from("\t");
    copy_field(&mut head, &get("host"));
    let _ = write!(head, "\t{}\t{}\t", Uuid::now_v7(), action.as_deref().unwrap_or("\\N"));
    copy_field(&mut head, &get("exec_id"));
    head.push('\t');
    let mut tail = format!("\t{}\t{}\t{pid}\t{tid}\t", get("ts"), get("kind"));
    copy_field(&mut tail, &get("data"));
    tail.push('\n');

    sqlx::query("DROP TABLE IF EXISTS bench_copy_floor").execute(pool).await.expect("drop scratch table");
    sqlx::query("CREATE TABLE bench_copy_floor (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await
        .expect("create scratch table");
    let mut conn = pool.acquire().await.expect("a connection");
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY bench_copy_floor (id, host, session_id, action_id, exec_id, seq, ts, kind, pid, tid, data) FROM STDIN")
        .await
        .expect("start COPY");
    let mut seq = 0u64;
    while seq < rows {
        let n = (rows - seq).min(10_000);
        let mut buf = String::with_capacity(n as usize * (head.len() + tail.len() + 60));
        for _ in 0..n {
            seq += 1;
            let _ = write!(buf, "{}{head}{seq}{tail}", Uuid::now_v7());
        }
        copy.send(buf.into_bytes()).await.expect("COPY data");
    }
    let copied = copy.finish().await.expect("finish COPY");
    let secs = start.elapsed().as_secs_f64();
    drop(conn);
    sqlx::query("DROP TABLE bench_copy_floor").execute(pool).await.expect("drop scratch table");
    (copied, secs)
}

// ---------------------------------------------------------------------------------------------
// 3. Latency.
// ---------------------------------------------------------------------------------------------

struct Latency {
    opens: u64,
    matched: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(rt: &tokio::runtime::Runtime, cfg: &Config, d: &Daemon) -> Latency {
    eprintln!("bench: latency, {} opens/s for {} s", cfg.lat_rate, cfg.lat_secs);
    let prefix = format!("/tmp/agentmon-lat-{}-", std::process::id());
    let count = cfg.lat_rate * cfg.lat_secs;
    let args = vec!["lat".into(), cfg.lat_rate.to_string(), cfg.lat_secs.to_string(), prefix.clone()];
    let mut session = Session::start(d, "bench-latency", &args);
    let like = format!("{prefix}%");
    // Probe index -> wall time of the first poll that saw its row (the poll's start).
    let mut seen: HashMap<u64, u128> = HashMap::new();
    let mut exited_at: Option<Instant> = None;
    loop {
        let polled = unix_ns();
        let paths: Vec<Option<String>> = rt
            .block_on(
                sqlx::query_scalar("SELECT data->>'path' FROM events WHERE session_id = $1 AND kind = 'file' AND data->>'path' LIKE $2")
                    .bind(session.id)
                    .bind(&like)
                    .fetch_all(&d.pool),
            )
            .expect("poll for the latency probe's events");
        for path in paths.into_iter().flatten() {
            if let Some(idx) = path.strip_prefix(&prefix).and_then(|x| x.parse().ok()) {
                seen.entry(idx).or_insert(polled);
            }
        }
        if exited_at.is_none() && session.exited() {
            exited_at = Some(Instant::now());
        }
        let all_seen = seen.len() as u64 >= count;
        if exited_at.is_some_and(|e| all_seen || e.elapsed() > LAT_GIVE_UP) {
            break;
        }
        std::thread::sleep(LAT_POLL);
    }
    let out = session.finish();
    let mut lat: Vec<u64> = out
        .lines()
        .filter_map(|line| {
            let (idx, opened) = line.split_once(' ')?;
            let (idx, opened): (u64, u128) = (idx.parse().ok()?, opened.parse().ok()?);
            seen.get(&idx).map(|first| first.saturating_sub(opened) as u64)
        })
        .collect();
    for idx in 0..count {
        let _ = std::fs::remove_file(format!("{prefix}{idx}"));
    }
    assert!(!lat.is_empty(), "no latency probe event became queryable");
    lat.sort_unstable();
    let ms = |ns: u64| fl(ns) / 1e6;
    let pct = |p: usize| ms(lat[(lat.len() * p / 100).min(lat.len() - 1)]);
    Latency { opens: count, matched: lat.len(), p50_ms: pct(50), p99_ms: pct(99), max_ms: ms(lat[lat.len() - 1]) }
}

// ---------------------------------------------------------------------------------------------
// 5. Restart gap.
// ---------------------------------------------------------------------------------------------

struct Restart {
    expected: u64,
    stored: u64,
    lost: u64,
    stop_secs: f64,
    down_secs: f64,
}

fn restart_gap(rt: &tokio::runtime::Runtime, cfg: &Config, d: &mut Daemon, cal: &Calibration) -> Restart {
    eprintln!("bench: restart gap: {} events/s, daemon stopped for {} s", cfg.restart_rate, cfg.down_secs);
    let s = Session::start(d, "bench-restart", &gen_args(cfg.restart_rate, cfg.down_secs + 8, cfg.exec_every));
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    d.stop();
    let stop_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(cfg.down_secs));
    d.start_again(None);
    let down_secs = t0.elapsed().as_secs_f64();
    let id = s.id;
    let g = Gen::parse(&s.finish());
    let st = wait_stored(rt, d, id);
    Restart { expected: cal.expected(&g), stored: st.rows, lost: st.lost, stop_secs, down_secs }
}

// ---------------------------------------------------------------------------------------------
// 8. Agent reports: the hook's round trip and the OTLP receiver's rate.
// ---------------------------------------------------------------------------------------------

/// The daemon's config for the benchmark: the OTLP receiver on a free loopback port.
fn write_config(scratch: &Path) -> (PathBuf, u16) {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port();
    let path = scratch.join("agentmon.toml");
    std::fs::write(&path, format!("[agents]\notlp_listen = \"127.0.0.1:{port}\"\n"))
        .expect("write the daemon's config");
    (path, port)
}

fn account(st: &Value, k: &str) -> u64 {
    st["account"][k].as_u64().unwrap_or_else(|| panic!("status has no account.{k}: {st}"))
}

/// p-th percentile of sorted nanoseconds, in milliseconds.
fn pct_ms(sorted: &[u64], p: usize) -> f64 {
    fl(sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]) / 1e6
}

struct AgentReports {
    hooks: u64,
    input_bytes: usize,
    /// Wall nanoseconds per hook, sorted: to the daemon, and with no socket.
    to_daemon: Vec<u64>,
    no_daemon: Vec<u64>,
    hook_reports: u64,
    hook_refused: u64,
    otlp_secs: f64,
    otlp_records: u64,
    requests: u64,
    answered_ok: u64,
    body_bytes: u64,
    otlp_reports: u64,
    otlp_rate_limited: u64,
    otlp_refused: u64,
}

impl AgentReports {
    fn share_ms(&self) -> f64 {
        pct_ms(&self.to_daemon, 50) - pct_ms(&self.no_daemon, 50)
    }

    fn records_sent(&self) -> u64 {
        self.answered_ok * self.otlp_records
    }

    /// Every record answered 200 was stored or counted: rate-limited (per record) or refused
    /// (per request).
    fn otlp_accounted(&self) -> bool {
        self.otlp_reports + self.otlp_rate_limited + self.otlp_refused * self.otlp_records == self.records_sent()
    }
}

/// Hooks from inside a session, to the daemon and (alternating) to a runtime dir with no
/// socket; then OTLP exports from inside another session, back to back.
fn agent_reports(cfg: &Config, d: &Daemon, scratch: &Path, port: u16) -> AgentReports {
    eprintln!("bench: agent reports: {} hooks to the daemon and {} without", cfg.hooks, cfg.hooks);
    let absent = scratch.join("no-daemon");
    std::fs::create_dir_all(&absent).expect("an empty runtime dir");
    let st0 = d.status();
    let args = vec![
        "hooks".into(),
        cfg.hooks.to_string(),
        bin().display().to_string(),
        d.runtime_dir.display().to_string(),
        absent.display().to_string(),
    ];
    let out = Session::start(d, "bench-hooks", &args).finish();
    let st1 = d.status();
    let (mut to_daemon, mut no_daemon) = (Vec::new(), Vec::new());
    for line in out.lines() {
        let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        assert!(f.len() == 2, "bad hooks output line {line:?}");
        to_daemon.push(f[0]);
        no_daemon.push(f[1]);
    }
    assert!(to_daemon.len() as u64 == cfg.hooks, "{} hook timings for {} hooks", to_daemon.len(), cfg.hooks);
    to_daemon.sort_unstable();
    no_daemon.sort_unstable();

    eprintln!("bench: agent reports: OTLP exports for {} s, {} records each", cfg.otlp_secs, cfg.otlp_records);
    let args = vec!["otlp".into(), port.to_string(), cfg.otlp_secs.to_string(), cfg.otlp_records.to_string()];
    let out = Session::start(d, "bench-otlp", &args).finish();
    let st2 = d.status();
    let f: Vec<u64> = out.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert!(f.len() == 4, "bad otlp output {out:?}");
    let delta = |a: &Value, b: &Value, k: &str| account(b, k).saturating_sub(account(a, k));
    AgentReports {
        hooks: cfg.hooks,
        input_bytes: hook_input(0).len(),
        to_daemon,
        no_daemon,
        hook_reports: delta(&st0, &st1, "reports"),
        hook_refused: delta(&st0, &st1, "refused_no_session") + delta(&st0, &st1, "rate_limited"),
        otlp_secs: fl(f[3]) / 1e9,
        otlp_records: cfg.otlp_records,
        requests: f[0],
        answered_ok: f[1],
        body_bytes: f[2],
        otlp_reports: delta(&st1, &st2, "reports"),
        otlp_rate_limited: delta(&st1, &st2, "rate_limited"),
        otlp_refused: delta(&st1, &st2, "refused_no_session"),
    }
}

fn print_reports(r: &AgentReports) {
    println!("\n== 8. agent reports ==");
    println!(
        "`agentmon hook` from inside a session, {}-byte PreToolUse input on stdin, spawn to exit, {} of each, alternating:",
        r.input_bytes, r.hooks
    );
    println!("{:<34} {:>8} {:>8}", "", "p50 ms", "p99 ms");
    for (name, v) in [("to the daemon (report stored)", &r.to_daemon), ("no daemon (socket absent)", &r.no_daemon)] {
        println!("{:<34} {:>8.2} {:>8.2}", name, pct_ms(v, 50), pct_ms(v, 99));
    }
    println!(
        "ratio (p50) {:.2}x; the daemon's share: {:.2} ms per hook (p50 difference); reports stored {} of {}{}",
        pct_ms(&r.to_daemon, 50) / pct_ms(&r.no_daemon, 50).max(1e-9),
        r.share_ms(),
        r.hook_reports,
        r.hooks,
        if r.hook_reports == r.hooks { "" } else { " (MISMATCH)" }
    );
    let ok_rate = fl(r.answered_ok) / r.otlp_secs.max(1e-9);
    println!(
        "OTLP/HTTP POST /v1/logs, {} tool_result records per request ({} bytes), one keep-alive connection, {:.1} s:",
        r.otlp_records,
        r.body_bytes / r.requests.max(1),
        r.otlp_secs
    );
    println!(
        "{} requests, {} answered 200: {:.0} requests/s, {:.0} records/s; stored {} reports, rate-limited {} \
         (at most {} a second per session), requests refused (no session) {}: {}",
        r.requests,
        r.answered_ok,
        ok_rate,
        ok_rate * fl(r.otlp_records),
        r.otlp_reports,
        r.otlp_rate_limited,
        monitor::account::MAX_REPORTS_PER_SEC,
        r.otlp_refused,
        if r.otlp_accounted() { "every record accounted for" } else { "MISMATCH" }
    );
}

fn reports_json(r: &AgentReports) -> Value {
    let ok_rate = fl(r.answered_ok) / r.otlp_secs.max(1e-9);
    json!({
        "hook": {
            "hooks": r.hooks, "input_bytes": r.input_bytes,
            "to_daemon_p50_ms": pct_ms(&r.to_daemon, 50), "to_daemon_p99_ms": pct_ms(&r.to_daemon, 99),
            "no_daemon_p50_ms": pct_ms(&r.no_daemon, 50), "no_daemon_p99_ms": pct_ms(&r.no_daemon, 99),
            "p50_ratio": pct_ms(&r.to_daemon, 50) / pct_ms(&r.no_daemon, 50).max(1e-9),
            "daemon_share_p50_ms": r.share_ms(),
            "reports_stored": r.hook_reports, "refused": r.hook_refused,
        },
        "otlp": {
            "secs": r.otlp_secs, "records_per_request": r.otlp_records, "requests": r.requests,
            "answered_200": r.answered_ok, "body_bytes": r.body_bytes,
            "requests_per_sec": ok_rate, "records_per_sec": ok_rate * fl(r.otlp_records),
            "records_sent": r.records_sent(), "reports_stored": r.otlp_reports,
            "rate_limited": r.otlp_rate_limited, "refused_no_session": r.otlp_refused,
            "max_reports_per_sec_per_session": monitor::account::MAX_REPORTS_PER_SEC,
            "all_accounted": r.otlp_accounted(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------------

fn print_throughput(cfg: &Config, cal: &Calibration, runs: &[RateRun], copy: (u64, f64)) {
    println!(
        "\n== 2. lossless throughput: {} s per rate; expected = generator's count + {} per session + {} per exec (calibrated: {} in all per exec) ==",
        cfg.gen_secs,
        cal.fixed,
        cal.per_exec,
        EVENTS_PER_EXEC + cal.per_exec
    );
    println!(
        "{:>9} {:>10} {:>9} {:>9} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9}",
        "offered/s",
        "achieved/s",
        "expected",
        "stored",
        "lost",
        "shortfall",
        "lost=short",
        "dropped",
        "shed",
        "drain s",
        "peak bklg"
    );
    for r in runs {
        println!(
            "{:>9} {:>10.0} {:>9} {:>9} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8.1} {:>9}",
            r.rate,
            r.achieved,
            r.expected,
            r.stored,
            r.lost,
            r.shortfall(),
            if r.accounted() { "yes" } else { "NO" },
            r.dropped,
            r.shed,
            r.drain_secs,
            r.peak.backlog
        );
    }
    match best_lossless(runs) {
        Some(r) => println!("highest rate with zero loss: {:.0}/s achieved ({}/s offered)", r.achieved, r.rate),
        None => println!("highest rate with zero loss: none of the rates"),
    }
    if runs.iter().any(RateRun::saturated) {
        println!("(achieved < 95% of offered: the tagged generator itself could not go faster on this machine)");
    }
    println!("COPY floor: {} rows in one COPY in {:.2} s = {:.0} rows/s", copy.0, copy.1, fl(copy.0) / copy.1);
}

fn print_rest(l: &Latency, c: &Cost, r: &Restart) {
    println!("\n== 3. latency, open(2) -> row queryable (polled every {} ms) ==", LAT_POLL.as_millis());
    println!(
        "{} of {} opens seen: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.matched, l.opens, l.p50_ms, l.p99_ms, l.max_ms
    );
    println!("\n== 4. daemon cost over the throughput runs ==");
    println!(
        "CPU {:.2} s for {} events read = {:.2} CPU s per million events",
        c.cpu_secs,
        c.events_read,
        c.cpu_secs / (fl(c.events_read) / 1e6).max(1e-9)
    );
    println!("{:<12} {:>10} {:>10} {:>10}", "memory KiB", "VmRSS", "RssAnon", "RssFile");
    for (name, m) in [("idle", c.idle), ("storm peak", c.peak)] {
        println!("{:<12} {:>10} {:>10} {:>10}", name, m.vm_rss, m.anon, m.file);
    }
    println!("\n== 5. restart gap ==");
    println!(
        "daemon down {:.1} s (stop took {:.1} s): expected {}, stored {}, events_lost {}: {}",
        r.down_secs,
        r.stop_secs,
        r.expected,
        r.stored,
        r.lost,
        if r.stored == r.expected { "all stored" } else { "MISMATCH" }
    );
}

#[expect(clippy::too_many_arguments, reason = "one report of every section")]
fn report_json(
    cfg: &Config,
    ws: &[Workload],
    o: &Overhead,
    bt_note: &str,
    cal: &Calibration,
    runs: &[RateRun],
    copy: (u64, f64),
    l: &Latency,
    c: &Cost,
    r: &Restart,
) -> Value {
    let runs_json: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "offered_rate": r.rate, "achieved_rate": r.achieved, "expected": r.expected, "stored": r.stored,
                "events_lost": r.lost, "shortfall": r.shortfall(), "loss_equals_shortfall": r.accounted(),
                "zero_loss": r.lossless(), "saturated": r.saturated(), "events_dropped": r.dropped, "events_shed": r.shed,
                "drain_secs": r.drain_secs, "peak_backlog_records": r.peak.backlog, "peak_queue_bytes": r.peak.queue_bytes,
                "peak_mem": r.peak.mem.json(), "session": r.session.to_string(),
            })
        })
        .collect();
    let best = best_lossless(runs);
    json!({
        "command": cfg.command_line(),
        "rounds": cfg.rounds,
        "overhead": overhead_json(ws, o),
        "bpftrace": bt_note,
        "throughput": {
            "gen_secs": cfg.gen_secs, "exec_every": cfg.exec_every,
            "calibration": {"fixed_events": cal.fixed, "events_per_exec": EVENTS_PER_EXEC + cal.per_exec},
            "runs": runs_json,
            "max_zero_loss_rate": best.map(|r| r.rate),
            "max_zero_loss_achieved_rate": best.map(|r| r.achieved),
            "copy_floor": {"rows": copy.0, "secs": copy.1, "rows_per_sec": fl(copy.0) / copy.1},
        },
        "latency": {"opens": l.opens, "matched": l.matched, "poll_ms": LAT_POLL.as_millis() as u64, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "max_ms": l.max_ms},
        "daemon": {
            "cpu_secs": c.cpu_secs, "events_read": c.events_read,
            "cpu_secs_per_million_events": c.cpu_secs / (fl(c.events_read) / 1e6).max(1e-9),
            "mem_idle": c.idle.json(), "mem_storm_peak": c.peak.json(),
        },
        "restart": {"expected": r.expected, "stored": r.stored, "events_lost": r.lost, "all_stored": r.stored == r.expected,
                    "stop_secs": r.stop_secs, "down_secs": r.down_secs},
    })
}

/// Drop the benchmark's database (it holds millions of events).
fn drop_database(rt: &tokio::runtime::Runtime, db_url: &str) {
    let db = db_url.split('?').next().and_then(|b| b.rsplit('/').next()).expect("database name").to_owned();
    let admin = std::env::var("AGENTMON_TEST_DATABASE_URL").expect("AGENTMON_TEST_DATABASE_URL");
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&admin).await.expect("connect to the admin database");
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&pool).await {
            eprintln!("bench: could not drop database {db}: {e}");
        }
        pool.close().await;
    });
}

/// The redact and chain stages' cost per event, in ns: on `events` as the daemon queues them.
fn stage_costs(events: &[(String, String)]) -> (f64, f64, u64) {
    use monitor::{daemon, record::Output};
    let redactor =
        monitor::redact::Redactor::new(&[7; 32], &monitor::redact::RedactConfig::default()).expect("built-in rules");
    let mut chain = daemon::chain::Chain::new(
        "bench".into(),
        None,
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        daemon::chain::CheckpointLog::File("/dev/null".into()),
        Duration::from_secs(5),
        Duration::from_mins(1),
    );
    let record = |kind: &str, data: &str| {
        Output::Event(monitor::record::EventRecord {
            id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            action_id: None,
            exec_id: "4f1c2a9e-48213-1934417".into(),
            seq: 1,
            ts: chrono::Utc::now(),
            kind: kind.to_owned(),
            pid: 1,
            tid: 1,
            data: data.to_owned(),
            redacted: Vec::new(),
            chain: monitor::record::ChainLink::default(),
            facts: None,
        })
    };
    let mut records: Vec<Output> = events.iter().map(|(k, d)| record(k, d)).collect();
    let t = Instant::now();
    let parsed: Vec<Option<Value>> = records.iter_mut().map(|o| daemon::redact::apply(&redactor, o)).collect();
    let redact_ns = fl(t.elapsed().as_nanos() as u64) / fl(records.len() as u64).max(1.0);
    let redacted = records.iter().filter(|o| o.redacted()).count() as u64;
    let t = Instant::now();
    for (o, data) in records.iter_mut().zip(parsed) {
        chain.seal(o, data);
    }
    let chain_ns = fl(t.elapsed().as_nanos() as u64) / fl(records.len() as u64).max(1.0);
    (redact_ns, chain_ns, redacted)
}

/// Section 6: stage costs on the stored events and on secret-bearing execs, and verify's speed.
/// `agent_round_ns`: the tagged agent-like round's median time.
fn evidence(rt: &tokio::runtime::Runtime, d: &Daemon, agent_round_ns: u64) -> Value {
    let sample: Vec<(String, String)> = rt.block_on(async {
        sqlx::query_as("SELECT kind, data::text FROM events ORDER BY random() LIMIT 50000")
            .fetch_all(&d.pool)
            .await
            .expect("sample events")
    });
    let (redact_ns, chain_ns, hits) = stage_costs(&sample);
    let secret_execs: Vec<(String, String)> = (0..5000)
        .map(|i| {
            let argv = json!(["mysql", "-uroot", format!("-pS3cret{i}"), "--host", "db", "-e", "select 1"]);
            (
                "exec".to_owned(),
                json!({"filename": "/usr/bin/mysql", "argv": argv, "cwd": "/srv/app", "uid": 0, "gid": 0}).to_string(),
            )
        })
        .collect();
    let (secret_redact_ns, secret_chain_ns, secret_hits) = stage_costs(&secret_execs);
    // The agent-like rounds' own events: their sessions' root argv is `bench --workload agent …`.
    let per_round: f64 = rt.block_on(async {
        sqlx::query_scalar("SELECT COALESCE(avg(events), 0)::float8 FROM session_ends WHERE root_argv[3] = 'agent'")
            .fetch_one(&d.pool)
            .await
            .expect("agent-like events")
    });
    let share = per_round * redact_ns / fl(agent_round_ns).max(1.0);
    println!("\n== 6. evidence: redaction, chain and verify ==");
    println!(
        "per stored event ({} sampled, {hits} redacted): redact {:.2} µs, chain {:.2} µs",
        sample.len(),
        redact_ns / 1000.0,
        chain_ns / 1000.0
    );
    println!(
        "per exec event carrying a password ({} , {secret_hits} redacted): redact {:.2} µs, chain {:.2} µs",
        secret_execs.len(),
        secret_redact_ns / 1000.0,
        secret_chain_ns / 1000.0
    );
    println!(
        "agent-like round: {per_round:.0} events; redaction {:.2} ms of the {:.0} ms round ({:.2} %)",
        per_round * redact_ns / 1e6,
        fl(agent_round_ns) / 1e6,
        share * 100.0
    );
    let t = Instant::now();
    let out =
        Command::new(bin()).args(["verify", "--json", "--database-url", &d.db_url]).output().expect("agentmon verify");
    let secs = t.elapsed().as_secs_f64();
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let rows: u64 = lines.iter().filter(|l| l["type"] == "summary").filter_map(|l| l["rows"].as_u64()).sum();
    let findings = lines.iter().filter(|l| l["type"] == "finding").count();
    println!(
        "verify: {rows} rows in {secs:.1} s = {:.0} rows/s, exit {:?}, {findings} findings",
        fl(rows) / secs.max(1e-9),
        out.status.code()
    );
    json!({
        "sampled_events": sample.len(), "sampled_redacted": hits,
        "redact_ns_per_event": redact_ns, "chain_ns_per_event": chain_ns,
        "secret_exec_redact_ns": secret_redact_ns, "secret_exec_chain_ns": secret_chain_ns,
        "agent_round_events": per_round, "agent_round_redact_share": share,
        "verify_rows": rows, "verify_secs": secs, "verify_rows_per_sec": fl(rows) / secs.max(1e-9),
        "verify_exit": out.status.code(), "verify_findings": findings,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--workload") {
        workload(&args[1..]);
        return;
    }
    let cfg = Config::parse(&args);
    // `cargo xtask` runs us with cargo's LD_LIBRARY_PATH: every exec's dynamic loader would
    // search it (dozens of failed opens per exec, each one an event in a tagged session).
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        eprintln!("bench: unsetting LD_LIBRARY_PATH={} for the workloads", v.to_string_lossy());
        std::env::remove_var("LD_LIBRARY_PATH");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let scratch = integration_tests::scratch("bench");
    let ws = workloads(&cfg, agent_setup(&scratch));
    let (config, otlp_port) = write_config(&scratch);
    eprintln!("bench: {}", cfg.command_line());

    // bpftrace reference: its own cgroup, so its probes see only the workload.
    let bt_cgroup = cgroup2_mount().join(format!("agentmon-bench-bpftrace-{}", std::process::id()));
    let bt_script = scratch.join("reference.bt");
    let have_bt = Bpftrace::available();
    let bt_note = if have_bt {
        std::fs::create_dir_all(&bt_cgroup).expect("bpftrace cgroup");
        std::fs::write(&bt_script, bpftrace_script(&bt_cgroup)).expect("write the bpftrace script");
        "bpftrace: reference script ran (fork/exec/exit and openat enter/exit, filtered by cgroup, printf per event)"
            .to_owned()
    } else {
        "bpftrace: not on PATH, reference skipped".to_owned()
    };
    let (base, bpftrace) = overhead_plain(&cfg, &ws, have_bt.then_some((bt_cgroup.as_path(), bt_script.as_path())));
    let _ = std::fs::remove_dir(&bt_cgroup);

    eprintln!("bench: starting the daemon");
    let daemon_args: Vec<&str> = cfg.daemon_args.iter().map(String::as_str).collect();
    let daemon_args = with_config(&daemon_args, config.to_str().expect("utf-8 path"));
    let mut d = rt.block_on(Daemon::start("bench", &daemon_args));
    let listen = d.status()["account"]["otlp_listen"].as_str().map(str::to_owned);
    assert!(
        listen.as_deref() == Some(&format!("127.0.0.1:{otlp_port}")),
        "the OTLP receiver does not listen on 127.0.0.1:{otlp_port} ({listen:?}):\n{}",
        d.log()
    );
    let idle = Mem::of(d.daemon_pid());
    let (untagged, tagged) = overhead_daemon(&cfg, &ws, &d);
    let overhead = Overhead { base, bpftrace, untagged, tagged };
    let compat = compat_cost(&cfg, &ws, &mut d, &daemon_args);
    let rules = rules_cost(&cfg, &ws, &mut d, &daemon_args, &config);

    eprintln!("bench: calibrating the generator");
    let cal = calibrate(&rt, &d);
    let (runs, cost) = throughput(&rt, &cfg, &d, &cal, idle);
    let copy_rows = runs.iter().map(|r| r.expected).max().unwrap_or(0);
    let template = runs.last().expect("a throughput run").session;
    eprintln!("bench: COPY floor, {copy_rows} rows");
    let copy = rt.block_on(copy_floor(&d.pool, template, copy_rows));
    let lat = latency(&rt, &cfg, &d);
    let restart = restart_gap(&rt, &cfg, &mut d, &cal);
    let reports = agent_reports(&cfg, &d, &scratch, otlp_port);

    print_overhead(&cfg, &ws, &overhead, &bt_note);
    print_throughput(&cfg, &cal, &runs, copy);
    print_rest(&lat, &cost, &restart);
    let agent_round = ws.iter().position(|w| w.name == "agent-like session").map_or(0, |i| overhead.tagged[i]);
    let evidence = evidence(&rt, &d, agent_round);
    print_reports(&reports);
    let mut report = report_json(&cfg, &ws, &overhead, &bt_note, &cal, &runs, copy, &lat, &cost, &restart);
    report["evidence"] = evidence;
    report["compat"] = compat;
    report["rules"] = rules;
    report["agent_reports"] = reports_json(&reports);
    let target = self_exe().parent().and_then(Path::parent).expect("target dir").join("agentmon-bench.json");
    std::fs::write(&target, serde_json::to_string_pretty(&report).expect("JSON")).expect("write the JSON report");
    println!("\nreproduce: {}\njson: {}", cfg.command_line(), target.display());

    let db_url = d.db_url.clone();
    drop(d);
    if cfg.keep_db {
        println!("database kept: {db_url}");
    } else {
        drop_database(&rt, &db_url);
    }
}
