//! Workloads for the resource integration tests. Each issues exact syscalls (raw `syscall(2)`
//! where glibc would pick a different one), so the test knows what the kernel must have seen.
//!
//! `files DIR`          every file syscall family, once succeeding and once failing
//! `deny DIR`           as uid 65534: a write-open in a read-only dir and of /etc/shadow (EACCES)
//! `unlink PATH`        glibc `unlink()`
//! `open-loop PATH N`   open+close PATH N times
//! `write PATH`         create and write PATH
//! `net TCP4 TCP6 UNIX UDP4`  connect to those listeners, a refused connect, a UDP send, and a
//!                      bind/listen/accept on loopback
//! `resolve NAME PORT`  glibc getaddrinfo (IPv4) then a TCP connect to the answer
//! `dns-server SECS`    answer every A query on 127.0.0.1:53 with 127.0.0.2, for SECS seconds
//! `forged-dns FROM NAME IP PORT` receive a DNS response for NAME -> IP that nobody asked for,
//!                      sent from FROM (an address with port 53), then TCP connect to IP:PORT
//! `own-resolver SERVER NAME IP PORT` a DNS responder of its own on SERVER answers its own
//!                      query for NAME with IP, then TCP connect to IP:PORT
//! `tcp-server ADDR SECS` accept connections on ADDR for SECS seconds
//! `bypass DIR UDP TCP`  the evasions of issue 8: a UDP sendto whose fd register has its upper
//!                      32 bits set, a TCP fast-open sendto without connect, fchmodat2 with
//!                      `AT_EMPTY_PATH` on an `O_PATH` fd of DIR/mode, an `int 0x80` open of
//!                      DIR/int80 and an `io_uring` openat of DIR/uring
//! `connect-race A B N` N connects to A while a second thread keeps rewriting the sockaddr to B;
//!                      prints each connection's real peer port
//! `fork-escape CG PROG ARGS...` fork at once; the child moves itself into cgroup CG and
//!                      execs PROG ARGS; the parent waits for it and writes a file of its own
//!                      (PROG's last argument + ".parent")
//! `tamper PID`         `bpf()`, ptrace attach/detach of PID (outside the session), `pidfd_getfd`
//!                      on it, and `process_vm_writev` to it (harmless: zero bytes)
//! `connect-many N`     N UDP connects, each from a new socket, to N distinct addresses of
//!                      198.18.0.0/15 (port 9; a UDP connect sends nothing); prints each result
//!                      with its count (`ok 16000`, or `errno 101 16000` without a route)
//! `hold-control SOCK N`  open N connections to the control socket SOCK and send nothing; print
//!                      `held H refused R` and the first refusal line; keep the held ones open
//!                      (opening again whichever the daemon closes) until stdin is closed
//!
//! Attacks that hide from monitoring of syscall arguments (each prints one line; exit 101 on
//! failure):
//! `handle-open DIR`    write DIR/handle-target via `name_to_handle_at` + `open_by_handle_at`;
//!                      prints the fd
//! `fexecve PROG ARGS...` `execveat(fd of PROG, "", AT_EMPTY_PATH)`; PROG's own output
//! `execveat-dir DIR NAME ARGS...` `execveat(O_PATH fd of DIR, NAME)`; NAME's own output

use std::{
    ffi::CString,
    io::Write as _,
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// A raw syscall returning the result or -errno.
macro_rules! sys {
    ($nr:expr $(, $a:expr)*) => {{
        // SAFETY: test workload; arguments are valid pointers or plain integers.
        let r = unsafe { libc::syscall($nr $(, $a)*) };
        if r < 0 { -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { r }
    }};
}

/// `struct open_how` for openat2.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Run a syscall expecting success, then one expecting `errno`.
fn pair(name: &str, ok: i64, fail: i64, errno: i32) {
    assert!(ok >= 0, "{name} should succeed, got {ok}");
    assert_eq!(fail, -i64::from(errno), "{name} should fail with errno {errno}");
}

fn files(dir: &str) {
    use libc::{SYS_close, SYS_open, SYS_rename, ENAMETOOLONG, O_CREAT, O_DIRECTORY, O_RDONLY, O_WRONLY};
    let dirfd = sys!(SYS_open, c(dir).as_ptr(), O_RDONLY | O_DIRECTORY) as i32;
    assert!(dirfd >= 0);
    files_open(dir, dirfd);
    files_names(dir, dirfd);
    files_attributes(dir, dirfd);
    // Legacy (non-*at) calls with cwd-relative paths, one and two of them.
    let fd = sys!(SYS_open, c("r").as_ptr(), O_CREAT | O_WRONLY, 0o644);
    assert!(fd >= 0);
    sys!(SYS_close, fd);
    assert_eq!(sys!(SYS_rename, c("r").as_ptr(), c("m2/r2").as_ptr()), 0);
    // A path longer than PATH_MAX, and a name that is not UTF-8.
    let long = c(&format!("{dir}/{}", "L".repeat(5000)));
    assert_eq!(sys!(SYS_open, long.as_ptr(), O_RDONLY), -i64::from(ENAMETOOLONG));
    let mut odd = format!("{dir}/caf").into_bytes();
    odd.push(0xe9);
    let odd = CString::new(odd).expect("no NUL");
    let fd = sys!(SYS_open, odd.as_ptr(), O_CREAT | O_WRONLY, 0o644);
    assert!(fd >= 0);
    sys!(SYS_close, fd);
}

/// The open family; leaves the cwd in `dir`.
fn files_open(dir: &str, dirfd: i32) {
    use libc::{
        SYS_chdir, SYS_close, SYS_creat, SYS_open, SYS_openat, SYS_openat2, AT_FDCWD, ENOENT, O_CREAT, O_RDONLY,
        O_RDWR, O_WRONLY,
    };
    let p = |n: &str| c(&format!("{dir}/{n}"));
    // open / openat (dirfd and changed cwd) / openat2 / creat
    let fd = sys!(SYS_open, p("a").as_ptr(), O_CREAT | O_WRONLY, 0o644);
    pair("open", fd, sys!(SYS_open, p("missing/x").as_ptr(), O_RDONLY), ENOENT);
    sys!(SYS_close, fd);
    assert_eq!(sys!(SYS_chdir, p("").as_ptr()), 0);
    let fd = sys!(SYS_openat, AT_FDCWD, c("b").as_ptr(), O_CREAT | O_RDWR, 0o644);
    pair("openat cwd", fd, sys!(SYS_openat, AT_FDCWD, c("nope/x").as_ptr(), O_RDONLY), ENOENT);
    sys!(SYS_close, fd);
    let how = OpenHow { flags: (O_CREAT | O_WRONLY) as u64, mode: 0o600, resolve: 0 };
    let bad = OpenHow { flags: O_RDONLY as u64, mode: 0, resolve: 0 };
    let sz = std::mem::size_of::<OpenHow>();
    let fd = sys!(SYS_openat2, dirfd, c("c").as_ptr(), &raw const how, sz);
    pair("openat2", fd, sys!(SYS_openat2, dirfd, c("nope/c").as_ptr(), &raw const bad, sz), ENOENT);
    sys!(SYS_close, fd);
    let fd = sys!(SYS_creat, p("d").as_ptr(), 0o644);
    pair("creat", fd, sys!(SYS_creat, p("nodir/d").as_ptr(), 0o644), ENOENT);
    sys!(SYS_close, fd);
}

/// Delete, mkdir, rename and link.
fn files_names(dir: &str, dirfd: i32) {
    use libc::{
        SYS_link, SYS_linkat, SYS_mkdir, SYS_mkdirat, SYS_rename, SYS_renameat, SYS_renameat2, SYS_rmdir, SYS_symlink,
        SYS_symlinkat, SYS_unlink, SYS_unlinkat, EEXIST, ENOENT,
    };
    let p = |n: &str| c(&format!("{dir}/{n}"));
    // delete
    pair("unlink", sys!(SYS_unlink, p("d").as_ptr()), sys!(SYS_unlink, p("d").as_ptr()), ENOENT);
    pair(
        "unlinkat",
        sys!(SYS_unlinkat, dirfd, c("c").as_ptr(), 0),
        sys!(SYS_unlinkat, dirfd, c("c").as_ptr(), 0),
        ENOENT,
    );
    pair("mkdir", sys!(SYS_mkdir, p("m1").as_ptr(), 0o755), sys!(SYS_mkdir, p("m1").as_ptr(), 0o755), EEXIST);
    pair(
        "mkdirat",
        sys!(SYS_mkdirat, dirfd, c("m2").as_ptr(), 0o700),
        sys!(SYS_mkdirat, dirfd, c("m2").as_ptr(), 0o700),
        EEXIST,
    );
    pair("rmdir", sys!(SYS_rmdir, p("m1").as_ptr()), sys!(SYS_rmdir, p("m1").as_ptr()), ENOENT);
    // rename, across directories
    pair(
        "rename",
        sys!(SYS_rename, p("a").as_ptr(), p("m2/a2").as_ptr()),
        sys!(SYS_rename, p("zz").as_ptr(), p("m2/zz").as_ptr()),
        ENOENT,
    );
    pair(
        "renameat",
        sys!(SYS_renameat, dirfd, c("b").as_ptr(), dirfd, c("b2").as_ptr()),
        sys!(SYS_renameat, dirfd, c("b").as_ptr(), dirfd, c("b2").as_ptr()),
        ENOENT,
    );
    pair(
        "renameat2",
        sys!(SYS_renameat2, dirfd, c("b2").as_ptr(), dirfd, c("b3").as_ptr(), 0),
        sys!(SYS_renameat2, dirfd, c("b2").as_ptr(), dirfd, c("b3").as_ptr(), 0),
        ENOENT,
    );
    // links
    pair(
        "link",
        sys!(SYS_link, p("b3").as_ptr(), p("l1").as_ptr()),
        sys!(SYS_link, p("b3").as_ptr(), p("l1").as_ptr()),
        EEXIST,
    );
    pair(
        "linkat",
        sys!(SYS_linkat, dirfd, c("b3").as_ptr(), dirfd, c("l2").as_ptr(), 0),
        sys!(SYS_linkat, dirfd, c("b3").as_ptr(), dirfd, c("l2").as_ptr(), 0),
        EEXIST,
    );
    pair(
        "symlink",
        sys!(SYS_symlink, c("b3").as_ptr(), p("s1").as_ptr()),
        sys!(SYS_symlink, c("b3").as_ptr(), p("s1").as_ptr()),
        EEXIST,
    );
    pair(
        "symlinkat",
        sys!(SYS_symlinkat, c("b3").as_ptr(), dirfd, c("s2").as_ptr()),
        sys!(SYS_symlinkat, c("b3").as_ptr(), dirfd, c("s2").as_ptr()),
        EEXIST,
    );
}

/// chmod, chown and truncate, by path and by fd.
fn files_attributes(dir: &str, dirfd: i32) {
    use libc::{
        SYS_chmod, SYS_chown, SYS_close, SYS_fchmod, SYS_fchmodat, SYS_fchown, SYS_fchownat, SYS_ftruncate, SYS_lchown,
        SYS_open, SYS_truncate, EBADF, ENOENT, O_RDWR,
    };
    let p = |n: &str| c(&format!("{dir}/{n}"));
    // chmod
    let fd = sys!(SYS_open, p("b3").as_ptr(), O_RDWR);
    pair("chmod", sys!(SYS_chmod, p("b3").as_ptr(), 0o600), sys!(SYS_chmod, p("zz").as_ptr(), 0o600), ENOENT);
    pair("fchmod", sys!(SYS_fchmod, fd, 0o640), sys!(SYS_fchmod, 999, 0o640), EBADF);
    pair(
        "fchmodat",
        sys!(SYS_fchmodat, dirfd, c("b3").as_ptr(), 0o644),
        sys!(SYS_fchmodat, dirfd, c("zz").as_ptr(), 0o644),
        ENOENT,
    );
    // chown
    pair("chown", sys!(SYS_chown, p("b3").as_ptr(), 0, 0), sys!(SYS_chown, p("zz").as_ptr(), 0, 0), ENOENT);
    pair("fchown", sys!(SYS_fchown, fd, 0, 0), sys!(SYS_fchown, 999, 0, 0), EBADF);
    pair("lchown", sys!(SYS_lchown, p("s1").as_ptr(), 0, 0), sys!(SYS_lchown, p("zz").as_ptr(), 0, 0), ENOENT);
    pair(
        "fchownat",
        sys!(SYS_fchownat, dirfd, c("b3").as_ptr(), 0, 0, 0),
        sys!(SYS_fchownat, dirfd, c("zz").as_ptr(), 0, 0, 0),
        ENOENT,
    );
    // truncate
    pair("truncate", sys!(SYS_truncate, p("b3").as_ptr(), 0), sys!(SYS_truncate, p("zz").as_ptr(), 0), ENOENT);
    pair("ftruncate", sys!(SYS_ftruncate, fd, 10), sys!(SYS_ftruncate, 999, 10), EBADF);
    sys!(SYS_close, fd);
}

fn deny(dir: &str) {
    // SAFETY: dropping privileges in this single-threaded process.
    assert_eq!(unsafe { libc::setgid(65534) }, 0);
    assert_eq!(unsafe { libc::setuid(65534) }, 0);
    let r = sys!(libc::SYS_open, c(&format!("{dir}/new")).as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
    assert_eq!(r, -i64::from(libc::EACCES));
    let r = sys!(libc::SYS_open, c("/etc/shadow").as_ptr(), libc::O_WRONLY);
    assert_eq!(r, -i64::from(libc::EACCES));
}

fn net(tcp4: &str, tcp6: &str, unix: &str, udp4: &str) {
    drop(TcpStream::connect(tcp4).expect("tcp4 connect"));
    drop(TcpStream::connect(tcp6).expect("tcp6 connect"));
    // The IPv4 listener again, through an IPv6 socket and a v4-mapped address.
    let mapped = tcp4.replace("127.0.0.1", "[::ffff:127.0.0.1]");
    drop(TcpStream::connect(mapped.as_str()).expect("v4-mapped connect"));
    drop(UnixStream::connect(unix).expect("unix connect"));
    // SAFETY: socket/connect with a valid abstract sockaddr_un; the failure is the point.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        a.sun_family = libc::AF_UNIX as u16;
        for (i, b) in b"\0agentmon-abstract-test".iter().enumerate() {
            a.sun_path[i] = *b as libc::c_char;
        }
        let r = libc::connect(s, (&raw const a).cast(), (2 + 23) as u32);
        assert!(r < 0, "nobody listens on the abstract name");
        libc::close(s);
    }
    let refused = TcpStream::connect("127.0.0.1:1").expect_err("port 1 refuses");
    assert_eq!(refused.raw_os_error(), Some(libc::ECONNREFUSED));
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    udp.send_to(b"agentmon-udp", udp4).expect("udp send");
    net_failures(&udp, udp4);
    // bind, listen and accept on our own loopback port.
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || TcpStream::connect(addr).expect("self connect"));
    let (_s, peer) = l.accept().expect("accept");
    drop(t.join());
    println!("{} {}", addr.port(), peer.port());
}

/// The failing half of each network family, plus sendmsg and a plain accept that succeed.
fn net_failures(udp: &UdpSocket, udp4: &str) {
    use std::os::fd::AsRawFd as _;
    let target: std::net::SocketAddrV4 = udp4.parse().expect("udp4 addr");
    let sin = |a: &std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let sinlen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    let fd = udp.as_raw_fd();
    // SAFETY: plain syscalls on our own sockets with valid buffers.
    unsafe {
        // sendto: port 0 is not a destination.
        let zero = sin(&"127.0.0.1:0".parse().expect("addr"));
        let r = libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, (&raw const zero).cast(), sinlen);
        assert!(r < 0, "sendto port 0 fails");
        // sendmsg: once to the listener, once to port 0.
        for (dest, ok) in [(sin(&target), true), (zero, false)] {
            let mut iov = libc::iovec { iov_base: b"agentmon-msg".as_ptr() as *mut _, iov_len: 12 };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&raw const dest) as *mut _;
            msg.msg_namelen = sinlen;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            assert_eq!(libc::sendmsg(fd, &raw const msg, 0) >= 0, ok, "sendmsg");
        }
        // listen on a datagram socket is not supported.
        assert!(libc::listen(fd, 1) < 0);
        // bind to a port in use, accept on a socket that does not listen.
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let taken = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => unreachable!(),
        };
        let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let a = sin(&taken);
        assert!(libc::bind(sock, (&raw const a).cast(), sinlen) < 0, "port in use");
        assert!(libc::accept(sock, std::ptr::null_mut(), std::ptr::null_mut()) < 0, "not listening");
        libc::close(sock);
        // A plain accept(2) that succeeds, with no address asked for.
        let t = std::thread::spawn(move || TcpStream::connect(taken).expect("connect"));
        let conn = libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut());
        assert!(conn >= 0, "accept");
        libc::close(conn);
        drop(t.join());
    }
}

fn resolve(name: &str, port: u16) {
    let host = c(name);
    // SAFETY: getaddrinfo with valid C strings and hints; the result list is freed.
    let ip = unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_INET;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res = std::ptr::null_mut();
        let r = libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &raw const hints, &raw mut res);
        assert_eq!(r, 0, "getaddrinfo({name}) failed: {r}");
        let sin = std::ptr::read_unaligned((*res).ai_addr.cast::<libc::sockaddr_in>());
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        libc::freeaddrinfo(res);
        ip
    };
    let mut s = TcpStream::connect((ip, port)).expect("connect to the resolved address");
    let _ = s.write_all(b"hello");
    println!("{ip}");
}

fn dns_server(secs: u64) {
    let sock = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        if n < 12 {
            continue;
        }
        // The question ends at the first zero label, then type and class.
        let qend = 12 + buf[12..n].iter().position(|&b| b == 0).unwrap_or(0) + 5;
        let qtype = u16::from_be_bytes([buf[qend - 4], buf[qend - 3]]);
        let mut r = buf[..qend].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6] = 0;
        r[7] = u8::from(qtype == 1);
        r[8..12].fill(0);
        if qtype == 1 {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
        }
        let _ = sock.send_to(&r, from);
    }
}

/// A well-formed DNS response (id 0x4242) for `name` A `ip`, sent from `from` to a socket that
/// never sent a query, received with recvfrom, then a connect to the forged address.
fn forged_dns(from: &str, name: &str, ip: std::net::Ipv4Addr, port: u16) {
    let me = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let forger = UdpSocket::bind(from).expect("bind the forger (port 53)");
    let mut r = vec![0x42, 0x42, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    for l in name.split('.') {
        r.push(u8::try_from(l.len()).expect("label"));
        r.extend_from_slice(l.as_bytes());
    }
    r.extend_from_slice(&[0, 0, 1, 0, 1]);
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ip.octets());
    forger.send_to(&r, me.local_addr().expect("addr")).expect("send the forged answer");
    let mut buf = [0u8; 512];
    let (n, src) = me.recv_from(&mut buf).expect("receive the forged answer");
    assert_eq!((n, src), (r.len(), forger.local_addr().expect("addr")));
    // Refused or not, the connect is what must not be named.
    let _ = TcpStream::connect((ip, port));
}

/// The agent's own resolver: a responder on `server` (for example 127.0.0.2:53) that answers
/// `name` A `ip`, asked by this same process with a matching id and question, then a connect to
/// the answer. Solicited, but from a server the host does not use: it must name nothing.
fn own_resolver(server: &str, name: &str, ip: std::net::Ipv4Addr, port: u16) {
    let responder = UdpSocket::bind(server).expect("bind the agent's own resolver");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind the client");
    let mut q = vec![0x51, 0x51, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(u8::try_from(l.len()).expect("label"));
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    client.send_to(&q, server).expect("send the query");
    let mut buf = [0u8; 512];
    let (n, from) = responder.recv_from(&mut buf).expect("the query");
    let mut r = buf[..n].to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ip.octets());
    responder.send_to(&r, from).expect("send the answer");
    let (n, src) = client.recv_from(&mut buf).expect("the answer");
    assert_eq!((n, src), (r.len(), responder.local_addr().expect("addr")));
    // Refused, unreachable or not, the connect is what must not be named.
    let _ = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2));
}

fn tcp_server(addr: &str, secs: u64) {
    let l = TcpListener::bind(addr).expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let _ = l.accept();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw syscall with its fd argument's upper 32 bits set: the kernel reads an int.
fn udp_high_fd(udp: &str) {
    use std::os::fd::AsRawFd as _;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let addr: std::net::SocketAddrV4 = udp.parse().expect("udp addr");
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let fd = sock.as_raw_fd() as u64 | 0xdead_beef_0000_0000;
    let msg = b"agentmon-high-fd";
    let r = sys!(libc::SYS_sendto, fd, msg.as_ptr(), msg.len(), 0, &raw const sa, size_of::<libc::sockaddr_in>());
    assert_eq!(r, msg.len() as i64, "sendto with a dirty fd register");
}

/// TCP fast open: `sendto(MSG_FASTOPEN, addr)` connects without `connect()`.
fn fast_open(tcp: &str) {
    let addr: std::net::SocketAddrV4 = tcp.parse().expect("tcp addr");
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let msg = b"agentmon-fastopen";
    let r = sys!(
        libc::SYS_sendto,
        fd,
        msg.as_ptr(),
        msg.len(),
        libc::MSG_FASTOPEN,
        &raw const sa,
        size_of::<libc::sockaddr_in>()
    );
    assert!(r > 0, "fast-open sendto: {r}");
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)` on an `O_PATH` fd.
fn fchmodat2_empty(path: &str) {
    std::fs::write(path, "x").expect("create");
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c(path).as_ptr(), libc::O_PATH) };
    assert!(fd >= 0, "O_PATH open");
    let empty = c("");
    let r = sys!(452, fd, empty.as_ptr(), 0o600, libc::AT_EMPTY_PATH);
    assert_eq!(r, 0, "fchmodat2 AT_EMPTY_PATH");
}

/// `open(path, O_WRONLY|O_CREAT, 0600)` through the 32-bit entry (`int 0x80`): the path must sit
/// below 4 GiB, so it goes in a `MAP_32BIT` page.
fn int80_open(path: &str) {
    // SAFETY: an anonymous mapping we own.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED, "MAP_32BIT");
    let bytes = c(path);
    let bytes = bytes.as_bytes_with_nul();
    // SAFETY: the page holds 4096 bytes; paths here are shorter.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), page.cast::<u8>(), bytes.len()) };
    let ret: i32;
    // SAFETY: i386 open(2): eax = 5, ebx = path, ecx = flags, edx = mode.
    unsafe {
        // rbx is LLVM's: saved and restored around the call.
        std::arch::asm!(
            "push rbx",
            "mov ebx, {path:e}",
            "int 0x80",
            "pop rbx",
            path = in(reg) page as u64,
            inlateout("eax") 5i32 => ret,
            in("ecx") (libc::O_WRONLY | libc::O_CREAT) as u32,
            in("edx") 0o600u32,
        );
    }
    assert!(ret >= 0, "int 0x80 open: {ret}");
}

/// A small real ring (`io_uring_setup`); the io-uring crate makes the raw syscalls itself.
fn ring() -> io_uring::IoUring {
    io_uring::IoUring::new(4).expect("io_uring_setup")
}

/// Submit one SQE, wait for its completion and return its result (an fd, a count or -errno).
/// Every buffer the SQE points to must live until this returns.
fn uring_run(ring: &mut io_uring::IoUring, sqe: &io_uring::squeue::Entry) -> i32 {
    // SAFETY: the caller's buffers outlive the wait for the completion below.
    unsafe { ring.submission().push(sqe).expect("push") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    ring.completion().next().expect("completion").result()
}

/// One `IORING_OP_OPENAT` through a real ring.
fn uring_open(path: &str) {
    let name = c(path);
    let op = io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), name.as_ptr())
        .flags(libc::O_WRONLY | libc::O_CREAT)
        .mode(0o600)
        .build()
        .user_data(42);
    let r = uring_run(&mut ring(), &op);
    assert!(r >= 0, "io_uring openat: {r}");
}

fn bypass(dir: &str, udp: &str, tcp: &str) {
    udp_high_fd(udp);
    fast_open(tcp);
    fchmodat2_empty(&format!("{dir}/mode"));
    int80_open(&format!("{dir}/int80"));
    uring_open(&format!("{dir}/uring"));
}

/// `n` connects to `a` while another thread flips the sockaddr between `a` and `b`; prints the
/// real peer port of each connection, in order.
fn connect_race(a: &str, b: &str, n: u32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    let (a, b): (std::net::SocketAddrV4, std::net::SocketAddrV4) = (a.parse().expect("a"), b.parse().expect("b"));
    let mk = |x: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: x.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*x.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let (sa, sb) = (mk(a), mk(b));
    let shared: &'static mut libc::sockaddr_in = Box::leak(Box::new(sa));
    let ptr = std::ptr::from_mut(shared) as usize;
    let flipper = std::thread::spawn(move || {
        let mut flips = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            let next = if flips.is_multiple_of(2) { sb } else { sa };
            // SAFETY: a racy write to a leaked buffer, which is the point of this workload.
            unsafe { std::ptr::write_volatile(ptr as *mut libc::sockaddr_in, next) };
            flips += 1;
        }
    });
    let mut ports = Vec::new();
    for _ in 0..n {
        // SAFETY: plain socket calls on our own fds.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let r = libc::connect(fd, ptr as *const libc::sockaddr, size_of::<libc::sockaddr_in>() as u32);
            if r == 0 {
                let mut peer: libc::sockaddr_in = std::mem::zeroed();
                let mut len = size_of::<libc::sockaddr_in>() as u32;
                libc::getpeername(fd, (&raw mut peer).cast(), &raw mut len);
                ports.push(u16::from_be(peer.sin_port).to_string());
            }
            libc::close(fd);
        }
    }
    STOP.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    println!("{}", ports.join(" "));
}

/// Hand-offs and kernel access from inside the session, each once.
fn tamper(pid: i32) {
    // bpf(BPF_MAP_CREATE, NULL, 0): refused (EFAULT/EINVAL), but the call is made.
    let _ = sys!(libc::SYS_bpf, 0, 0, 0);
    // ptrace attach then detach a process outside the session.
    assert_eq!(sys!(libc::SYS_ptrace, libc::PTRACE_ATTACH, pid, 0, 0), 0, "ptrace attach");
    let mut status = 0;
    // SAFETY: waiting for the tracee we attached.
    unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
    let _ = sys!(libc::SYS_ptrace, libc::PTRACE_DETACH, pid, 0, 0);
    // pidfd_getfd on it (its fd 0).
    let pidfd = sys!(libc::SYS_pidfd_open, pid, 0);
    assert!(pidfd >= 0, "pidfd_open");
    let _ = sys!(libc::SYS_pidfd_getfd, pidfd, 0, 0);
    // process_vm_writev with nothing to write.
    let _ = sys!(libc::SYS_process_vm_writev, pid, 0, 0, 0, 0, 0);
}

/// The first thing this process does is fork; the child leaves for another cgroup and execs.
fn fork_escape(cgroup: &str, cmd: &[String]) {
    // SAFETY: single-threaded at this point; the child only calls async-signal-safe functions
    // (write, execv, _exit) on memory prepared before the fork.
    let procs = c(&format!("{cgroup}/cgroup.procs"));
    let argv_c: Vec<CString> = cmd.iter().map(|s| c(s)).collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(90);
            }
            libc::close(fd);
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(91);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
    let last = cmd.last().expect("a command");
    std::fs::write(format!("{last}.parent"), "parent\n").expect("parent write");
}

// Attacks an agent (root in its session) uses to hide what it does from monitoring that reads
// syscall arguments: no path, a path resolved elsewhere, a request carried by io_uring, or
// arguments rewritten while the syscall runs. Each prints one line; a failure panics (exit 101).

/// `openat(AT_FDCWD, path, flags, 0644)`, which must succeed.
fn open(path: &str, flags: i32) -> i32 {
    let fd = sys!(libc::SYS_openat, libc::AT_FDCWD, c(path).as_ptr(), flags, 0o644);
    assert!(fd >= 0, "open {path}: errno {}", -fd);
    fd as i32
}

/// `write(fd, data)`, which must write all of it.
fn write_fd(fd: i32, data: &[u8]) {
    let n = sys!(libc::SYS_write, fd, data.as_ptr(), data.len());
    assert_eq!(n, data.len() as i64, "write to fd {fd}");
}

/// `struct file_handle` with room for the largest handle (`MAX_HANDLE_SZ`).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; libc::MAX_HANDLE_SZ as usize],
}

/// Write DIR/handle-target through `open_by_handle_at`, whose arguments hold no path.
fn handle_open(dir: &str) {
    let path = format!("{dir}/handle-target");
    std::fs::write(&path, "").expect("create handle-target");
    let mut fh = FileHandle { handle_bytes: libc::MAX_HANDLE_SZ as u32, handle_type: 0, f_handle: [0; 128] };
    let mut mount_id = 0i32;
    let r = sys!(libc::SYS_name_to_handle_at, libc::AT_FDCWD, c(&path).as_ptr(), &raw mut fh, &raw mut mount_id, 0);
    assert_eq!(r, 0, "name_to_handle_at");
    // Any fd on the same mount serves as the mount fd: the directory itself.
    let dir_fd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    let fd = sys!(libc::SYS_open_by_handle_at, dir_fd, &raw const fh, libc::O_WRONLY | libc::O_TRUNC);
    assert!(fd >= 0, "open_by_handle_at: errno {}", -fd);
    write_fd(fd as i32, b"via-handle");
    assert_eq!(std::fs::read(&path).expect("read back"), b"via-handle");
    println!("{fd}");
}

/// `execveat(dirfd, name, argv, environ, flags)`; returns only by panicking.
fn execveat(dirfd: i32, name: &str, argv: &[&str], flags: i32) -> ! {
    use std::os::unix::ffi::OsStringExt as _;
    let argv: Vec<CString> = argv.iter().map(|s| c(s)).collect();
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).expect("no NUL")
        })
        .collect();
    let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (argv, envp) = (ptrs(&argv), ptrs(&envp));
    let r = sys!(libc::SYS_execveat, dirfd, c(name).as_ptr(), argv.as_ptr(), envp.as_ptr(), flags);
    panic!("execveat {name:?}: errno {}", -r);
}

/// fexecve: exec the open file PROG (an ELF) by fd, with an empty path.
fn fexecve(prog: &str, args: &[String]) -> ! {
    let fd = open(prog, libc::O_RDONLY);
    let base = std::path::Path::new(prog).file_name().and_then(|b| b.to_str()).unwrap_or(prog);
    let command: Vec<&str> = std::iter::once(base).chain(args.iter().map(String::as_str)).collect();
    execveat(fd, "", &command, libc::AT_EMPTY_PATH)
}

/// Exec NAME relative to an `O_PATH` fd of DIR: the path argument is only the last component.
fn execveat_dir(dir: &str, name: &str, args: &[String]) -> ! {
    let dirfd = open(dir, libc::O_PATH | libc::O_DIRECTORY);
    let command: Vec<&str> = std::iter::once(name).chain(args.iter().map(String::as_str)).collect();
    execveat(dirfd, name, &command, 0)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| a.get(i).map_or_else(|| panic!("missing argument {i}"), String::as_str);
    match arg(0) {
        "files" => files(arg(1)),
        "deny" => deny(arg(1)),
        // SAFETY: a valid C string.
        "unlink" => assert_eq!(unsafe { libc::unlink(c(arg(1)).as_ptr()) }, 0, "unlink"),
        "open-loop" => {
            for _ in 0..arg(2).parse::<u32>().expect("count") {
                drop(std::fs::File::open(arg(1)).expect("open"));
            }
        }
        "write" => std::fs::write(arg(1), "written by the agent itself\n").expect("write"),
        "net" => net(arg(1), arg(2), arg(3), arg(4)),
        "resolve" => resolve(arg(1), arg(2).parse().expect("port")),
        "dns-server" => dns_server(arg(1).parse().expect("secs")),
        "forged-dns" => forged_dns(arg(1), arg(2), arg(3).parse().expect("ip"), arg(4).parse().expect("port")),
        "own-resolver" => own_resolver(arg(1), arg(2), arg(3).parse().expect("ip"), arg(4).parse().expect("port")),
        "tcp-server" => tcp_server(arg(1), arg(2).parse().expect("secs")),
        "bypass" => bypass(arg(1), arg(2), arg(3)),
        "connect-race" => connect_race(arg(1), arg(2), arg(3).parse().expect("count")),
        "tamper" => tamper(arg(1).parse().expect("pid")),
        "fork-escape" => fork_escape(arg(1), &a[2..]),
        "connect-many" => connect_many(arg(1).parse().expect("count")),
        "hold-control" => hold_control(arg(1), arg(2).parse().expect("count")),
        "handle-open" => handle_open(arg(1)),
        "fexecve" => fexecve(arg(1), &a[2..]),
        "execveat-dir" => execveat_dir(arg(1), arg(2), &a[3..]),
        other => panic!("unknown workload {other}"),
    }
}

fn connect_many(n: u32) {
    let mut results: Vec<(String, u32)> = Vec::new();
    for i in 0..n {
        let [a, b] = ((i & 0xffff) as u16).to_be_bytes();
        let ip = std::net::Ipv4Addr::new(198, 18 + (i >> 16) as u8, a, b);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 9u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: plain socket calls on our own fd and a valid sockaddr.
        let result = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0, "socket");
            let r = libc::connect(fd, std::ptr::from_ref(&sa).cast(), size_of::<libc::sockaddr_in>() as u32);
            let result = if r == 0 {
                "ok".to_owned()
            } else {
                format!("errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
            };
            libc::close(fd);
            result
        };
        match results.iter_mut().find(|r| r.0 == result) {
            Some(r) => r.1 += 1,
            None => results.push((result, 1)),
        }
    }
    for (r, n) in results {
        println!("{r} {n}");
    }
}

fn hold_control(socket: &str, n: usize) {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::sync::atomic::{AtomicBool, Ordering};
    static RELEASED: AtomicBool = AtomicBool::new(false);
    let mut held: Vec<UnixStream> = (0..n).map(|_| UnixStream::connect(socket).expect("connect")).collect();
    // A refused connection has its one line at once; a held one has nothing to read. Those
    // still silent a second after the last refusal came are held.
    let mut refusals = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(1) {
        let mut still = Vec::new();
        for c in held {
            c.set_read_timeout(Some(Duration::from_millis(10))).expect("timeout");
            let mut line = String::new();
            match BufReader::new(&c).read_line(&mut line) {
                Ok(n) if n > 0 => {
                    refusals.push(line.trim().to_owned());
                    last = Instant::now();
                }
                _ => still.push(c),
            }
        }
        held = still;
    }
    println!("held {} refused {}", held.len(), refusals.len());
    println!("{}", refusals.first().map_or("", String::as_str));
    std::io::stdout().flush().expect("flush");
    let threads: Vec<_> = held
        .into_iter()
        .map(|mut c| {
            let socket = socket.to_owned();
            std::thread::spawn(move || loop {
                // The daemon closes a connection that sends no request within its timeout: open
                // another, so the uid keeps its connections until released.
                let _ = c.set_read_timeout(None);
                let _ = c.read_to_end(&mut Vec::new());
                std::thread::sleep(Duration::from_millis(200));
                if RELEASED.load(Ordering::SeqCst) {
                    return;
                }
                c = UnixStream::connect(&socket).expect("connect again");
            })
        })
        .collect();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    RELEASED.store(true, Ordering::SeqCst);
    std::process::exit(i32::from(threads.iter().any(std::thread::JoinHandle::is_finished)));
}
