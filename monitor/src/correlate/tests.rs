//! Correlation on synthetic event sequences (no kernel, no root).

use super::*;
use crate::ebpf::decode::{Event, Exec, Header};
use crate::record::MAX_PRIOR_IMAGES;
use monitor_common::EventKind;

const CG: u64 = 7;
const TICK: u64 = 10_000_000;

fn clock() -> Clock {
    Clock { boot_unix_ns: 1_700_000_000_000_000_000, ns_per_tick: TICK, boot_tag: 0xabcd }
}

fn hdr(kind: EventKind, tgid: u32, pid: u32, start_ticks: u64, ts_ms: u64) -> Header {
    Header {
        kind,
        cpu: 0,
        ts_ns: ts_ms * 1_000_000,
        session_cgroup: CG,
        cgroup_id: CG,
        tgid,
        pid,
        start_ns: start_ticks * TICK,
    }
}

fn exec(tgid: u32, ppid: u32, start: u64, ts: u64, argv: &[&str]) -> Event {
    Event::Exec(Exec {
        hdr: hdr(EventKind::Exec, tgid, tgid, start, ts),
        ppid,
        uid: 1000,
        gid: 1000,
        filename: format!("/usr/bin/{}", argv[0]),
        filename_truncated: false,
        exe: None,
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        argv_truncated: false,
        argv_full_len: 0,
        cwd: Some("/work".into()),
        cwd_truncated: false,
        session_start: false,
    })
}

fn fork(parent: u32, pstart: u64, child: u32, cstart: u64, ts: u64) -> Event {
    Event::Fork {
        hdr: hdr(EventKind::Fork, parent, parent, pstart, ts),
        child_tgid: child,
        child_pid: child,
        child_start_ns: cstart * TICK,
        thread: false,
    }
}

fn thread(parent: u32, pstart: u64, tid: u32, ts: u64) -> Event {
    Event::Fork {
        hdr: hdr(EventKind::Fork, parent, parent, pstart, ts),
        child_tgid: parent,
        child_pid: tid,
        child_start_ns: pstart * TICK,
        thread: true,
    }
}

fn exit(tgid: u32, pid: u32, start: u64, ts: u64, status: u32, group_dead: bool) -> Event {
    Event::Exit { hdr: hdr(EventKind::Exit, tgid, pid, start, ts), status, group_dead }
}

fn session() -> (Correlator, Uuid) {
    let mut c = Correlator::new(clock());
    let id = Uuid::now_v7();
    c.start_session(SessionInfo {
        id,
        cgroup_id: CG,
        agent: "agent".into(),
        events_before: 0,
        actions_before: 0,
        cgroup: String::new(),
    });
    (c, id)
}

fn feed(c: &mut Correlator, events: &[Event]) -> Vec<Output> {
    // The kernel agrees at once here; the daemon asks the real one (`Probes::kernel_live`).
    events
        .iter()
        .flat_map(|e| {
            let mut o = c.handle(e);
            o.extend(c.end_idle_sessions(|_| true));
            o
        })
        .collect()
}

fn actions(out: &[Output]) -> Vec<&ActionRecord> {
    out.iter().filter_map(|o| if let Output::Action(a) = o { Some(a) } else { None }).collect()
}

fn session_end(out: &[Output]) -> Option<&SessionEnd> {
    out.iter().find_map(|o| if let Output::SessionEnd(e) = o { Some(e) } else { None })
}

#[test]
fn pipeline_is_one_action_with_its_subtree() {
    let (mut c, sid) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["bash", "-c", "git log | head"]),
            fork(101, 20, 102, 21, 202),
            fork(101, 20, 103, 21, 202),
            exec(102, 101, 21, 203, &["git", "log"]),
            exec(103, 101, 21, 203, &["head"]),
            exit(102, 102, 21, 250, 0, true),
            exit(103, 103, 21, 251, 0, true),
            exit(101, 101, 20, 260, 0x100, true),
        ],
    );
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    let a = a[0];
    assert_eq!(a.session_id, sid);
    assert_eq!(a.argv, ["bash", "-c", "git log | head"]);
    assert_eq!(a.command, "bash -c 'git log | head'");
    assert_eq!(a.exit_code, Some(1));
    assert_eq!(a.duration_ms, Some(60));
    assert_eq!(a.cwd.as_deref(), Some("/work"));
    assert!(a.complete);
    let argvs: Vec<_> = a.processes.iter().map(|p| p.argv.join(" ")).collect();
    assert_eq!(argvs, ["bash -c git log | head", "git log", "head"]);
    assert_eq!(a.processes[1].ppid, 101);
    // Every event was recorded raw, in order, attributed to the action after the fork.
    let evs: Vec<_> = out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect();
    assert_eq!(evs.len(), 10);
    assert!(evs.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(evs[0].action_id, None, "the agent's own exec belongs to no action");
    assert!(evs[1..].iter().all(|e| e.action_id == Some(a.id)));
    assert!(session_end(&out).is_none(), "the agent is still alive");
}

#[test]
fn exec_without_fork_keeps_earlier_images() {
    let (mut c, _) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["bash", "-c", "exec sleep 1"]),
            exec(101, 100, 20, 202, &["sleep", "1"]),
            exit(101, 101, 20, 1202, 0, true),
        ],
    );
    let a = actions(&out);
    assert_eq!(a[0].argv, ["bash", "-c", "exec sleep 1"], "the action is what the agent started");
    assert_eq!(a[0].processes.len(), 1);
    assert_eq!(a[0].processes[0].argv, ["sleep", "1"]);
    assert_eq!(a[0].processes[0].prior_argv, vec![vec!["bash", "-c", "exec sleep 1"]]);
}

#[test]
fn thread_exits_do_not_end_a_process() {
    let (mut c, _) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["node", "x.js"]),
            thread(101, 20, 105, 202),
            exit(101, 105, 20, 300, 0, false),
        ],
    );
    assert!(actions(&out).is_empty(), "a thread exit is not the process's exit");
    let out = feed(&mut c, &[exit(101, 101, 20, 400, 0, true)]);
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].duration_ms, Some(200));
    let kinds: Vec<_> =
        out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e.kind.as_str()) } else { None }).collect();
    assert_eq!(kinds, ["exit"]);
}

#[test]
fn pid_reuse_closes_the_old_process() {
    let (mut c, _) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["first"]),
            // The exit of 101 was lost; a new process gets pid 101 with a later start time.
            fork(100, 10, 101, 90, 900),
            exec(101, 100, 90, 901, &["second"]),
            exit(101, 101, 90, 950, 0, true),
        ],
    );
    let a = actions(&out);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].argv, ["first"]);
    assert_eq!(a[0].ended_at, None, "its exit was never seen");
    assert!(!a[0].complete);
    assert!(a[1].complete);
    assert_eq!(a[1].argv, ["second"]);
    assert_ne!(a[0].exec_id, a[1].exec_id);
    assert_eq!(a[1].exec_id, "0000abcd-101-90");
}

#[test]
fn signals_and_exit_codes_decode() {
    assert_eq!(wait_status(0x300), (Some(3), None));
    assert_eq!(wait_status(0xf), (None, Some(15)));
    assert_eq!(wait_status(0x89), (None, Some(9)), "core-dump bit ignored");
    assert_eq!(wait_status(0), (Some(0), None));
}

#[test]
fn session_ends_when_its_last_process_exits_and_flushes_nothing_twice() {
    let (mut c, sid) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent", "--go"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["bash", "-c", "sleep 5 &"]),
            fork(101, 20, 102, 21, 202),
            exit(101, 101, 20, 210, 0, true),
            exit(100, 100, 10, 300, 0, true),
        ],
    );
    assert!(actions(&out).is_empty(), "the background child is still running");
    assert!(session_end(&out).is_none());
    let out = feed(&mut c, &[exit(102, 102, 21, 5000, 0x900, true)]);
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].exit_code, Some(0), "the action's status is its own process's");
    assert_eq!(a[0].processes[1].exit_code, Some(9));
    let end = session_end(&out).expect("session ended");
    assert_eq!(end.session_id, sid);
    assert_eq!(end.root_pid, Some(100));
    assert_eq!(end.root_argv, ["agent", "--go"]);
    assert_eq!(end.actions, 1);
    assert_eq!(end.events, 7);
    assert!(c.live_sessions().is_empty());
    // Events for the ended session are unattributed, not misfiled.
    assert!(feed(&mut c, &[exec(100, 1, 10, 6000, &["late"])]).is_empty());
    assert_eq!(c.stats.unattributed, 1);
}

#[test]
fn ending_a_session_early_flushes_open_actions_as_incomplete() {
    let (mut c, _) = session();
    feed(
        &mut c,
        &[exec(100, 1, 10, 100, &["agent"]), fork(100, 10, 101, 20, 200), exec(101, 100, 20, 201, &["daemonish"])],
    );
    let out = c.end_session(CG, clock().wall(1_000_000_000));
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert!(!a[0].complete);
    assert_eq!(a[0].ended_at, None);
    assert!(
        out.iter().any(|o| matches!(o, Output::Process(p) if p.rec.pid == 100)),
        "the agent process row is written"
    );
    assert!(session_end(&out).is_some());
}

fn seed(tgid: u32, ppid: u32, start_ticks: u64, argv: &[&str]) -> SeedProcess {
    SeedProcess {
        tgid,
        ppid,
        start_ticks,
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        exe: String::new(),
        cwd: None,
        uid: Some(0),
    }
}

#[test]
fn seeded_processes_build_the_tree() {
    let (mut c, _) = session();
    // Given out of order: the oldest is the agent.
    c.seed(CG, vec![seed(201, 200, 30, &["make"]), seed(200, 1, 10, &["agent"]), seed(202, 201, 40, &["cc"])]);
    let live = c.live_sessions();
    assert_eq!(live[0].3, Some(200));
    assert_eq!(live[0].4, 3);
    let out = feed(&mut c, &[exit(202, 202, 40, 500, 0, true), exit(201, 201, 30, 600, 0, true)]);
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].argv, ["make"]);
    assert_eq!(a[0].processes.len(), 2);
}

#[test]
fn a_seeded_action_keeps_its_proc_argv_and_is_incomplete_while_a_seen_fork_is_complete() {
    let (mut c, _) = session();
    c.seed(CG, vec![seed(200, 1, 10, &["agent"]), seed(201, 200, 30, &["bash", "-c", "work; echo done"])]);
    // bash runs its last command with exec: the action is still the command line /proc gave.
    let out = feed(
        &mut c,
        &[
            exec(201, 200, 30, 400, &["echo", "done"]),
            exit(201, 201, 30, 500, 0, true),
            fork(200, 10, 300, 60, 600),
            exit(300, 300, 60, 700, 0, true),
        ],
    );
    let a = actions(&out);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].argv, ["bash", "-c", "work; echo done"]);
    assert!(!a[0].complete, "its start was not seen");
    assert!(a[1].complete, "its fork was seen");
}

#[test]
fn a_session_ends_only_once_the_kernel_agrees() {
    let (mut c, _) = session();
    let mut out = Vec::new();
    for e in [exec(200, 1, 10, 0, &["agent"]), exit(200, 200, 10, 100, 0, true)] {
        out.extend(c.handle(&e));
    }
    // The kernel still tracks a process of the session (say its fork was lost).
    out.extend(c.end_idle_sessions(|_| false));
    assert!(session_end(&out).is_none(), "no end while the kernel counts a live process");
    assert_eq!(c.idle_sessions(), 1);
    // That process shows up and exits; then the kernel agrees.
    {
        let e = exit(300, 300, 50, 900, 0, true);
        out.extend(c.handle(&e));
    }
    out.extend(c.end_idle_sessions(|_| true));
    let end = session_end(&out).expect("ended");
    assert_eq!(end.ended_at, clock().wall(900 * 1_000_000), "ended when its last process did");
    assert_eq!(c.idle_sessions(), 0);
}

#[test]
fn unknown_sessions_are_counted_not_stored() {
    let mut c = Correlator::new(clock());
    assert!(feed(&mut c, &[exec(1, 0, 1, 1, &["x"])]).is_empty());
    assert_eq!(c.stats.unattributed, 1);
}

fn file_event(tgid: u32, start: u64, ts: u64, path: &str, ret: i64) -> Event {
    use crate::ebpf::decode::{FileOp, PathArg};
    Event::File(FileOp {
        hdr: hdr(EventKind::File, tgid, tgid, start, ts),
        nr: monitor_common::nr::OPENAT,
        ret,
        args: [u64::MAX - 99, 0, 0o1101, 0o644, 0, 0],
        how_flags: 0,
        how_mode: 0,
        path1: Some(PathArg {
            given: path.into(),
            truncated: false,
            absolute: Some(path.into()),
            kernel: false,
            given_kernel: false,
        }),
        path2: None,
        fd_path: None,
        how_resolve: 0,
        object: None,
        empty_path: false,
        obj_flags: None,
        root_changed: false,
        received: None,
        compat: false,
    })
}

#[test]
fn opens_are_summarised_under_the_file_the_kernel_opened() {
    let (mut c, _) = session();
    let Event::File(mut f) = file_event(10, 1000, 1100, "/tmp/link-to-secret", 3) else { unreachable!() };
    f.object = Some("/home/u/.ssh/id_rsa".into());
    let out = feed(&mut c, &[Event::File(f)]);
    let ev = out
        .iter()
        .find_map(|o| match o {
            Output::Event(e) if e.kind == "file" => Some(e),
            _ => None,
        })
        .expect("file event");
    let data: serde_json::Value = serde_json::from_str(&ev.data).expect("json");
    assert_eq!(data["path"], "/home/u/.ssh/id_rsa");
    assert_eq!(data["path_arg"], "/tmp/link-to-secret");
    assert_eq!(data["object_resolved"], true);
}

#[test]
fn an_open_is_recorded_with_the_access_the_kernel_gave_not_the_flags_in_memory() {
    use super::resources::{file_accesses, kernel_open_flags};
    // openat2 whose `open_how` was rewritten to O_RDONLY during the call: the file itself was
    // opened O_WRONLY, and the given O_TRUNC|O_CREAT count since it is writable.
    let Event::File(mut f) = file_event(10, 1000, 1100, "/etc/cron.d/job", 3) else { unreachable!() };
    f.nr = monitor_common::nr::OPENAT2;
    f.how_flags = 0;
    f.obj_flags = Some(0o100_001);
    f.object = Some("/etc/cron.d/job".into());
    let (acc, data) = file_accesses(&f);
    assert_eq!(acc, [("/etc/cron.d/job".to_owned(), "write")]);
    assert_eq!((data["flags_given"].as_str(), data["flags"].as_str()), (Some("0o0"), Some("0o1")));
    assert_eq!(kernel_open_flags(0o1101, Some(0o100_001)), 0o1101, "create and truncate kept for a writable file");
    assert_eq!(kernel_open_flags(0o1101, Some(0o100_000)), 0, "a read-only file did not create or truncate");
    assert_eq!(kernel_open_flags(0o2, None), 0o2, "without the file, the given flags");
    // open_by_handle_at: no path argument, the file from the new fd.
    f.nr = monitor_common::nr::OPEN_BY_HANDLE_AT;
    f.path1 = None;
    f.args = [3, 0, 0o1, 0, 0, 0];
    let (acc, data) = file_accesses(&f);
    assert_eq!(acc, [("/etc/cron.d/job".to_owned(), "write")]);
    assert_eq!((data["syscall"].as_str(), data["by_handle"].as_bool()), (Some("open_by_handle_at"), Some(true)));
}

#[test]
fn noise_is_judged_on_resolved_paths() {
    use super::resources::is_noise;
    assert!(!is_noise("/usr/lib/../../home/u/.ssh/id_rsa", "read"), "a .. walk out of /usr/lib is not a library read");
    assert!(is_noise("/usr/lib/x86_64-linux-gnu/libc.so.6", "read"));
    assert!(is_noise("/dev/tty", "write") && is_noise("/dev/null", "write") && is_noise("/dev/pts/3", "write"));
    assert!(!is_noise("/dev/sda", "write") && !is_noise("/dev/pts/", "write"));
}

#[test]
fn connects_name_the_kernel_peer_and_fastopen_sends_are_connects() {
    use super::resources::{net_endpoint, net_op_of};
    use crate::ebpf::decode::NetOp;
    let ip = |s: &str, port| SockAddr::Inet { ip: s.parse().expect("ip"), port };
    let mut n = NetOp {
        hdr: hdr(EventKind::Net, 10, 10, 1000, 1100),
        nr: monitor_common::nr::CONNECT,
        ret: 0,
        fd: 3,
        sock_type: 1,
        addr: Some(ip("10.9.9.9", 9)),
        sock: Some((ip("127.0.0.1", 40000), ip("127.0.0.1", 8080))),
        payload: Vec::new(),
        compat: false,
        fastopen: false,
        addr_kernel: false,
        created: None,
        peer_path: None,
    };
    assert_eq!(net_endpoint(&n, None), Some(ip("127.0.0.1", 8080)), "the socket's peer, not the rewritten sockaddr");
    n.sock = Some((ip("0.0.0.0", 0), ip("0.0.0.0", 0)));
    assert_eq!(net_endpoint(&n, None), Some(ip("10.9.9.9", 9)), "no peer (failed connect): the given address");
    n.nr = monitor_common::nr::SENDTO;
    n.fastopen = true;
    assert_eq!(net_op_of(&n), "connect");
    n.sock_type = 2;
    assert_eq!(net_op_of(&n), "send");
}

#[test]
fn agent_accesses_go_to_the_session_and_action_accesses_to_the_action() {
    let (mut c, _) = session();
    let mut out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            file_event(100, 10, 110, "/work/notes.md", 3),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["touch", "x"]),
            file_event(101, 20, 202, "/work/x", 3),
            file_event(101, 20, 203, "/work/x", 3),
            file_event(101, 20, 204, "/root/secret", -13),
            exit(101, 101, 20, 210, 0, true),
        ],
    );
    out.extend(feed(&mut c, &[exit(100, 100, 10, 300, 0, true)]));
    let a = actions(&out);
    let files: Vec<_> =
        a[0].files.iter().map(|f| (f.path.as_str(), f.access.as_str(), f.result.as_str(), f.count)).collect();
    assert_eq!(
        files,
        [("/usr/bin/touch", "exec", "ok", 1), ("/work/x", "create", "ok", 2), ("/root/secret", "create", "EACCES", 1)]
    );
    let end = session_end(&out).expect("ended");
    let agent: Vec<_> = end.files.iter().map(|f| (f.path.as_str(), f.access.as_str())).collect();
    assert_eq!(agent, [("/usr/bin/agent", "exec"), ("/work/notes.md", "create")]);
}

#[test]
fn an_agent_that_dies_before_doing_anything_still_ends_its_session() {
    let (mut c, _) = session();
    let out = feed(&mut c, &[exit(100, 100, 10, 100, 9, true)]);
    let end = session_end(&out).expect("the session ended");
    assert_eq!(end.root_pid, Some(100));
    assert!(out.iter().any(|o| matches!(o, Output::Process(p) if p.rec.signal == Some(9))));
}

#[test]
fn a_reused_pid_seen_first_by_its_exit_does_not_inherit_the_old_process() {
    let (mut c, _) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["old"]),
            // 101's exit was lost; a different process 101 (start 90) exits.
            exit(101, 101, 90, 950, 0, true),
        ],
    );
    let a = actions(&out);
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0].argv, ["old"]);
    assert!(!a[0].complete && a[0].exit_code.is_none(), "the old process's exit is unknown");
    assert_eq!(a[1].exec_id, "0000abcd-101-90");
}

fn process_rows(out: &[Output]) -> Vec<&ProcessRow> {
    out.iter().filter_map(|o| if let Output::Process(p) = o { Some(p) } else { None }).collect()
}

#[test]
fn an_open_action_keeps_a_bounded_number_of_processes_and_hands_the_rest_on_at_once() {
    let (mut c, sid) = session();
    let n: u32 = 1000;
    let mut events = vec![
        exec(100, 1, 10, 100, &["agent"]),
        fork(100, 10, 101, 20, 200),
        exec(101, 100, 20, 201, &["sh", "-c", "for i in ...; do true; done"]),
    ];
    let big = "x".repeat(8000);
    for i in 0..n {
        let (pid, start, ts) = (1000 + i, 30 + u64::from(i), 300 + u64::from(i));
        events.push(fork(101, 20, pid, start, ts));
        events.push(exec(pid, 101, start, ts, &["true", &big, &i.to_string()]));
        events.push(exit(pid, pid, start, ts, 0, true));
    }
    let out = feed(&mut c, &events);
    // While the shell runs, the processes past the bound (by count or by argv bytes) have
    // come out as rows of their own, with the action's id, and no action yet.
    assert!(actions(&out).is_empty());
    let early = process_rows(&out);
    let mut kept = 0;
    let mut bytes = 0;
    for i in 0..n {
        let b = "true".len() + big.len() + i.to_string().len() + 3 * 24;
        if bytes + b > MAX_KEPT_ARGV_BYTES {
            break;
        }
        (kept, bytes) = (kept + 1, bytes + b);
    }
    assert!(kept < MAX_KEPT_PROCESSES, "bounded by argv bytes first (8 KiB each): {kept}");
    assert_eq!(early.len(), n as usize - kept);
    let aid = early[0].action_id.expect("the action's id");
    assert!(early.iter().all(|p| p.action_id == Some(aid) && p.session_id == sid));
    assert_eq!(early[0].rec.pid, 1000 + kept as u32, "the first past the bound");
    assert_eq!(early[0].rec.argv, ["true", big.as_str(), kept.to_string().as_str()]);
    assert_eq!((early[0].rec.exit_code, early[0].rec.ppid), (Some(0), 101));
    assert_eq!(c.stats.processes_early, u64::from(n) - kept as u64);
    // The shell ends: the action holds the kept processes and itself, and counts the others.
    let out = feed(&mut c, &[exit(101, 101, 20, 5000, 0, true)]);
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].id, a[0].processes.len()), (aid, kept + 1));
    assert_eq!(a[0].processes_early, u64::from(n) - kept as u64);
    assert!(process_rows(&out).is_empty());
    let mut pids: Vec<u32> = a[0].processes.iter().map(|p| p.pid).chain(early.iter().map(|p| p.rec.pid)).collect();
    pids.sort_unstable();
    let want: Vec<u32> = std::iter::once(101).chain(1000..1000 + n).collect();
    assert_eq!(pids, want, "every process once, in the action or on its own");
}

#[test]
fn small_processes_are_bounded_by_count() {
    let (mut c, _) = session();
    let mut events = vec![exec(100, 1, 10, 100, &["agent"]), fork(100, 10, 101, 20, 200)];
    for i in 0..300 {
        let (pid, start) = (1000 + i, 30 + u64::from(i));
        events.push(fork(101, 20, pid, start, 300));
        events.push(exit(pid, pid, start, 301, 0, true));
    }
    events.push(exit(101, 101, 20, 400, 0, true));
    let out = feed(&mut c, &events);
    assert_eq!(process_rows(&out).iter().filter(|p| p.action_id.is_some()).count(), 300 - MAX_KEPT_PROCESSES);
    let a = actions(&out);
    assert_eq!((a[0].processes.len(), a[0].processes_early), (MAX_KEPT_PROCESSES + 1, 300 - MAX_KEPT_PROCESSES as u64));
}

#[test]
fn a_process_keeps_its_first_earlier_images_and_counts_the_rest() {
    let (mut c, _) = session();
    let mut events = vec![exec(100, 1, 10, 100, &["agent"]), fork(100, 10, 101, 20, 200)];
    for i in 0..20 {
        events.push(exec(101, 100, 20, 201 + i, &["again", &i.to_string()]));
    }
    events.push(exit(101, 101, 20, 300, 0, true));
    let out = feed(&mut c, &events);
    let p = &actions(&out)[0].processes[0];
    assert_eq!(p.argv, ["again", "19"]);
    assert_eq!(p.prior_argv.len(), MAX_PRIOR_IMAGES);
    assert_eq!(p.prior_argv[0], ["again", "0"]);
    assert_eq!(p.prior_argv_omitted, 19 - MAX_PRIOR_IMAGES as u64);
}

/// An `openat(AT_FDCWD, path, flags)` returning `ret`.
fn open_event(tgid: u32, start: u64, ts: u64, path: &str, flags: u64, ret: i64) -> Event {
    let Event::File(mut f) = file_event(tgid, start, ts, path, ret) else { unreachable!() };
    f.args[2] = flags;
    Event::File(f)
}

const O_WRONLY_APPEND: u64 = 0o2001;

/// An agent (pid 100) whose one action (pid 101) does `work`, then ends.
fn one_action(work: Vec<Event>) -> (Uuid, Vec<Output>) {
    let (mut c, sid) = session();
    let mut events = vec![exec(100, 1, 10, 100, &["agent"]), fork(100, 10, 101, 20, 200)];
    events.push(exec(101, 100, 20, 201, &["sh", "-c", "work"]));
    events.extend(work);
    events.push(exit(101, 101, 20, 900_000, 0, true));
    (sid, feed(&mut c, &events))
}

/// The alerts the built-in rules raise on `out` (as the daemon's alert stage sees it).
fn alerts(sid: Uuid, out: &[Output]) -> Vec<crate::record::AlertRecord> {
    use crate::alerts::{AlertConfig, Engine, Rules};
    let mut e =
        Engine::new(Rules::new(&AlertConfig::default()).expect("rules"), crate::sensitive::Sensitive::default());
    e.session(sid, "agent");
    out.iter().flat_map(|o| e.observe(o)).collect()
}

/// What an alert says, without its ids and times.
fn alert_text(a: &crate::record::AlertRecord) -> (String, String, String, serde_json::Value) {
    (a.rule.clone(), a.severity.clone(), a.summary.clone(), a.details.clone())
}

fn of_rule<'a>(alerts: &'a [crate::record::AlertRecord], rule: &str) -> Vec<&'a crate::record::AlertRecord> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

fn events_of<'a>(out: &'a [Output], kind: &str) -> Vec<(&'a EventRecord, serde_json::Value)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) if e.kind == kind => Some((e, serde_json::from_str(&e.data).expect("json"))),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sensitive_write_after_a_flood_of_failed_opens_is_its_own_entry_and_alerts_as_alone() {
    let keys = "/home/u/.ssh/authorized_keys";
    let write = || open_event(101, 20, 800_000, keys, O_WRONLY_APPEND, 3);
    let (plain_sid, plain) = one_action(vec![write()]);
    let decoys = 10_000u64;
    let mut flood: Vec<Event> =
        (0..decoys).map(|i| open_event(101, 20, 300 + i, &format!("/decoy/{i}"), 0, -2)).collect();
    flood.push(write());
    let (flood_sid, flooded) = one_action(flood);
    for (sid, out) in [(plain_sid, &plain), (flood_sid, &flooded)] {
        let a = actions(out);
        let entry = a[0].files.iter().find(|f| f.path == keys).expect("the write is its own entry");
        assert_eq!((entry.access.as_str(), entry.result.as_str(), entry.sensitive), ("write", "ok", true));
        assert!(a[0].files.iter().all(|f| f.path == keys || !f.sensitive));
        let sensitive = of_rule(&alerts(sid, out), "sensitive_data").into_iter().map(alert_text).collect::<Vec<_>>();
        assert_eq!(sensitive.len(), 1, "{sensitive:?}");
    }
    let files = &actions(&flooded)[0].files;
    let other = files.iter().find(|f| f.path == resources::OTHER_PATHS).expect("the decoys past the cap");
    assert_eq!((other.access.as_str(), other.result.as_str(), other.sensitive), ("read", "ENOENT", false));
    // The exec and the first decoys fill the ordinary entries; the write would have been next.
    assert_eq!(other.count, decoys - (resources::MAX_DISTINCT as u64 - 1));
    let alert = |sid, out: &[Output]| of_rule(&alerts(sid, out), "sensitive_data").into_iter().map(alert_text).next();
    assert_eq!(alert(flood_sid, &flooded), alert(plain_sid, &plain), "the same alert as without the flood");
}

fn uring(tgid: u32, start: u64, ts: u64, complete: bool, opcode: u32, req: u64) -> crate::ebpf::decode::UringOp {
    crate::ebpf::decode::UringOp {
        hdr: hdr(EventKind::IoUring, tgid, tgid, start, ts),
        complete,
        opcode,
        req,
        user_data: req,
        res: 0,
        fd: -1,
        dfd: -100,
        open_flags: 0,
        path: None,
        path2: None,
        path2_absolute: None,
        addr: None,
        addr_kernel: false,
        object: None,
        fixed_slot: None,
    }
}

/// An `io_uring` request's submission and completion (result `res`); `object` is the opened
/// file at completion, or the fd's file at submission for a read or write.
fn uring_pair(opcode: u32, req: u64, path: Option<&str>, flags: u32, object: Option<&str>, res: i64) -> [Event; 2] {
    use crate::ebpf::decode::PathArg;
    let mut sub = uring(101, 20, 800_000, false, opcode, req);
    sub.path = path.map(|p| PathArg {
        given: p.into(),
        truncated: false,
        absolute: Some(p.into()),
        kernel: false,
        given_kernel: false,
    });
    sub.open_flags = flags;
    let mut done = uring(101, 20, 800_001, true, opcode, req);
    done.res = res;
    let fd_op = matches!(opcode, monitor_common::uring::READ | monitor_common::uring::WRITE);
    if fd_op {
        sub.object = object.map(Into::into);
    } else {
        done.object = object.map(Into::into);
    }
    [Event::IoUring(sub), Event::IoUring(done)]
}

/// The (path, access, result, sensitive) entries of an action's files, without its exec.
fn file_entries(a: &ActionRecord) -> Vec<(String, String, String, bool)> {
    a.files
        .iter()
        .filter(|f| f.access != "exec")
        .map(|f| (f.path.clone(), f.access.clone(), f.result.clone(), f.sensitive))
        .collect()
}

#[test]
fn an_io_uring_write_is_judged_as_the_same_write_through_open() {
    use monitor_common::uring;
    let keys = "/home/u/.ssh/authorized_keys";
    let (sid, syscall) = one_action(vec![open_event(101, 20, 800_000, keys, O_WRONLY_APPEND, 3)]);
    let want_files = file_entries(actions(&syscall)[0]);
    let want_alerts: Vec<_> = alerts(sid, &syscall).iter().map(alert_text).collect();
    assert!(want_alerts.iter().any(|a| a.0 == "sensitive_data"), "{want_alerts:?}");
    // IORING_OP_OPENAT with O_WRONLY|O_APPEND, then IORING_OP_WRITE on the fd it returned.
    let open = uring_pair(uring::OPENAT, 1, Some(keys), 0o2001, Some(keys), 5);
    let (sid, ring) = one_action(open.to_vec());
    assert_eq!(file_entries(actions(&ring)[0]), want_files, "the same summary entry");
    let got: Vec<_> = alerts(sid, &ring).iter().map(alert_text).collect();
    assert_eq!(got, want_alerts, "the same alerts");
    // A write on an fd whose file the submission names counts as a write of that file.
    let write = uring_pair(uring::WRITE, 2, None, 0, Some(keys), 12);
    let (sid, ring) = one_action(write.to_vec());
    assert_eq!(file_entries(actions(&ring)[0]), want_files);
    assert_eq!(alerts(sid, &ring).iter().map(alert_text).collect::<Vec<_>>(), want_alerts);
}

#[test]
fn every_io_uring_file_operation_goes_the_way_of_its_syscall() {
    use crate::ebpf::decode::{FileOp, PathArg};
    use monitor_common::{nr, uring};
    let arg = |p: &str| {
        Some(PathArg {
            given: p.into(),
            truncated: false,
            absolute: Some(p.into()),
            kernel: false,
            given_kernel: false,
        })
    };
    let syscall = |n: u64, p1: &str, p2: Option<&str>, ret: i64| {
        Event::File(FileOp {
            nr: n,
            path1: arg(p1),
            path2: p2.and_then(arg),
            ..match file_event(101, 20, 800_000, p1, ret) {
                Event::File(f) => f,
                _ => unreachable!(),
            }
        })
    };
    let pair = |op, p1: &str, p2: Option<&str>, res| {
        let [sub, done] = uring_pair(op, 9, Some(p1), 0, None, res);
        let Event::IoUring(mut sub) = sub else { unreachable!() };
        sub.path2 = p2.map(Into::into);
        vec![Event::IoUring(sub), done]
    };
    let cron = "/etc/cron.d/job";
    let keys = "/home/u/.ssh/authorized_keys";
    for (name, sys, ring) in [
        (
            "openat2",
            open_event(101, 20, 800_000, cron, 0o101, 3),
            uring_pair(uring::OPENAT2, 9, Some(cron), 0o101, Some(cron), 3).to_vec(),
        ),
        ("renameat", syscall(nr::RENAMEAT, "/tmp/k", Some(keys), 0), pair(uring::RENAMEAT, "/tmp/k", Some(keys), 0)),
        ("linkat", syscall(nr::LINKAT, "/tmp/k", Some(cron), 0), pair(uring::LINKAT, "/tmp/k", Some(cron), 0)),
        ("unlinkat", syscall(nr::UNLINKAT, keys, None, 0), pair(uring::UNLINKAT, keys, None, 0)),
        ("mkdirat", syscall(nr::MKDIRAT, "/etc/cron.d/x", None, -13), pair(uring::MKDIRAT, "/etc/cron.d/x", None, -13)),
        ("symlinkat", syscall(nr::SYMLINKAT, cron, None, 0), pair(uring::SYMLINKAT, cron, None, 0)),
    ] {
        let (sid, by_syscall) = one_action(vec![sys]);
        let (rsid, by_ring) = one_action(ring);
        let (want, got) = (file_entries(actions(&by_syscall)[0]), file_entries(actions(&by_ring)[0]));
        assert!(!want.is_empty(), "{name}");
        assert_eq!(got, want, "{name}: the summary");
        let text = |sid, out: &[Output]| alerts(sid, out).iter().map(alert_text).collect::<Vec<_>>();
        let want_alerts = text(sid, &by_syscall);
        assert!(!want_alerts.is_empty(), "{name}");
        assert_eq!(text(rsid, &by_ring), want_alerts, "{name}: the alerts");
        let tamper = |out: &[Output]| {
            events_of(out, "tamper")
                .into_iter()
                .map(|(_, d)| (d["tamper"].clone(), d["detail"].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(tamper(&by_ring), tamper(&by_syscall), "{name}: the tamper records");
    }
}

#[test]
fn a_protected_write_through_io_uring_is_tampering_as_through_open() {
    use monitor_common::uring;
    let (mut c, sid) = session();
    c.set_protected(vec!["/var/lib/agentmon".into()], Vec::new());
    let ring = uring_pair(uring::OPENAT, 1, Some("/var/lib/agentmon/x"), 0o1, Some("/var/lib/agentmon/x"), 4);
    let out = feed(&mut c, &[exec(100, 1, 10, 100, &["agent"]), ring[0].clone(), ring[1].clone()]);
    let t = events_of(&out, "tamper");
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].1["tamper"].as_str(), t[0].1["syscall"].as_str()), (Some("protected_write"), Some("openat")));
    assert_eq!(of_rule(&alerts(sid, &out), "tamper").len(), 1);
}

fn connect(tgid: u32, peer: SockAddr, local: Option<SockAddr>, sock_type: u32, ret: i64) -> Event {
    use crate::ebpf::decode::NetOp;
    let inet = matches!(peer, SockAddr::Inet { .. });
    Event::Net(NetOp {
        hdr: hdr(EventKind::Net, tgid, tgid, 20, 800_000),
        nr: monitor_common::nr::CONNECT,
        ret,
        fd: 3,
        sock_type,
        sock: local.map(|l| (l, if inet { peer.clone() } else { SockAddr::Unix { path: String::new() } })),
        addr: Some(peer),
        payload: Vec::new(),
        compat: false,
        fastopen: false,
        addr_kernel: false,
        created: None,
        peer_path: None,
    })
}

/// The hand-off records of `out`: (service, target pid, what was touched).
fn handoffs(out: &[Output]) -> Vec<(String, Option<u64>, String)> {
    events_of(out, "tamper")
        .into_iter()
        .filter(|(_, d)| d["tamper"] == "handoff")
        .map(|(_, d)| {
            let what = d["path"].as_str().or(d["addr"].as_str()).unwrap_or("").to_owned();
            (d["detail"]["service"].as_str().unwrap_or("").to_owned(), d["target_pid"].as_u64(), what)
        })
        .collect()
}

#[test]
fn connects_to_privileged_services_are_handoffs_stored_and_alerted_as_tamper_events() {
    let unix = |p: &str| SockAddr::Unix { path: p.into() };
    let ip = |s: &str, port| SockAddr::Inet { ip: s.parse().expect("ip"), port };
    let (sid, out) = one_action(vec![
        connect(101, unix("/run/dbus/system_bus_socket"), None, 1, 0),
        connect(101, unix("/run/systemd/private"), None, 1, -13),
        connect(101, unix("/run/systemd/io.systemd.Manager"), None, 1, 0),
        connect(101, unix("/var/run/docker.sock"), None, 1, 0),
        connect(101, unix("/run/containerd/containerd.sock"), None, 1, 0),
        connect(101, unix("/run/podman/podman.sock"), None, 1, 0),
        connect(101, ip("127.0.0.1", 22), Some(ip("127.0.0.1", 40000)), 1, 0),
        connect(101, ip("192.0.2.7", 22), Some(ip("192.0.2.7", 40001)), 1, 0),
        // Not hand-offs: the session bus, another host's ssh, a local datagram to port 22.
        connect(101, unix("/run/user/1000/bus"), None, 1, 0),
        connect(101, ip("192.0.2.8", 22), Some(ip("192.0.2.7", 40002)), 1, 0),
        connect(101, ip("127.0.0.1", 22), Some(ip("127.0.0.1", 40003)), 2, 0),
    ]);
    let got: Vec<(String, String)> = handoffs(&out).into_iter().map(|(s, _, w)| (s, w)).collect();
    let want = [
        ("dbus-system", "/run/dbus/system_bus_socket"),
        ("systemd", "/run/systemd/private"),
        ("systemd", "/run/systemd/io.systemd.Manager"),
        ("docker", "/var/run/docker.sock"),
        ("containerd", "/run/containerd/containerd.sock"),
        ("podman", "/run/podman/podman.sock"),
        ("ssh", "127.0.0.1"),
        ("ssh", "192.0.2.7"),
    ];
    assert_eq!(got, want.map(|(s, w)| (s.to_owned(), w.to_owned())));
    // Each follows its net event, is attributed to the action, and is stored as a tamper event.
    let evs: Vec<&EventRecord> =
        out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect();
    let aid = actions(&out)[0].id;
    for (i, e) in evs.iter().enumerate().filter(|(_, e)| e.kind == "tamper") {
        assert_eq!((evs[i - 1].kind.as_str(), e.action_id, e.pid), ("net", Some(aid), 101));
        assert_eq!(e.seq, evs[i - 1].seq + 1);
    }
    let (_, refused) = events_of(&out, "tamper").into_iter().nth(1).expect("the systemd one");
    assert_eq!((refused["result"].as_str(), refused["syscall"].as_str()), (Some("EACCES"), Some("connect")));
    let raised = alerts(sid, &out);
    let tamper = of_rule(&raised, "tamper");
    assert_eq!(tamper.len(), 1, "the first at once, the rest grouped");
    assert_eq!(tamper[0].details["tamper"], "handoff");
    // A refused hand-off is in the summary too (and, being flagged, never folded out of it).
    let net = &actions(&out)[0].net;
    assert!(net.iter().any(|n| n.addr.as_deref() == Some("/run/systemd/private") && n.result == "EACCES"));
}

#[test]
fn writes_to_cron_at_and_unit_directories_and_to_another_process_memory_are_handoffs() {
    let (_, out) = one_action(vec![
        open_event(101, 20, 800_000, "/etc/cron.d/job", 0o101, 3),
        open_event(101, 20, 800_000, "/var/spool/cron/crontabs/root", 0o1101, 3),
        open_event(101, 20, 800_000, "/var/spool/cron/atjobs/a0001", 0o101, 3),
        open_event(101, 20, 800_000, "/home/u/.config/systemd/user/job.service", 0o101, 3),
        open_event(101, 20, 800_000, "/etc/systemd/system/job.service", 0o101, -13),
        // Reads hand nothing over.
        open_event(101, 20, 800_000, "/etc/crontab", 0, 3),
        // Memory: of a process outside the session, of the agent (in it), of itself.
        open_event(101, 20, 800_000, "/proc/4242/mem", 0o2, 3),
        open_event(101, 20, 800_000, "/proc/100/task/100/mem", 0o2, 3),
        open_event(101, 20, 800_000, "/proc/101/mem", 0o2, 3),
    ]);
    let want = [
        ("cron", None, "/etc/cron.d/job"),
        ("cron", None, "/var/spool/cron/crontabs/root"),
        ("at", None, "/var/spool/cron/atjobs/a0001"),
        ("systemd", None, "/home/u/.config/systemd/user/job.service"),
        ("systemd", None, "/etc/systemd/system/job.service"),
        ("proc_mem", Some(4242), "/proc/4242/mem"),
    ];
    assert_eq!(handoffs(&out), want.map(|(s, p, w)| (s.to_owned(), p, w.to_owned())));
    let t = events_of(&out, "tamper");
    assert_eq!((t[0].1["access"].as_str(), t[0].1["syscall"].as_str()), (Some("create"), Some("openat")));
    assert_eq!(t[4].1["result"], "EACCES", "a refused attempt is recorded with its result");
}

#[test]
fn a_unix_connect_through_a_symlink_is_judged_by_the_socket_the_kernel_reached() {
    // fexit mode: the caller gave a relative symlink; the kernel's hook named the socket file.
    let mut ev = connect(101, SockAddr::Unix { path: "sock-link".into() }, None, 1, 0);
    if let Event::Net(n) = &mut ev {
        n.peer_path = Some("/run/docker.sock".into());
    }
    let (_, out) = one_action(vec![ev]);
    assert_eq!(handoffs(&out), [("docker".to_owned(), None, "/run/docker.sock".to_owned())]);
    let net = events_of(&out, "net");
    assert_eq!((net[0].1["addr"].as_str(), net[0].1["addr_kernel"].as_bool()), (Some("/run/docker.sock"), Some(true)));
    assert_eq!(net[0].1["addr_given"][0], "sock-link", "the name as given is kept: {}", net[0].1);
}

#[test]
fn an_io_uring_connect_to_a_service_socket_is_a_handoff_and_a_net_alert() {
    use monitor_common::uring;
    let [sub, done] = uring_pair(uring::CONNECT, 3, None, 0, None, 0);
    let Event::IoUring(mut sub) = sub else { unreachable!() };
    sub.addr = Some(SockAddr::Unix { path: "/run/docker.sock".into() });
    let (sid, out) = one_action(vec![Event::IoUring(sub), done]);
    assert_eq!(handoffs(&out), [("docker".to_owned(), None, "/run/docker.sock".to_owned())]);
    let got = alerts(sid, &out);
    assert_eq!(of_rule(&got, "tamper").len(), 1);
    assert_eq!(of_rule(&got, "sensitive_data").len(), 1, "the docker socket is sensitive, as through connect()");
    let net = &actions(&out)[0].net;
    assert_eq!((net[0].addr.as_deref(), net[0].sensitive), (Some("/run/docker.sock"), true));
}

#[test]
fn two_threads_both_reporting_the_exit_give_one_process_in_one_action() {
    // Threads exiting together can each see the thread group's live count at 0: the second
    // "process exited" must not bring the process back as a new one (a second row with the
    // same id, which the database would drop, leaving a hole in the chain).
    let (mut c, _) = session();
    let out = feed(
        &mut c,
        &[
            exec(100, 1, 10, 100, &["agent"]),
            fork(100, 10, 101, 20, 200),
            exec(101, 100, 20, 201, &["worker"]),
            thread(101, 20, 102, 202),
            exit(101, 102, 20, 250, 0, true),
            exit(101, 101, 20, 251, 0, true),
            exec(100, 1, 10, 300, &["agent"]),
        ],
    );
    let acts = actions(&out);
    assert_eq!(acts.len(), 1, "{acts:#?}");
    assert_eq!(acts[0].processes.iter().filter(|p| p.pid == 101).count(), 1);
    let rows = out.iter().filter(|o| matches!(o, Output::Process(p) if p.rec.pid == 101)).count();
    assert_eq!(rows, 0, "no second row for the process");
}
