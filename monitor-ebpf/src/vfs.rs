//! Reading paths out of kernel structures: fd -> file, and a bounded dentry walk.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task,
    generated::{bpf_loop, bpf_probe_read_kernel_str},
};
use monitor_common::{counter, COMPONENT_MAX, CWD_DEPTH_MAX, CWD_MAX};

use crate::maps::{count, kread, kread_ptr, masked, OFFSETS};

/// The `struct file *` behind an fd of the current task, or null. The fd is an `int`, as the
/// kernel reads it: callers pass the low 32 bits of the register, never the whole of it.
#[inline(always)]
pub fn fd_file(fd: i32) -> *const u8 {
    if fd < 0 {
        return core::ptr::null();
    }
    let fd = fd as u64;
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = kread_ptr(task, off.task_files);
    let fdt = kread_ptr(files, off.files_fdt);
    let max = kread::<u32>(fdt, off.fdtable_max_fds);
    if fd >= u64::from(max) {
        return core::ptr::null();
    }
    let arr = kread_ptr(fdt, off.fdtable_fd);
    kread_ptr(arr, (fd * 8) as u32)
}

/// The state of a dentry walk, carried between [`walk_step`] calls.
#[repr(C)]
struct Walk {
    vfsmnt: *const u8,
    dentry: *const u8,
    mount: *const u8,
    buf: *mut u8,
    pos: u64,
    /// 0 while walking, [`WALK_ROOT`] once the root is reached, [`WALK_STOPPED`] otherwise.
    end: u64,
}

const WALK_ROOT: u64 = 1;
const WALK_STOPPED: u64 = 2;

/// Walk from (`vfsmnt`, `dentry`) up to the root, crossing mounts, writing the components leaf
/// first, each NUL-terminated, into `buf` (which has `CWD_MAX + COMPONENT_MAX` bytes).
/// Returns (bytes written, reached the root).
///
/// Each step is a `bpf_loop` callback (Linux 5.17), verified once: the same walk as an unrolled
/// loop made the 6.1 verifier walk every iteration's states, past its 1M-instruction budget.
#[inline(always)]
pub fn walk_path(vfsmnt: *const u8, dentry: *const u8, buf: *mut u8) -> (u32, bool) {
    let off = OFFSETS.load();
    if dentry.is_null() || vfsmnt.is_null() {
        return (0, false);
    }
    let mut w = Walk { vfsmnt, dentry, mount: vfsmnt.wrapping_sub(off.mount_mnt as usize), buf, pos: 0, end: 0 };
    // SAFETY: `walk_step` has the callback signature; `w` outlives the call.
    unsafe {
        bpf_loop(CWD_DEPTH_MAX as u32, walk_step as *mut c_void, (&raw mut w).cast(), 0);
    }
    (masked(w.pos as usize, 2 * CWD_MAX - 1) as u32, w.end == WALK_ROOT)
}

/// One component of [`walk_path`]: returns 1 to stop.
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the caller's `Walk`, alive for the whole `bpf_loop`.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    let off = OFFSETS.load();
    let mnt_root = kread_ptr(w.vfsmnt, off.vfsmount_root);
    let parent = kread_ptr(w.dentry, off.dentry_parent);
    if w.dentry == mnt_root || w.dentry == parent {
        if w.dentry != mnt_root {
            // Its own parent but not a mount root: a pseudo file (pipe, socket, memfd) or a
            // detached tree. There is no path to report; say so rather than claim "/".
            w.end = WALK_STOPPED;
            return 1;
        }
        let mparent = kread_ptr(w.mount, off.mount_parent);
        if mparent == w.mount || mparent.is_null() {
            w.end = WALK_ROOT;
            return 1;
        }
        w.dentry = kread_ptr(w.mount, off.mount_mountpoint);
        w.mount = mparent;
        w.vfsmnt = mparent.wrapping_add(off.mount_mnt as usize);
        return 0;
    }
    if w.pos >= CWD_MAX as u64 {
        w.end = WALK_STOPPED;
        return 1;
    }
    let name = kread_ptr(w.dentry, off.dentry_name);
    let p = masked(w.pos as usize, CWD_MAX - 1);
    // SAFETY: p < CWD_MAX and the buffer has COMPONENT_MAX bytes of slack after CWD_MAX.
    let n = unsafe { bpf_probe_read_kernel_str(w.buf.wrapping_add(p).cast(), COMPONENT_MAX as u32, name.cast()) };
    if n <= 0 {
        count(counter::READ_ERRORS);
        w.end = WALK_STOPPED;
        return 1;
    }
    w.pos = (p + (n as usize & (COMPONENT_MAX * 2 - 1))) as u64;
    w.dentry = parent;
    0
}

/// Walk a `struct path` at `path_ptr` (e.g. `fs->pwd`, `file->f_path`).
#[inline(always)]
pub fn walk_struct_path(path_ptr: *const u8, buf: *mut u8) -> (u32, bool) {
    let off = OFFSETS.load();
    if path_ptr.is_null() {
        return (0, false);
    }
    let mnt = kread_ptr(path_ptr, off.path_mnt);
    let dentry = kread_ptr(path_ptr, off.path_dentry);
    walk_path(mnt, dentry, buf)
}

/// The current task's working directory.
#[inline(always)]
pub fn walk_cwd(buf: *mut u8) -> (u32, bool) {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let fs = kread_ptr(task, off.task_fs);
    if fs.is_null() {
        return (0, false);
    }
    walk_struct_path(fs.wrapping_add(off.fs_pwd as usize), buf)
}

/// Whether the current task's root is not the real root (it called `chroot`, or inherited
/// one): its root is not the root of a mount without a parent.
#[inline(always)]
pub fn root_changed() -> bool {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let fs = kread_ptr(task, off.task_fs);
    if fs.is_null() {
        return false;
    }
    let root = fs.wrapping_add(off.fs_root as usize);
    let vfsmnt = kread_ptr(root, off.path_mnt);
    let dentry = kread_ptr(root, off.path_dentry);
    if vfsmnt.is_null() || dentry != kread_ptr(vfsmnt, off.vfsmount_root) {
        return !vfsmnt.is_null();
    }
    let mount = vfsmnt.wrapping_sub(off.mount_mnt as usize);
    let parent = kread_ptr(mount, off.mount_parent);
    !(parent == mount || parent.is_null())
}

/// The current task's root (`fs->root`), walked from the real root.
#[inline(always)]
pub fn walk_root(buf: *mut u8) -> (u32, bool) {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let fs = kread_ptr(task, off.task_fs);
    if fs.is_null() {
        return (0, false);
    }
    walk_struct_path(fs.wrapping_add(off.fs_root as usize), buf)
}
