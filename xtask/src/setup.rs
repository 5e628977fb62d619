//! `cargo xtask setup`: install what is missing, idempotently, saying what it does.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{is_root, run, step};

/// Debian packages: `PostgreSQL` server and client binaries, iproute2 for network-namespace
/// tests, mount for tracefs/bpffs, and `OpenSSL`'s headers with pkg-config (TLS to `PostgreSQL`
/// goes through OpenSSL, as libpq's does).
const APT_PACKAGES: &[&str] =
    &["postgresql", "postgresql-client", "iproute2", "mount", "procps", "libssl-dev", "pkg-config"];
/// Only the tests need these: a headless Chromium renders the incident packet's HTML.
const TEST_APT_PACKAGES: &[&str] = &["chromium-headless-shell"];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo xtask package`).
const CARGO_DEB_VERSION: &str = "3.8.0";
/// Names an offline `rust-src` tarball (holding `src/rust/library/...`) for air-gapped hosts.
const RUST_SRC_ENV: &str = "AGENTMON_RUST_SRC_TARBALL";

/// What the build needs in its environment.
pub struct BuildEnv {
    pub path: OsString,
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The Debian packages only the test suite needs.
pub fn test_packages() -> anyhow::Result<()> {
    apt_install(TEST_APT_PACKAGES, "test apt packages")?;
    vm_packages()
}

/// The pinned Claude Code CLI the agent-account tests drive (`tests/agents/install-claude.sh`,
/// from the npm registry, into the user's cache); returns the path of its binary. npm comes
/// from Debian when the machine has none.
pub fn claude_code() -> anyhow::Result<PathBuf> {
    if Command::new("npm").arg("--version").output().map_or(true, |o| !o.status.success()) {
        apt_install(&["npm"], "npm, for the Claude Code CLI the tests drive")?;
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let dir = home.join(".cache/agentmon/claude-code");
    let out = Command::new("sh")
        .arg(crate::workspace_root().join("tests/agents/install-claude.sh"))
        .arg(&dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running tests/agents/install-claude.sh")?;
    if !out.status.success() {
        bail!("installing the Claude Code CLI into {} failed", dir.display());
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    step(&format!("Claude Code CLI: {}", bin.display()));
    Ok(bin)
}

/// The pinned Codex CLI the agent-account tests drive (`tests/agents/install-codex.sh`, from
/// the npm registry, into the user's cache); returns the path of its binary (the native one
/// the package ships for this machine).
pub fn codex_cli() -> anyhow::Result<PathBuf> {
    if Command::new("npm").arg("--version").output().map_or(true, |o| !o.status.success()) {
        apt_install(&["npm"], "npm, for the Codex CLI the tests drive")?;
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let dir = home.join(".cache/agentmon/codex");
    let out = Command::new("sh")
        .arg(crate::workspace_root().join("tests/agents/install-codex.sh"))
        .arg(&dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running tests/agents/install-codex.sh")?;
    if !out.status.success() {
        bail!("installing the Codex CLI into {} failed", dir.display());
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    step(&format!("Codex CLI: {}", bin.display()));
    Ok(bin)
}

/// The virtual-machine tier's tools: debootstrap for the guest image, and QEMU. Bookworm's
/// own `qemu-system-x86` conflicts with the `qemu-utils` from bookworm-backports that Debian
/// build machines often have, so QEMU comes from bookworm-backports, through an apt source of
/// ours on the host's own Debian mirror.
fn vm_packages() -> anyhow::Result<()> {
    apt_install(&["debootstrap", "qemu-utils"], "vm tier apt packages")?;
    if installed("qemu-system-x86") {
        step("qemu-system-x86: present");
        return Ok(());
    }
    let list = Path::new("/etc/apt/sources.list.d/agentmon-backports.sources");
    if !list.exists() {
        let mirror = debian_mirror().context("no Debian mirror in the host's apt sources, for bookworm-backports")?;
        std::fs::write(
            list,
            format!("# Written by `cargo xtask`: QEMU for the VM test tier.\nTypes: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        )
        .with_context(|| format!("writing {}", list.display()))?;
    }
    step("installing qemu-system-x86 from bookworm-backports");
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "-t", "bookworm-backports", "qemu-system-x86"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The host's Debian mirror (not its security mirror), from its deb822 or one-line sources.
fn debian_mirror() -> Option<String> {
    let mut texts: Vec<String> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".sources") && e.file_name() != "agentmon-backports.sources"
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    texts.iter().flat_map(|t| t.lines()).find_map(|l| {
        let mut w = l.split_whitespace();
        let uri = match w.next()? {
            "URIs:" => w.next()?,
            "deb" => w.find(|x| !x.starts_with('['))?,
            _ => return None,
        };
        (uri.contains("debian") && !uri.contains("security")).then(|| uri.to_owned())
    })
}

fn apt_packages() -> anyhow::Result<()> {
    apt_install(APT_PACKAGES, "apt packages")
}

fn apt_install(packages: &[&str], what: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step(&format!("{what}: present"));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: run `sudo cargo xtask setup` or `sudo apt-get install {}`",
            missing.join(" ")
        );
    }
    step(&format!("installing {}", missing.join(" ")));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    if output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).is_err() {
        step("installing the nightly toolchain");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("the eBPF programs need a nightly Rust toolchain")?;
    }
    Ok(PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?))
}

fn rust_src(sysroot: &Path) -> anyhow::Result<()> {
    let rustlib = sysroot.join("lib/rustlib");
    if rustlib.join("src/rust/library/core/Cargo.toml").exists() {
        step("nightly rust-src: present");
        return Ok(());
    }
    if let Some(tarball) = std::env::var_os(RUST_SRC_ENV) {
        step(&format!("unpacking rust-src from {}", Path::new(&tarball).display()));
        return run(Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(&rustlib));
    }
    step("installing nightly rust-src");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).with_context(|| {
        format!(
            "could not download rust-src; on an offline host set {RUST_SRC_ENV} to a rust-src tarball for this nightly"
        )
    })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("agentmon")
}

/// bpf-linker built against the nightly toolchain's own LLVM, cached per LLVM version.
fn bpf_linker(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV reports no LLVM version")?
        .trim()
        .to_owned();
    let major = llvm.split('.').next().unwrap_or(&llvm).to_owned();
    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm-{llvm}"));
    let bin = root.join("bin");
    if bin.join("bpf-linker").exists() {
        step(&format!("bpf-linker (LLVM {llvm}): cached"));
        return Ok(bin);
    }
    step(&format!("building bpf-linker {BPF_LINKER_VERSION} against the nightly LLVM {llvm} (about a minute)"));
    let tc_lib = sysroot.join("lib");
    let so = std::fs::read_dir(&tc_lib)?
        .flatten()
        .map(|e| e.file_name())
        .find(|n| n.to_string_lossy().starts_with("libLLVM.so"))
        .context("the nightly toolchain ships no libLLVM.so")?;
    let prefix = root.join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in [OsString::from("libLLVM.so"), so.clone()] {
        let link = prefix.join("lib").join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(tc_lib.join(&so), &link)?;
    }
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--no-default-features"])
        .args(["--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", tc_lib.display())))?;
    Ok(bin)
}

/// cargo-deb at the pinned version, installed with its own lock file.
fn cargo_deb() -> anyhow::Result<()> {
    let have = Command::new("cargo").args(["deb", "--version"]).output().ok().filter(|o| o.status.success());
    if have.is_some_and(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().any(|w| w == CARGO_DEB_VERSION)) {
        step(&format!("cargo-deb {CARGO_DEB_VERSION}: present"));
        return Ok(());
    }
    step(&format!("installing cargo-deb {CARGO_DEB_VERSION} (about a minute)"));
    run(Command::new("cargo").args(["install", "cargo-deb", "--version", CARGO_DEB_VERSION, "--locked"]))
        .context("installing cargo-deb, which builds the Debian package")
}

fn mounts() -> anyhow::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for (fstype, dir) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        let mounted = info
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(dir) && l.split(" - ").nth(1).is_some_and(|t| t.starts_with(fstype)));
        if mounted {
            continue;
        }
        if !is_root() {
            step(&format!("{dir} is not mounted (the daemon mounts it when it starts as root)"));
            continue;
        }
        step(&format!("mounting {fstype} on {dir}"));
        run(Command::new("mount").args(["-t", fstype, fstype, dir]))?;
    }
    Ok(())
}

/// rustfmt and clippy, which `cargo xtask lint` (and so `test`) run.
fn lint_tools() -> anyhow::Result<()> {
    let has = |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success());
    if has("fmt") && has("clippy") {
        step("rustfmt and clippy: present");
        return Ok(());
    }
    step("installing rustfmt and clippy");
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
        .context("could not install rustfmt and clippy (rustup component add rustfmt clippy)")
}

pub fn setup() -> anyhow::Result<BuildEnv> {
    apt_packages()?;
    let sysroot = nightly_sysroot()?;
    rust_src(&sysroot)?;
    let bin = bpf_linker(&sysroot)?;
    cargo_deb()?;
    lint_tools()?;
    mounts()?;
    let mut path = bin.into_os_string();
    if let Some(p) = std::env::var_os("PATH") {
        path.push(":");
        path.push(p);
    }
    step("setup complete");
    Ok(BuildEnv { path })
}
