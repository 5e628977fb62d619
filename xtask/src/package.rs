//! `cargo xtask package`: the Debian package, built with cargo-deb from the binary, the files
//! in `packaging/`, and completions and man pages generated from the binary.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::{cargo, run, setup::BuildEnv, step, workspace_root};

/// Build the `.deb` and return its path. `dev` packages the debug binary (what the tests
/// run) instead of a release build, stripped and lightly compressed.
pub fn build(env: &BuildEnv, dev: bool) -> anyhow::Result<PathBuf> {
    let (profile, dir) = if dev { ("dev", "debug") } else { ("release", "release") };
    step(&format!("building agentmon ({profile})"));
    run(cargo(env).args(["build", "--profile", profile, "-p", "monitor", "--bin", "agentmon"]))?;
    let target = workspace_root().join("target").join(dir);
    let bin = target.join("agentmon");

    // What the assets in monitor/Cargo.toml name under target/release/packaging/.
    let generated = target.join("packaging");
    let _ = std::fs::remove_dir_all(&generated);
    let completions = generated.join("completions");
    std::fs::create_dir_all(&completions).with_context(|| format!("creating {}", completions.display()))?;
    for (shell, file) in [("bash", "agentmon.bash"), ("zsh", "_agentmon"), ("fish", "agentmon.fish")] {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("`agentmon completions {shell}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::fs::write(completions.join(file), &out.stdout)
            .with_context(|| format!("writing the {shell} completions"))?;
    }
    let man = generated.join("man");
    run(Command::new(&bin).arg("man").arg("--dir").arg(&man))?;
    // Debian installs man pages gzipped (-n: no name or time stamp, so the build is reproducible).
    run(Command::new("sh").arg("-c").arg("gzip -9nf -- *.1").current_dir(&man))?;

    step("packaging with cargo-deb");
    // A directory per profile: cargo-deb deletes every agentmon_*.deb directly in target/debian
    // on each run, so one profile's package would remove the other's.
    let out_dir = workspace_root().join("target/debian").join(dir);
    let mut deb = cargo(env);
    deb.args(["deb", "-p", "monitor", "--no-build", "--profile", profile, "--output"]).arg(&out_dir);
    if dev {
        deb.args(["--strip", "--fast"]);
    }
    let out = deb.output().context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // cargo-deb prints the path of the package it wrote.
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .map(PathBuf::from)
        .rfind(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb did not say where it wrote the package")?;
    step(&format!("package: {}", path.display()));
    Ok(path)
}
