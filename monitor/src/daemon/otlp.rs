//! The OTLP/HTTP receiver: agents (Claude Code, Codex) export their OpenTelemetry logs and
//! metrics to `POST /v1/logs` and `POST /v1/metrics`. Each request is decoded (`crate::otlp`)
//! and handed to the daemon with the connection's two addresses, by which the daemon finds the
//! process that owns the client socket. The HTTP task never waits for the daemon: a full
//! channel is a 503 with `Retry-After`, which OTLP exporters retry.
//!
//! Every request to the two routes reaches the daemon once, decoded or not: a malformed body
//! (400), an unsupported content type or encoding (415) or a body over the limit (413) arrive
//! as `items: Err(..)` with the start of the body, so nothing is dropped silently.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    body::Body,
    extract::{connect_info::Connected, ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse as _, Response},
    routing::post,
    serve::IncomingStream,
    Router,
};
use futures_util::StreamExt as _;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
};
use prost::Message as _;
use tokio::{net::TcpListener, sync::mpsc};
use tracing::warn;

use crate::otlp::{self, DecodeError, Format, Item, Signal, MAX_BODY};

/// How much of an undecodable body is kept for the daemon.
const RAW_PREFIX: usize = 4 << 10;

/// One export request, as the daemon receives it.
#[derive(Debug)]
pub struct Received {
    /// The client's socket address (its port names the process that sent the request).
    pub peer: SocketAddr,
    /// The receiver's socket address on that connection.
    pub local: SocketAddr,
    pub signal: Signal,
    /// The items, or why the body could not be decoded.
    pub items: Result<Vec<Item>, String>,
    /// The body's length as sent (compressed); for a body refused by its `Content-Length`
    /// alone, the length it declared.
    pub body_len: usize,
    /// The first 4 KiB of the (decompressed if possible) body when it could not be decoded,
    /// so the daemon can keep a malformed report; empty when it was.
    pub raw_prefix: Vec<u8>,
    /// Dropped (or sent) once the daemon has bound the request to its sender: the answer
    /// waits for it (up to [`BIND_WAIT`]), so the sender is still alive, holding its socket,
    /// while the daemon looks it up.
    pub bound: Option<tokio::sync::oneshot::Sender<()>>,
    /// The process that held the client socket when the connection was accepted.
    pub owner: Option<u32>,
}

/// The longest an answer waits for the daemon to bind its request.
pub const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The receiver's counters.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Requests to `/v1/logs` and `/v1/metrics`.
    pub requests: AtomicU64,
    /// Items handed to the daemon.
    pub items: AtomicU64,
    /// Bodies that could not be decoded (400), or had an unsupported content type or encoding
    /// (415).
    pub malformed: AtomicU64,
    /// Bodies over `MAX_BODY`, compressed or decompressed (413).
    pub too_big: AtomicU64,
    /// Requests refused because the daemon's channel was full (503).
    pub busy: AtomicU64,
}

/// Binds the receiver's TCP listener (`host:port`).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves OTLP/HTTP on `listener` until the task is dropped (or accepting fails for good).
pub async fn serve(listener: TcpListener, tx: mpsc::Sender<Received>, stats: Arc<OtlpStats>) {
    let app = Router::new()
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .with_state(Shared { tx, stats });
    if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<Conn>()).await {
        warn!("OTLP receiver stopped: {e}");
    }
}

/// The two ends of a connection.
#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    /// The process holding the client's socket when the connection was accepted (an agent may
    /// send its last batch and exit before the daemon gets to it).
    owner: Option<u32>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let peer = *stream.remote_addr();
        // getsockname on an accepted socket fails only if it is already gone.
        let local = stream.io().local_addr().unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let owner = super::intake::tcp_inode(peer, local).and_then(super::intake::socket_owner_any);
        Self { peer, local, owner }
    }
}

#[derive(Clone)]
struct Shared {
    tx: mpsc::Sender<Received>,
    stats: Arc<OtlpStats>,
}

async fn logs(State(shared): State<Shared>, ConnectInfo(conn): ConnectInfo<Conn>, request: Request) -> Response {
    receive(&shared, conn, Signal::Logs, request).await
}

async fn metrics(State(shared): State<Shared>, ConnectInfo(conn): ConnectInfo<Conn>, request: Request) -> Response {
    receive(&shared, conn, Signal::Metrics, request).await
}

/// What became of a request's body.
struct Outcome {
    status: StatusCode,
    items: Result<Vec<Item>, String>,
    body_len: usize,
    raw_prefix: Vec<u8>,
    /// The response's format: the request's (sniffed when it named none).
    format: Option<Format>,
}

async fn receive(shared: &Shared, conn: Conn, signal: Signal, request: Request) -> Response {
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let outcome = outcome(signal, &parts.headers, body).await;
    let n = outcome.items.as_ref().map_or(0, Vec::len);
    let message = outcome.items.as_ref().err().cloned().unwrap_or_default();
    let (bound, bound_rx) = tokio::sync::oneshot::channel();
    let received = Received {
        peer: conn.peer,
        local: conn.local,
        signal,
        items: outcome.items,
        body_len: outcome.body_len,
        raw_prefix: outcome.raw_prefix,
        bound: Some(bound),
        owner: conn.owner,
    };
    let sent = shared.tx.try_send(received).is_ok();
    if sent {
        let _ = tokio::time::timeout(BIND_WAIT, bound_rx).await;
    }
    if !sent {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        let mut response = error(outcome.format, StatusCode::SERVICE_UNAVAILABLE, "agentmon is busy; retry");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    match outcome.status {
        StatusCode::OK => {
            stats.items.fetch_add(n as u64, Ordering::Relaxed);
            accepted(signal, outcome.format)
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            stats.too_big.fetch_add(1, Ordering::Relaxed);
            error(outcome.format, outcome.status, &message)
        }
        other => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            error(outcome.format, other, &message)
        }
    }
}

/// Reads, decompresses and decodes a body.
async fn outcome(signal: Signal, headers: &HeaderMap, body: Body) -> Outcome {
    let header = |name| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (content_type, content_encoding) = (header(header::CONTENT_TYPE), header(header::CONTENT_ENCODING));
    let failed = |status, e: &dyn std::fmt::Display, body_len, prefix: &[u8], format| Outcome {
        status,
        items: Err(e.to_string()),
        body_len,
        raw_prefix: prefix[..prefix.len().min(RAW_PREFIX)].to_vec(),
        format,
    };
    let format = otlp::format(content_type.as_deref());
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|&n| n > MAX_BODY) {
        return failed(StatusCode::PAYLOAD_TOO_LARGE, &DecodeError::TooBig, declared, &[], format.ok().flatten());
    }
    let body = match read_body(body).await {
        Ok(body) => body,
        Err((e, partial)) => {
            let status = if partial.len() > MAX_BODY { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return failed(status, &e, partial.len(), &partial, format.ok().flatten());
        }
    };
    let format = match format {
        Ok(format) => format,
        Err(e) => return failed(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e, body.len(), &body, None),
    };
    let data = match otlp::decompress(content_encoding.as_deref(), &body) {
        Ok(data) => data,
        Err(e) => {
            let status = match e {
                DecodeError::TooBig => StatusCode::PAYLOAD_TOO_LARGE,
                DecodeError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            return failed(status, &e, body.len(), &body, format);
        }
    };
    let format = Some(format.unwrap_or_else(|| Format::sniff(&data)));
    match otlp::parse(signal, format, &data) {
        Ok(items) => {
            Outcome { status: StatusCode::OK, items: Ok(items), body_len: body.len(), raw_prefix: Vec::new(), format }
        }
        Err(e) => failed(StatusCode::BAD_REQUEST, &e, body.len(), &data, format),
    }
}

/// The body, up to one byte past `MAX_BODY`; on an error, what was read.
async fn read_body(body: Body) -> Result<Vec<u8>, (String, Vec<u8>)> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() > MAX_BODY {
                    return Err((DecodeError::TooBig.to_string(), out));
                }
            }
            Err(e) => return Err((format!("reading the body: {e}"), out)),
        }
    }
    Ok(out)
}

/// 200 with an empty export response in the request's format.
fn accepted(signal: Signal, format: Option<Format>) -> Response {
    let format = format.unwrap_or(Format::Protobuf);
    let body = match format {
        Format::Json => b"{}".to_vec(),
        Format::Protobuf => match signal {
            Signal::Logs => ExportLogsServiceResponse::default().encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse::default().encode_to_vec(),
        },
    };
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error response: a `google.rpc.Status` in the request's format (plain text when it had
/// none we know).
fn error(format: Option<Format>, status: StatusCode, message: &str) -> Response {
    // gRPC codes: UNAVAILABLE for a retryable refusal, INVALID_ARGUMENT otherwise.
    let code = if status == StatusCode::SERVICE_UNAVAILABLE { 14 } else { 3 };
    match format {
        Some(Format::Protobuf) => {
            let body = RpcStatus { code, message: message.to_owned() }.encode_to_vec();
            (status, [(header::CONTENT_TYPE, Format::Protobuf.content_type())], body).into_response()
        }
        Some(Format::Json) => {
            let body = serde_json::json!({ "code": code, "message": message }).to_string();
            (status, [(header::CONTENT_TYPE, Format::Json.content_type())], body).into_response()
        }
        None => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, io::Write as _};

    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics},
    };
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn start(capacity: usize) -> (SocketAddr, mpsc::Receiver<Received>, Arc<OtlpStats>) {
        let listener = bind("127.0.0.1:0").await.expect("test");
        let addr = listener.local_addr().expect("test");
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(OtlpStats::default());
        tokio::spawn(serve(listener, tx, Arc::clone(&stats)));
        (addr, rx, stats)
    }

    struct Reply {
        /// The client socket's own address.
        client: SocketAddr,
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    /// One HTTP/1.1 request on a fresh connection (`Content-Length` given unless `headers` has
    /// one).
    async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("test");
        let client = stream.local_addr().expect("test");
        let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            let _ = write!(request, "Content-Length: {}\r\n", body.len());
        }
        for (k, v) in headers {
            let _ = write!(request, "{k}: {v}\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("test");
        stream.write_all(body).await.expect("test");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("test");
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("test");
        let head = String::from_utf8(response[..split].to_vec()).expect("test");
        let status = head[9..12].parse().expect("test");
        Reply { client, status, head: head.to_ascii_lowercase(), body: response[split + 4..].to_vec() }
    }

    const LOGS_JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"claude-code"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1760000000000000000","body":{"stringValue":"claude_code.tool_decision"},
        "attributes":[{"key":"event.name","value":{"stringValue":"tool_decision"}},{"key":"decision","value":{"stringValue":"reject"}}]}]}]}]}"#;

    fn metrics_protobuf_gzip() -> Vec<u8> {
        let point = NumberDataPoint { value: Some(number_data_point::Value::AsInt(7)), ..NumberDataPoint::default() };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "codex.turns".to_owned(),
                        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&request.encode_to_vec()).expect("test");
        encoder.finish().expect("test")
    }

    #[tokio::test]
    async fn receives_and_forwards() {
        let (addr, mut rx, stats) = start(8).await;

        let reply = post(addr, "/v1/logs", &[("Content-Type", "application/json")], LOGS_JSON.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert!(reply.head.contains("content-type: application/json"));
        assert_eq!(reply.body, b"{}");
        let got = rx.recv().await.expect("test");
        assert_eq!((got.peer, got.local, got.signal), (reply.client, addr, Signal::Logs));
        assert_eq!(got.body_len, LOGS_JSON.len());
        assert!(got.raw_prefix.is_empty());
        let items = got.items.expect("test");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].name, "tool_decision");
        assert_eq!(items[0].attributes["decision"], json!("reject"));
        assert_eq!(items[0].resource["service.name"], json!("claude-code"));

        let body = metrics_protobuf_gzip();
        let headers = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")];
        let reply = post(addr, "/v1/metrics", &headers, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert!(reply.head.contains("content-type: application/x-protobuf"));
        assert!(reply.body.is_empty(), "an empty ExportMetricsServiceResponse encodes to nothing");
        let got = rx.recv().await.expect("test");
        assert_eq!((got.peer, got.local, got.signal, got.body_len), (reply.client, addr, Signal::Metrics, body.len()));
        let items = got.items.expect("test");
        assert_eq!((items[0].name.as_str(), &items[0].attributes["value"]), ("codex.turns", &json!(7)));

        // Malformed: 400, and forwarded with the start of the body.
        let junk = b"{\"resourceLogs\": [{\"scopeLogs\": 7}";
        let reply = post(addr, "/v1/logs", &[("Content-Type", "application/json")], junk).await;
        assert_eq!(reply.status, 400);
        let rpc_status: serde_json::Value = serde_json::from_slice(&reply.body).expect("test");
        assert_eq!(rpc_status["code"], json!(3));
        let got = rx.recv().await.expect("test");
        assert!(got.items.expect_err("an error").starts_with("not OTLP JSON"));
        assert_eq!((got.peer, got.raw_prefix.as_slice()), (reply.client, &junk[..]));

        // Gzip that is not: the raw body is kept.
        let reply = post(
            addr,
            "/v1/logs",
            &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
            b"plain",
        )
        .await;
        assert_eq!(reply.status, 400);
        assert_eq!(rx.recv().await.expect("test").raw_prefix, b"plain");

        // Unsupported content type.
        let reply = post(addr, "/v1/metrics", &[("Content-Type", "text/plain")], b"cpu 3").await;
        assert_eq!(reply.status, 415);
        assert_eq!(rx.recv().await.expect("test").raw_prefix, b"cpu 3");

        // Over the limit by its declared length alone: refused before reading.
        let big = (MAX_BODY + 1).to_string();
        let headers = [("Content-Type", "application/x-protobuf"), ("Content-Length", big.as_str())];
        let reply = post(addr, "/v1/logs", &headers, b"").await;
        assert_eq!(reply.status, 413);
        let got = rx.recv().await.expect("test");
        assert_eq!((got.body_len, got.items.is_err()), (MAX_BODY + 1, true));

        // Other routes and methods.
        assert_eq!(post(addr, "/v1/traces", &[], b"").await.status, 404);
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("test");
        stream.write_all(b"GET /v1/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("test");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("test");
        assert!(response.starts_with("HTTP/1.1 405"), "{response}");

        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (
                load(&stats.requests),
                load(&stats.items),
                load(&stats.malformed),
                load(&stats.too_big),
                load(&stats.busy)
            ),
            (6, 2, 3, 1, 0)
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn full_channel_is_busy() {
        let (addr, mut rx, stats) = start(1).await;
        let headers = [("Content-Type", "application/json")];
        assert_eq!(post(addr, "/v1/logs", &headers, LOGS_JSON.as_bytes()).await.status, 200);
        let reply = post(addr, "/v1/logs", &headers, LOGS_JSON.as_bytes()).await;
        assert_eq!(reply.status, 503);
        assert!(reply.head.contains("retry-after: 1"), "{}", reply.head);
        assert_eq!((stats.busy.load(Ordering::Relaxed), stats.items.load(Ordering::Relaxed)), (1, 1));
        assert!(rx.recv().await.expect("test").items.is_ok());
        // Drained: accepted again.
        assert_eq!(post(addr, "/v1/logs", &headers, LOGS_JSON.as_bytes()).await.status, 200);
    }
}
