//! Loading and attaching the kernel programs, and access to their maps.

pub mod btf;
pub mod decode;

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use monitor_common::{KernelOffsets, ProbeConfig, counter};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("loading/attaching program {name} failed: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
}

/// The embedded eBPF object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// (program, kind, category, tracepoint) for everything we attach.
const PROGRAMS: &[(&str, Kind)] = &[
    ("sched_process_exec", Kind::Raw("sched_process_exec")),
    ("sched_process_fork", Kind::Raw("sched_process_fork")),
    ("sched_process_exit", Kind::Raw("sched_process_exit")),
    ("sys_enter_execve", Kind::Syscall("sys_enter_execve")),
    ("sys_enter_execveat", Kind::Syscall("sys_enter_execveat")),
    ("sys_exit_execve", Kind::Syscall("sys_exit_execve")),
    ("sys_exit_execveat", Kind::Syscall("sys_exit_execveat")),
];

/// File and network syscalls: each `sys_enter_<name>` runs `sys_enter_tracked`, each
/// `sys_exit_<name>` runs `sys_exit_tracked`. Only these syscalls pay for a program.
pub const RESOURCE_SYSCALLS: &[&str] = &[
    "open", "openat", "openat2", "creat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
    "mkdir", "mkdirat", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
    "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate", "connect", "bind", "listen", "accept",
    "accept4", "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg",
];

#[derive(Clone, Copy)]
enum Kind {
    Raw(&'static str),
    Syscall(&'static str),
}

/// The loaded, attached programs and the maps the daemon uses.
pub struct Probes {
    /// Keeps programs and links alive.
    _ebpf: Ebpf,
    pub attached: Vec<String>,
    events: Option<RingBuf<MapData>>,
    tagged: HashMap<MapData, u64, u64>,
    tracked: HashMap<MapData, u32, u64>,
    /// An LRU hash in the kernel; aya's `HashMap` handles both kinds.
    verdict: HashMap<MapData, u64, u64>,
    session_lost: PerCpuHashMap<MapData, u64, u64>,
    counters: PerCpuArray<MapData, u64>,
}

/// Kernel-side counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct KernelCounters {
    pub sent: u64,
    pub dropped: u64,
    pub read_errors: u64,
    pub track_failures: u64,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

impl Probes {
    /// Resolve kernel offsets, load the object and attach every program.
    pub fn load(ring_bytes: u32) -> Result<Self, ProbeError> {
        let offsets: KernelOffsets = btf::Btf::from_sys_fs()?.kernel_offsets()?;
        let config = ProbeConfig { wakeup_bytes: u64::from(ring_bytes / 8) };
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        let mut attached = Vec::new();
        for (name, kind) in PROGRAMS {
            let prog = ebpf.program_mut(name).ok_or(ProbeError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?;
            let res = match kind {
                Kind::Raw(tp) => <&mut RawTracePoint>::try_from(prog)
                    .and_then(|p| p.load().and_then(|()| p.attach(tp)).map(|_| ())),
                Kind::Syscall(tp) => <&mut TracePoint>::try_from(prog)
                    .and_then(|p| p.load().and_then(|()| p.attach("syscalls", tp)).map(|_| ())),
            };
            res.map_err(|source| ProbeError::Program { name, source })?;
            attached.push(match kind {
                Kind::Raw(tp) => format!("raw_tp/{tp}"),
                Kind::Syscall(tp) => format!("tracepoint/syscalls/{tp}"),
            });
        }
        for (prog_name, phase) in [("sys_enter_tracked", "sys_enter_"), ("sys_exit_tracked", "sys_exit_")] {
            let prog: &mut TracePoint = ebpf
                .program_mut(prog_name)
                .ok_or(ProbeError::Program { name: prog_name, source: aya::programs::ProgramError::UnexpectedProgramType })?
                .try_into()
                .map_err(|source| ProbeError::Program { name: prog_name, source })?;
            prog.load().map_err(|source| ProbeError::Program { name: prog_name, source })?;
            for sc in RESOURCE_SYSCALLS {
                let tp = format!("{phase}{sc}");
                match prog.attach("syscalls", &tp) {
                    Ok(_) => attached.push(format!("tracepoint/syscalls/{tp}")),
                    // Newer syscalls (openat2, fchmodat2) may not exist on older kernels.
                    Err(e) if Path::new(&format!("/sys/kernel/tracing/events/syscalls/{tp}")).exists() => {
                        return Err(ProbeError::Program { name: prog_name, source: e });
                    }
                    Err(_) => tracing::warn!(tracepoint = %tp, "syscall tracepoint missing on this kernel; not captured"),
                }
            }
        }
        Ok(Self {
            events: Some(take(&mut ebpf, "EVENTS")?),
            tagged: take(&mut ebpf, "TAGGED")?,
            tracked: take(&mut ebpf, "TRACKED")?,
            verdict: take(&mut ebpf, "VERDICT")?,
            session_lost: take(&mut ebpf, "SESSION_LOST")?,
            counters: take(&mut ebpf, "COUNTERS")?,
            attached,
            _ebpf: ebpf,
        })
    }

    /// The event ring buffer, for the daemon's reader (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Start capturing a cgroup and everything below it. Clears cached "untagged" verdicts so
    /// an existing cgroup (and its existing descendants) are re-evaluated.
    pub fn tag(&mut self, cgroup_id: u64) -> Result<(), ProbeError> {
        self.tagged
            .insert(cgroup_id, 1, 0)
            .map_err(|source| ProbeError::Map { name: "TAGGED", source })?;
        let stale: Vec<u64> = self
            .verdict
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| *v == 0)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.verdict.remove(&k);
        }
        Ok(())
    }

    /// Track a process that was already running when its session was adopted.
    pub fn track(&mut self, tgid: u32, session_cgroup: u64) -> Result<(), ProbeError> {
        self.tracked
            .insert(tgid, session_cgroup, 0)
            .map_err(|source| ProbeError::Map { name: "TRACKED", source })
    }

    /// The session a process is tracked in, if any.
    pub fn tracked_session(&self, tgid: u32) -> Option<u64> {
        self.tracked.get(&tgid, 0).ok()
    }

    /// Stop capturing a session; returns the events it lost in the kernel.
    pub fn untag(&mut self, cgroup_id: u64) -> u64 {
        let _ = self.tagged.remove(&cgroup_id);
        let stale: Vec<u64> = self
            .verdict
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| *v == cgroup_id)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.verdict.remove(&k);
        }
        let lost = self.session_lost(cgroup_id);
        let _ = self.session_lost.remove(&cgroup_id);
        lost
    }

    pub fn session_lost(&self, cgroup_id: u64) -> u64 {
        self.session_lost.get(&cgroup_id, 0).map_or(0, |v| v.iter().sum())
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |i: u32| self.counters.get(&i, 0).map_or(0, |v| v.iter().sum());
        KernelCounters {
            sent: sum(counter::SENT),
            dropped: sum(counter::DROPPED),
            read_errors: sum(counter::READ_ERRORS),
            track_failures: sum(counter::TRACK_FAILURES),
        }
    }
}

/// Mount tracefs and bpffs where they are missing (the syscall tracepoints need tracefs).
pub fn ensure_mounts() -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounted = |fstype: &str, dir: &str| {
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&dir) && l.split(" - ").nth(1).is_some_and(|t| t.starts_with(fstype))
        })
    };
    for (fstype, dir) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !mounted(fstype, dir) && Path::new(dir).exists() {
            let status = std::process::Command::new("mount").args(["-t", fstype, fstype, dir]).status()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("mount -t {fstype} {dir} failed")));
            }
        }
    }
    Ok(())
}
