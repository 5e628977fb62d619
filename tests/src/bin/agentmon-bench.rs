//! Overhead benchmark: the same workloads without the monitor, with it running but untagged,
//! and with it running and tagged, measured in one run and reported as ratios.
//!
//! Run with `sudo cargo xtask bench` (optionally `-- --rounds 5 --exec 2000 --open 200000`).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{Daemon, bin};

const USAGE: &str = "agentmon-bench [--rounds N] [--exec N] [--open N]";

/// A workload run in this process: prints nanoseconds per operation.
fn workload(kind: &str, n: u64) {
    let start = Instant::now();
    for _ in 0..n {
        match kind {
            "exec" => {
                let _ = Command::new("/bin/true").status();
            }
            "open" => {
                let _ = std::fs::File::open("/etc/hostname");
            }
            other => panic!("unknown workload {other}"),
        }
    }
    println!("{}", start.elapsed().as_nanos() / u128::from(n.max(1)));
}

fn self_exe() -> String {
    std::env::current_exe().expect("current exe").display().to_string()
}

fn measure(kind: &str, n: u64, tagged: Option<&Daemon>) -> f64 {
    let n_s = n.to_string();
    let out = match tagged {
        None => Command::new(self_exe()).args(["--workload", kind, &n_s]).output(),
        Some(d) => Command::new(bin())
            .args(["run", "--agent", "bench", "--runtime-dir"])
            .arg(&d.runtime_dir)
            .args(["--", &self_exe(), "--workload", kind, &n_s])
            .output(),
    }
    .expect("run workload");
    assert!(out.status.success(), "workload failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("ns per op")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--workload") {
        workload(&args[1], args[2].parse().expect("count"));
        return;
    }
    let mut rounds = 5u32;
    let mut exec_n = 2000u64;
    let mut open_n = 200_000u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{a} needs a value; usage: {USAGE}"));
        match a.as_str() {
            "--rounds" => rounds = v.parse().expect("rounds"),
            "--exec" => exec_n = v.parse().expect("exec count"),
            "--open" => open_n = v.parse().expect("open count"),
            _ => panic!("unknown flag {a}; usage: {USAGE}"),
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let workloads = [("exec", exec_n), ("open", open_n)];
    eprintln!("bench: {rounds} rounds; exec loop {exec_n} x /bin/true, open loop {open_n} x open+close");

    // Baseline first, with no daemon at all.
    let mut base: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for _ in 0..rounds {
        for (i, (k, n)) in workloads.iter().enumerate() {
            base[i].push(measure(k, *n, None));
        }
    }
    eprintln!("bench: starting the daemon");
    let d = rt.block_on(Daemon::start("bench", &[]));
    let daemon_pid = d.daemon_pid();
    let rss_idle = rss_kib(daemon_pid);
    let mut untagged: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    let mut tagged: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for _ in 0..rounds {
        for (i, (k, n)) in workloads.iter().enumerate() {
            untagged[i].push(measure(k, *n, None));
            tagged[i].push(measure(k, *n, Some(&d)));
        }
    }
    let rss_after = rss_kib(daemon_pid);
    // How long the database takes to absorb what the tagged runs produced.
    let drain_start = Instant::now();
    let mut st = integration_tests::json_lines(&d.cli(&["status", "--json"]));
    let backlog_at_end = st[0]["db_backlog"].as_u64().unwrap_or(0);
    while st[0]["db_backlog"].as_u64().unwrap_or(0) > 0 && drain_start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(200));
        st = integration_tests::json_lines(&d.cli(&["status", "--json"]));
    }
    let drain = drain_start.elapsed().as_secs_f64();
    println!("workload           baseline ns/op  untagged ns/op  tagged ns/op  untagged/base  tagged/base");
    for (i, (k, _)) in workloads.iter().enumerate() {
        let (b, u, t) = (median(base[i].clone()), median(untagged[i].clone()), median(tagged[i].clone()));
        println!("{:<18} {:>14.0}  {:>14.0}  {:>12.0}  {:>13.2}  {:>11.2}", format!("{k} loop"), b, u, t, u / b, t / b);
    }
    println!(
        "daemon RSS: {rss_idle} KiB idle, {rss_after} KiB right after the tagged runs; events read {}, dropped in kernel {}, shed {}",
        st[0]["events_read"], st[0]["events_dropped"], st[0]["db_events_shed"]
    );
    println!(
        "database: {backlog_at_end} records still queued when the runs ended, stored {:.1} s later (backlog now {})",
        drain, st[0]["db_backlog"]
    );
}
