//! Root integration tests for file and network capture: real programs in a tagged session,
//! stored records asserted field by field.

use std::{
    net::{TcpListener, UdpSocket},
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::Path,
    process::{Command, Stdio},
};

use integration_tests::{
    json_lines,
    records::{find, s},
    scratch, Daemon, Netns,
};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

/// The raw file/net events of an action, in order.
async fn events(d: &Daemon, action: &Value, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE action_id = $1::text::uuid AND kind = $2 ORDER BY seq")
        .bind(action["id"].as_str().expect("id"))
        .bind(kind)
        .fetch_all(&d.pool)
        .await
        .expect("events")
}

fn run_one_action(d: &Daemon, dir: &Path, script: &str) -> (String, Value) {
    let (id, out) = d.run_agent("tester", dir, &["bash", "-c", &format!("{script}; exit 0")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.wait_session_end(&id);
    let mut actions = d.actions(&id);
    assert_eq!(actions.len(), 1, "{actions:#?}");
    (id, actions.remove(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_file_syscall_family_succeeds_once_and_fails_once() {
    let d = Daemon::start("files", &[]).await;
    let dir = scratch("files");
    let p = |n: &str| format!("{}/{n}", dir.display());
    let (_, action) = run_one_action(&d, &dir, &format!("{W} files {}", dir.display()));
    let ev = events(&d, &action, "file").await;
    let expect: [(&str, &str); 25] = [
        ("open", "ENOENT"),
        ("openat", "ENOENT"),
        ("openat2", "ENOENT"),
        ("creat", "ENOENT"),
        ("unlink", "ENOENT"),
        ("unlinkat", "ENOENT"),
        ("mkdir", "EEXIST"),
        ("mkdirat", "EEXIST"),
        ("rmdir", "ENOENT"),
        ("rename", "ENOENT"),
        ("renameat", "ENOENT"),
        ("renameat2", "ENOENT"),
        ("link", "EEXIST"),
        ("linkat", "EEXIST"),
        ("symlink", "EEXIST"),
        ("symlinkat", "EEXIST"),
        ("chmod", "ENOENT"),
        ("fchmod", "EBADF"),
        ("fchmodat", "ENOENT"),
        ("chown", "ENOENT"),
        ("fchown", "EBADF"),
        ("lchown", "ENOENT"),
        ("fchownat", "ENOENT"),
        ("truncate", "ENOENT"),
        ("ftruncate", "EBADF"),
    ];
    for (syscall, errno) in expect {
        find(&ev, &[("syscall", s(syscall)), ("result", s("ok"))]);
        find(&ev, &[("syscall", s(syscall)), ("result", s(errno))]);
    }
    // Field by field, for each way a path is given.
    let open = find(&ev, &[("syscall", s("open")), ("result", s("ok")), ("path", s(&p("a")))]);
    assert_eq!(open["path_given"], p("a"));
    assert_eq!(open["mode"], serde_json::json!(["write", "create"]));
    assert_eq!(open["perm"], "0644");
    let cwd_rel = find(&ev, &[("syscall", s("openat")), ("result", s("ok")), ("path_given", s("b"))]);
    assert_eq!(cwd_rel["path"], p("b"), "relative to the changed cwd");
    assert_eq!(cwd_rel["mode"], serde_json::json!(["read-write", "create"]));
    let missing = find(&ev, &[("syscall", s("open")), ("result", s("ENOENT"))]);
    assert_eq!(missing["path"], p("missing/x"));
    let dirfd_rel = find(&ev, &[("syscall", s("openat2")), ("result", s("ok"))]);
    assert_eq!(dirfd_rel["path_given"], "c");
    assert_eq!(dirfd_rel["path"], p("c"), "relative to the dirfd");
    assert_eq!(dirfd_rel["perm"], "0600");
    let rename = find(&ev, &[("syscall", s("rename")), ("result", s("ok"))]);
    assert_eq!((&rename["path"], &rename["path2"]), (&s(&p("a")), &s(&p("m2/a2"))), "across directories");
    let renameat = find(&ev, &[("syscall", s("renameat")), ("result", s("ok"))]);
    assert_eq!((&renameat["path"], &renameat["path2"]), (&s(&p("b")), &s(&p("b2"))));
    let symlink = find(&ev, &[("syscall", s("symlinkat")), ("result", s("ok"))]);
    assert_eq!((&symlink["path"], &symlink["target"]), (&s(&p("s2")), &s("b3")));
    let fchmod = find(&ev, &[("syscall", s("fchmod")), ("result", s("ok"))]);
    assert_eq!((&fchmod["path"], &fchmod["perm"]), (&s(&p("b3")), &s("0640")), "fd resolved to its path");
    let chown = find(&ev, &[("syscall", s("fchownat")), ("result", s("ok"))]);
    assert_eq!((&chown["path"], &chown["uid"], &chown["gid"]), (&s(&p("b3")), &Value::from(0), &Value::from(0)));
    let trunc = find(&ev, &[("syscall", s("ftruncate")), ("result", s("ok"))]);
    assert_eq!((&trunc["path"], &trunc["length"]), (&s(&p("b3")), &Value::from(10)));
    let legacy = find(&ev, &[("syscall", s("open")), ("path_given", s("r"))]);
    assert_eq!(legacy["path"], p("r"), "a legacy call's relative path is resolved against the cwd");
    let legacy2 = find(&ev, &[("syscall", s("rename")), ("path_given", s("r"))]);
    assert_eq!((&legacy2["path"], &legacy2["path2"]), (&s(&p("r")), &s(&p("m2/r2"))));
    let long = find(&ev, &[("syscall", s("open")), ("result", s("ENAMETOOLONG"))]);
    assert_eq!(long["path_truncated"], true);
    assert_eq!(long["path_given"].as_str().expect("given").len(), 4095, "cut at the cap");
    let odd = find(&ev, &[("syscall", s("open")), ("path", s(&p("caf\\xe9")))]);
    assert_eq!(odd["result"], "ok", "a non-UTF-8 name is stored escaped, losslessly");
    let bad_fd = find(&ev, &[("syscall", s("fchmod")), ("result", s("EBADF"))]);
    assert!(bad_fd["path"].is_null() && bad_fd["resolved"] == false, "an unknown fd is not guessed: {bad_fd}");

    // The summary collapses identical accesses and keeps the rest apart.
    let files = action["files"].as_array().expect("files").clone();
    let entry = |path: &str, access: &str, result: &str| {
        find(&files, &[("path", s(path)), ("access", s(access)), ("result", s(result))])["count"].clone()
    };
    assert_eq!(entry(&p("a"), "rename_from", "ok"), 1);
    assert_eq!(entry(&p("m2/a2"), "rename_to", "ok"), 1);
    assert_eq!(entry(&p("d"), "delete", "ok"), 1);
    assert_eq!(entry(&p("d"), "delete", "ENOENT"), 1);
    assert_eq!(entry(&p("m1"), "mkdir", "ok"), 1);
    assert_eq!(entry(&p("m1"), "mkdir", "EEXIST"), 1);
    assert_eq!(entry(&p("b3"), "chmod", "ok"), 3, "chmod, fchmod and fchmodat");
    assert_eq!(entry(&p("b3"), "chown", "ok"), 3, "chown, fchown and fchownat");
    assert_eq!(entry(&p("s1"), "chown", "ok"), 1);
    assert_eq!(entry(&p("b3"), "truncate", "ok"), 2);
    assert_eq!(entry(&p("l1"), "link", "ok"), 1);
    assert_eq!(entry(W, "exec", "ok"), 1);
    // Filters.
    let by_path = json_lines(&d.cli(&["actions", "--json", "--path", &format!("{}/m2/*", dir.display())]));
    assert_eq!(by_path.len(), 1);
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--path", "/nowhere/*"])).len(), 0);
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--writes"])).len(), 1);
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--denied"])).len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn glibc_unlink_and_coreutils_rm_both_record_a_delete() {
    let d = Daemon::start("unlink", &[]).await;
    let dir = scratch("unlink");
    std::fs::write(dir.join("x"), "").expect("x");
    std::fs::write(dir.join("y"), "").expect("y");
    let (id, out) =
        d.run_agent("tester", &dir, &["bash", "-c", &format!("{W} unlink {0}/x; rm {0}/y; exit 0", dir.display())]);
    assert!(out.status.success());
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 2);
    for (a, name, syscall) in [(&actions[0], "x", "unlink"), (&actions[1], "y", "unlinkat")] {
        let path = format!("{}/{name}", dir.display());
        let files = a["files"].as_array().expect("files");
        assert_eq!(find(files, &[("path", s(&path)), ("access", s("delete"))])["result"], "ok");
        let ev = events(&d, a, "file").await;
        find(&ev, &[("syscall", s(syscall)), ("path", s(&path)), ("result", s("ok"))]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_writes_are_recorded_and_filterable() {
    let d = Daemon::start("deny", &[]).await;
    let dir = scratch("deny");
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).expect("ro");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (id, action) = run_one_action(&d, &dir, &format!("{W} deny {}", ro.display()));
    let files = action["files"].as_array().expect("files");
    let new = format!("{}/new", ro.display());
    assert_eq!(find(files, &[("path", s(&new)), ("access", s("create"))])["result"], "EACCES");
    assert_eq!(find(files, &[("path", s("/etc/shadow")), ("access", s("write"))])["result"], "EACCES");
    let ev = events(&d, &action, "file").await;
    let shadow = find(&ev, &[("path", s("/etc/shadow"))]);
    assert_eq!((&shadow["result"], &shadow["mode"]), (&s("EACCES"), &serde_json::json!(["write"])));
    let denied = json_lines(&d.cli(&["actions", "--json", "--session", &id, "--denied"]));
    assert_eq!(denied.len(), 1);
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--session", &id, "--writes"])).len(), 1);
    let shown = d.cli(&["show", action["id"].as_str().expect("id")]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("/etc/shadow") && text.contains("EACCES"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_sends_binds_and_accepts_record_their_endpoints() {
    let d = Daemon::start("net", &[]).await;
    let dir = scratch("net");
    let t4 = TcpListener::bind("127.0.0.1:0").expect("tcp4");
    let t6 = TcpListener::bind("[::1]:0").expect("tcp6");
    let sock = dir.join("sock");
    let _u = UnixListener::bind(&sock).expect("unix");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let (p4, p6, pu) =
        (t4.local_addr().expect("a").port(), t6.local_addr().expect("a").port(), udp.local_addr().expect("a").port());
    let (id, out) = d.run_agent(
        "tester",
        &dir,
        &["bash", "-c", &format!("{W} net 127.0.0.1:{p4} [::1]:{p6} {} 127.0.0.1:{pu}; exit 0", sock.display())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ports = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (listen_port, peer_port) = ports.split_once(' ').expect("ports");
    let (listen_port, peer_port): (u16, u16) = (listen_port.parse().expect("p"), peer_port.parse().expect("p"));
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 1);
    let net = actions[0]["net"].as_array().expect("net");
    let has = |op: &str, family: &str, addr: &str, port: Option<u16>, result: &str| {
        find(
            net,
            &[
                ("op", s(op)),
                ("family", s(family)),
                ("addr", s(addr)),
                ("port", port.map_or(Value::Null, Value::from)),
                ("result", s(result)),
            ],
        );
    };
    has("connect", "ipv4", "127.0.0.1", Some(p4), "ok");
    let v4 = find(net, &[("op", s("connect")), ("addr", s("127.0.0.1")), ("port", Value::from(p4))]);
    assert_eq!(v4["count"], 2, "the v4-mapped IPv6 connect is shown as IPv4");
    has("connect", "ipv6", "::1", Some(p6), "ok");
    has("connect", "unix", sock.to_str().expect("path"), None, "ok");
    has("connect", "unix", "@agentmon-abstract-test", None, "ECONNREFUSED");
    has("connect", "ipv4", "127.0.0.1", Some(1), "ECONNREFUSED");
    has("send", "ipv4", "127.0.0.1", Some(pu), "ok");
    has("bind", "ipv4", "127.0.0.1", Some(0), "ok");
    has("listen", "ipv4", "127.0.0.1", Some(listen_port), "ok");
    has("accept", "ipv4", "127.0.0.1", Some(peer_port), "ok");
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--port", &p6.to_string()])).len(), 1);
    // Every network family also fails once, and the raw events carry the errno.
    let ev = events(&d, &actions[0], "net").await;
    for (syscall, result) in [
        ("sendto", "EINVAL"),
        ("sendmsg", "ok"),
        ("sendmsg", "EINVAL"),
        ("listen", "EOPNOTSUPP"),
        ("bind", "EADDRINUSE"),
        ("accept", "EINVAL"),
        ("accept", "ok"),
        ("accept4", "ok"),
    ] {
        find(&ev, &[("syscall", s(syscall)), ("result", s(result))]);
    }
    // A bind's address is the kernel's copy (the cgroup bind4 hook), the refused one's too.
    for result in ["ok", "EADDRINUSE"] {
        find(
            &ev,
            &[
                ("syscall", s("bind")),
                ("result", s(result)),
                ("addr", s("127.0.0.1")),
                ("addr_kernel", Value::from(true)),
            ],
        );
    }
    let plain_accept = find(&ev, &[("syscall", s("accept")), ("result", s("ok"))]);
    assert_eq!(plain_accept["addr"], "127.0.0.1", "without an address argument the peer comes from the socket");
    has("send", "ipv4", "127.0.0.1", Some(pu), "ok");
    let mut buf = [0u8; 32];
    let (n, _) = udp.recv_from(&mut buf).expect("the UDP datagram arrived");
    assert_eq!(&buf[..n], b"agentmon-udp");
    let (n, _) = udp.recv_from(&mut buf).expect("the sendmsg datagram arrived");
    assert_eq!(&buf[..n], b"agentmon-msg");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_lookup_names_the_following_connect() {
    let ns = Netns::with_resolver(&format!("agentmon-dns-{}", std::process::id()));
    let d = Daemon::start("dns", &["--resolv-conf", &ns.resolv_conf()]).await;
    let dir = scratch("dns");
    let spawn = |args: &[&str]| {
        Command::new("ip").args(["netns", "exec", &ns.0, W]).args(args).stdout(Stdio::null()).spawn().expect("server")
    };
    let mut dns = spawn(&["dns-server", "20"]);
    let mut tcp = spawn(&["tcp-server", "127.0.0.2:8080", "20"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(integration_tests::bin())
        .args(["run", "--agent", "dns", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "bash", "-c", &format!("{W} resolve svc.agentmon.test 8080; exit 0")])
        .current_dir(&dir)
        .output()
        .expect("run");
    let _ = dns.kill();
    let _ = tcp.kill();
    let _ = (dns.wait(), tcp.wait());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.2");
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session").trim().to_owned();
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 1);
    let net = actions[0]["net"].as_array().expect("net");
    let query = find(net, &[("op", s("send")), ("port", Value::from(53))]);
    assert_eq!((&query["addr"], &query["result"]), (&s("127.0.0.1"), &s("ok")));
    let conn = find(net, &[("op", s("connect")), ("port", Value::from(8080))]);
    assert_eq!(conn["addr"], "127.0.0.2");
    assert_eq!(conn["host"], "svc.agentmon.test", "the connect is annotated with the looked-up name");
    assert_eq!(conn["result"], "ok");
    let ev = events(&d, &actions[0], "net").await;
    let q = ev.iter().find(|e| e["dns"]["queries"] == serde_json::json!(["svc.agentmon.test"])).expect("query parsed");
    assert_eq!(q["op"], "send");
    assert!(ev.iter().any(|e| e["op"] == "recv" && e["dns"]["answers"][0]["addr"] == "127.0.0.2"), "{ev:#?}");
    assert_eq!(json_lines(&d.cli(&["actions", "--json", "--host", "svc.agentmon.test"])).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_agent_itself_touches_is_on_the_session() {
    let d = Daemon::start("own", &[]).await;
    let dir = scratch("own");
    let file = format!("{}/own.txt", dir.display());
    let (id, out) = d.run_agent("tester", &dir, &[W, "write", &file]);
    assert!(out.status.success());
    let session = d.wait_session_end(&id);
    assert_eq!(d.actions(&id).len(), 0, "no action: the agent wrote the file itself");
    let files = session["files"].as_array().expect("files");
    assert_eq!(find(files, &[("path", s(&file)), ("access", s("create"))])["result"], "ok");
    let noise = files.iter().filter(|f| f["noise"] == true).count();
    assert!(noise > 0, "the loader's library reads are stored and marked: {files:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_identical_opens_are_one_entry_and_a_thousand_events() {
    let d = Daemon::start("thousand", &[]).await;
    let dir = scratch("thousand");
    let f = dir.join("f");
    std::fs::write(&f, "x").expect("f");
    let fp = f.to_str().expect("path");
    let (_, action) = run_one_action(&d, &dir, &format!("{W} open-loop {fp} 1000"));
    let files = action["files"].as_array().expect("files");
    let matching: Vec<&Value> = files.iter().filter(|e| e["path"] == fp).collect();
    assert_eq!(matching.len(), 1, "{matching:#?}");
    assert_eq!(
        (&matching[0]["access"], &matching[0]["result"], &matching[0]["count"]),
        (&s("read"), &s("ok"), &Value::from(1000))
    );
    let raw: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE action_id = $1::text::uuid AND kind = 'file' AND data->>'path' = $2",
    )
    .bind(action["id"].as_str().expect("id"))
    .bind(fp)
    .fetch_one(&d.pool)
    .await
    .expect("count");
    assert_eq!(raw, 1000);
    let st = json_lines(&d.cli(&["status", "--json"]));
    assert_eq!(st[0]["events_dropped"], 0);
    // The raw timeline command shows them.
    let ev = json_lines(&d.cli(&[
        "events",
        "--json",
        "--session",
        action["session_id"].as_str().expect("sid"),
        "--kind",
        "file",
    ]));
    assert!(ev.len() >= 1000 && ev.iter().all(|e| e["kind"] == "file"));
}
