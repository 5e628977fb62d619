//! Root integration tests of the bounds under a hostile load (issue 20, section 7): one action
//! with thousands of processes with large argv (every process stored, the heap bounded), a
//! flood of connects to distinct unlisted hosts (a bounded number of alert rows whose counts
//! cover every connect, none dropped), and one user holding the control socket (its share
//! only; root and other users are served).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{json_lines, rss_anon_kib, scratch, strs, test_user, wait_for, Daemon};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

/// `agentmon run` in the background, as root.
fn spawn_agent(d: &Daemon, dir: &Path, agent: &str, cmd: &[&str]) -> Child {
    Command::new(integration_tests::bin())
        .args(["run", "--agent", agent, "--runtime-dir"])
        .arg(&d.runtime_dir)
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        // Cargo's test environment lists dozens of build directories here, and each of the
        // thousands of processes would try to open libc in every one: ~55 failed opens per
        // process, a file-event flood that is not what these tests measure.
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentmon run")
}

/// Wait for the agent, then for the daemon to end its session, sampling the daemon's heap every
/// 50 ms meanwhile; returns the session id and the largest `RssAnon` seen (KiB). The database
/// may be away: the end is read from `status`.
fn finish_sampling(d: &Daemon, mut child: Child) -> (String, u64) {
    let mut peak = 0;
    while child.try_wait().expect("agent").is_none() {
        peak = peak.max(rss_anon_kib(d.daemon_pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed: {stderr}");
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session line").trim().to_owned();
    wait_for(120, "the session's end", || {
        peak = peak.max(rss_anon_kib(d.daemon_pid()));
        let st = d.status();
        (st["sessions"].as_array().is_some_and(Vec::is_empty) && st["sessions_closing"] == 0).then_some(())
    });
    // What the end flushed reaches the queue and the spool.
    for _ in 0..10 {
        peak = peak.max(rss_anon_kib(d.daemon_pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    (id, peak)
}

/// Wait until everything queued and spooled is stored.
fn wait_stored(d: &Daemon) {
    wait_for(300, "everything stored", || {
        let st = d.status();
        (st["queue_records"] == 0 && st["spool_records"] == 0 && st["oldest_unstored_secs"].is_null()).then_some(())
    });
}

async fn count(d: &Daemon, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(&d.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_action_with_thousands_of_large_processes_stores_every_one_and_keeps_the_heap_bounded() {
    const N: usize = 5000;
    // A small memory queue and the database away while the processes run: what the store
    // stage holds does not cloud the heap, which then measures what correlation keeps.
    let (d, proxy) = Daemon::start_with("bounds_procs", &["--queue-memory-mb", "4"], true).await;
    let proxy = proxy.expect("proxy");
    let dir = scratch("bounds_procs");
    let big = "a".repeat(4000);
    std::fs::write(
        dir.join("loop.sh"),
        format!("i=0\nwhile [ $i -lt {N} ]; do /bin/true \"$1\" $i; i=$((i + 1)); done\n"),
    )
    .expect("loop.sh");
    proxy.down();
    let idle = rss_anon_kib(d.daemon_pid());

    // The baseline: the same processes, argv and events, each its own action (the agent runs
    // the loop), so no action holds more than one process.
    let agent = spawn_agent(&d, &dir, "baseline", &["sh", "./loop.sh", &big]);
    let (base_id, base_peak) = finish_sampling(&d, agent);

    // The load: one action (a shell the agent started) runs all of them.
    let agent = spawn_agent(&d, &dir, "hostile", &["sh", "-c", "sh ./loop.sh \"$0\"; true", &big]);
    let (id, peak) = finish_sampling(&d, agent);
    assert!(d.status()["spool_bytes"].as_u64() > Some(2 * (N * big.len()) as u64), "the events went to the spool");
    // The heap: the single action costs about what the same work as separate actions did.
    let (base_growth, growth) = (base_peak.saturating_sub(idle), peak.saturating_sub(idle));
    let argv_kib = (N * big.len() / 1024) as u64;
    println!(
        "RssAnon: idle {idle} KiB, baseline peak {base_peak} KiB, one-action peak {peak} KiB; argv {argv_kib} KiB"
    );
    assert!(
        peak.saturating_sub(base_peak) < argv_kib / 4,
        "one action of {N} processes grew the heap {growth} KiB, the same processes as separate actions \
         {base_growth} KiB: the open action held what it should have handed on ({argv_kib} KiB of argv)"
    );
    proxy.up();
    wait_stored(&d);

    let base = d.wait_session_end(&base_id);
    let st = d.status();
    let drops = [&st["dropped_lifecycle"], &st["dropped_file"], &st["dropped_net"], &st["events_shed"]];
    assert_eq!(base["events_lost"], 0, "lost (lifecycle, file, net, shed): {drops:?}; {base}");
    assert_eq!(base["actions"], N, "{base}");
    let session = d.wait_session_end(&id);
    assert_eq!(session["events_lost"], 0, "{session}");
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 1, "one action: {:?}", actions.iter().map(|a| &a["command"]).collect::<Vec<_>>());
    let a = &actions[0];
    let aid = a["id"].as_str().expect("id").to_owned();
    assert_eq!(strs(&a["argv"]), ["sh", "./loop.sh", big.as_str()]);
    assert_eq!((a["complete"].as_bool(), a["exit_code"].as_i64()), (Some(true), Some(0)), "{}", a["command"]);

    // Every process is stored, with the action's id: the shell and each /bin/true once.
    let procs = a["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), N + 1, "`actions`/`show` list every process of the action");
    let rows = count(&d, "SELECT count(*) FROM processes WHERE action_id = $1::text::uuid", &aid).await;
    assert_eq!(rows, (N + 1) as i64);
    let trues = count(
        &d,
        "SELECT count(DISTINCT argv[3]) FROM processes WHERE action_id = $1::text::uuid AND argv[1] = '/bin/true' \
         AND argv[2] = repeat('a', 4000) AND cardinality(argv) = 3 AND exit_code = 0 AND signal IS NULL \
         AND ended_at >= started_at AND NOT argv_truncated AND prior_argv = '[]'::jsonb AND prior_argv_omitted = 0",
        &aid,
    )
    .await;
    assert_eq!(trues, N as i64, "each /bin/true, whole and once");
    // The action kept its in-memory share (256 ended processes, and the shell, which ended
    // last); every other process was stored as it ended, before the action row.
    let early = N as i64 + 1 - 257;
    assert_eq!(a["processes_early"], early, "processes stored before the action");
    let before = count(
        &d,
        "SELECT count(*) FROM processes p JOIN actions a ON a.id = p.action_id \
         WHERE a.id = $1::text::uuid AND p.chain_seq < a.chain_seq",
        &aid,
    )
    .await;
    assert_eq!(before, early, "the early rows precede the action in the chain");
    assert_eq!(d.status()["processes_early"], early);
    // One of them, field by field.
    let shell = procs.iter().find(|p| p["argv"][0] == "sh").expect("the shell");
    let sample = procs.iter().find(|p| p["argv"][2] == "4321").expect("process 4321");
    assert_eq!(strs(&sample["argv"]), ["/bin/true", big.as_str(), "4321"]);
    // The file the kernel executed, from the real root (`/bin` is a symlink to `usr/bin` here).
    let true_exe = std::fs::canonicalize("/bin/true").expect("/bin/true");
    assert_eq!(sample["exe"], true_exe.to_str().expect("utf8"));
    assert_eq!(sample["ppid"], shell["pid"]);
    assert_eq!(sample["cwd"], dir.to_str().expect("utf8"));
    assert_eq!((sample["uid"].as_i64(), sample["exit_code"].as_i64()), (Some(0), Some(0)));
    assert!(sample["signal"].is_null() && sample["argv_truncated"] == false, "{sample}");
    assert!(sample["exec_id"].as_str().expect("exec_id").contains(&format!("-{}-", sample["pid"])), "{sample}");
    let show = d.cli(&["show", &aid]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    assert!(
        text.contains(&format!("processes ({}; {early} stored as they ended, before the action):", N + 1)),
        "{}",
        &text[..text.len().min(3000)]
    );
    let drawn = text.lines().filter(|l| l.contains(&format!("/bin/true {}", &big[..16]))).count();
    assert_eq!(drawn, N, "`show` draws every process");
    let verify = d.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// An HTTP endpoint that answers 503 while down and 200 while up, keeping the bodies it took.
struct Webhook {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Self {
        use std::io::Read as _;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let port = listener.local_addr().expect("addr").port();
        let hook = Self { port, up: std::sync::Arc::default(), got: std::sync::Arc::default() };
        let (u, g) = (hook.up.clone(), hook.got.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut len = 0;
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut w = conn;
                if u.load(Ordering::SeqCst) {
                    g.lock().expect("got").push(serde_json::from_slice(&body).expect("webhook body is JSON"));
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                } else {
                    let _ = w.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        hook
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unlisted_hosts_makes_a_bounded_number_of_alert_rows_that_count_every_connect() {
    const N: i64 = 16_000;
    // unlisted_host is on with an empty allowlist: every destination below is unlisted.
    let dir = scratch("bounds_alerts");
    let hook = Webhook::start();
    let cfg = dir.join("agentmon.toml");
    std::fs::write(
        &cfg,
        format!("[alerts]\nwebhook = \"http://127.0.0.1:{}/hook\"\nwebhook_retry_max = \"1s\"\n", hook.port),
    )
    .expect("config");
    let mut d = Daemon::start("bounds_alerts", &["--config", cfg.to_str().expect("utf8")]).await;
    // The webhook is down during the flood: what waits for it is what the flood raised.
    let (id, out) = d.run_agent("flooder", &dir, &[W, "connect-many", &N.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = String::from_utf8_lossy(&out.stdout).into_owned();
    let session = d.wait_session_end_within(&id, 120);
    assert_eq!(session["events_lost"], 0, "{session}");
    let connects = count(
        &d,
        "SELECT count(*) FROM events WHERE session_id = $1::text::uuid AND kind = 'net' AND data->>'op' = 'connect' \
         AND data->>'addr' LIKE '198.1_.%'",
        &id,
    )
    .await;
    assert_eq!(connects, N, "every connect stored as a raw event (workload: {results})");
    let distinct = count(
        &d,
        "SELECT count(DISTINCT data->>'addr') FROM events WHERE session_id = $1::text::uuid AND kind = 'net' \
         AND data->>'op' = 'connect'",
        &id,
    )
    .await;
    assert_eq!(distinct, N, "to as many destinations");

    // While the window is open: an alert at once for each of the first 32 destinations only.
    let firsts = wait_for(30, "the first alerts stored", || {
        let a = json_lines(&d.cli(&["alerts", "--json", "--session", &id, "--rule", "unlisted_host"]));
        (a.len() >= 32).then_some(a)
    });
    assert_eq!(firsts.len(), 32, "{firsts:#?}");
    for (i, a) in firsts.iter().enumerate() {
        assert_eq!((a["count"].as_i64(), a["severity"].as_str()), (Some(1), Some("low")), "{a}");
        assert_eq!(a["details"]["addr"], format!("198.18.0.{i}"), "the first destinations, in order");
        assert_eq!(strs(&a["event_ids"]).len(), 1, "{a}");
    }
    let st = d.status();
    assert_eq!(st["webhook_waiting"], 32, "{st}");
    assert_eq!(st["webhook_dropped"], 0, "{st}");
    hook.up.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(30, "the webhook to get the first alerts", || (hook.got.lock().expect("got").len() >= 32).then_some(()));

    // A stop writes the group of the window that is still open: one row for the rest.
    d.stop();
    let rows = json_lines(&d.cli(&["alerts", "--json", "--session", &id]));
    let rules: Vec<&str> = rows.iter().map(|a| a["rule"].as_str().expect("rule")).collect();
    assert!(rules.iter().all(|r| *r == "unlisted_host"), "{rules:?}");
    assert_eq!(rows.len(), 33, "32 first alerts and one grouped row, for {N} connects");
    let grouped = rows.iter().find(|a| a["count"].as_i64() > Some(1)).expect("the grouped row");
    let sum: i64 = rows.iter().map(|a| a["count"].as_i64().expect("count")).sum();
    assert_eq!(sum, N, "the rows' counts add up to every connect");
    assert_eq!(grouped["count"], N - 32);
    let examples = grouped["details"]["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 32, "{grouped}");
    assert_eq!(examples[0], serde_json::json!({"what": "198.18.0.32:9", "count": 1}));
    let listed: i64 = examples.iter().map(|x| x["count"].as_i64().expect("count")).sum();
    assert_eq!(listed + grouped["details"]["others"].as_i64().expect("others"), N - 32);
    assert_eq!(strs(&grouped["event_ids"]).len(), 32, "the first triggering events");
    assert!(
        grouped["summary"]
            .as_str()
            .expect("summary")
            .starts_with("15968 more time(s) after: flooder: connect to 198.18.0.0:9"),
        "{grouped}"
    );
    // Nothing was dropped on the way to the webhook: every stored row arrived, once.
    let got = hook.got.lock().expect("got").clone();
    let mut delivered: Vec<&str> = got.iter().map(|a| a["id"].as_str().expect("id")).collect();
    let mut stored: Vec<&str> = rows.iter().map(|a| a["id"].as_str().expect("id")).collect();
    delivered.sort_unstable();
    stored.sort_unstable();
    assert_eq!(delivered, stored, "the webhook got every row once, the grouped one at the stop");
}

/// `agentmon` and the workload where any user may run them (the checkout may be under /root).
fn public_bins() -> (PathBuf, PathBuf, PathBuf) {
    let dir = PathBuf::from(format!("/tmp/agentmon-test-bin-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bin dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).expect("copy");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        to
    };
    let (agentmon, workload) = (copy(&integration_tests::bin(), "agentmon"), copy(Path::new(W), "agentmon-workload"));
    (dir, agentmon, workload)
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent").args(["group", group]).output().expect("getent");
    String::from_utf8_lossy(&out.stdout).split(':').nth(2).expect("gid").trim().parse().expect("gid")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_holding_control_connections_gets_its_share_and_others_are_served() {
    let (user, group) = test_user();
    let gid = gid_of(group);
    let d = Daemon::start("bounds_control", &["--group", group]).await;
    let (bin_dir, agentmon, workload) = public_bins();
    let dir = scratch("bounds_control");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = d.runtime_dir.join("agentmon.sock");

    // A member of the group opens as many connections as the daemon serves at once (64) and
    // sends nothing on them: it holds its share (8), and the rest are refused at once.
    let mut holder = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&workload)
        .args(["hold-control", socket.to_str().expect("utf8"), "64"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let counts = lines.next().expect("a line").expect("held/refused");
    assert_eq!(counts, "held 8 refused 56");
    let refusal: Value = serde_json::from_str(&lines.next().expect("a line").expect("refusal")).expect("JSON");
    let uid =
        String::from_utf8_lossy(&Command::new("id").args(["-u", user]).output().expect("id").stdout).trim().to_owned();
    assert_eq!(
        refusal,
        serde_json::json!({"result": "error", "busy": true, "message": format!(
            "uid {uid} already holds 8 connections to the control socket, the most one user may; wait for them to finish and try again"
        )})
    );

    // While it holds them: root's status is served, and counts the refusals...
    let st = d.status();
    assert!(st["control_busy"].as_u64() >= Some(56), "{st}");
    // ...and another member (another uid) starts a session and runs its command.
    let other = Command::new("setpriv")
        .args(["--reuid=42421", &format!("--regid={gid}"), &format!("--groups={gid}")])
        .arg(&agentmon)
        .args(["run", "--agent", "other", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "/bin/sh", "-c", "/usr/bin/id -u; exit 0"])
        .current_dir(&dir)
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(other.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "42421");
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session line").trim().to_owned();
    let session = d.wait_session_end(&id);
    assert_eq!(session["uid"], 42421, "{session}");
    assert_eq!(strs(&d.actions(&id)[0]["argv"]), ["/usr/bin/id", "-u"]);

    // The holder's own uid waits: its client retries the busy refusals until a connection of
    // its uid is free, here when the holder lets go.
    let refused_before = d.status()["control_busy"].as_u64().expect("refused");
    let same = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&agentmon)
        .args(["status", "--json", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("status as the holder's uid");
    wait_for(20, "the same uid's status to be refused as busy", || {
        (d.status()["control_busy"].as_u64() > Some(refused_before)).then_some(())
    });
    drop(holder.stdin.take());
    assert!(holder.wait().expect("holder").success(), "the holder kept its connections to the end");
    let out = same.wait_with_output().expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(st["capturing"], true);
    let _ = std::fs::remove_dir_all(&bin_dir);
}
