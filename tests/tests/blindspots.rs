//! Root integration tests for issue 8: what an uncooperative agent does is recorded as the
//! kernel performed it, or raised as a tamper event. Real programs, a real tagged session, a
//! real `PostgreSQL`; assertions on the stored records.

use std::{
    net::{TcpListener, UdpSocket},
    process::{Command, Stdio},
};

use integration_tests::{
    cgroup2_mount, json_lines,
    records::{entries, find, s, session_events as events},
    scratch, Daemon,
};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

#[tokio::test(flavor = "multi_thread")]
async fn the_listed_bypasses_are_recorded_as_the_kernel_performed_them() {
    let d = Daemon::start("bypass", &[]).await;
    let dir = scratch("bypass");
    let p = |n: &str| format!("{}/{n}", dir.display());
    std::fs::write(p("secret"), "key").expect("secret");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let (pu, pt) = (udp.local_addr().expect("a").port(), tcp.local_addr().expect("a").port());
    // A `..` walk out of /usr/lib, a symlink and a /proc/self/fd alias opened for write, and a
    // command that only reads (its /dev/null write is noise).
    let script = format!(
        "{W} bypass {d} 127.0.0.1:{pu} 127.0.0.1:{pt}\n\
         cat /usr/lib/../..{d}/secret\n\
         ln -s {d}/real {d}/link\n\
         bash -c 'echo one > {d}/link'\n\
         bash -c 'exec 3>{d}/real2; echo two > /proc/self/fd/3'\n\
         bash -c 'cat {d}/secret > /dev/null'\n\
         exit 0\n",
        d = dir.display()
    );
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    let files = entries(&actions, "files");
    let net = entries(&actions, "net");

    // UDP sendto with a dirty fd register: the kernel used the low 32 bits, so do we.
    find(&net, &[("op", s("send")), ("addr", s("127.0.0.1")), ("port", Value::from(pu)), ("result", s("ok"))]);
    let raw_net = events(&d, &id, "net").await;
    let high = find(&raw_net, &[("syscall", s("sendto")), ("port", Value::from(pu))]);
    assert!(high["fd"].as_i64().expect("fd") >= 0 && high["fd"].as_i64().expect("fd") < 1024, "{high}");
    // TCP fast open: a connect, though connect() was never called.
    find(&net, &[("op", s("connect")), ("addr", s("127.0.0.1")), ("port", Value::from(pt)), ("result", s("ok"))]);
    let fo = find(&raw_net, &[("syscall", s("sendto")), ("port", Value::from(pt))]);
    assert_eq!((fo["op"].clone(), fo["fastopen"].clone()), (s("connect"), Value::from(true)));
    // fchmodat2(fd, "", mode, AT_EMPTY_PATH): the file behind the fd, and a write.
    let chmod = find(&files, &[("path", s(&p("mode"))), ("access", s("chmod")), ("result", s("ok"))]);
    assert_eq!(chmod["noise"], false);
    let raw_files = events(&d, &id, "file").await;
    let f2 = find(&raw_files, &[("syscall", s("fchmodat2"))]);
    assert_eq!(
        (f2["path"].clone(), f2["empty_path"].clone(), f2["perm"].clone()),
        (s(&p("mode")), Value::from(true), s("0600"))
    );
    let writers = json_lines(&d.cli(&["actions", "--json", "--session", &id, "--writes"]));
    assert!(writers.iter().any(|a| a["command"].as_str().is_some_and(|c| c.contains(" bypass "))), "{writers:#?}");
    // int 0x80 open: same event, flagged compat.
    find(&files, &[("path", s(&p("int80"))), ("access", s("create")), ("result", s("ok"))]);
    let i80 = find(&raw_files, &[("path", s(&p("int80")))]);
    assert_eq!((i80["syscall"].clone(), i80["compat"].clone()), (s("open"), Value::from(true)));
    // io_uring openat: submission with the kernel's copy of the path, completion with the
    // opened file, and a summary entry.
    let uring = events(&d, &id, "io_uring").await;
    let sub = find(&uring, &[("phase", s("submit")), ("op", s("openat"))]);
    assert_eq!((sub["path"].clone(), sub["user_data"].clone()), (s(&p("uring")), Value::from(42)));
    let done = find(&uring, &[("phase", s("complete")), ("op", s("openat")), ("req", sub["req"].clone())]);
    assert_eq!(
        (done["result"].clone(), done["path"].clone(), done["object_resolved"].clone()),
        (s("ok"), s(&p("uring")), Value::from(true))
    );
    find(&files, &[("path", s(&p("uring"))), ("access", s("create")), ("result", s("ok"))]);
    // A `..` walk out of /usr/lib is the file it reached, and not noise.
    let walk = find(&files, &[("path", s(&p("secret"))), ("access", s("read"))]);
    assert_eq!(walk["noise"], false);
    assert!(!files.iter().any(|f| f["path"].as_str().is_some_and(|x| x.contains(".."))), "{files:#?}");
    // Writes through a symlink and a /proc/self/fd alias are recorded under the real file.
    find(&files, &[("path", s(&p("real"))), ("access", s("create")), ("result", s("ok"))]);
    assert!(
        !files.iter().any(|f| f["path"] == p("link").as_str() && f["access"] == "create"),
        "the symlink is not what was written"
    );
    find(&files, &[("path", s(&p("real2"))), ("access", s("create")), ("result", s("ok"))]);
    assert!(!files.iter().any(|f| f["path"].as_str().is_some_and(|x| x.starts_with("/proc/self/fd"))), "{files:#?}");
    let alias = find(&raw_files, &[("path_arg", s("/proc/self/fd/3"))]);
    assert_eq!((alias["path"].clone(), alias["object_resolved"].clone()), (s(&p("real2")), Value::from(true)));
    // /dev/null and /dev/tty are noise: the read-only command does not match --writes.
    let reader = actions
        .iter()
        .find(|a| a["command"].as_str().is_some_and(|c| c.contains("> /dev/null")))
        .expect("reader action");
    assert!(reader["files"].as_array().expect("files").iter().any(|f| f["path"] == "/dev/null" && f["noise"] == true));
    assert!(!writers.iter().any(|w| w["id"] == reader["id"]), "a command that wrote nothing does not match --writes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_whose_sockaddr_is_rewritten_during_the_call_names_the_real_peer() {
    let d = Daemon::start("race", &[]).await;
    let dir = scratch("race");
    let a = TcpListener::bind("127.0.0.1:0").expect("a");
    let b = TcpListener::bind("127.0.0.1:0").expect("b");
    let (pa, pb) = (a.local_addr().expect("a").port(), b.local_addr().expect("b").port());
    let (id, out) = d.run_agent(
        "tester",
        &dir,
        &["bash", "-c", &format!("{W} connect-race 127.0.0.1:{pa} 127.0.0.1:{pb} 40; exit 0")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let real: Vec<u16> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(|p| p.parse().expect("port")).collect();
    assert!(!real.is_empty());
    d.wait_session_end(&id);
    let raw: Vec<Value> =
        events(&d, &id, "net").await.into_iter().filter(|e| e["syscall"] == "connect" && e["result"] == "ok").collect();
    let recorded: Vec<u16> = raw.iter().map(|e| e["port"].as_u64().expect("port") as u16).collect();
    assert_eq!(recorded, real, "each connect is recorded with the peer the kernel connected to");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tamper_and_handoff_kind_is_an_event_counted_on_the_session() {
    let d = Daemon::start("tamper", &[]).await;
    let dir = scratch("tamper");
    let outside = cgroup2_mount().join(format!("agentmon-test-outside-{}", std::process::id()));
    std::fs::create_dir_all(&outside).expect("outside cgroup");
    let mut victim = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().expect("victim");
    let state = d.state_dir.display().to_string();
    let script = format!(
        "kill -CONT {daemon}\n\
         {W} tamper {victim}\n\
         unshare -U true\n\
         perl -e '$p = \"/agentmon-not-mounted\"; syscall(166, $p, 0)'\n\
         echo x > {state}/tamper-probe\n\
         sh -c 'echo $$ > {outside}/cgroup.procs; exit 0'\n\
         exit 0\n",
        daemon = d.daemon_pid(),
        victim = victim.id(),
        outside = outside.display(),
    );
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let t = events(&d, &id, "tamper").await;
    let sig = find(&t, &[("tamper", s("signal_daemon"))]);
    assert_eq!(
        (sig["target_pid"].clone(), sig["detail"]["signal"].clone()),
        (Value::from(d.daemon_pid()), Value::from(libc::SIGCONT))
    );
    find(&t, &[("tamper", s("bpf")), ("syscall", s("bpf"))]);
    for syscall in ["ptrace", "pidfd_getfd", "process_vm_writev"] {
        let h = find(&t, &[("tamper", s("handoff")), ("syscall", s(syscall))]);
        assert_eq!(h["target_pid"], victim.id(), "{h}");
        assert!(h["target_exe"].as_str().is_some_and(|e| e.ends_with("/sleep")), "{h}");
        assert_eq!(h["target_uid"], 0, "{h}");
    }
    find(&t, &[("tamper", s("namespace")), ("syscall", s("unshare"))]);
    // umount2(2), whose x86-64 tracepoint is named after umount.
    find(&t, &[("tamper", s("namespace")), ("syscall", s("umount2"))]);
    find(&t, &[("tamper", s("protected_write")), ("path", s(&format!("{state}/tamper-probe")))]);
    find(&t, &[("tamper", s("cgroup_move")), ("path", s(&format!("{}/cgroup.procs", outside.display())))]);
    let session =
        json_lines(&d.cli(&["sessions", "--json"])).into_iter().find(|x| x["id"] == id.as_str()).expect("session");
    assert_eq!(session["tamper_events"], t.len());
    assert_eq!(session["incomplete"], false);
    let shown = d.cli(&["events", "--session", &id, "--kind", "tamper"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("tamper"), "{}", String::from_utf8_lossy(&shown.stdout));
    let _ = victim.kill();
    let _ = victim.wait();
    let _ = std::fs::remove_file(format!("{state}/tamper-probe"));
    let _ = std::fs::remove_dir(&outside);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_the_full_tracked_map_cannot_hold_marks_the_session_incomplete() {
    let d = Daemon::start("mapfull", &["--max-tracked-processes", "16"]).await;
    let dir = scratch("mapfull");
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", "for i in $(seq 40); do sleep 2 & done; wait; exit 0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end_within(&id, 60);
    let t = events(&d, &id, "tamper").await;
    let failed = find(&t, &[("tamper", s("track_failed"))]);
    assert!(failed["target_pid"].as_u64().is_some_and(|p| p > 0), "{failed}");
    let session =
        json_lines(&d.cli(&["sessions", "--json"])).into_iter().find(|x| x["id"] == id.as_str()).expect("session");
    assert_eq!(session["incomplete"], true);
    assert!(d.status()["track_failures"].as_u64().expect("track_failures") > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_pid_of_an_untagged_process_is_not_recorded() {
    let d = Daemon::start("pidreuse", &[]).await;
    let dir = scratch("pidreuse");
    // A tagged process that prints its pid and exits.
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", "sh -c 'echo $$'; exit 0"]);
    assert!(out.status.success());
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pid");
    d.wait_session_end(&id);
    // An untagged process reusing that pid (ns_last_pid makes the next fork take it).
    let mut reused = false;
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let o = Command::new("sh")
            .args(["-c", "echo $$; cat /etc/hostname > /dev/null; ls / > /dev/null"])
            .output()
            .expect("sh");
        if String::from_utf8_lossy(&o.stdout).trim() == pid.to_string() {
            reused = true;
            break;
        }
    }
    assert!(reused, "could not get pid {pid} reused");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let st = d.status();
    assert_eq!(st["unattributed"], 0, "no event of the untagged process reached the daemon: {st}");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT exec_id FROM events WHERE pid::bigint = $1")
        .bind(i64::from(pid))
        .fetch_all(&d.pool)
        .await
        .expect("events");
    assert_eq!(rows.len(), 1, "only the tagged process with that pid: {rows:?}");
}
