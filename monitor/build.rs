//! Builds the eBPF object (`monitor-ebpf`) with the nightly toolchain and bpf-linker, so the
//! daemon can embed it with `include_bytes_aligned!`, and records the git revision for
//! `agentmon --version`.
//!
//! A plain `cargo build` works after `cargo xtask setup`: when `bpf-linker` is not on PATH, the
//! copy setup built (`<cache>/agentmon/bpf-linker-<version>-llvm-<nightly LLVM>/bin`) is put in
//! front of PATH for the eBPF build.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    version(&manifest_dir);
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "monitor-ebpf")
        .ok_or_else(|| anyhow!("monitor-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("monitor-ebpf manifest has no parent"))?.as_str().to_owned();
    println!("cargo:rerun-if-changed=../monitor-common/src");
    bpf_linker_on_path()?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "monitor-ebpf", root_dir: &root_dir, ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed: run `cargo xtask setup` (it installs nightly rust-src and bpf-linker)")
}

/// Find `bpf-linker`: on PATH, or where `cargo xtask setup` built it for the nightly's LLVM.
fn bpf_linker_on_path() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join("bpf-linker").is_file()) {
        return Ok(());
    }
    let cache = cache_dir()
        .context("bpf-linker is not on PATH and neither XDG_CACHE_HOME nor HOME is set: run `cargo xtask setup`")?;
    let llvm = nightly_llvm().context(
        "bpf-linker is not on PATH: run `cargo xtask setup` (it installs the nightly toolchain and builds bpf-linker)",
    )?;
    // The newest bpf-linker built against this LLVM (`bpf-linker-<version>-llvm-<llvm>`).
    let suffix = format!("-llvm-{llvm}");
    let mut built: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("bpf-linker-") && n.ends_with(&suffix)))
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("bpf-linker").is_file())
        .collect();
    built.sort();
    let Some(bin) = built.pop() else {
        bail!(
            "bpf-linker is not on PATH and `cargo xtask setup` has not built it for the nightly's LLVM {llvm} (looked for {}/bpf-linker-*{suffix}/bin/bpf-linker): run `cargo xtask setup`",
            cache.display()
        );
    };
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    let joined: OsString = std::env::join_paths(dirs).context("joining PATH")?;
    // aya_build's cargo inherits it.
    std::env::set_var("PATH", joined);
    Ok(())
}

/// `$XDG_CACHE_HOME/agentmon` or `~/.cache/agentmon`, as `cargo xtask setup` uses.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("agentmon"))
}

/// The LLVM version of the nightly toolchain that builds the eBPF programs.
fn nightly_llvm() -> anyhow::Result<String> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "-vV"])
        .output()
        .context("running `rustup run nightly rustc -vV`")?;
    if !out.status.success() {
        bail!("`rustup run nightly rustc -vV` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .map(|v| v.trim().to_owned())
        .context("`rustc +nightly -vV` reports no LLVM version")
}

/// `AGENTMON_VERSION` for `agentmon --version`: `0.1.0 (abc1234)`, `-dirty` when tracked files
/// differ from the commit. Outside a git checkout of this project (a source tarball),
/// `AGENTMON_GIT_REVISION` names the revision, else it says `unknown revision`.
fn version(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=AGENTMON_GIT_REVISION");
    let revision = std::env::var("AGENTMON_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git_revision(manifest_dir))
        .unwrap_or_else(|| "unknown revision".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=AGENTMON_VERSION={version} ({revision})");
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_revision(dir: &Path) -> Option<String> {
    // Only this project's own checkout: not a parent repository the sources were unpacked in.
    git(dir, &["ls-files", "--error-unmatch", "build.rs"])?;
    let hash = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    // Rebuild when HEAD moves, on a commit or `git add` (the index), and when sources change
    // (the eBPF sources are watched by aya_build). Edits elsewhere mark the tree dirty only
    // from the next rebuild on.
    for p in ["HEAD", "index", "packed-refs"] {
        if let Some(f) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", p]) {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    if let Some(f) = git(dir, &["symbolic-ref", "-q", "HEAD"])
        .and_then(|r| git(dir, &["rev-parse", "--path-format=absolute", "--git-path", &r]))
    {
        println!("cargo:rerun-if-changed={f}");
    }
    for p in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={p}");
    }
    // `--no-optional-locks`: do not refresh the index, which would trigger another rerun.
    let dirty = git(dir, &["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
