//! Project tasks: `cargo xtask setup | daemon | test | vm-test | bench | package`.
//!
//! Everything a fresh Debian machine lacks is installed here, idempotently: the `PostgreSQL`
//! binaries, nightly `rust-src` (or an offline tarball), bpf-linker built against the
//! nightly toolchain's own LLVM, and cargo-deb.

mod package;
#[path = "../../monitor/src/pgcluster.rs"]
#[allow(dead_code, reason = "shared with the daemon, which uses all of it")]
mod pg;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (apt packages, rust-src, bpf-linker, cargo-deb) and mount
    /// tracefs/bpffs.
    Setup,
    /// Set up, build, and run the daemon. Without a configured database it starts a private
    /// `PostgreSQL` cluster under target/agentmon-state/postgres.
    Daemon {
        /// Extra arguments for `agentmon daemon`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build the dev Debian package (for the package test), then run every test (unit
    /// and root integration tests) against a fresh private `PostgreSQL` cluster.
    Test {
        /// Skip the virtual-machine tier (a quick run of one test while working on it; CI and
        /// a full run never skip it).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build the dev Debian package, and run the virtual-machine tier: the package
    /// under a real systemd on Debian 12's 6.1 and 6.12 kernels, in QEMU (see xtask/src/vm.rs).
    VmTest {
        /// A kernel to boot (6.1 or 6.12); repeat for more. Default: both.
        #[arg(long = "kernel", value_parser = clap::builder::PossibleValuesParser::new(vm::KERNELS))]
        kernels: Vec<String>,
    },
    /// Check the code as CI does: `cargo fmt --check` and clippy at the workspace's lint level,
    /// warnings as errors (`cargo xtask test` runs this too).
    Lint,
    /// Set up, build in release mode, and run the overhead benchmark.
    Bench {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and make the Debian package (target/debian/release/agentmon_*.deb).
    Package {
        /// Package the debug build instead of a release build (target/debian/debug/).
        #[arg(long)]
        dev: bool,
    },
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Run a command, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `cargo` with bpf-linker on PATH.
fn cargo(env: &setup::BuildEnv) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root()).env("PATH", &env.path);
    c
}

/// `cargo fmt --check` and clippy (the workspace's `[workspace.lints]`, warnings as errors).
fn lint(env: &setup::BuildEnv) -> anyhow::Result<()> {
    step("checking the formatting (cargo fmt --check)");
    let fmt = run(cargo(env).args(["fmt", "--all", "--check"]));
    step("checking the code (cargo clippy, warnings as errors)");
    let clippy = run(cargo(env).args(["clippy", "--all-targets", "--", "-D", "warnings"]));
    fmt.context("the code is not formatted: run `cargo fmt --all`")?;
    clippy.context("clippy found warnings (see above)")
}

fn database_configured() -> bool {
    std::env::var_os("DATABASE_URL").is_some()
        || std::fs::read_to_string("/etc/agentmon/agentmon.toml").is_ok_and(|t| t.contains("database_url"))
}

fn main() {
    if let Err(e) = task(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn task(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Setup => {
            setup::setup()?;
        }
        Task::Daemon { args } => {
            if !is_root() {
                bail!("the daemon loads eBPF programs and needs root: run `cargo xtask daemon` as root");
            }
            let env = setup::setup()?;
            step("building agentmon (release)");
            run(cargo(&env).args(["build", "--release", "-p", "monitor"]))?;
            let bin = workspace_root().join("target/release/agentmon");
            let mut cmd = Command::new(&bin);
            cmd.arg("daemon").args(&args);
            // A checkout keeps its state (spool, handoff) under the build directory.
            if !args.iter().any(|a| a.starts_with("--state-dir")) {
                cmd.arg("--state-dir").arg(workspace_root().join("target/agentmon-state"));
            }
            if !database_configured() && !args.iter().any(|a| a.starts_with("--database-url")) {
                step("no database configured: the daemon runs its private PostgreSQL under target/agentmon-state/postgres");
            }
            step("starting the daemon (Ctrl-C to stop)");
            let status = cmd.status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { no_vm, args } => {
            test(no_vm, &args)?;
        }
        Task::Lint => {
            let env = setup::setup()?;
            lint(&env)?;
        }
        Task::VmTest { kernels } => {
            if !is_root() {
                bail!("the VM tier builds a root file system (debootstrap) and needs root: run `sudo cargo xtask vm-test`");
            }
            let env = setup::setup()?;
            setup::test_packages()?;
            let deb = package::build(&env, true)?;
            let kernels =
                if kernels.is_empty() { vm::KERNELS.iter().map(|k| (*k).to_owned()).collect() } else { kernels };
            vm::test(&deb, &kernels)?;
        }
        Task::Bench { args } => {
            let env = setup::setup()?;
            if !is_root() {
                bail!("the benchmark loads eBPF programs and needs root");
            }
            run(cargo(&env).args(["build", "--release", "-p", "monitor", "-p", "integration-tests", "--bins"]))?;
            let cluster = pg::Cluster::new(workspace_root().join("target/agentmon-bench-pg"), 54331);
            cluster.init(true, &step)?;
            let mut server = cluster.start(&[])?;
            let status = Command::new(workspace_root().join("target/release/agentmon-bench"))
                .args(&args)
                .env("AGENTMON_TEST_DATABASE_URL", cluster.url("postgres"))
                .env("AGENTMON_BIN", workspace_root().join("target/release/agentmon"))
                .status();
            pg::Cluster::stop_child(&mut server);
            let status = status?;
            if !status.success() {
                bail!("benchmark failed");
            }
        }
        Task::Package { dev } => {
            let env = setup::setup()?;
            package::build(&env, dev)?;
        }
    }
    Ok(())
}

/// `cargo xtask test`: the lint, the build and the package, every test against a throwaway
/// `PostgreSQL`, then the virtual-machine tier; each failure is reported, the lint's last.
fn test(no_vm: bool, args: &[String]) -> anyhow::Result<()> {
    let env = setup::setup()?;
    if !is_root() {
        bail!("the integration tests load eBPF programs and need root: run `sudo cargo xtask test`");
    }
    setup::test_packages()?;
    let claude = setup::claude_code()?;
    let codex = setup::codex_cli()?;
    // Lint first and report at the end: a style slip does not hide the tests' results.
    let lint = lint(&env);
    step("building the workspace");
    run(cargo(&env).args(["build", "--bins"]))?;
    let deb = package::build(&env, true)?;
    let cluster = pg::Cluster::new(workspace_root().join("target/agentmon-test-pg"), 54330);
    cluster.init(true, &step)?;
    step(&format!("starting PostgreSQL (socket in {})", cluster.socket_dir().display()));
    let mut server = cluster.start(&[])?;
    step("running every test");
    // --no-fail-fast: every test binary runs, so one failure does not hide the others.
    let status = cargo(&env)
        .args(["test", "--no-fail-fast"])
        .args(args)
        .env("AGENTMON_TEST_DATABASE_URL", cluster.url("postgres"))
        .env("AGENTMON_BIN", workspace_root().join("target/debug/agentmon"))
        .env("AGENTMON_TEST_DEB", &deb)
        .env("AGENTMON_CLAUDE_BIN", &claude)
        .env("AGENTMON_CODEX_BIN", &codex)
        .status();
    pg::Cluster::stop_child(&mut server);
    let status = status?;
    // The VM tier runs whatever the native tests said: its failures are other ones.
    let vm = if no_vm {
        step("the virtual-machine tier: skipped (--no-vm)");
        Ok(())
    } else {
        step("the virtual-machine tier (Debian 12 kernels 6.1 and 6.12 under systemd)");
        vm::test(&deb, &vm::KERNELS.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>())
    };
    if !status.success() {
        bail!("tests failed");
    }
    vm?;
    lint?;
    Ok(())
}
