//! Kernel side of agentmon: see `maps.rs` for the session filter and the ring buffer,
//! `process.rs` for the exec/fork/exit probes, `file.rs` and `net.rs` for file and network
//! syscalls, `vfs.rs` for reading paths out of the kernel. `fexit.rs` is the same syscall
//! capture at the kernel's functions (where fexit loads), instead of the syscall tracepoints,
//! and `kpath.rs` takes the paths of path operations from the kernel's `security_path_*` hooks.
#![no_std]
#![no_main]

mod compat;
mod fexit;
mod file;
mod kpath;
mod maps;
mod net;
mod process;
mod rules;
mod tamper;
mod uring;
mod vfs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL is required for the `bpf_probe_read_*` helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
