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
//! `uring-fixed-open PATH` `io_uring` openat into fixed-file slot 2, write "fixed\n" through
//!                      it; prints `slot 2`
//! `uring-rename DIRA A DIRB B`, `uring-link DIRA A DIRB B` `io_uring` renameat/linkat
//!                      relative to two dirfds; prints `ok`
//! `uring-write PATH TEXT` `io_uring` openat (`O_APPEND`) and write of TEXT; prints the bytes
//!                      written
//! `uring-sendmsg IP:PORT` `io_uring` sendmsg of a UDP datagram; prints the bytes sent
//! `openat2-race PATH [N]` openat2 opens PATH `O_WRONLY|O_CREAT|O_TRUNC` but its `open_how`
//!                      says `O_RDONLY` by exit (rewritten while the kernel waits on a
//!                      userfaultfd page holding the path); writes "raced\n" through it, N
//!                      times; prints `ok`
//! `sendto-race REAL FAKE` a UDP sendto to 127.0.0.1:REAL whose sockaddr says port FAKE by
//!                      exit (same technique, the payload on the userfaultfd page); prints
//!                      `sent REAL`
//! `unlink-race DIR [missing|open|exec]` unlink of DIR/AAAAzz…z whose path says DIR/BBBBzz…z
//!                      by exit (the path's tail on a userfaultfd page; its head rewritten
//!                      while the kernel waits there); both files exist before; prints `ok`.
//!                      With `missing`, AAAA… does not exist and the unlink fails with ENOENT;
//!                      with `open` or `exec`, the same for `open(O_RDONLY)` or `execve`. BBBB…
//!                      stays either way
//! `int80-chown16 PATH` creates PATH, then `chown(PATH, 0, 0)` through i386's 16-bit-uid
//!                      `chown16` (`int 0x80`); prints `ok`
//! `raw-send IP`        an IP datagram of protocol 253 from a raw socket; prints the bytes sent
//! `packet-send IFNAME` an Ethernet frame from an `AF_PACKET` socket bound to IFNAME; prints the
//!                      bytes sent
//! `chroot-unlink ROOT NAME` chroot(ROOT), chdir("/"), unlink("/NAME"); prints `ok`
//! `decoys-then-write N PATH` N failed opens of /nonexistent-decoy-<i>, then an append to PATH;
//!                      prints `ok`
//! `module-load`        `finit_module(/dev/null)`, `init_module(NULL, 0)`,
//!                      `kexec_file_load(-1, -1)`: all must fail; prints
//!                      `finit_module E init_module E kexec_file_load E` (errnos)
//! `proc-mem-write PID` rewrite one byte of PID (the same value) through /proc/PID/mem; prints
//!                      the address
//! `scm-rights PATH`    pass an fd of PATH over a socketpair and read through it; prints the
//!                      received fd
//! `unix-connect PATH`  `AF_UNIX` stream connect; prints `ok` or `errno N` (exit 0 for
//!                      `ECONNREFUSED` and `ENOENT`, 101 for any other errno)

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

/// `chown(path, 0, 0)` through i386's 16-bit-uid entry (`int 0x80`, syscall 182: `chown16`),
/// the path in a `MAP_32BIT` page.
fn int80_chown16(path: &str) {
    std::fs::write(path, "x").expect("create");
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
    // SAFETY: i386 chown16(2): eax = 182, ebx = path, ecx = uid, edx = gid.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {path:e}",
            "int 0x80",
            "pop rbx",
            path = in(reg) page as u64,
            inlateout("eax") 182i32 => ret,
            in("ecx") 0u32,
            in("edx") 0u32,
        );
    }
    assert_eq!(ret, 0, "int 0x80 chown16");
    println!("ok");
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

/// `io_uring` open into a fixed-file slot (no fd in the process table), then a write through it.
fn uring_fixed_open(path: &str) {
    use io_uring::{opcode, types};
    let mut ring = ring();
    // Four empty slots: IORING_REGISTER_FILES2 with IORING_RSRC_REGISTER_SPARSE (5.19+).
    ring.submitter().register_files_sparse(4).expect("register a sparse file table");
    let name = c(path);
    // Slot 2: the SQE's file_index is 3 (slot + 1).
    let slot = types::DestinationSlot::try_from_slot_target(2).expect("slot 2");
    let op = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), name.as_ptr())
        .file_index(Some(slot))
        .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .mode(0o644)
        .build();
    assert_eq!(uring_run(&mut ring, &op), 0, "io_uring openat into fixed slot 2");
    let data = b"fixed\n";
    // `Fixed` sets IOSQE_FIXED_FILE: the fd field is the slot.
    let op = opcode::Write::new(types::Fixed(2), data.as_ptr(), data.len() as u32).build();
    assert_eq!(uring_run(&mut ring, &op), data.len() as i32, "io_uring write through fixed slot 2");
    assert_eq!(std::fs::read(path).expect("read back"), data);
    println!("slot 2");
}

/// `io_uring` renameat (or linkat) of `DIRA/NAME_A` to `DIRB/NAME_B`, both relative to dirfds.
fn uring_rename(link: bool, dir_a: &str, name_a: &str, dir_b: &str, name_b: &str) {
    use io_uring::{opcode, types::Fd};
    let (fd_a, fd_b) =
        (open(dir_a, libc::O_RDONLY | libc::O_DIRECTORY), open(dir_b, libc::O_RDONLY | libc::O_DIRECTORY));
    let (a, b) = (c(name_a), c(name_b));
    let op = if link {
        opcode::LinkAt::new(Fd(fd_a), a.as_ptr(), Fd(fd_b), b.as_ptr()).build()
    } else {
        opcode::RenameAt::new(Fd(fd_a), a.as_ptr(), Fd(fd_b), b.as_ptr()).build()
    };
    let r = uring_run(&mut ring(), &op);
    assert_eq!(r, 0, "io_uring {}", if link { "linkat" } else { "renameat" });
    assert!(std::fs::symlink_metadata(format!("{dir_b}/{name_b}")).is_ok(), "{dir_b}/{name_b} exists");
    assert_eq!(std::fs::symlink_metadata(format!("{dir_a}/{name_a}")).is_ok(), link, "{dir_a}/{name_a}");
    println!("ok");
}

/// `io_uring` openat (a normal fd) then `io_uring` write of TEXT to it; prints the bytes written.
fn uring_write(path: &str, text: &str) {
    use io_uring::{opcode, types::Fd};
    let before = std::fs::read(path).unwrap_or_default();
    let mut ring = ring();
    let name = c(path);
    let op = opcode::OpenAt::new(Fd(libc::AT_FDCWD), name.as_ptr())
        .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND)
        .mode(0o644)
        .build();
    let fd = uring_run(&mut ring, &op);
    assert!(fd >= 0, "io_uring openat: {fd}");
    // Offset -1: the file position, as write(2) (O_APPEND appends anyway).
    let op = opcode::Write::new(Fd(fd), text.as_ptr(), text.len() as u32).offset(u64::MAX).build();
    let n = uring_run(&mut ring, &op);
    assert_eq!(n, text.len() as i32, "io_uring write");
    assert_eq!(std::fs::read(path).expect("read back"), [before.as_slice(), text.as_bytes()].concat());
    println!("{n}");
}

fn sin4(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// `io_uring` sendmsg of a UDP datagram to `IP:PORT` from an unbound socket; prints the CQE result.
fn uring_sendmsg(dst: &str) {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket");
    let sa = sin4(dst.parse().expect("DST_IP:PORT"));
    let payload = b"agentmon-uring-sendmsg";
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the submission.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw const sa) as *mut _;
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let op = io_uring::opcode::SendMsg::new(io_uring::types::Fd(fd), &raw const msg).build();
    let r = uring_run(&mut ring(), &op);
    assert_eq!(r, payload.len() as i32, "io_uring sendmsg");
    println!("{r}");
}

const PAGE: usize = 4096;
// userfaultfd ABI (linux/userfaultfd.h); the ioctls are _IOWR(0xAA, nr, struct).
const UFFD_API: u64 = 0xaa;
const UFFDIO_API: u64 = 0xc018_aa3f; // struct uffdio_api { api, features, ioctls }
const UFFDIO_REGISTER: u64 = 0xc020_aa00; // struct uffdio_register { start, len, mode, ioctls }
const UFFDIO_COPY: u64 = 0xc028_aa03; // struct uffdio_copy { dst, src, len, mode, copy }
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// A new anonymous page registered with a new userfaultfd in missing mode: its first access,
/// by this process or by the kernel for it (`copy_from_user`), waits until `uffd_handler` fills
/// it. Not `UFFD_USER_MODE_ONLY`, which fails the kernel's accesses (root may leave it out).
/// Returns (uffd, page address).
fn uffd_page() -> (i32, usize) {
    let uffd = sys!(libc::SYS_userfaultfd, libc::O_CLOEXEC) as i32;
    assert!(uffd >= 0, "userfaultfd: errno {}", -uffd);
    let mut api = [UFFD_API, 0, 0];
    assert_eq!(sys!(libc::SYS_ioctl, uffd, UFFDIO_API, api.as_mut_ptr()), 0, "UFFDIO_API");
    // SAFETY: a new anonymous mapping of our own.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED, "mmap");
    let mut reg = [page as u64, PAGE as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
    assert_eq!(sys!(libc::SYS_ioctl, uffd, UFFDIO_REGISTER, reg.as_mut_ptr()), 0, "UFFDIO_REGISTER");
    (uffd, page as usize)
}

/// From a new thread: wait for the one fault on `page`, run `meanwhile` while the faulting
/// syscall is blocked in the kernel, then fill the page with `content` (`UFFDIO_COPY`) so that
/// the syscall goes on. A failure there ends the process: the syscall would wait forever.
fn uffd_handler(
    uffd: i32,
    page: usize,
    content: Vec<u8>,
    meanwhile: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let serve = || {
            let mut pfd = libc::pollfd { fd: uffd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            assert_eq!(unsafe { libc::poll(&raw mut pfd, 1, 10_000) }, 1, "no fault on the page within 10 s");
            // struct uffd_msg: event u8 at 0, pagefault.address u64 at 16; 32 bytes.
            let mut msg = [0u8; 32];
            assert_eq!(sys!(libc::SYS_read, uffd, msg.as_mut_ptr(), msg.len()), 32, "read uffd_msg");
            assert_eq!(msg[0], UFFD_EVENT_PAGEFAULT, "uffd event");
            let addr = u64::from_ne_bytes(msg[16..24].try_into().expect("8 bytes"));
            assert_eq!(addr as usize & !(PAGE - 1), page, "fault address");
            meanwhile();
            let mut src = vec![0u8; PAGE];
            src[..content.len()].copy_from_slice(&content);
            let mut copy = [page as u64, src.as_ptr() as u64, PAGE as u64, 0, 0];
            assert_eq!(sys!(libc::SYS_ioctl, uffd, UFFDIO_COPY, copy.as_mut_ptr()), 0, "UFFDIO_COPY");
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(serve)).is_err() {
            std::process::exit(1);
        }
    })
}

/// openat2 whose `open_how` says `O_WRONLY|O_CREAT|O_TRUNC` when the kernel copies it, and
/// `O_RDONLY` by the time the syscall returns: the path is on a userfaultfd page, so the kernel
/// blocks reading it (`getname`, after `copy_struct_from_user` of `how`) while a thread rewrites
/// `how.flags`. Writes "raced\n" through the fd to prove the write access; N rounds.
fn openat2_race(path: &str, n: u32) {
    let (uffd, page) = uffd_page();
    let wanted = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
    let how = Box::leak(Box::new(OpenHow { flags: wanted, mode: 0o644, resolve: 0 }));
    let flags = (&raw mut how.flags) as usize;
    let how = std::ptr::from_mut(how) as usize;
    let name = c(path).into_bytes_with_nul();
    assert!(name.len() <= PAGE, "path too long");
    for _ in 0..n {
        // SAFETY: our leaked OpenHow; no syscall is using it now.
        unsafe { std::ptr::write_volatile(flags as *mut u64, wanted) };
        // SAFETY: the kernel has copied `how` already; the syscall waits on the path page.
        let rewrite = move || unsafe { std::ptr::write_volatile(flags as *mut u64, libc::O_RDONLY as u64) };
        let handler = uffd_handler(uffd, page, name.clone(), rewrite);
        let fd = sys!(libc::SYS_openat2, libc::AT_FDCWD, page, how, size_of::<OpenHow>());
        handler.join().expect("fault handler");
        assert!(fd >= 0, "openat2: errno {}", -fd);
        // SAFETY: reading our leaked OpenHow back.
        let after = unsafe { std::ptr::read_volatile(flags as *const u64) };
        assert_eq!(after, libc::O_RDONLY as u64, "how.flags was rewritten during the call");
        write_fd(fd as i32, b"raced\n");
        sys!(libc::SYS_close, fd);
        // Drop the page again, so that the next round faults on it too.
        // SAFETY: our own mapping.
        assert_eq!(unsafe { libc::madvise(page as *mut _, PAGE, libc::MADV_DONTNEED) }, 0, "madvise");
    }
    assert_eq!(std::fs::read(path).expect("read back"), b"raced\n");
    println!("ok");
}

/// unlink of DIR/AAAA<z…> whose path reads DIR/BBBB<z…> by the time the syscall returns: the
/// path ends 20 bytes into a userfaultfd page, so the kernel blocks copying it (`getname`)
/// after it has copied the head, while a thread rewrites `AAAA` (well before the page, outside
/// the word the copy is in) to `BBBB`. The kernel removes the `AAAA` file.
fn unlink_race(dir: &str, variant: &str) {
    let (uffd, tail_page) = uffd_page();
    // The page before it, ordinary memory, holds the head of the path.
    // SAFETY: a new anonymous mapping just below the registered page (MAP_FIXED_NOREPLACE).
    let head_page = unsafe {
        libc::mmap(
            (tail_page - PAGE) as *mut _,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(head_page as usize, tail_page - PAGE, "mmap below the userfaultfd page");
    let zs = "z".repeat(60);
    let (real, decoy) = (format!("{dir}/AAAA{zs}"), format!("{dir}/BBBB{zs}"));
    let missing = match variant {
        "" => false,
        "missing" | "open" | "exec" => true,
        other => panic!("unlink-race: unknown variant {other}"),
    };
    for f in [&real, &decoy] {
        if !(missing && f == &real) {
            std::fs::write(f, b"x").expect("create");
        }
    }
    let name = c(&real).into_bytes_with_nul();
    let tail = 20;
    let start = tail_page - (name.len() - tail);
    // SAFETY: `start..tail_page` is inside the head page (the path is shorter than a page).
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, name.len() - tail) };
    let marker = start + dir.len() + 1;
    // SAFETY: the kernel has copied the head already; the syscall waits on the tail page.
    let rewrite = move || unsafe { std::ptr::copy_nonoverlapping(b"BBBB".as_ptr(), marker as *mut u8, 4) };
    let handler = uffd_handler(uffd, tail_page, name[name.len() - tail..].to_vec(), rewrite);
    let argv = [start, 0usize];
    let r = match variant {
        "open" => sys!(libc::SYS_open, start, libc::O_RDONLY),
        "exec" => sys!(libc::SYS_execve, start, argv.as_ptr(), 0usize),
        _ => sys!(libc::SYS_unlink, start),
    };
    handler.join().expect("fault handler");
    if missing {
        assert_eq!(r, -i64::from(libc::ENOENT), "{variant}: the kernel looked for the AAAA file");
    } else {
        assert_eq!(r, 0, "unlink: errno {}", -r);
    }
    assert!(!std::path::Path::new(&real).exists(), "the kernel removed the AAAA file");
    assert!(std::path::Path::new(&decoy).exists(), "the BBBB file is still there");
    // SAFETY: reading the head page back.
    let now = unsafe { std::slice::from_raw_parts(marker as *const u8, 4) };
    assert_eq!(now, b"BBBB", "the path was rewritten during the call");
    println!("ok");
}

/// UDP sendto 127.0.0.1:REAL whose payload is on a userfaultfd page: the kernel copies the
/// sockaddr (`move_addr_to_kernel`), then blocks on the payload while a thread rewrites the
/// sockaddr in user memory to port FAKE. The datagram goes to REAL.
fn sendto_race(real: u16, fake: u16) {
    let (uffd, page) = uffd_page();
    let payload = b"agentmon-sendto-race".to_vec();
    let sa = Box::leak(Box::new(sin4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, real))));
    let port = (&raw mut sa.sin_port) as usize;
    let sa = std::ptr::from_mut(sa) as usize;
    // SAFETY: the kernel has copied the sockaddr already; the syscall waits on the payload page.
    let rewrite = move || unsafe { std::ptr::write_volatile(port as *mut u16, fake.to_be()) };
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket");
    let handler = uffd_handler(uffd, page, payload.clone(), rewrite);
    let r = sys!(libc::SYS_sendto, fd, page, payload.len(), 0, sa, size_of::<libc::sockaddr_in>());
    handler.join().expect("fault handler");
    assert_eq!(r, payload.len() as i64, "sendto");
    // SAFETY: reading our leaked sockaddr back.
    let after = u16::from_be(unsafe { std::ptr::read_volatile(port as *const u16) });
    assert_eq!(after, fake, "the sockaddr was rewritten during the call");
    println!("sent {real}");
}

/// An IP datagram of protocol 253 (reserved for experiments) from a raw socket: no port, no
/// connect; prints the bytes sent.
fn raw_send(dst: &str) {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, 253) };
    assert!(fd >= 0, "raw socket");
    let sa = sin4(std::net::SocketAddrV4::new(dst.parse().expect("DST_IP"), 0));
    let msg = b"agentmon-raw";
    let r = sys!(libc::SYS_sendto, fd, msg.as_ptr(), msg.len(), 0, &raw const sa, size_of::<libc::sockaddr_in>());
    assert_eq!(r, msg.len() as i64, "raw sendto");
    println!("{r}");
}

/// One Ethernet frame (ethertype 0x88b5, local experimental) from an `AF_PACKET` socket bound to
/// IFNAME; prints the bytes sent.
fn packet_send(ifname: &str) {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket and if_nametoindex calls.
    let (fd, ifindex) = unsafe {
        (libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)), libc::if_nametoindex(c(ifname).as_ptr()))
    };
    assert!(fd >= 0, "packet socket");
    assert_ne!(ifindex, 0, "no interface {ifname}");
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    let r = sys!(libc::SYS_bind, fd, &raw const sll, size_of::<libc::sockaddr_ll>());
    assert_eq!(r, 0, "bind to {ifname}");
    // Broadcast destination, zero source, ethertype, payload.
    let mut frame = vec![0xff; 6];
    frame.extend([0; 6]);
    frame.extend(0x88b5u16.to_be_bytes());
    frame.extend(b"agentmon-packet");
    let r = sys!(libc::SYS_sendto, fd, frame.as_ptr(), frame.len(), 0, 0, 0);
    assert_eq!(r, frame.len() as i64, "packet send");
    println!("{r}");
}

/// chroot(ROOT), chdir("/"), unlink("/NAME"): the path the monitor sees is "/NAME".
fn chroot_unlink(root: &str, name: &str) {
    assert_eq!(sys!(libc::SYS_chroot, c(root).as_ptr()), 0, "chroot {root}");
    assert_eq!(sys!(libc::SYS_chdir, c("/").as_ptr()), 0, "chdir /");
    let path = format!("/{name}");
    let r = sys!(libc::SYS_unlink, c(&path).as_ptr());
    assert_eq!(r, 0, "unlink {path} in the chroot");
    assert!(std::fs::symlink_metadata(&path).is_err(), "{path} is gone");
    println!("ok");
}

/// N failed opens of distinct missing paths, then an append to PATH.
fn decoys_then_write(n: u32, path: &str) {
    for i in 0..n {
        let r = sys!(libc::SYS_openat, libc::AT_FDCWD, c(&format!("/nonexistent-decoy-{i}")).as_ptr(), libc::O_RDONLY);
        assert_eq!(r, -i64::from(libc::ENOENT), "decoy {i}");
    }
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND);
    write_fd(fd, format!("written after {n} decoys\n").as_bytes());
    println!("ok");
}

/// `finit_module` of /dev/null, `init_module` of nothing and `kexec_file_load` of no fd: each must
/// fail (nothing is loaded); prints their errnos.
fn module_load() {
    let null = open("/dev/null", libc::O_RDONLY);
    let empty = c("");
    let finit = sys!(libc::SYS_finit_module, null, empty.as_ptr(), 0);
    let init = sys!(libc::SYS_init_module, std::ptr::null::<u8>(), 0, empty.as_ptr());
    // kernel_fd, initrd_fd, cmdline_len, cmdline, flags
    let kexec = sys!(libc::SYS_kexec_file_load, -1, -1, 0, empty.as_ptr(), 0);
    assert!(finit < 0 && init < 0 && kexec < 0, "a load succeeded: {finit} {init} {kexec}");
    println!("finit_module {} init_module {} kexec_file_load {}", -finit, -init, -kexec);
}

/// Write one byte into PID through /proc/PID/mem: the byte already there, at the start of its
/// first private writable anonymous mapping (or heap, or stack). Prints the address.
fn proc_mem_write(pid: i32) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let addr = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let anon = f.len() == 5 || matches!(f.get(5), Some(&"[heap]" | &"[stack]"));
            let start = f.first()?.split('-').next()?;
            (f.get(1) == Some(&"rw-p") && anon).then(|| u64::from_str_radix(start, 16).ok()).flatten()
        })
        .expect("a writable anonymous mapping");
    let fd = open(&format!("/proc/{pid}/mem"), libc::O_RDWR);
    let mut byte = 0u8;
    assert_eq!(sys!(libc::SYS_pread64, fd, &raw mut byte, 1, addr), 1, "pread /proc/{pid}/mem");
    assert_eq!(sys!(libc::SYS_pwrite64, fd, &raw const byte, 1, addr), 1, "pwrite /proc/{pid}/mem");
    println!("{addr:#x}");
}

/// Pass an fd of PATH over a socketpair (`SCM_RIGHTS`), close the original and read through the
/// received one; prints the received fd.
fn scm_rights(path: &str) {
    let mut sv = [0i32; 2];
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) }, 0, "socketpair");
    let fd = open(path, libc::O_RDONLY);
    // SAFETY: the msghdr, iovec and control buffer are ours and sized with CMSG_SPACE.
    let received = unsafe {
        let space = libc::CMSG_SPACE(size_of::<i32>() as u32) as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut byte = [b'x'];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cm = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(sv[0], &raw const msg, 0), 1, "sendmsg SCM_RIGHTS");
        libc::close(fd);
        control.fill(0);
        msg.msg_controllen = space;
        assert_eq!(libc::recvmsg(sv[1], &raw mut msg, 0), 1, "recvmsg");
        let cm = libc::CMSG_FIRSTHDR(&raw const msg);
        assert!(!cm.is_null() && (*cm).cmsg_type == libc::SCM_RIGHTS, "no SCM_RIGHTS received");
        std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<i32>())
    };
    let mut buf = [0u8; 64];
    let n = sys!(libc::SYS_read, received, buf.as_mut_ptr(), buf.len());
    assert!(n >= 0, "read through the received fd: errno {}", -n);
    let content = std::fs::read(path).expect("read PATH");
    assert_eq!(&buf[..n as usize], &content[..n as usize], "read through the received fd");
    println!("{received}");
}

/// `AF_UNIX` stream connect to PATH; prints `ok` or `errno N` (`ECONNREFUSED` and `ENOENT` are
/// results, any other errno a failure).
fn unix_connect(path: &str) {
    // SAFETY: plain socket call; an all-zero sockaddr_un is valid.
    let (fd, mut sa) =
        unsafe { (libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), std::mem::zeroed::<libc::sockaddr_un>()) };
    assert!(fd >= 0, "socket");
    assert!(path.len() < sa.sun_path.len(), "path too long");
    sa.sun_family = libc::AF_UNIX as u16;
    for (d, s) in sa.sun_path.iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    let r = sys!(libc::SYS_connect, fd, &raw const sa, size_of::<libc::sockaddr_un>());
    if r == 0 {
        println!("ok");
    } else {
        println!("errno {}", -r);
        std::io::stdout().flush().expect("flush");
        assert!(
            [-i64::from(libc::ECONNREFUSED), -i64::from(libc::ENOENT)].contains(&r),
            "connect {path}: errno {}",
            -r
        );
    }
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
        "uring-fixed-open" => uring_fixed_open(arg(1)),
        "uring-rename" => uring_rename(false, arg(1), arg(2), arg(3), arg(4)),
        "uring-link" => uring_rename(true, arg(1), arg(2), arg(3), arg(4)),
        "uring-write" => uring_write(arg(1), arg(2)),
        "uring-sendmsg" => uring_sendmsg(arg(1)),
        "openat2-race" => openat2_race(arg(1), a.get(2).map_or(1, |n| n.parse().expect("count"))),
        "unlink-race" => unlink_race(arg(1), a.get(2).map_or("", String::as_str)),
        "int80-chown16" => int80_chown16(arg(1)),
        "sendto-race" => sendto_race(arg(1).parse().expect("real port"), arg(2).parse().expect("fake port")),
        "raw-send" => raw_send(arg(1)),
        "packet-send" => packet_send(arg(1)),
        "chroot-unlink" => chroot_unlink(arg(1), arg(2)),
        "decoys-then-write" => decoys_then_write(arg(1).parse().expect("count"), arg(2)),
        "module-load" => module_load(),
        "proc-mem-write" => proc_mem_write(arg(1).parse().expect("pid")),
        "scm-rights" => scm_rights(arg(1)),
        "unix-connect" => unix_connect(arg(1)),
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
