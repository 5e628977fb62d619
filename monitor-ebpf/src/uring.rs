//! io_uring requests of session processes. Submissions bypass the syscall tracepoints, so the
//! `io_uring:io_uring_submit_req` tracepoint records each one (operation, fd, the path the kernel
//! copied in, the address), and `io_uring:io_uring_complete` records its result; for an open,
//! the opened file's real path. Operations without a path or address still get both events,
//! with their opcode.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        generated::bpf_probe_read_kernel_str,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use monitor_common::{
    uring, EventClass, EventKind, IoUringEvent, DIR1_RESOLVED, DIR1_TRUNCATED, DIR2_RESOLVED, DIR2_TRUNCATED, DIR_CAP,
    NET_ADDR_GIVEN, OBJ_PATH, PATH1_TRUNCATED, PATH2_TRUNCATED, PATH_CAP, SOCKADDR_CAP, URING_COMPLETE, URING_DIR2_OFF,
    URING_DIR_OFF, URING_FIXED_SLOT, URING_PATH2_OFF, URING_PATH_OFF, URING_SUBMIT,
};

use crate::{
    maps::{current_session, current_tgid_pid, emit_bytes, fill_header, kread, kread_ptr, OFFSETS},
    vfs::{fd_file, walk_cwd, walk_struct_path},
};

const AT_FDCWD: i32 = -100;

/// A submitted request, until its completion.
#[derive(Clone, Copy)]
struct InFlight {
    session: u64,
    start_ns: u64,
    tgid: u32,
    pid: u32,
    opcode: u32,
    fd: i32,
    file_slot: u32,
}

/// Submitted requests of session processes: `req` pointer -> what the completion needs.
#[map]
static URING_REQS: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(8192, 0);

#[map]
static URING_SCRATCH: PerCpuArray<IoUringEvent> = PerCpuArray::with_max_entries(1, 0);

/// Classic tracepoint record offsets (`/sys/kernel/tracing/events/io_uring/*/format`, stable
/// since 5.19): submit_req has req@16, user_data@24, opcode@32; complete has req@16,
/// user_data@24, res@32.
const TP_REQ: usize = 16;
const TP_USER_DATA: usize = 24;
const TP_OPCODE_OR_RES: usize = 32;

/// Copy the kernel string of a `struct filename *` stored at `req + at`.
#[inline(always)]
fn read_filename(req: *const u8, at: u32, buf: *mut u8) -> (u32, bool) {
    if at == 0 {
        return (0, false);
    }
    let filename = kread_ptr(req, at);
    let name = kread_ptr(filename, OFFSETS.load().filename_name);
    if name.is_null() {
        return (0, false);
    }
    // SAFETY: the helper checks the kernel address; `buf` has PATH_CAP bytes.
    let n = unsafe { bpf_probe_read_kernel_str(buf.cast(), PATH_CAP as u32, name.cast()) };
    if n <= 0 {
        return (0, false);
    }
    ((n - 1) as u32 & (PATH_CAP as u32 - 1), n as usize >= PATH_CAP)
}

/// The per-request fields the scratch event may still hold from its last use.
#[inline(always)]
fn clear_fields(ev: &mut IoUringEvent) {
    ev.dfd = AT_FDCWD;
    ev.flags = 0;
    ev.addr_len = 0;
    ev.path_len = 0;
    ev.path2_len = 0;
    ev.dir_len = 0;
    ev.open_flags = 0;
    ev.dfd2 = AT_FDCWD;
    ev.dir2_len = 0;
    ev.file_slot = 0;
    ev.pad = 0;
}

/// The directory a relative name is relative to: the cwd, or the file behind `dfd`.
#[inline(always)]
fn resolve_dfd(dfd: i32, buf: *mut u8) -> (u32, bool) {
    if dfd == AT_FDCWD {
        return walk_cwd(buf);
    }
    let file = fd_file(dfd);
    if file.is_null() {
        return (0, false);
    }
    walk_struct_path(file.wrapping_add(OFFSETS.load().file_path as usize), buf)
}

#[tracepoint]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let (tgid, pid) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let Some(ev) = URING_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut IoUringEvent = unsafe { &mut *ev };
    let off = OFFSETS.load();
    // SAFETY: reads within the tracepoint record.
    let req = unsafe { ctx.read_at::<u64>(TP_REQ) }.unwrap_or(0);
    let opcode = u32::from(unsafe { ctx.read_at::<u8>(TP_OPCODE_OR_RES) }.unwrap_or(0));
    let r = req as *const u8;
    fill_header(&mut ev.hdr, EventKind::IoUring as u32, session);
    ev.phase = URING_SUBMIT;
    ev.opcode = opcode;
    ev.req = req;
    ev.user_data = unsafe { ctx.read_at::<u64>(TP_USER_DATA) }.unwrap_or(0);
    ev.res = 0;
    ev.fd = kread::<i32>(r, off.kiocb_fd);
    clear_fields(ev);
    // A read or write on an ordinary fd: the file behind it, now, from the submitter's table
    // (a registered-file index is not an fd: `REQ_F_FIXED_FILE`, bit 0 of the request's flags).
    let fd_op = matches!(
        opcode,
        uring::READ | uring::WRITE | uring::READV | uring::WRITEV | uring::READ_FIXED | uring::WRITE_FIXED
    );
    if fd_op && off.kiocb_flags != 0 && kread::<u32>(r, off.kiocb_flags) & 1 == 0 {
        let file = fd_file(ev.fd);
        if !file.is_null() {
            let (dn, complete) = walk_struct_path(file.wrapping_add(off.file_path as usize), ev.path.as_mut_ptr());
            if complete {
                ev.dir_len = dn;
                ev.flags |= OBJ_PATH;
                // The walk writes into `path` and on into `path2` (as at completion).
                let mut len = URING_PATH_OFF + dn as usize;
                if len > URING_PATH_OFF + DIR_CAP {
                    len = URING_PATH_OFF + DIR_CAP;
                }
                let inflight =
                    InFlight { session, start_ns: ev.hdr.start_ns, tgid, pid, opcode, fd: ev.fd, file_slot: 0 };
                let _ = URING_REQS.insert(&req, &inflight, 0);
                // SAFETY: len <= size_of::<IoUringEvent>().
                let bytes = unsafe { core::slice::from_raw_parts((ev as *const IoUringEvent).cast::<u8>(), len) };
                emit_bytes(bytes, session, EventClass::File);
                return 0;
            }
        }
    }
    if matches!(opcode, uring::OPENAT | uring::OPENAT2) && off.uring_open_how != 0 {
        ev.open_flags = kread::<u32>(r, off.uring_open_how);
        if off.uring_open_slot != 0 {
            ev.file_slot = kread::<u32>(r, off.uring_open_slot);
        }
    }

    // (dfd offset, filename offset, second dfd offset, second filename offset) by operation.
    let (dfd_at, name_at, dfd2_at, name2_at) = match opcode {
        uring::OPENAT | uring::OPENAT2 => (off.uring_open[0], off.uring_open[1], 0, 0),
        uring::UNLINKAT => (off.uring_unlink[0], off.uring_unlink[1], 0, 0),
        uring::MKDIRAT => (off.uring_mkdir[0], off.uring_mkdir[1], 0, 0),
        uring::STATX => (off.uring_statx[0], off.uring_statx[1], 0, 0),
        uring::RENAMEAT => (off.uring_rename[0], off.uring_rename[1], off.uring_rename[2], off.uring_rename[3]),
        // linkat(old, new): the new name is relative to new_dfd.
        uring::LINKAT => (off.uring_link[0], off.uring_link[1], off.uring_link[2], off.uring_link[3]),
        // symlinkat(target, link): the link (first here) is relative to new_dfd; the target
        // is content, not resolved.
        uring::SYMLINKAT => (off.uring_link[2], off.uring_link[3], 0, off.uring_link[1]),
        _ => (0, 0, 0, 0),
    };
    let mut len = URING_PATH_OFF;
    if name_at != 0 {
        ev.dfd = kread::<i32>(r, dfd_at);
        let (n, trunc) = read_filename(r, name_at, ev.path.as_mut_ptr());
        ev.path_len = n;
        if trunc {
            ev.flags |= PATH1_TRUNCATED;
        }
        len = URING_PATH_OFF + n as usize;
        if name2_at != 0 {
            let (n2, trunc2) = read_filename(r, name2_at, ev.path2.as_mut_ptr());
            ev.path2_len = n2;
            if trunc2 {
                ev.flags |= PATH2_TRUNCATED;
            }
            len = URING_PATH2_OFF + n2 as usize;
        }
        // A relative path: the directory it is relative to.
        if n == 0 || ev.path[0] != b'/' {
            let (dn, complete) = resolve_dfd(ev.dfd, ev.dir.as_mut_ptr());
            ev.dir_len = dn;
            ev.flags |= if complete { DIR1_RESOLVED } else { DIR1_RESOLVED | DIR1_TRUNCATED };
            len = URING_DIR_OFF + dn as usize;
        }
        // A relative second name (rename's or link's new name): its own directory fd.
        if dfd2_at != 0 && name2_at != 0 && (ev.path2_len == 0 || ev.path2[0] != b'/') {
            ev.dfd2 = kread::<i32>(r, dfd2_at);
            let (dn, complete) = resolve_dfd(ev.dfd2, ev.dir2.as_mut_ptr());
            ev.dir2_len = dn;
            ev.flags |= if complete { DIR2_RESOLVED } else { DIR2_RESOLVED | DIR2_TRUNCATED };
            len = URING_DIR2_OFF + dn as usize;
        }
    } else if opcode == uring::CONNECT && off.uring_connect[0] != 0 {
        let addr = kread::<u64>(r, off.uring_connect[0]);
        let mut alen = u64::from(kread::<u32>(r, off.uring_connect[1]));
        if alen > SOCKADDR_CAP as u64 {
            alen = SOCKADDR_CAP as u64;
        }
        alen &= (SOCKADDR_CAP * 2 - 1) as u64;
        if addr != 0 && alen > 0 && alen <= SOCKADDR_CAP as u64 {
            // SAFETY: the helper checks the user address; alen <= SOCKADDR_CAP.
            let rc = unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_user(
                    ev.addr.as_mut_ptr().cast(),
                    alen as u32,
                    addr as *const _,
                )
            };
            if rc == 0 {
                ev.addr_len = alen as u32;
                ev.flags |= NET_ADDR_GIVEN;
            }
        }
    }
    let inflight =
        InFlight { session, start_ns: ev.hdr.start_ns, tgid, pid, opcode, fd: ev.fd, file_slot: ev.file_slot };
    let _ = URING_REQS.insert(&req, &inflight, 0);
    if len > URING_DIR2_OFF + DIR_CAP {
        len = URING_DIR2_OFF + DIR_CAP;
    }
    // SAFETY: len <= size_of::<IoUringEvent>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const IoUringEvent).cast::<u8>(), len) };
    emit_bytes(bytes, session, EventClass::File);
    0
}

#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    // SAFETY: reads within the tracepoint record.
    let req = unsafe { ctx.read_at::<u64>(TP_REQ) }.unwrap_or(0);
    // SAFETY: plain map lookup; the value is copied out before removal.
    let Some(f) = (unsafe { URING_REQS.get(&req) }).copied() else { return 0 };
    let _ = URING_REQS.remove(&req);
    let Some(ev) = URING_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut IoUringEvent = unsafe { &mut *ev };
    // The submitter's identity: the completion may run in an io-wq worker of the same process.
    ev.hdr.kind = EventKind::IoUring as u32;
    ev.hdr.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.hdr.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.hdr.session_cgroup = f.session;
    ev.hdr.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.hdr.tgid = f.tgid;
    ev.hdr.pid = f.pid;
    ev.hdr.start_ns = f.start_ns;
    ev.phase = URING_COMPLETE;
    ev.opcode = f.opcode;
    ev.req = req;
    ev.user_data = unsafe { ctx.read_at::<u64>(TP_USER_DATA) }.unwrap_or(0);
    ev.res = i64::from(unsafe { ctx.read_at::<i32>(TP_OPCODE_OR_RES) }.unwrap_or(0));
    ev.fd = f.fd;
    clear_fields(ev);
    ev.file_slot = f.file_slot;
    let mut len = URING_PATH_OFF;
    let (tgid, _) = current_tgid_pid();
    if matches!(f.opcode, uring::SENDMSG | uring::SEND | uring::CONNECT) {
        // The destination as the kernel used it (cgroup hooks), not the user's sockaddr.
        // (The socket's family is not read here: 0 takes any entry.)
        crate::net::take_kernel_addr(&mut ev.addr, &mut ev.addr_len, &mut ev.flags, 0);
        len = URING_PATH_OFF;
    }
    // An open into a registered-file slot: its result is 0 on success, not an fd; the file is
    // the one named at submission (the kernel's own copy of the name).
    if f.file_slot != 0 {
        ev.flags |= URING_FIXED_SLOT;
    }
    // An open's new fd, resolved in the submitter's fd table (only when running in it).
    if matches!(f.opcode, uring::OPENAT | uring::OPENAT2) && f.file_slot == 0 && ev.res >= 0 && tgid == f.tgid {
        let file = fd_file(ev.res as i32);
        if !file.is_null() {
            // Into `path` (unused at completion; `path2` follows it, so the walk has room), to
            // keep the event small.
            let (dn, complete) =
                walk_struct_path(file.wrapping_add(OFFSETS.load().file_path as usize), ev.path.as_mut_ptr());
            if complete {
                ev.dir_len = dn;
                ev.flags |= OBJ_PATH;
                len = URING_PATH_OFF + dn as usize;
            }
        }
    }
    if len > URING_DIR_OFF + DIR_CAP {
        len = URING_DIR_OFF + DIR_CAP;
    }
    // SAFETY: len <= size_of::<IoUringEvent>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const IoUringEvent).cast::<u8>(), len) };
    emit_bytes(bytes, f.session, EventClass::File);
    0
}
