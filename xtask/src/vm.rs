//! `cargo xtask vm-test`: the package under a real systemd on Debian 12's own kernels.
//!
//! The guest image (a Debian 12 root file system with systemd, `PostgreSQL` and the 6.1 and 6.12
//! kernels) is built by `xtask/vm/build-image.sh` and cached under `target/vm/image-<recipe
//! hash>`: it is rebuilt only when the recipe changes. Each kernel gets a copy-on-write overlay
//! of it and boots twice under QEMU with software emulation (TCG; this machine's KVM cannot run
//! stock kernels), each boot under a hard timeout:
//!
//! 1. `install`: `apt-get install ./agentmon.deb`, then the service under systemd (see
//!    `xtask/vm/guest-checks.sh`);
//! 2. `boot`: the same disk again: the service started at boot, the trail intact, `dpkg --purge`.
//!
//! The guest runs the checks from a 9p share (`target/vm/run-<kernel>/share`) and writes its
//! results there; the console log is kept beside them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{run, step, workspace_root};

/// The kernels the tier boots, by the prefix of their version in the image's /boot.
pub const KERNELS: &[&str] = &["6.1", "6.12"];

const BUILD_IMAGE: &str = include_str!("../vm/build-image.sh");
const VM_RUN: &str = include_str!("../vm/vm-run");

/// The longest a boot may take before it counts as a hang. TCG is slow (the first boot creates
/// the cluster and loads every program in an emulated CPU), but a boot that ends at all ends
/// well within these.
const INSTALL_TIMEOUT: Duration = Duration::from_mins(20);
const BOOT_TIMEOUT: Duration = Duration::from_mins(10);

/// Build (or reuse) the image and run both phases on each of `kernels`.
pub fn test(deb: &Path, kernels: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let image = image()?;
    let mut failures = Vec::new();
    for k in kernels {
        if let Err(e) = kernel(&image, deb, k) {
            eprintln!("xtask: vm-test {k}: FAILED: {e:#}");
            failures.push(k.clone());
        }
    }
    step(&format!("vm-test: {} kernel(s) in {} s", kernels.len(), started.elapsed().as_secs()));
    if !failures.is_empty() {
        bail!("the virtual-machine tier failed on {}", failures.join(", "));
    }
    Ok(())
}

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// The cached image for the current recipe, built if missing.
fn image() -> anyhow::Result<PathBuf> {
    let hash = recipe_hash()?;
    let dir = vm_dir().join(format!("image-{hash}"));
    if dir.join("rootfs.img").exists() {
        step(&format!("vm image: cached ({})", dir.display()));
        return Ok(dir);
    }
    std::fs::create_dir_all(vm_dir()).context("creating target/vm")?;
    // Other recipes' images are 6 GB sparse files each: keep only this one.
    for e in std::fs::read_dir(vm_dir())?.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with("image-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    step("vm image: building the Debian 12 guest (debootstrap, kernels 6.1 and 6.12; a few minutes)");
    let tmp = vm_dir().join(format!("building-{hash}"));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("bash").arg(workspace_root().join("xtask/vm/build-image.sh")).arg(&tmp))?;
    std::fs::rename(&tmp, &dir).context("moving the built image into place")?;
    Ok(dir)
}

/// A short hash of everything the image is made from.
fn recipe_hash() -> anyhow::Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("sha256sum stdin")?;
        stdin.write_all(BUILD_IMAGE.as_bytes())?;
        stdin.write_all(VM_RUN.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).chars().take(16).collect())
}

/// The image's kernel and initramfs whose version starts with `version.`.
fn kernel_files(image: &Path, version: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let prefix = format!("vmlinuz-{version}.");
    let name = std::fs::read_dir(image)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&prefix))
        .with_context(|| format!("no kernel {version} in {} (known: {})", image.display(), KERNELS.join(", ")))?;
    let release = &name["vmlinuz-".len()..];
    Ok((image.join(&name), image.join(format!("initrd.img-{release}"))))
}

fn kernel(image: &Path, deb: &Path, version: &str) -> anyhow::Result<()> {
    let (vmlinuz, initrd) = kernel_files(image, version)?;
    let dir = vm_dir().join(format!("run-{version}"));
    let _ = std::fs::remove_dir_all(&dir);
    let share = dir.join("share");
    std::fs::create_dir_all(share.join("out")).context("creating the share")?;
    std::fs::copy(deb, share.join("agentmon.deb")).context("copying the package into the share")?;
    std::fs::copy(workspace_root().join("xtask/vm/guest-checks.sh"), share.join("guest-checks.sh"))
        .context("copying the checks")?;
    // The attack workload of the kernel-object checks (tests/src/bin/agentmon-workload.rs).
    for bin in ["agentmon-workload", "agentmon-bench"] {
        std::fs::copy(test_binary(bin)?, share.join(bin)).with_context(|| format!("copying {bin}"))?;
    }
    // The guest's writes go to an overlay: the cached image stays clean.
    let overlay = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(image.join("rootfs.img"))
        .arg(&overlay))?;
    // The second boot runs even when the first one's checks failed: its checks are others.
    let mut failed = Vec::new();
    for (phase, limit) in [("install", INSTALL_TIMEOUT), ("boot", BOOT_TIMEOUT)] {
        std::fs::write(share.join("phase"), phase)?;
        step(&format!("vm-test {version}: booting for `{phase}` (TCG; up to {} s)", limit.as_secs()));
        let t = Instant::now();
        let console = dir.join(format!("console-{phase}.log"));
        let status = boot(&vmlinuz, &initrd, &overlay, &share, &console, limit)?;
        let log = std::fs::read_to_string(share.join(format!("out/{phase}.log"))).unwrap_or_default();
        for line in log.lines() {
            eprintln!("  [{version} {phase}] {line}");
        }
        step(&format!("vm-test {version}: `{phase}` took {} s", t.elapsed().as_secs()));
        if status.code() == Some(124) || status.code() == Some(137) {
            bail!("the guest hung: no power-off within {} s (console: {})", limit.as_secs(), console.display());
        }
        let rc = std::fs::read_to_string(share.join(format!("out/{phase}.rc"))).unwrap_or_default();
        if !log.lines().any(|l| l == format!("phase {phase} done")) || rc.trim() != "0" {
            let journal = share.join(format!("out/{phase}.journal"));
            failed.push(format!(
                "`{phase}` failed (exit {}): see the lines above, {} and {}",
                if rc.is_empty() { "none: the checks did not finish" } else { rc.trim() },
                journal.display(),
                console.display()
            ));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// A test binary (the attack workload, the benchmark), built for the guest (same Debian
/// release, so the same glibc).
fn test_binary(name: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(&root).args(["build", "-q", "-p", "integration-tests", "--bin", name]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug").join(name))
}

/// One boot, until the guest powers off or `limit` passes.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    disk: &Path,
    share: &Path,
    console: &Path,
    limit: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let log = std::fs::File::create(console).context("creating the console log")?;
    Command::new("timeout")
        .args(["--kill-after=10", &format!("{}s", limit.as_secs()), "qemu-system-x86_64"])
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args(["-nographic", "-nic", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=1 quiet"])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", disk.display()))
        .arg("-virtfs")
        .arg(format!("local,path={},mount_tag=host0,security_model=none", share.display()))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running qemu-system-x86_64")
}
