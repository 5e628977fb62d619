//! Alert delivery to a webhook: a JSON POST per alert from a thread of its own, so a slow or
//! dead endpoint never blocks capture. Alerts wait in a bounded queue and are retried, oldest
//! first, with exponential back-off (1 s doubling up to `webhook_retry_max`); when the queue
//! is full the oldest waiting alert is dropped and counted (every alert is in the database
//! anyway). http:// and https:// (rustls, the system's root certificates) are supported.

use std::{
    collections::VecDeque,
    io::Write as _,
    net::{TcpStream, ToSocketAddrs as _},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    time::Duration,
};

use serde_json::Value;

use crate::alerts::WebhookTarget as Target;

/// Alerts waiting for delivery, at most.
pub const QUEUE_MAX: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
    pub waiting: AtomicU64,
}

struct Shared {
    queue: Mutex<(VecDeque<Value>, bool)>,
    wake: Condvar,
}

pub struct Webhook {
    shared: Arc<Shared>,
    pub stats: Arc<Stats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    /// `slack`: send `{"text": summary}` instead of the alert object.
    pub fn start(target: Target, slack: bool, retry_max: Duration) -> Self {
        let shared = Arc::new(Shared { queue: Mutex::new((VecDeque::new(), false)), wake: Condvar::new() });
        let stats = Arc::new(Stats::default());
        let (sh, st) = (shared.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("agentmon-webhook".into())
            .spawn(move || deliver(&sh, &st, &target, slack, retry_max))
            .expect("spawning the webhook thread");
        Self { shared, stats, thread: Some(thread) }
    }

    /// Queue an alert (never blocks on the network).
    pub fn send(&self, alert: Value) {
        let mut q = self.shared.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.0.len() >= QUEUE_MAX {
            q.0.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.0.push_back(alert);
        self.stats.waiting.store(q.0.len() as u64, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Try for up to `grace` to deliver what is queued, then stop the thread.
    pub fn stop(mut self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline && self.stats.waiting.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shared.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn deliver(sh: &Shared, st: &Stats, target: &Target, slack: bool, retry_max: Duration) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let alert = {
            let mut q = sh.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while q.0.is_empty() && !q.1 {
                q = sh.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if q.1 {
                return;
            }
            q.0.front().cloned()
        };
        let Some(alert) = alert else { continue };
        let body = if slack { crate::alerts::slack_payload(&alert) } else { alert };
        // Bidi overrides and zero-width characters as `\uXXXX`: the same JSON to a parser, safe
        // to read raw.
        match post(target, crate::text::json_visible(&body.to_string()).as_bytes()) {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                st.delivered.fetch_add(1, Ordering::Relaxed);
                let mut q = sh.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                q.0.pop_front();
                st.waiting.store(q.0.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                st.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = %target.origin(), error = %e, retry_in = ?backoff, "could not deliver an alert; it stays queued");
                let q = sh.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (q, _) =
                    sh.wake.wait_timeout_while(q, backoff, |q| !q.1).unwrap_or_else(std::sync::PoisonError::into_inner);
                if q.1 {
                    return;
                }
                backoff = (backoff * 2).min(retry_max);
            }
        }
    }
}

/// One POST; Ok on a 2xx answer.
fn post(t: &Target, body: &[u8]) -> Result<(), String> {
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", t.host))?
        .next()
        .ok_or("no address")?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connecting to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let host = if t.host.contains(':') { format!("[{}]", t.host) } else { t.host.clone() };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: agentmon/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut answer = Vec::new();
    if t.tls {
        let mut s = tls(t, tcp)?;
        s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(|e| e.to_string())?;
        read_status(&mut s, &mut answer)?;
    } else {
        let mut s = tcp;
        s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(|e| e.to_string())?;
        read_status(&mut s, &mut answer)?;
    }
    let line = String::from_utf8_lossy(answer.split(|b| *b == b'\n').next().unwrap_or_default()).trim().to_owned();
    match line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        _ => Err(format!("answered `{line}`")),
    }
}

fn read_status(s: &mut impl std::io::Read, answer: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    while !answer.contains(&b'\n') && answer.len() < 8192 {
        let n = s.read(&mut buf).map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

fn tls(t: &Target, tcp: TcpStream) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|e| format!("{}: {e}", t.host))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn delivers_and_retries_until_the_endpoint_answers() {
        // An endpoint that refuses the first connection attempt's answer (500), then accepts.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().enumerate() {
                let mut s = s.expect("accept");
                let mut buf = vec![0u8; 65536];
                let mut req = Vec::new();
                loop {
                    let n = s.read(&mut buf).expect("read");
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if req.len() >= i + 4 + len {
                            g.lock().expect("lock").push(text[i + 4..].to_owned());
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let code = if i == 0 { "500 Internal Server Error" } else { "204 No Content" };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        let w = Webhook::start(
            crate::alerts::parse_webhook_url(&format!("http://127.0.0.1:{port}/x")).expect("url"),
            false,
            Duration::from_secs(1),
        );
        w.send(serde_json::json!({"rule": "sudo", "n": 1}));
        w.send(serde_json::json!({"rule": "tamper", "n": 2}));
        let stats = w.stats.clone();
        w.stop(Duration::from_secs(10));
        let got = got.lock().expect("lock").clone();
        assert_eq!(got.len(), 3, "the first attempt was refused and retried: {got:?}");
        assert!(got[0].contains("\"n\":1") && got[1].contains("\"n\":1") && got[2].contains("\"n\":2"), "{got:?}");
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
    }
}
