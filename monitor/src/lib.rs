//! agentmon's userspace: the `agentmon` daemon and CLI.
//!
//! The modules, in the order a record meets them (read → correlate → redact → alerts → chain →
//! queue/spool → store), then the commands that read the trail back:
//!
//! - [`ebpf`]: load, attach and pin the kernel programs; decode their records into events.
//! - [`cgroup`], [`procscan`], [`rules`]: session cgroups, `/proc` seeding, and the session
//!   rules that make a unit, cgroup or program a session.
//! - [`correlate`]: events into sessions, actions, process trees, and file and network
//!   summaries.
//! - [`record`]: the records that flow between the stages and are stored.
//! - [`redact`]: the secret redaction rules.
//! - [`sensitive`], [`alerts`]: sensitive paths and endpoints; the alert rules and payloads.
//! - [`chain`]: the hash chain: each row's canonical encoding, hashing, signed checkpoints.
//! - [`store`]: `PostgreSQL`, and every line of SQL: the writer, the queries, and the reads of
//!   `verify`, `export` and retention.
//! - [`verify`], [`packet`], [`retention`]: checking the chain; incident packets; retention
//!   tiers, plans and archives.
//! - [`daemon`]: the runtime: the pipeline's stages (`daemon/pipeline.rs` shows their order),
//!   sessions, the control socket, metrics, the retention task.
//! - [`control`], [`config`]: the control socket's protocol; the config file.
//! - The agents' own account: [`intake`] (the hook socket's protocol) and [`otlp`] (OTLP/HTTP
//!   bodies into items) bring reports in; [`account`] reads them, decides whether the agent's
//!   own hook sent each, and checks every declared tool call against the kernel's records;
//!   [`agents`] is what `agentmon agents install` writes into Claude Code's and Codex's
//!   managed settings (hooks, OpenTelemetry), and how `uninstall` recognises it.
//! - [`cli`]: one module per `agentmon` command; parses and prints.
//! - [`text`], [`errno`], [`pgcluster`]: escaping and formatting, errno names, the private
//!   `PostgreSQL` cluster.
//!
//! One rule places a file: the pure core of a concern (types, checks, encoding, unit-tested)
//! lives at the crate root, its runtime stage in `daemon/`, its command in `cli/`, its SQL in
//! `store/`. So `chain.rs` encodes and `daemon/chain.rs` chains records as they flow;
//! `retention.rs` plans, `daemon/retention.rs` runs daily, `store/retention.rs` drops
//! partitions and `cli/retention.rs` asks and prints. Arrows point down: nothing at the root
//! imports from `daemon/` or `cli/`, `daemon/` never imports from `cli/`, and no two modules
//! import each other (`tests/layout.rs` checks all three).

pub mod account;
pub mod agents;
pub mod alerts;
pub mod cgroup;
pub mod chain;
pub mod cli;
pub mod config;
pub mod control;
pub mod correlate;
pub mod daemon;
pub mod ebpf;
pub mod errno;
pub mod intake;
pub mod otlp;
pub mod packet;
pub mod pgcluster;
pub mod procscan;
pub mod record;
pub mod redact;
pub mod retention;
pub mod rules;
pub mod sensitive;
pub mod store;
pub mod text;
pub mod verify;
