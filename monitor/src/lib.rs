//! agentmon's userspace: where each piece lives.
//!
//! - [`ebpf`]: load, attach and pin the kernel programs, decode their events.
//! - [`daemon`]: the pipeline from the rings to `PostgreSQL` (reader, queue and spool, store)
//!   and the control socket.
//! - [`correlate`]: turn events into sessions, actions and process trees.
//! - [`store`]: write evidence to `PostgreSQL`, and the queries that read it.
//! - [`cli`]: one module per `agentmon` subcommand; [`control`] is the daemon's socket.

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
