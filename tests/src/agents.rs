//! What the agent-account tests share (`tests/agent_account.rs`, `tests/agent_codex.rs`): a
//! scripted model API server, a daemon with an OTLP receiver of its own, and reads of the
//! stored reports and tool calls.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::Row as _;

use crate::{wait_for, Daemon};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A scripted model API server (`tests/agents/<script>`: the Messages API for Claude Code,
/// the Responses API for Codex).
pub struct FakeApi {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl FakeApi {
    pub fn start(dir: &Path, server: &str, script: &Value) -> Self {
        let script_file = dir.join("script.json");
        std::fs::write(&script_file, script.to_string()).expect("script");
        let port_file = dir.join("api.port");
        let log = dir.join("api.log");
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents").join(server);
        let child = Command::new("python3")
            .arg(&server)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--script")
            .arg(&script_file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (python3): {e}", server.display()));
        let port = wait_for(10, "the fake model API to listen", || {
            std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok())
        });
        Self { child, port, log }
    }

    pub fn main_requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"kind\": \"main\""))
            .count()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose OTLP receiver listens on a port of its own.
pub async fn daemon(name: &str, dir: &Path) -> (Daemon, u16) {
    let otlp = free_port();
    let config = dir.join("agentmon.toml");
    std::fs::write(&config, format!("[agents]\notlp_listen = \"127.0.0.1:{otlp}\"\nsilence_secs = 3\n"))
        .expect("config");
    let d = Daemon::start(name, &["--config", config.to_str().expect("utf-8")]).await;
    (d, otlp)
}

pub async fn rows(d: &Daemon, sql: &str, session: &str) -> Vec<Value> {
    let q = format!("SELECT to_jsonb(t) AS j FROM ({sql}) t");
    sqlx::query(&q)
        .bind(uuid::Uuid::parse_str(session).expect("uuid"))
        .fetch_all(&d.pool)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .into_iter()
        .map(|r| r.get::<Value, _>("j"))
        .collect()
}

pub async fn calls(d: &Daemon, session: &str) -> Vec<Value> {
    rows(d, "SELECT * FROM tool_calls WHERE session_id = $1 ORDER BY started_at", session).await
}

/// Wait until the session's calls satisfy `done`; on a timeout, say what was there.
pub async fn wait_calls(d: &Daemon, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let c = calls(d, id).await;
        if done(&c) {
            return c;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let reports = rows(d, "SELECT received_at, channel, event, tool_use_id, attested, attestation FROM agent_reports WHERE session_id = $1 ORDER BY received_at", id).await;
            let actions = d.actions(id);
            panic!("the calls did not come: {c:#?}\nreports: {reports:#?}\nactions: {actions:#?}\n{}", d.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn call<'a>(calls: &'a [Value], tool_use_id: &str) -> &'a Value {
    calls
        .iter()
        .find(|c| c["tool_use_id"] == tool_use_id)
        .unwrap_or_else(|| panic!("no call {tool_use_id}: {calls:#?}"))
}
