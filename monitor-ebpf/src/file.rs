//! File syscalls, and the generic enter/exit pair every file and network syscall goes through.
//!
//! `sys_enter_tracked` is attached to each hooked `syscalls/sys_enter_*` tracepoint: for tagged
//! threads it saves the syscall number and raw arguments. `sys_exit_tracked`, attached to the
//! matching `sys_exit_*`, pairs them with the result and emits a file or network event. Strings
//! and addresses are read at exit, from the same user pointers.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use monitor_common::{
    nr, EventClass, EventKind, FileEvent, PendingSyscall, COMPAT, DIR1_RESOLVED, DIR1_TRUNCATED, DIR2_RESOLVED,
    DIR2_TRUNCATED, DIR_CAP, EMPTY_PATH, FD_PATH, FILE_DIR1_OFF, FILE_DIR2_OFF, FILE_PATH1_OFF, FILE_PATH2_OFF, KNAME1,
    KNAME2, KPATH1, KPATH2, OBJ_FLAGS, OBJ_PATH, PATH1_TRUNCATED, PATH2_TRUNCATED, PATH_CAP, ROOT_CHANGED, SCM_FDS,
    SCM_FDS_MAX,
};

use crate::{
    kpath::{own_names, KernelPaths, NAME_ABSENT},
    maps::{current_session, current_tgid_pid, emit_bytes, fill_header, kread, OFFSETS},
    net, tamper,
    vfs::{fd_file, root_changed, walk_cwd, walk_root, walk_struct_path},
};

/// In-flight file/network syscalls of tracked threads, by pid_tgid.
#[map]
pub static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

#[map]
static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

const AT_FDCWD: i32 = -100;

#[tracepoint]
pub fn sys_enter_tracked(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_tgid_pid();
    if current_session(tgid).is_none() {
        return 0;
    }
    // SAFETY: reads within the sys_enter record: `int __syscall_nr` at 8, six args from 16.
    // The number is an int: bytes 12..16 are padding, not part of it.
    let nr = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1);
    if nr < 0 {
        return 0;
    }
    let mut p = PendingSyscall { nr: nr as u64, args: [0; 6] };
    for i in 0..6 {
        p.args[i] = unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0);
    }
    let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &p, 0);
    0
}

#[tracepoint]
pub fn sys_exit_tracked(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup; the value is copied out before removal.
    let Some(p) = (unsafe { PENDING.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&key);
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else {
        return 0;
    };
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    finish(&p, ret, session);
    0
}

/// Turn a finished syscall into its event (the 64-bit and the compat tracepoints).
#[inline(always)]
pub fn finish(p: &PendingSyscall, ret: i64, session: u64) {
    finish_with(p, ret, session, core::ptr::null());
}

/// [`finish`], with the paths the kernel's own hooks saw for this call, when there are any
/// (the fexit handler; see `kpath.rs`): they name the objects instead of the paths re-read
/// from user memory.
#[inline(always)]
pub fn finish_with(p: &PendingSyscall, ret: i64, session: u64, kp: *const KernelPaths) {
    let compat = p.nr & nr::COMPAT_BIT != 0;
    let native = &PendingSyscall { nr: p.nr & !nr::COMPAT_BIT, args: p.args };
    if nr::is_net(native.nr) {
        if net::on_exit(native, ret, session, compat) == u32::MAX {
            crate::maps::count(monitor_common::counter::READ_ERRORS);
        }
        if native.nr == nr::RECVMSG && ret >= 0 {
            net::received_fds(native, session, compat);
        }
    } else if let Some(layout) = nr::file_layout(native.nr) {
        if on_file_exit(native, ret, session, &(layout, compat), kp) == 0 {
            crate::maps::count(monitor_common::counter::READ_ERRORS);
        }
    } else if nr::is_tamper(native.nr) && tamper::on_exit(native, ret, session, compat) == u32::MAX {
        crate::maps::count(monitor_common::counter::READ_ERRORS);
    }
}

/// File descriptors a `recvmsg` received (`SCM_RIGHTS`): one file event naming the file the
/// kernel installed at the first fd (read from the fd table, walked to the real root), with its
/// `f_flags`; `how_flags` holds how many fds came, `how_mode` and `how_resolve` the next four
/// fd numbers (two per word; -1 when none). One path walk per call: a walk per fd (a loop of
/// walks) is past the verifier's budget. Returns the event's length (0: no scratch).
#[inline(never)]
pub fn received_fds(p: &PendingSyscall, fds: &[i32; SCM_FDS_MAX], n: u32, session: u64, compat: bool) -> u32 {
    let Some(ev) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut FileEvent = unsafe { &mut *ev };
    let pair = |a: i32, b: i32| u64::from(a as u32) | (u64::from(b as u32) << 32);
    begin_event(ev, p, i64::from(fds[0]), session, if compat { COMPAT | SCM_FDS } else { SCM_FDS });
    ev.how_flags = u64::from(n);
    ev.how_mode = pair(fds[1], fds[2]);
    ev.how_resolve = pair(fds[3], fds[4]);
    let mut len = FILE_PATH1_OFF;
    let at = ev.path1.as_mut_ptr();
    if let Some(dn) = opened_file(ev, fd_file(fds[0]), at) {
        len = FILE_PATH1_OFF + (dn as usize).min(DIR_CAP);
    }
    // SAFETY: len <= FILE_PATH1_OFF + DIR_CAP <= size_of::<FileEvent>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const FileEvent).cast::<u8>(), len) };
    emit_bytes(bytes, session, EventClass::File);
    len as u32
}

/// Start a file event in the scratch: header, syscall, `flags`, result and arguments, with
/// every optional field cleared (the scratch holds the last event).
#[inline(always)]
fn begin_event(ev: &mut FileEvent, p: &PendingSyscall, ret: i64, session: u64, flags: u32) {
    fill_header(&mut ev.hdr, EventKind::File as u32, session);
    ev.nr = p.nr as u32;
    ev.flags = flags;
    ev.ret = ret;
    ev.args = p.args;
    ev.how_flags = 0;
    ev.how_mode = 0;
    ev.how_resolve = 0;
    ev.obj_flags = 0;
    ev.obj_mode = 0;
    ev.path1_len = 0;
    ev.dir1_len = 0;
    ev.path2_len = 0;
    ev.dir2_len = 0;
}

/// The open file `file` (none when null) as the kernel holds it: how it was opened (`f_flags`,
/// `f_mode`: the access the process got, whatever its memory says by now), and its path walked
/// to the real root into `at`, which has `CWD_MAX + COMPONENT_MAX` bytes. Returns the walk's
/// length (in `dir1_len`) when it reached the root.
#[inline(always)]
fn opened_file(ev: &mut FileEvent, file: *const u8, at: *mut u8) -> Option<u32> {
    if file.is_null() {
        return None;
    }
    let off = OFFSETS.load();
    ev.obj_flags = kread::<u32>(file, off.file_f_flags);
    ev.obj_mode = kread::<u32>(file, off.file_f_mode);
    ev.flags |= OBJ_FLAGS;
    let (dn, complete) = walk_struct_path(file.wrapping_add(off.file_path as usize), at);
    if !complete {
        return None;
    }
    ev.dir1_len = dn;
    ev.flags |= OBJ_PATH;
    Some(dn)
}

/// The paths of a path operation as the kernel's hooks saw them (`kpath.rs`): each path
/// argument the hook named gets the kernel's object in its directory slot (`KPATH1`/`KPATH2`),
/// beside the path as given. A separate branch, all or nothing, so the verifier walks it once
/// beside the user-memory one rather than through every combination of the two. `None` (an
/// incomplete walk) leaves the caller to read the paths from user memory.
#[inline(always)]
fn kernel_paths(
    p: &PendingSyscall,
    ev: &mut FileEvent,
    layout: (i8, i8, i8, i8, i8),
    kp: *const KernelPaths,
) -> Option<usize> {
    let (p1, _, p2, _, _) = layout;
    // Which of the hook's objects each path argument names: a symlink's first path (its
    // link path) is the hook's one object, and its second (the target) is content.
    let (k1, k2) = match p.nr {
        nr::SYMLINK | nr::SYMLINKAT => (Some(0), None),
        nr::RENAME | nr::RENAMEAT | nr::RENAMEAT2 | nr::LINK | nr::LINKAT => (Some(0), Some(1)),
        _ => (Some(0), None),
    };
    let mut flags = 0;
    let mut len = FILE_PATH1_OFF;
    if p1 >= 0 {
        let (n, trunc, _) = read_name(arg(p, p1), ev, 0);
        ev.path1_len = n;
        flags |= if trunc { PATH1_TRUNCATED } else { 0 };
        len = FILE_PATH1_OFF + n as usize;
        if let Some(k) = k1 {
            let dn = kernel_path(kp, k, ev.dir1.as_mut_ptr())?;
            ev.dir1_len = dn;
            flags |= KPATH1;
            len = FILE_DIR1_OFF + dn as usize;
        }
    }
    if p2 >= 0 {
        let (n, trunc, _) = read_name(arg(p, p2), ev, 1);
        ev.path2_len = n;
        flags |= if trunc { PATH2_TRUNCATED } else { 0 };
        len = FILE_PATH2_OFF + n as usize;
        if let Some(k) = k2 {
            let dn = kernel_path(kp, k, ev.dir2.as_mut_ptr())?;
            ev.dir2_len = dn;
            flags |= KPATH2;
            len = FILE_DIR2_OFF + dn as usize;
        }
    }
    ev.flags |= flags;
    Some(len)
}

/// Copy the kernel's path `slot` (complete walks only) into `dst`, which has `DIR_CAP` bytes;
/// returns its length, or `None` when there is none.
#[inline(always)]
fn kernel_path(kp: *const KernelPaths, slot: usize, dst: *mut u8) -> Option<u32> {
    if kp.is_null() {
        return None;
    }
    // SAFETY: a map value the caller looked up this run.
    let kp = unsafe { &*kp };
    let slot = slot & 1;
    if kp.complete[slot] == 0 {
        return None;
    }
    let n = kernel_path_len(kp, slot);
    // SAFETY: n <= DIR_CAP, the size of both buffers.
    let r = unsafe { bpf_probe_read_kernel(dst.cast(), n, kp.buf[slot].as_ptr().cast()) };
    (r == 0).then_some(n)
}

/// The length of the kernel's path `slot`, bounded by `DIR_CAP`.
#[inline(always)]
fn kernel_path_len(kp: *const KernelPaths, slot: usize) -> u32 {
    if kp.is_null() {
        return 0;
    }
    // SAFETY: as in [`kernel_path`].
    let n = unsafe { (*kp).len[slot & 1] };
    if n as usize > DIR_CAP {
        DIR_CAP as u32
    } else {
        n
    }
}

/// A path argument into its buffer (`path1` for slot 0, `path2` for slot 1) of the event at
/// `ev`: the kernel's copy when [`take_names`] put one there (`KNAME1`/`KNAME2`, read back from
/// the event), else re-read from user memory at `ptr`. Returns its length without the NUL,
/// whether it filled the buffer, and whether it could be read at all.
#[inline(always)]
fn read_name(ptr: u64, ev: *mut FileEvent, slot: usize) -> (u32, bool, bool) {
    // SAFETY: the per-CPU scratch event, ours for this run.
    let ev = unsafe { &mut *ev };
    let (taken, len, buf) = if slot == 0 {
        (ev.flags & KNAME1, ev.path1_len, ev.path1.as_mut_ptr())
    } else {
        (ev.flags & KNAME2, ev.path2_len, ev.path2.as_mut_ptr())
    };
    if taken != 0 {
        return (len & (PATH_CAP as u32 - 1), false, true);
    }
    if ptr == 0 {
        return (0, false, false);
    }
    // SAFETY: the helper checks the user address; `buf` has PATH_CAP bytes.
    let n = unsafe { bpf_probe_read_user_str(buf.cast(), PATH_CAP as u32, ptr as *const _) };
    if n <= 0 {
        return (0, false, false);
    }
    ((n - 1) as u32 & (PATH_CAP as u32 - 1), n as usize >= PATH_CAP, true)
}

/// Copy this call's names as the kernel copied them (`kpath::KNAMES`, fexit mode) into the
/// event's `path1`/`path2`, each flagged `KNAME1`/`KNAME2`, for [`read_name`] to take instead
/// of the caller's memory. Returns the event's flags, which the caller stores.
///
/// A subprogram of its own, so that the map pointer ends here and what follows meets only the
/// event's flags: with the pointer live through the path code, the verifier walked that code
/// once per kind of pointer (null, no name, a name), past its 1M-instruction budget on 6.1.
#[inline(never)]
fn take_names(ev: &mut FileEvent, native: u64, compat: bool) -> u32 {
    let kn = own_names(native, compat);
    if kn.is_null() {
        return ev.flags;
    }
    // SAFETY: a map value, alive for this run.
    let kn = unsafe { &*kn };
    if kn.len[0] != NAME_ABSENT {
        // SAFETY: both buffers have PATH_CAP bytes.
        let r = unsafe {
            bpf_probe_read_kernel_str(ev.path1.as_mut_ptr().cast(), PATH_CAP as u32, kn.buf[0].as_ptr().cast())
        };
        if r > 0 {
            ev.path1_len = (r - 1) as u32 & (PATH_CAP as u32 - 1);
            ev.flags |= KNAME1;
        }
    }
    if kn.len[1] != NAME_ABSENT {
        // SAFETY: as above.
        let r = unsafe {
            bpf_probe_read_kernel_str(ev.path2.as_mut_ptr().cast(), PATH_CAP as u32, kn.buf[1].as_ptr().cast())
        };
        if r > 0 {
            ev.path2_len = (r - 1) as u32 & (PATH_CAP as u32 - 1);
            ev.flags |= KNAME2;
        }
    }
    ev.flags
}

/// The directory a relative path is relative to: the cwd, or the file behind `dirfd`.
#[inline(always)]
fn resolve_dir(dirfd: i32, buf: *mut u8) -> (u32, bool) {
    if dirfd == AT_FDCWD {
        return walk_cwd(buf);
    }
    let file = fd_file(dirfd);
    if file.is_null() {
        return (0, false);
    }
    walk_struct_path(file.wrapping_add(OFFSETS.load().file_path as usize), buf)
}

/// (path truncated, dir resolved, dir truncated) flag bits for the first and second path.
type PathBits = (u32, u32, u32);
const PATH1_BITS: PathBits = (PATH1_TRUNCATED, DIR1_RESOLVED, DIR1_TRUNCATED);
const PATH2_BITS: PathBits = (PATH2_TRUNCATED, DIR2_RESOLVED, DIR2_TRUNCATED);

#[inline(always)]
fn dir_flags(complete: bool, bits: PathBits) -> u32 {
    if complete {
        bits.1
    } else {
        bits.1 | bits.2
    }
}

/// The dirfd a layout's dirfd index names: the argument, the cwd (-1), or none at all (-2: the
/// path is content, like a symlink's target, and is not resolved).
#[inline(always)]
fn dirfd_arg(p: &PendingSyscall, d: i8) -> Option<i32> {
    match d {
        -2 => None,
        -1 => Some(AT_FDCWD),
        // An int, as the kernel reads it: the upper half of the register is ignored.
        _ => Some(arg(p, d) as u32 as i32),
    }
}

/// Read a path argument (`ptr`, or the kernel's name: [`read_name`]) into its buffer and, when
/// it is relative or empty (and `dirfd` is given),
/// the directory it is relative to into `dir`. An empty path is resolved too: with
/// `AT_EMPTY_PATH` the kernel acts on the dirfd's file itself, and without it the call fails
/// with ENOENT, so naming that file is right either way. Returns (path length, dir length, flags).
#[inline(always)]
fn capture_path(
    (ptr, ev, slot): (u64, *mut FileEvent, usize),
    dirfd: Option<i32>,
    path: *mut u8,
    dir: *mut u8,
    bits: PathBits,
) -> (u32, Option<u32>, u32) {
    let (n, trunc, read) = read_name(ptr, ev, slot);
    let mut flags = if trunc { bits.0 } else { 0 };
    if n == 0 && read {
        flags |= EMPTY_PATH;
    }
    // SAFETY: `path` points at PATH_CAP bytes.
    let relative = read && (n == 0 || unsafe { *path } != b'/');
    let dir_len = match dirfd {
        Some(fd) if relative => {
            let (dn, complete) = resolve_dir(fd, dir);
            flags |= dir_flags(complete, bits);
            Some(dn)
        }
        // An absolute path in a chroot is relative to the changed root: record that root,
        // walked from the real one, so `/victim` is stored as the file the kernel removed.
        Some(_) if read && root_changed() => {
            let (dn, complete) = walk_root(dir);
            flags |= dir_flags(complete, bits) | ROOT_CHANGED;
            Some(dn)
        }
        _ => None,
    };
    (n, dir_len, flags)
}

#[inline(always)]
fn arg(p: &PendingSyscall, i: i8) -> u64 {
    match i {
        0 => p.args[0],
        1 => p.args[1],
        2 => p.args[2],
        3 => p.args[3],
        4 => p.args[4],
        5 => p.args[5],
        _ => 0,
    }
}

/// A BPF subprogram of its own: inlined, its path walks made the exit programs' frame so large
/// that with `net::on_exit` the call chain passed the verifier's 512-byte combined stack limit
/// on kernels that give tracing programs no private stack. Returns the event's length (0 when
/// there was no scratch buffer), which the caller checks (see `net::on_exit` for why).
#[inline(never)]
fn on_file_exit(
    p: &PendingSyscall,
    ret: i64,
    session: u64,
    (layout, compat): &((i8, i8, i8, i8, i8), bool),
    kp: *const KernelPaths,
) -> u32 {
    let (layout, compat) = (*layout, *compat);
    let Some(ev) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut FileEvent = unsafe { &mut *ev };
    let p1 = layout.0;
    begin_event(ev, p, ret, session, if compat { COMPAT } else { 0 });
    // The names as the kernel copied them (fexit mode; none with tracepoints).
    ev.flags = take_names(ev, p.nr, compat);
    if p.nr == nr::OPENAT2 {
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        let how = p.args[2] as *const u64;
        ev.how_flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0);
        ev.how_mode = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
        ev.how_resolve = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how.wrapping_add(2)) }.unwrap_or(0);
    }
    let mut len;
    if ret >= 0 && matches!(p.nr, nr::OPEN | nr::OPENAT | nr::OPENAT2 | nr::CREAT | nr::OPEN_BY_HANDLE_AT) {
        // A successful open: the path as given, and the file the kernel actually opened, read
        // from the new fd. Symlinks, `/proc/self/fd/N` aliases, `..` walks, RESOLVE_IN_ROOT and
        // a sibling thread's chdir cannot make this differ from what was opened. The given
        // path's directory is not walked (the real path supersedes it), which keeps this
        // program within the verifier's budget. (Opens have no second path: `dir2` is free.)
        //
        // The real path is written right after the given path's bytes (its length in
        // `dir1_len`), not in a slot of its own, so the event stays as small as the two paths:
        // an open is the commonest event, and a fixed slot would make each one kilobytes.
        let (n, trunc, _) = read_name(arg(p, p1), ev, 0);
        let n = n & (PATH_CAP as u32 - 1);
        ev.path1_len = n;
        if trunc {
            ev.flags |= PATH1_TRUNCATED;
        }
        len = FILE_PATH1_OFF + n as usize;
        // SAFETY: n < PATH_CAP, and path1 is followed by dir1 (DIR_CAP bytes) in the same
        // struct, so the walk has its CWD_MAX + COMPONENT_MAX bytes from here.
        let at = unsafe { ev.path1.as_mut_ptr().add(n as usize) };
        if let Some(dn) = opened_file(ev, fd_file(ret as i32), at) {
            len = FILE_PATH1_OFF + n as usize + dn as usize;
        }
    } else {
        len = capture_paths(p, ev, layout, kp);
    }
    if len > FILE_DIR2_OFF + DIR_CAP {
        len = FILE_DIR2_OFF + DIR_CAP;
    }
    // SAFETY: len <= size_of::<FileEvent>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const FileEvent).cast::<u8>(), len) };
    emit_bytes(bytes, session, EventClass::File);
    len as u32
}

/// The paths of any file syscall but a successful open, each joined to the directory the
/// kernel resolved it against; returns the bytes of the event to send.
#[inline(always)]
fn capture_paths(
    p: &PendingSyscall,
    ev: &mut FileEvent,
    layout: (i8, i8, i8, i8, i8),
    kp: *const KernelPaths,
) -> usize {
    // Only for a call with path arguments: an fd-only one (fchmod, fchown, ftruncate) fires the
    // hooks too, but its object is the fd's file, walked below.
    if !kp.is_null() && (layout.0 >= 0 || layout.2 >= 0) {
        if let Some(len) = kernel_paths(p, ev, layout, kp) {
            return len;
        }
        // What it wrote before giving up is rewritten below, but a length left over would
        // claim bytes the event does not carry.
        ev.dir1_len = 0;
        ev.dir2_len = 0;
    }
    let (p1, d1, p2, d2, fd) = layout;
    let mut len = FILE_PATH1_OFF;
    if p1 >= 0 {
        let (n, dir, flags) = capture_path(
            (arg(p, p1), core::ptr::from_mut(ev), 0),
            dirfd_arg(p, d1),
            ev.path1.as_mut_ptr(),
            ev.dir1.as_mut_ptr(),
            PATH1_BITS,
        );
        ev.path1_len = n;
        ev.flags |= flags;
        len = FILE_PATH1_OFF + n as usize;
        if let Some(dn) = dir {
            ev.dir1_len = dn;
            len = FILE_DIR1_OFF + dn as usize;
        }
    } else if fd >= 0 {
        let file = fd_file(arg(p, fd) as u32 as i32);
        if !file.is_null() {
            let (dn, complete) =
                walk_struct_path(file.wrapping_add(OFFSETS.load().file_path as usize), ev.dir1.as_mut_ptr());
            ev.dir1_len = dn;
            ev.flags |= FD_PATH | dir_flags(complete, PATH1_BITS);
            len = FILE_DIR1_OFF + dn as usize;
        }
    }
    if p2 >= 0 {
        let (n, dir, flags) = capture_path(
            (arg(p, p2), core::ptr::from_mut(ev), 1),
            dirfd_arg(p, d2),
            ev.path2.as_mut_ptr(),
            ev.dir2.as_mut_ptr(),
            PATH2_BITS,
        );
        ev.path2_len = n;
        ev.flags |= flags;
        len = FILE_PATH2_OFF + n as usize;
        if let Some(dn) = dir {
            ev.dir2_len = dn;
            len = FILE_DIR2_OFF + dn as usize;
        }
    }
    len
}
