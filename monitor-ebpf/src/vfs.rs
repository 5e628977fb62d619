//! Reading paths out of kernel structures: fd -> file, and a bounded dentry walk.

use aya_ebpf::helpers::{bpf_get_current_task, generated::bpf_probe_read_kernel_str};
use monitor_common::{COMPONENT_MAX, CWD_DEPTH_MAX, CWD_MAX, counter};

use crate::maps::{OFFSETS, count, kread, kread_ptr};

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

/// Walk from (`vfsmnt`, `dentry`) up to the root, crossing mounts, writing the components leaf
/// first, each NUL-terminated, into `buf` (which has `CWD_MAX + COMPONENT_MAX` bytes).
/// Returns (bytes written, reached the root).
#[inline(always)]
pub fn walk_path(mut vfsmnt: *const u8, mut dentry: *const u8, buf: *mut u8) -> (u32, bool) {
    let off = OFFSETS.load();
    if dentry.is_null() || vfsmnt.is_null() {
        return (0, false);
    }
    let mut mount = vfsmnt.wrapping_sub(off.mount_mnt as usize);
    let mut pos: usize = 0;
    for _ in 0..CWD_DEPTH_MAX {
        let mnt_root = kread_ptr(vfsmnt, off.vfsmount_root);
        let parent = kread_ptr(dentry, off.dentry_parent);
        if dentry == mnt_root || dentry == parent {
            if dentry != mnt_root {
                // Its own parent but not a mount root: a pseudo file (pipe, socket, memfd) or a
                // detached tree. There is no path to report; say so rather than claim "/".
                return (pos as u32, false);
            }
            let mparent = kread_ptr(mount, off.mount_parent);
            if mparent == mount || mparent.is_null() {
                return (pos as u32, true);
            }
            dentry = kread_ptr(mount, off.mount_mountpoint);
            mount = mparent;
            vfsmnt = mount.wrapping_add(off.mount_mnt as usize);
            continue;
        }
        if pos >= CWD_MAX {
            break;
        }
        let name = kread_ptr(dentry, off.dentry_name);
        let p = pos & (CWD_MAX - 1);
        // SAFETY: p < CWD_MAX and the buffer has COMPONENT_MAX bytes of slack after CWD_MAX.
        let n = unsafe { bpf_probe_read_kernel_str(buf.wrapping_add(p).cast(), COMPONENT_MAX as u32, name.cast()) };
        if n <= 0 {
            count(counter::READ_ERRORS);
            break;
        }
        pos += n as usize & (COMPONENT_MAX * 2 - 1);
        dentry = parent;
    }
    (pos as u32, false)
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
