//! Seeding the process table from `/proc` for sessions adopted while already running.

use crate::{correlate::SeedProcess, text::split_argv};

/// Read what `/proc` still knows about a process. Fields that cannot be read (EPERM on
/// `/proc/1/exe`, a process that just exited) are left empty rather than failing the scan.
pub fn seed_process(pid: u32) -> Option<SeedProcess> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| split_argv(&b)).unwrap_or_default();
    Some(SeedProcess {
        tgid: pid,
        ppid: stat.ppid as u32,
        start_ticks: stat.starttime,
        argv,
        exe: p.exe().map(|e| crate::text::escape_bytes(e.as_os_str().as_encoded_bytes())).unwrap_or_default(),
        cwd: p.cwd().ok().map(|c| crate::text::escape_bytes(c.as_os_str().as_encoded_bytes())),
        uid: p.uid().ok(),
    })
}
