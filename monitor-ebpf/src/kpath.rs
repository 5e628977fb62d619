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
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{fentry, map},
    maps::{LruHashMap, PerCpuArray},
    programs::FEntryContext,
};
use monitor_common::DIR_CAP;

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
