//! Network syscalls: connect, bind, listen, accept(4), UDP sendto/sendmsg/recvfrom/recvmsg, and
//! raw and packet sockets (their creation and their sends).
//!
//! Destinations are the kernel's own copy where it offers one: the cgroup `connect4/6`,
//! `sendmsg4/6` and `bind4/6` programs below see the address the kernel is about to use (after
//! it copied the sockaddr in), and leave it in `KADDR` for the syscall's exit. Otherwise the address comes
//! from the caller's sockaddr (re-read at exit) and from the socket itself.
//! UDP payloads are captured only for DNS (port 53), for the userspace resolver cache.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel as read_kernel_raw, bpf_probe_read_user as read_user_raw},
    },
    macros::{cgroup_sock_addr, fentry, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, SockAddrContext},
};
use monitor_common::{
    nr, EventClass, EventKind, NetEvent, PendingSyscall, COMPAT, NET_ADDR_GIVEN, NET_ADDR_KERNEL, NET_FASTOPEN,
    NET_PEER_PATH, NET_SOCK_KNOWN, PAYLOAD_CAP, SCM_FDS_MAX, SOCKADDR_CAP,
};

use crate::{
    kpath::{is_own, KPATHS},
    maps::{current_session_peek, emit, fill_header, kread, kread_ptr, OFFSETS},
    vfs::fd_file,
};

#[map]
static NET_SCRATCH: PerCpuArray<NetEvent> = PerCpuArray::with_max_entries(1, 0);

/// The kernel's copy of the destination of a tracked thread's connect or send, by pid_tgid, as
/// a `sockaddr_in`/`sockaddr_in6` (28 bytes), from the cgroup hooks; taken at the call's exit.
#[map]
pub static KADDR: LruHashMap<u64, [u8; 28]> = LruHashMap::with_max_entries(4096, 0);

/// Keep the destination the kernel will use, for a thread agentmon is recording a call of.
/// Always allows the operation (returns 1): agentmon observes, it does not enforce.
#[inline(always)]
fn keep_kernel_addr(ctx: &SockAddrContext, v6: bool) -> i32 {
    let key = bpf_get_current_pid_tgid();
    // Session processes only (the tracked set; a cgroup program cannot read the task).
    // SAFETY: plain map lookup.
    if unsafe { crate::maps::TRACKED.get(&((key >> 32) as u32)) }.is_none() {
        return 1;
    }
    // SAFETY: the context is the kernel's `bpf_sock_addr`, valid for this program.
    let sa = unsafe { &*ctx.sock_addr };
    let mut out = [0u8; 28];
    // user_port is the port in network order in the low 16 bits (as in sockaddr_in).
    let port = (sa.user_port as u16).to_ne_bytes();
    let family = if v6 { AF_INET6 } else { AF_INET };
    out[0..2].copy_from_slice(&family.to_ne_bytes());
    out[2..4].copy_from_slice(&port);
    if v6 {
        for i in 0..4 {
            out[8 + 4 * i..12 + 4 * i].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
        }
    } else {
        out[4..8].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    let _ = KADDR.insert(&key, &out, 0);
    1
}

/// `security_socket_sendmsg(struct socket *, struct msghdr *, int)` (fentry, fexit mode): the
/// destination of a raw (`SOCK_RAW`) or packet socket's send, from `msg_name`, the kernel's
/// copy of the caller's sockaddr, which no cgroup hook sees. Inet, inet6 and packet addresses
/// only: the slot holds 28 bytes.
#[fentry]
pub fn kp_sendmsg(ctx: FEntryContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    if current_session_peek((key >> 32) as u32).is_none() {
        return 0;
    }
    let off = OFFSETS.load();
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    if u32::from(kread::<u16>(sock, off.socket_type)) != SOCK_RAW {
        let sk = kread_ptr(sock, off.socket_sk);
        if kread::<u16>(sk, off.skc_family) != AF_PACKET {
            return 0;
        }
    }
    let name = kread_ptr(msg, off.msghdr_name);
    let len = kread::<i32>(msg, off.msghdr_namelen);
    if name.is_null() || len < 2 {
        return 0;
    }
    let family = kread::<u16>(name, 0);
    if !matches!(family, AF_INET | AF_INET6 | AF_PACKET) {
        return 0;
    }
    let mut out = [0u8; 28];
    // The caller's length, at most the slot: the rest of the kernel's buffer is not the address.
    let n = if len > 28 { 28 } else { len as u32 };
    // SAFETY: a kernel pointer (the sockaddr_storage the syscall copied into); n <= 28 bytes.
    if unsafe { read_kernel_raw(out.as_mut_ptr().cast(), n, name.cast()) } == 0 {
        let _ = KADDR.insert(&key, &out, 0);
    }
    0
}

#[cgroup_sock_addr(connect4)]
pub fn kaddr_connect4(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn kaddr_connect6(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, true)
}

/// A bind's address as the kernel will use it (inet sockets; the same copy a bind that fails
/// with EADDRINUSE was refused for).
#[cgroup_sock_addr(bind4)]
pub fn kaddr_bind4(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, false)
}

#[cgroup_sock_addr(bind6)]
pub fn kaddr_bind6(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn kaddr_sendmsg4(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn kaddr_sendmsg6(ctx: SockAddrContext) -> i32 {
    keep_kernel_addr(&ctx, true)
}

/// Replace the address read from user memory with the kernel's copy, when a hook left one for
/// this thread of the kind a socket of `sk_family` goes through: an inet one (the cgroup hooks,
/// or the sendmsg hook for a raw socket; a v6 socket may send to a v4 address) for an inet
/// socket, a packet one for a packet socket; any, for `sk_family` 0 (an io_uring completion,
/// which does not read the socket). The entry is consumed either way.
#[inline(always)]
pub fn take_kernel_addr(addr: &mut [u8; SOCKADDR_CAP], addr_len: &mut u32, flags: &mut u32, sk_family: u16) {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup; the value is copied out before removal.
    let Some(k) = (unsafe { KADDR.get(&key) }).copied() else { return };
    let _ = KADDR.remove(&key);
    let family = u16::from_ne_bytes([k[0], k[1]]);
    let inet = |f: u16| f == AF_INET || f == AF_INET6;
    if !(sk_family == 0 || inet(sk_family) && inet(family) || sk_family == AF_PACKET && family == AF_PACKET) {
        return;
    }
    addr[..28].copy_from_slice(&k);
    *addr_len = match family {
        AF_INET6 => 28,
        AF_PACKET => 20,
        _ => 16,
    };
    *flags |= NET_ADDR_GIVEN | NET_ADDR_KERNEL;
}

/// A unix connect's peer as the kernel found it (fexit mode): the file the listening socket is
/// bound to, walked by `kpath::kp_unix_connect` during this connect, into `payload`
/// ([`NET_PEER_PATH`]). A walk that does not fit the payload is left out (the given path stays).
#[inline(always)]
fn peer_path(ev: &mut NetEvent, compat: bool) {
    let Some(k) = KPATHS.get_ptr(&bpf_get_current_pid_tgid()) else { return };
    // SAFETY: a map value, alive for this run.
    let k = unsafe { &*k };
    if !is_own(k.orig_ax, nr::CONNECT, compat) || k.complete[0] == 0 {
        return;
    }
    let n = k.len[0];
    // Clamped before any test of `n`, so the compiler keeps the bound the verifier needs (a
    // mask after the range test was folded away); a walk that did not fit is not flagged.
    let fits = if n as usize > PAYLOAD_CAP { PAYLOAD_CAP as u32 } else { n };
    // SAFETY: fits <= PAYLOAD_CAP <= both buffers.
    let r = unsafe { read_kernel_raw(ev.payload.as_mut_ptr().cast(), fits, k.buf[0].as_ptr().cast()) };
    if r == 0 && fits == n && n != 0 {
        ev.payload_len = n;
        ev.flags |= NET_PEER_PATH;
    }
}

const AF_UNIX: u16 = 1;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
const SOCK_PACKET: u32 = 10;
const AF_PACKET: u16 = 17;
const SOL_SOCKET: u64 = 1;
const SCM_RIGHTS: u64 = 1;
const MSG_FASTOPEN: u64 = 0x2000_0000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const DNS_PORT: u16 = 53;

/// Copy up to `CAP` bytes (a power of two) from user memory; the bytes copied, if any.
#[inline(always)]
fn read_user_bounded<const CAP: usize>(dst: &mut [u8; CAP], ptr: u64, len: u64) -> Option<u32> {
    if ptr == 0 || len == 0 {
        return None;
    }
    let cap = CAP as u64;
    let mut n = len;
    if n > cap {
        n = cap;
    }
    // The mask proves the bound to the verifier.
    n &= cap * 2 - 1;
    if n > cap {
        return None;
    }
    // SAFETY: n <= CAP, the helper checks the user address.
    (unsafe { read_user_raw(dst.as_mut_ptr().cast(), n as u32, ptr as *const _) } == 0).then_some(n as u32)
}

/// Copy up to `len` bytes of a user sockaddr into the event.
#[inline(always)]
fn read_addr(ev: &mut NetEvent, ptr: u64, len: u64) {
    if let Some(n) = read_user_bounded(&mut ev.addr, ptr, len) {
        ev.addr_len = n;
        ev.flags |= NET_ADDR_GIVEN;
    }
}

#[inline(always)]
fn read_payload(ev: &mut NetEvent, ptr: u64, len: u64) {
    if let Some(n) = read_user_bounded(&mut ev.payload, ptr, len) {
        ev.payload_len = n;
    }
}

/// Fill type, family, ports and addresses from the socket behind `fd`.
#[inline(always)]
fn read_sock(ev: &mut NetEvent, fd: i32) {
    let off = OFFSETS.load();
    let file = fd_file(fd);
    if file.is_null() {
        return;
    }
    let sock = kread_ptr(file, off.file_private_data);
    ev.sock_type = u32::from(kread::<u16>(sock, off.socket_type));
    let sk = kread_ptr(sock, off.socket_sk);
    if sk.is_null() {
        return;
    }
    ev.sk_family = kread::<u16>(sk, off.skc_family);
    ev.sk_lport = kread::<u16>(sk, off.skc_num);
    ev.sk_rport = u16::from_be(kread::<u16>(sk, off.skc_dport));
    if ev.sk_family == AF_INET {
        ev.sk_laddr[..4].copy_from_slice(&kread::<u32>(sk, off.skc_rcv_saddr).to_ne_bytes());
        ev.sk_raddr[..4].copy_from_slice(&kread::<u32>(sk, off.skc_daddr).to_ne_bytes());
    } else if ev.sk_family == AF_INET6 {
        // SAFETY: bpf_probe_read_kernel checks the address.
        ev.sk_laddr =
            unsafe { bpf_probe_read_kernel(sk.wrapping_add(off.skc_v6_rcv_saddr as usize).cast::<[u8; 16]>()) }
                .unwrap_or([0; 16]);
        ev.sk_raddr = unsafe { bpf_probe_read_kernel(sk.wrapping_add(off.skc_v6_daddr as usize).cast::<[u8; 16]>()) }
            .unwrap_or([0; 16]);
    }
    ev.flags |= NET_SOCK_KNOWN;
}

/// The port in a captured sockaddr (INET and INET6 keep it at bytes 2..4, big-endian).
#[inline(always)]
fn given_port(ev: &NetEvent) -> Option<u16> {
    if ev.flags & NET_ADDR_GIVEN == 0 || ev.addr_len < 4 {
        return None;
    }
    let family = u16::from_ne_bytes([ev.addr[0], ev.addr[1]]);
    (family == AF_INET || family == AF_INET6).then(|| u16::from_be_bytes([ev.addr[2], ev.addr[3]]))
}

#[inline(always)]
fn read_u64(ptr: u64) -> u64 {
    // SAFETY: the helper checks the user address.
    unsafe { bpf_probe_read_user(ptr as *const u64) }.unwrap_or(0)
}

/// A user `socklen_t`, or a compat pointer or length (read as 4 bytes: it may end a page).
#[inline(always)]
fn read_u32(ptr: u64) -> u64 {
    // SAFETY: the helper checks the user address.
    u64::from(unsafe { bpf_probe_read_user(ptr as *const u32) }.unwrap_or(0))
}

/// A `recvmsg` that received file descriptors: read the fd numbers the kernel wrote into the
/// control buffer (`SCM_RIGHTS`, in the first two control messages: `SCM_CREDENTIALS` may come
/// first) and record the file behind the first (see [`crate::file::received_fds`]).
#[inline(always)]
pub fn received_fds(p: &PendingSyscall, session: u64, compat: bool) {
    let msg = p.args[1];
    // msg_control and msg_controllen, which the kernel set to the bytes it wrote.
    let (mut at, len) =
        if compat { (read_u32(msg + 16), read_u32(msg + 20)) } else { (read_u64(msg + 32), read_u64(msg + 40)) };
    if at == 0 {
        return;
    }
    let end = at + len;
    // struct cmsghdr { size_t len; int level; int type; } (compat: u32 len); data after it.
    let (hdr, align) = if compat { (12u64, 4u64) } else { (16u64, 8u64) };
    for _ in 0..2 {
        if at + hdr > end {
            return;
        }
        let (clen, level, ty) = if compat {
            (read_u32(at), read_u32(at + 4), read_u32(at + 8))
        } else {
            (read_u64(at), read_u32(at + 8), read_u32(at + 12))
        };
        if clen < hdr || at + clen > end {
            return;
        }
        if level == SOL_SOCKET && ty == SCM_RIGHTS {
            let n = ((clen - hdr) / 4) as u32;
            let mut fds = [-1i32; SCM_FDS_MAX];
            for (i, fd) in fds.iter_mut().enumerate() {
                if i as u32 >= n {
                    break;
                }
                *fd = read_u32(at + hdr + 4 * i as u64) as i32;
            }
            if n > 0 && crate::file::received_fds(p, &fds, n, session, compat) == 0 {
                crate::maps::count(monitor_common::counter::READ_ERRORS);
            }
            return;
        }
        at += (clen + align - 1) & !(align - 1);
    }
}

/// A BPF subprogram of its own (inlining it into every caller blows the verifier's budget).
/// It returns the event's flags, which the caller checks: a subprogram whose result LLVM finds
/// unused or constant loses its return value and may leave a stack pointer in r0, which the
/// verifier rejects.
#[inline(never)]
pub fn on_exit(p: &PendingSyscall, ret: i64, session: u64, compat: bool) -> u32 {
    let Some(ev) = NET_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut NetEvent = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Net as u32, session);
    ev.nr = p.nr as u32;
    ev.flags = if compat { COMPAT } else { 0 };
    ev.ret = ret;
    // fds are ints: the kernel ignores the register's upper half, and so do we.
    ev.fd = p.args[0] as u32 as i32;
    ev.sock_type = 0;
    ev.addr_len = 0;
    ev.payload_len = 0;
    ev.sk_family = 0;
    ev.sk_lport = 0;
    ev.sk_rport = 0;
    ev.sk_laddr = [0; 16];
    ev.sk_raddr = [0; 16];
    let mut sock_fd = ev.fd;
    // The send flags (sendto: arg 3, sendmsg/sendmmsg: arg 2 / 3).
    let mut send_flags = 0u64;
    // (payload pointer, payload length) for UDP send/recv.
    let mut payload = (0u64, 0u64);
    ev.proto = 0;
    match p.nr {
        // socket(family, type, protocol): raw and packet sockets only (registers, not memory).
        nr::SOCKET => {
            let family = p.args[0] as u16;
            let ty = (p.args[1] & 0xf) as u32;
            if !(ty == SOCK_RAW || ty == SOCK_PACKET || family == AF_PACKET) {
                return 0;
            }
            ev.fd = ret as i32;
            ev.sk_family = family;
            ev.sock_type = ty;
            ev.proto = p.args[2] as u16;
            emit(ev, session, EventClass::Net);
            return ev.flags | 1;
        }
        nr::CONNECT | nr::BIND => read_addr(ev, p.args[1], p.args[2] & 0xffff_ffff),
        nr::LISTEN => {}
        nr::ACCEPT | nr::ACCEPT4 => {
            if ret >= 0 {
                sock_fd = ret as i32;
                if p.args[1] != 0 && p.args[2] != 0 {
                    read_addr(ev, p.args[1], read_u32(p.args[2]));
                }
            }
        }
        nr::SENDTO => {
            read_addr(ev, p.args[4], p.args[5] & 0xffff_ffff);
            payload = (p.args[1], p.args[2]);
            send_flags = p.args[3];
        }
        nr::RECVFROM => {
            if p.args[4] != 0 && p.args[5] != 0 {
                read_addr(ev, p.args[4], read_u32(p.args[5]));
            }
            payload = (p.args[1], if ret > 0 { ret as u64 } else { 0 });
        }
        // sendmmsg: the first message's msghdr starts the first struct mmsghdr.
        nr::SENDMSG | nr::SENDMMSG | nr::RECVMSG => {
            let msg = p.args[1];
            let (name, namelen, iov) = if compat {
                // struct compat_msghdr { u32 name; int namelen; u32 iov; u32 iovlen; ... }
                (read_u32(msg), read_u32(msg + 4), read_u32(msg + 8))
            } else {
                // struct msghdr { void *name; int namelen; struct iovec *iov; size_t iovlen; ... }
                (read_u64(msg), read_u64(msg + 8) & 0xffff_ffff, read_u64(msg + 16))
            };
            read_addr(ev, name, namelen);
            let (base, len) =
                if compat { (read_u32(iov), read_u32(iov + 4)) } else { (read_u64(iov), read_u64(iov + 8)) };
            send_flags = if p.nr == nr::SENDMMSG { p.args[3] } else { p.args[2] };
            let len = if p.nr == nr::RECVMSG {
                if ret > 0 {
                    ret as u64
                } else {
                    0
                }
            } else {
                len
            };
            payload = (base, len);
        }
        _ => return 0,
    }
    read_sock(ev, sock_fd);
    if p.nr == nr::CONNECT && ev.sk_family == AF_UNIX {
        peer_path(ev, compat);
    }
    if matches!(p.nr, nr::CONNECT | nr::BIND | nr::SENDTO | nr::SENDMSG | nr::SENDMMSG) {
        take_kernel_addr(&mut ev.addr, &mut ev.addr_len, &mut ev.flags, ev.sk_family);
    }
    let is_send = matches!(p.nr, nr::SENDTO | nr::SENDMSG | nr::SENDMMSG);
    let is_recv = matches!(p.nr, nr::RECVFROM | nr::RECVMSG);
    if is_send && send_flags & 0xffff_ffff & MSG_FASTOPEN != 0 {
        ev.flags |= NET_FASTOPEN;
    }
    if is_send || is_recv {
        // A send on a stream socket that carries an address or MSG_FASTOPEN may connect (TCP
        // fast open): recorded, and read as a connect to the socket's peer. Other TCP sends and
        // receives are part of a connection already recorded.
        if ev.sock_type == SOCK_STREAM && is_send && ev.flags & (NET_ADDR_GIVEN | NET_FASTOPEN) != 0 {
            emit(ev, session, EventClass::Net);
            return 0;
        }
        // Raw IP and packet sockets: every send, with its destination.
        if is_send && (ev.sock_type == SOCK_RAW || ev.sock_type == SOCK_PACKET || ev.sk_family == AF_PACKET) {
            emit(ev, session, EventClass::Net);
            return ev.flags | 1;
        }
        // Only UDP traffic is recorded otherwise.
        if ev.sock_type != SOCK_DGRAM {
            return 0;
        }
        let port = given_port(ev).unwrap_or(ev.sk_rport);
        if port == DNS_PORT {
            read_payload(ev, payload.0, payload.1);
        } else if is_recv {
            return 0;
        }
    }
    emit(ev, session, EventClass::Net);
    ev.flags
}
