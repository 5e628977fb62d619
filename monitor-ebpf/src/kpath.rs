//! Paths as the kernel resolved them (fexit mode): fentry programs on the `security_path_*`
//! hooks, which the kernel calls with the dentry it is about to unlink, create, rename, link,
//! chmod, chown or truncate, after it has copied and resolved the caller's path. Each walks
//! that dentry up to the real root and keeps the result for the thread, with the number of the
//! syscall in progress; the syscall's fexit handler ([`crate::fexit`]) takes it for the event
//! instead of the directory it would join to the path re-read from user memory, which the
//! caller may have rewritten during the call. A call that fails before the hook (ENOENT,
//! EACCES in the lookup) leaves nothing, and the path is the one given, as with tracepoints.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_task_pt_regs},
    },
    macros::{fentry, map},
    maps::{LruHashMap, PerCpuArray},
    programs::FEntryContext,
};
use monitor_common::{nr, DIR_CAP, PATH_CAP};

use crate::{
    maps::{current_session_peek, current_tgid_pid, kread, kread_ptr, OFFSETS},
    vfs::{walk_path, walk_struct_path},
};

/// The objects of one path operation: slot 0 the (old) object, slot 1 the new name of a rename
/// or link. Each path is leaf first, NUL-separated, as [`walk_path`] writes it.
#[repr(C)]
pub struct KernelPaths {
    /// `pt_regs.orig_ax` of the syscall in progress when the hook ran (i386 numbering for a
    /// 32-bit call): the syscall's handler takes the paths only if they are its own.
    pub orig_ax: u64,
    pub len: [u32; 2],
    /// 1 when the walk reached the root.
    pub complete: [u32; 2],
    pub buf: [[u8; DIR_CAP]; 2],
}

/// By pid_tgid; taken (and removed) by the thread's next hooked syscall exit. 1,024 entries of
/// about 8.7 KiB (an LRU map is preallocated: about 9 MiB): a call whose entry was evicted
/// before its exit falls back to the path from user memory. Entries of io_uring workers (which
/// never exit a hooked syscall) only leave by eviction.
#[map]
pub static KPATHS: LruHashMap<u64, KernelPaths> = LruHashMap::with_max_entries(1024, 0);

#[map]
static KP_SCRATCH: PerCpuArray<KernelPaths> = PerCpuArray::with_max_entries(1, 0);

/// Which objects a hook names: a dentry under a directory's mount, or a `struct path`.
#[derive(Clone, Copy)]
enum Object {
    /// (`const struct path *dir`, `struct dentry *`): the dentry walked in `dir`'s mount.
    InDir(*const u8, *const u8),
    Path(*const u8),
    None,
}

#[inline(always)]
fn walk_object(o: Object, buf: *mut u8) -> (u32, bool) {
    match o {
        Object::InDir(dir, dentry) => walk_path(kread_ptr(dir, OFFSETS.load().path_mnt), dentry, buf),
        Object::Path(path) => walk_struct_path(path, buf),
        Object::None => (0, false),
    }
}

/// Record the hook's objects for the current thread, when it is in a session.
#[inline(always)]
fn record(first: Object, second: Object) -> u32 {
    let (tgid, _) = current_tgid_pid();
    if current_session_peek(tgid).is_none() {
        return 0;
    }
    let Some(kp) = KP_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let kp = unsafe { &mut *kp };
    // SAFETY: the BTF task of the current thread; its user registers.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    kp.orig_ax = kread::<u64>(regs, OFFSETS.load().regs_orig_ax);
    let (n, complete) = walk_object(first, kp.buf[0].as_mut_ptr());
    kp.len[0] = n;
    kp.complete[0] = u32::from(complete);
    let (n, complete) = walk_object(second, kp.buf[1].as_mut_ptr());
    kp.len[1] = n;
    kp.complete[1] = u32::from(complete);
    let _ = KPATHS.insert(&bpf_get_current_pid_tgid(), kp, 0);
    0
}

/// `security_path_unlink(const struct path *dir, struct dentry *dentry)`; rmdir, mkdir and
/// symlink have the same leading arguments.
#[inline(always)]
fn in_dir(ctx: &FEntryContext) -> u32 {
    record(Object::InDir(ctx.arg(0), ctx.arg(1)), Object::None)
}

#[fentry]
pub fn kp_unlink(ctx: FEntryContext) -> u32 {
    in_dir(&ctx)
}

#[fentry]
pub fn kp_rmdir(ctx: FEntryContext) -> u32 {
    in_dir(&ctx)
}

#[fentry]
pub fn kp_mkdir(ctx: FEntryContext) -> u32 {
    in_dir(&ctx)
}

#[fentry]
pub fn kp_symlink(ctx: FEntryContext) -> u32 {
    in_dir(&ctx)
}

/// `security_path_chmod(const struct path *)`, and chown and truncate the same.
#[fentry]
pub fn kp_chmod(ctx: FEntryContext) -> u32 {
    record(Object::Path(ctx.arg(0)), Object::None)
}

#[fentry]
pub fn kp_chown(ctx: FEntryContext) -> u32 {
    record(Object::Path(ctx.arg(0)), Object::None)
}

#[fentry]
pub fn kp_truncate(ctx: FEntryContext) -> u32 {
    record(Object::Path(ctx.arg(0)), Object::None)
}

/// `security_unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`:
/// the listening socket a unix stream connect reached, named by the file it is bound to
/// (`unix_sock.path`; `struct unix_sock` starts with its `struct sock`). An abstract socket
/// has no file: its walk is incomplete and not taken. See `net::peer_path`.
#[fentry]
pub fn kp_unix_connect(ctx: FEntryContext) -> u32 {
    let at = OFFSETS.load().unix_sock_path;
    if at == 0 {
        return 0;
    }
    let other: *const u8 = ctx.arg(1);
    record(Object::Path(other.wrapping_add(at as usize)), Object::None)
}

/// `security_path_rename(old_dir, old_dentry, new_dir, new_dentry, flags)`.
#[fentry]
pub fn kp_rename(ctx: FEntryContext) -> u32 {
    record(Object::InDir(ctx.arg(0), ctx.arg(1)), Object::InDir(ctx.arg(2), ctx.arg(3)))
}

/// `security_path_link(old_dentry, new_dir, new_dentry)`: a link stays within one mount.
#[fentry]
pub fn kp_link(ctx: FEntryContext) -> u32 {
    record(Object::InDir(ctx.arg(1), ctx.arg(0)), Object::InDir(ctx.arg(1), ctx.arg(2)))
}

/// The names a path syscall passed, as the kernel copied them (`getname`) before it used them:
/// fentry on the VFS function each syscall (and io_uring) hands its `struct filename *` to.
/// Slot 0 is the layout's first path (`nr::file_layout`), slot 1 its second (a rename's or
/// link's new name, a symlink's target). The handler takes them for `path_given` in place of the caller's
/// memory re-read at exit; for a call that fails in the lookup (ENOENT, EACCES), before any
/// `security_path_*` hook, they are the only kernel record of what was asked for.
#[repr(C)]
pub struct KernelNames {
    /// As [`KernelPaths::orig_ax`].
    pub orig_ax: u64,
    /// Each name's length without its NUL, or [`NAME_ABSENT`].
    pub len: [u32; 2],
    pub buf: [[u8; PATH_CAP]; 2],
}

/// A [`KernelNames`] slot the call did not fill.
pub const NAME_ABSENT: u32 = u32::MAX;

/// By pid_tgid, like [`KPATHS`]: 1,024 entries of about 8 KiB (8 MiB preallocated).
#[map]
pub static KNAMES: LruHashMap<u64, KernelNames> = LruHashMap::with_max_entries(1024, 0);

#[map]
static KN_SCRATCH: PerCpuArray<KernelNames> = PerCpuArray::with_max_entries(1, 0);

/// Whether a hook's record, made with `pt_regs.orig_ax` = `orig`, belongs to the syscall
/// `native` (its 64-bit number) now exiting: an io_uring operation or an exec's open in
/// between leaves one of another number, which is not taken.
#[inline(always)]
pub fn is_own(orig: u64, native: u64, compat: bool) -> bool {
    if compat {
        nr::from_compat(orig) == Some(native)
    } else {
        orig == native
    }
}

/// This thread's [`KernelNames`] when they are the exiting syscall's own, else null.
#[inline(always)]
pub fn own_names(native: u64, compat: bool) -> *const KernelNames {
    let Some(k) = KNAMES.get_ptr(&bpf_get_current_pid_tgid()) else { return core::ptr::null() };
    // SAFETY: a map value, alive for this run.
    if is_own(unsafe { (*k).orig_ax }, native, compat) {
        k
    } else {
        core::ptr::null()
    }
}

/// Copy `struct filename`'s `name` (the kernel's copy of the caller's string) into `buf`
/// (`PATH_CAP` bytes). A null or error pointer (getname failed: the call fails with EFAULT or
/// ENAMETOOLONG) is [`NAME_ABSENT`].
#[inline(always)]
fn copy_name(f: *const u8, buf: *mut u8) -> u32 {
    if f.is_null() || f as u64 >= u64::MAX - 4095 {
        return NAME_ABSENT;
    }
    let name = kread_ptr(f, OFFSETS.load().filename_name);
    if name.is_null() {
        return NAME_ABSENT;
    }
    // SAFETY: the helper checks the kernel address; `buf` has PATH_CAP bytes.
    let n = unsafe { bpf_probe_read_kernel_str(buf.cast(), PATH_CAP as u32, name.cast()) };
    if n <= 0 {
        NAME_ABSENT
    } else {
        (n - 1) as u32 & (PATH_CAP as u32 - 1)
    }
}

/// `pt_regs.orig_ax` of an exec: execve and execveat, 64-bit (59, 322) and i386 (11, 358).
#[inline(always)]
pub fn is_exec(orig_ax: u64) -> bool {
    matches!(orig_ax, 59 | 322 | 11 | 358)
}

/// Record the names (`struct filename *`, or null) for the current thread, when it is in a
/// session. During an exec only the first is kept: an exec opens the binary it was asked for
/// first, then its interpreter (`#!`, the ELF loader), whose open would replace it.
#[inline(always)]
fn record_names(first: *const u8, second: *const u8) -> u32 {
    let (tgid, _) = current_tgid_pid();
    if current_session_peek(tgid).is_none() {
        return 0;
    }
    // SAFETY: as in [`record`].
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let orig_ax = kread::<u64>(regs, OFFSETS.load().regs_orig_ax);
    let key = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup. (The exec's exit removes the entry, so one left here is this
    // exec's own.)
    if is_exec(orig_ax) && unsafe { KNAMES.get(&key) }.is_some_and(|k| k.orig_ax == orig_ax) {
        return 0;
    }
    let Some(kn) = KN_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let kn = unsafe { &mut *kn };
    kn.orig_ax = orig_ax;
    kn.len[0] = copy_name(first, kn.buf[0].as_mut_ptr());
    kn.len[1] = copy_name(second, kn.buf[1].as_mut_ptr());
    let _ = KNAMES.insert(&key, kn, 0);
    0
}

/// `do_filp_open(int dfd, struct filename *pathname, const struct open_flags *op)`: open,
/// openat, openat2, creat, an exec's binary (taken for a failed exec's name; see
/// [`record_names`]), and io_uring's openat (not taken).
#[fentry]
pub fn kn_open(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), core::ptr::null())
}

/// `do_unlinkat(int dfd, struct filename *name)`; `do_rmdir` and
/// `do_mkdirat(int dfd, struct filename *name, umode_t mode)` the same.
#[fentry]
pub fn kn_unlink(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), core::ptr::null())
}

#[fentry]
pub fn kn_rmdir(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), core::ptr::null())
}

#[fentry]
pub fn kn_mkdir(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), core::ptr::null())
}

/// `do_symlinkat(struct filename *from, int newdfd, struct filename *to)`: slot 0 is the
/// link's path (`to`), slot 1 the content (`from`), as the syscall's layout orders them.
#[fentry]
pub fn kn_symlink(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(2), ctx.arg(0))
}

/// `do_renameat2(int olddfd, struct filename *from, int newdfd, struct filename *to, …)`, and
/// `do_linkat(int olddfd, struct filename *old, int newdfd, struct filename *new, int flags)`.
#[fentry]
pub fn kn_rename(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), ctx.arg(3))
}

#[fentry]
pub fn kn_link(ctx: FEntryContext) -> u32 {
    record_names(ctx.arg(1), ctx.arg(3))
}
