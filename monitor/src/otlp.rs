//! OTLP/HTTP request bodies into items: what agents (Claude Code, Codex) send the daemon as
//! OpenTelemetry logs and metrics. The pure core: content type and encoding, gzip with a hard
//! limit, protobuf or OTLP/JSON into the `opentelemetry-proto` messages, and those into flat
//! [`Item`]s. The HTTP server is `daemon/otlp.rs`.
//!
//! Lenient on values, strict on shape: a malformed attribute, timestamp or id becomes null, its
//! text or nothing (a second, repairing pass over the JSON), but a body that is not an OTLP
//! export request at all is an error.

use std::{borrow::Cow, io::Read as _};

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{any_value, AnyValue, KeyValue},
    logs::v1::LogRecord,
    metrics::v1::{metric, number_data_point, AggregationTemporality, Metric},
};
use prost::Message as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The largest body accepted, compressed (by the server) and decompressed (here).
pub const MAX_BODY: usize = 4 << 20;

/// How much of a log body names an item that has no event name.
const NAME_FROM_BODY: usize = 200;

/// The two OTLP signals the receiver takes (traces are not asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        }
    }
}

/// A body's encoding, from its content type (or sniffed, when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// The format of a body sent without a content type: JSON when it starts with `{`.
    pub fn sniff(data: &[u8]) -> Self {
        if data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Self::Json
        } else {
            Self::Protobuf
        }
    }

    /// The content type of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// One log record, or one metric data point.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub signal: Signal,
    /// Logs: the record's `event_name`, else its `event.name` attribute, else the body's text
    /// (its first 200 characters), else "log". Metrics: the metric's name.
    pub name: String,
    /// Logs: the record's time, else its observed time. Metrics: the data point's time.
    pub time: Option<DateTime<Utc>>,
    /// The record's or data point's attributes (see [`any_to_json`]), plus for logs `body`
    /// when there is one, and for metrics `value` (histograms and summaries: their sum, with
    /// `count`), `metric.type`, `metric.unit` and, for sums and histograms,
    /// `metric.temporality` (`delta` or `cumulative`).
    pub attributes: Map<String, Value>,
    /// The resource's attributes (`service.name`, ...), converted the same way.
    pub resource: Map<String, Value>,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body over {MAX_BODY} bytes")]
    TooBig,
    #[error("bad gzip: {0}")]
    BadGzip(String),
    #[error("not OTLP {0}: {1}")]
    NotOtlp(&'static str, String),
    #[error("unsupported content type {0:?} (OTLP/HTTP is application/x-protobuf or application/json)")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?} (gzip or identity)")]
    UnsupportedEncoding(String),
}

/// Decodes an OTLP/HTTP export request body into items: [`format`], [`decompress`], [`parse`].
pub fn decode(
    signal: Signal,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Vec<Item>, DecodeError> {
    let format = format(content_type)?;
    let data = decompress(content_encoding, body)?;
    parse(signal, format, &data)
}

/// The body format a content type names (parameters such as `charset` ignored); `None` for no
/// content type, so that [`parse`] sniffs the body.
pub fn format(content_type: Option<&str>) -> Result<Option<Format>, DecodeError> {
    let Some(content_type) = content_type else { return Ok(None) };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Some(Format::Protobuf)),
        "application/json" => Ok(Some(Format::Json)),
        "" => Ok(None),
        _ => Err(DecodeError::UnsupportedContentType(content_type.to_owned())),
    }
}

/// The body, gunzipped when its content encoding is gzip: at most [`MAX_BODY`] bytes either
/// way, so a gzip bomb stops at the limit.
pub fn decompress<'a>(content_encoding: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
    let encoding = content_encoding.unwrap_or_default().trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => {
            if body.len() > MAX_BODY {
                return Err(DecodeError::TooBig);
            }
            Ok(Cow::Borrowed(body))
        }
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_BODY));
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError::BadGzip(e.to_string()))?;
            if out.len() > MAX_BODY {
                return Err(DecodeError::TooBig);
            }
            Ok(Cow::Owned(out))
        }
        _ => Err(DecodeError::UnsupportedEncoding(content_encoding.unwrap_or_default().to_owned())),
    }
}

/// Parses a decompressed body (`format` `None`: sniffed) into items.
pub fn parse(signal: Signal, format: Option<Format>, data: &[u8]) -> Result<Vec<Item>, DecodeError> {
    let format = format.unwrap_or_else(|| Format::sniff(data));
    match (signal, format) {
        (Signal::Logs, Format::Protobuf) => {
            let request = ExportLogsServiceRequest::decode(data).map_err(|e| not_protobuf(&e))?;
            if request.resource_logs.is_empty() && !data.is_empty() {
                return Err(DecodeError::NotOtlp("protobuf", "no resource logs".to_owned()));
            }
            Ok(log_items(request))
        }
        (Signal::Metrics, Format::Protobuf) => {
            let request = ExportMetricsServiceRequest::decode(data).map_err(|e| not_protobuf(&e))?;
            if request.resource_metrics.is_empty() && !data.is_empty() {
                return Err(DecodeError::NotOtlp("protobuf", "no resource metrics".to_owned()));
            }
            Ok(metric_items(request))
        }
        (Signal::Logs, Format::Json) => Ok(log_items(parse_json(data, "resourceLogs")?)),
        (Signal::Metrics, Format::Json) => Ok(metric_items(parse_json(data, "resourceMetrics")?)),
    }
}

fn not_protobuf(e: &prost::DecodeError) -> DecodeError {
    DecodeError::NotOtlp("protobuf", e.to_string())
}

/// OTLP/JSON: a JSON object that is empty or has the request's one field (`top`, or its
/// `snake_case` form), an array. Deserialised as it is, else again after [`repair`].
fn parse_json<T: DeserializeOwned>(data: &[u8], top: &str) -> Result<T, DecodeError> {
    let not_json = |e: String| DecodeError::NotOtlp("JSON", e);
    let mut value: Value = serde_json::from_slice(data).map_err(|e| not_json(e.to_string()))?;
    let Value::Object(map) = &value else { return Err(not_json("not a JSON object".to_owned())) };
    let snake = snake_case(top);
    if !map.is_empty() && !map.contains_key(top) && !map.contains_key(&snake) {
        return Err(not_json(format!("no {top}")));
    }
    if [top, snake.as_str()].iter().any(|k| map.get(*k).is_some_and(|v| !v.is_array() && !v.is_null())) {
        return Err(not_json(format!("{top} is not an array")));
    }
    if map.contains_key(top) {
        if let Ok(request) = T::deserialize(&value) {
            return Ok(request);
        }
    }
    repair(&mut value, "");
    T::deserialize(&value).map_err(|e| not_json(e.to_string()))
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Makes a JSON export request deserialisable whatever its values: `snake_case` field names
/// (the protobuf JSON mapping allows them) become camelCase, nulls go, a malformed typed value
/// (a timestamp, id, count, enum) is dropped, a malformed attribute value becomes its text, a
/// bare attribute value is wrapped as an `AnyValue`, and a key-value without a key gets "".
/// Every OTLP/JSON object key is a field name (attribute keys are values), so renaming is safe.
fn repair(value: &mut Value, field: &str) {
    match value {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                let key = if key.contains('_') { camel_case(&key) } else { key };
                if !v.is_null() && repair_field(field, &key, &mut v) {
                    map.insert(key, v);
                }
            }
            if matches!(field, "attributes" | "values" | "filteredAttributes" | "metadata")
                && !map.get("key").is_some_and(Value::is_string)
            {
                map.insert("key".to_owned(), Value::String(String::new()));
            }
        }
        Value::Array(items) => {
            items.retain(Value::is_object);
            for item in items {
                repair(item, field);
            }
        }
        _ => {}
    }
}

/// Repairs one field (`key`, in an object under `parent`) in place; false drops it.
fn repair_field(parent: &str, key: &str, v: &mut Value) -> bool {
    match key {
        "value" if parent == "quantileValues" => is_f64(v),
        // Where an AnyValue stands: keep its one variant, as its text if malformed.
        "value" | "body" => {
            fix_any_value(v);
            true
        }
        "timeUnixNano" | "observedTimeUnixNano" | "startTimeUnixNano" | "count" | "zeroCount" => is_u64(v),
        "asInt" => is_i64(v),
        "asDouble" | "sum" | "min" | "max" | "zeroThreshold" | "quantile" => is_f64(v),
        "traceId" | "spanId" => v.as_str().is_some_and(is_hex),
        "severityNumber"
        | "aggregationTemporality"
        | "flags"
        | "droppedAttributesCount"
        | "scale"
        | "offset"
        | "keyStrindex" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok() || u32::try_from(n).is_ok()),
        "isMonotonic" => v.is_boolean(),
        "bucketCounts" => v.as_array().is_some_and(|a| a.iter().all(is_u64)),
        "explicitBounds" => v.as_array().is_some_and(|a| a.iter().all(is_f64)),
        "name" | "description" | "unit" | "severityText" | "eventName" | "key" | "schemaUrl" | "version" => {
            if !v.is_string() {
                *v = Value::String(v.to_string());
            }
            true
        }
        _ => {
            if !v.is_object() && !v.is_array() {
                return false;
            }
            repair(v, key);
            true
        }
    }
}

/// An `AnyValue` (or a bare value where one stands) into one the deserialiser takes: a value of
/// the wrong type becomes its text; bytes become their base64 text (not checked here).
fn fix_any_value(v: &mut Value) {
    let text = |x: &Value| Value::String(x.as_str().map_or_else(|| x.to_string(), str::to_owned));
    let fixed = match v {
        Value::String(_) => ("stringValue", v.clone()),
        Value::Bool(_) => ("boolValue", v.clone()),
        Value::Number(n) if n.is_i64() => ("intValue", v.clone()),
        Value::Number(_) => ("doubleValue", v.clone()),
        Value::Array(_) | Value::Null => ("stringValue", text(v)),
        Value::Object(m) => {
            let Some((key, inner)) = m.iter().find(|(k, x)| !x.is_null() && is_any_value_key(k)) else {
                *v = Value::Object(Map::new());
                return;
            };
            let key = camel_case(key);
            match key.as_str() {
                "intValue" if is_i64(inner) => ("intValue", inner.clone()),
                "boolValue" if inner.is_boolean() => ("boolValue", inner.clone()),
                "doubleValue" if is_f64(inner) => ("doubleValue", inner.clone()),
                "arrayValue" | "kvlistValue" if inner.get("values").is_some_and(Value::is_array) => {
                    let mut inner = inner.clone();
                    if let Some(values) = inner.get_mut("values").and_then(Value::as_array_mut) {
                        values.retain(|x| x.is_object() || key == "arrayValue");
                        for x in values {
                            if key == "arrayValue" {
                                fix_any_value(x);
                            } else {
                                repair(x, "values");
                            }
                        }
                    }
                    (if key == "arrayValue" { "arrayValue" } else { "kvlistValue" }, inner)
                }
                _ => ("stringValue", text(inner)),
            }
        }
    };
    let mut map = Map::new();
    map.insert(fixed.0.to_owned(), fixed.1);
    *v = Value::Object(map);
}

fn is_any_value_key(k: &str) -> bool {
    matches!(
        camel_case(k).as_str(),
        "stringValue" | "intValue" | "boolValue" | "doubleValue" | "bytesValue" | "arrayValue" | "kvlistValue"
    )
}

fn is_u64(v: &Value) -> bool {
    v.is_u64() || v.as_str().is_some_and(|s| s.parse::<u64>().is_ok())
}

fn is_i64(v: &Value) -> bool {
    v.is_i64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
}

fn is_f64(v: &Value) -> bool {
    v.is_number() || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok() || s == "Infinity" || s == "-Infinity")
}

fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn log_items(request: ExportLogsServiceRequest) -> Vec<Item> {
    let mut items = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        for scope_logs in resource_logs.scope_logs {
            for record in scope_logs.log_records {
                items.push(log_item(&record, resource.clone()));
            }
        }
    }
    items
}

fn log_item(record: &LogRecord, resource: Map<String, Value>) -> Item {
    let mut attributes = attributes(&record.attributes);
    let body = record.body.as_ref().map(any_to_json).filter(|b| !b.is_null());
    let name = if record.event_name.is_empty() {
        match (attributes.get("event.name"), &body) {
            (Some(Value::String(name)), _) if !name.is_empty() => name.clone(),
            (_, Some(Value::String(text))) if !text.is_empty() => text.chars().take(NAME_FROM_BODY).collect(),
            (_, Some(other)) => other.to_string().chars().take(NAME_FROM_BODY).collect(),
            _ => "log".to_owned(),
        }
    } else {
        record.event_name.clone()
    };
    if let Some(body) = body {
        attributes.insert("body".to_owned(), body);
    }
    let time = nanos_to_time(record.time_unix_nano).or_else(|| nanos_to_time(record.observed_time_unix_nano));
    Item { signal: Signal::Logs, name, time, attributes, resource }
}

fn metric_items(request: ExportMetricsServiceRequest) -> Vec<Item> {
    let mut items = Vec::new();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        for scope_metrics in resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                metric_points(metric, &resource, &mut items);
            }
        }
    }
    items
}

/// One item per data point of a metric.
fn metric_points(metric: &Metric, resource: &Map<String, Value>, items: &mut Vec<Item>) {
    let Some(data) = &metric.data else { return };
    let mut push = |kind: &str, temporality: Option<i32>, point_attributes: &[KeyValue], time: u64, value, count| {
        let mut attributes = attributes(point_attributes);
        attributes.insert("value".to_owned(), value);
        if let Some(count) = count {
            attributes.insert("count".to_owned(), Value::from(count));
        }
        attributes.insert("metric.type".to_owned(), Value::from(kind));
        attributes.insert("metric.unit".to_owned(), Value::from(metric.unit.as_str()));
        if let Some(temporality) = temporality {
            attributes.insert("metric.temporality".to_owned(), Value::from(temporality_name(temporality)));
        }
        items.push(Item {
            signal: Signal::Metrics,
            name: metric.name.clone(),
            time: nanos_to_time(time),
            attributes,
            resource: resource.clone(),
        });
    };
    match data {
        metric::Data::Gauge(gauge) => {
            for p in &gauge.data_points {
                push("gauge", None, &p.attributes, p.time_unix_nano, number_value(p.value), None);
            }
        }
        metric::Data::Sum(sum) => {
            for p in &sum.data_points {
                let temporality = Some(sum.aggregation_temporality);
                push("sum", temporality, &p.attributes, p.time_unix_nano, number_value(p.value), None);
            }
        }
        metric::Data::Histogram(h) => {
            for p in &h.data_points {
                let temporality = Some(h.aggregation_temporality);
                push("histogram", temporality, &p.attributes, p.time_unix_nano, opt_f64(p.sum), Some(p.count));
            }
        }
        metric::Data::ExponentialHistogram(h) => {
            for p in &h.data_points {
                let temporality = Some(h.aggregation_temporality);
                let (attrs, time) = (&p.attributes, p.time_unix_nano);
                push("exponential_histogram", temporality, attrs, time, opt_f64(p.sum), Some(p.count));
            }
        }
        metric::Data::Summary(s) => {
            for p in &s.data_points {
                push("summary", None, &p.attributes, p.time_unix_nano, f64_to_json(p.sum), Some(p.count));
            }
        }
    }
}

fn temporality_name(temporality: i32) -> &'static str {
    match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Delta) => "delta",
        Ok(AggregationTemporality::Cumulative) => "cumulative",
        _ => "unspecified",
    }
}

fn number_value(value: Option<number_data_point::Value>) -> Value {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => f64_to_json(d),
        Some(number_data_point::Value::AsInt(i)) => Value::from(i),
        None => Value::Null,
    }
}

fn opt_f64(value: Option<f64>) -> Value {
    value.map_or(Value::Null, f64_to_json)
}

/// A finite double as a JSON number; NaN and the infinities as their text.
fn f64_to_json(d: f64) -> Value {
    serde_json::Number::from_f64(d).map_or_else(|| Value::String(d.to_string()), Value::Number)
}

/// Nanoseconds since the epoch into a time; 0 (unknown) and out-of-range values into `None`.
fn nanos_to_time(nanos: u64) -> Option<DateTime<Utc>> {
    if nanos == 0 {
        return None;
    }
    i64::try_from(nanos).ok().map(DateTime::from_timestamp_nanos)
}

/// Key-values into a JSON object (a repeated key: the last wins).
pub fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_to_json))).collect()
}

/// An OTLP `AnyValue` as JSON: string, int (an i64 number), double (NaN and the infinities as
/// text), bool, array, key-value list as an object, bytes as hex; empty as null.
pub fn any_to_json(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => f64_to_json(*d),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(any_to_json).collect()),
        Some(any_value::Value::KvlistValue(kvs)) => Value::Object(attributes(&kvs.values)),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(_)) | None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use opentelemetry_proto::tonic::{
        common::v1::{ArrayValue, InstrumentationScope, KeyValueList},
        logs::v1::{ResourceLogs, ScopeLogs},
        metrics::v1::{Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum},
        resource::v1::Resource,
    };
    use serde_json::json;

    use super::*;

    const T0: u64 = 1_760_000_000_123_456_789;

    #[expect(clippy::unnecessary_wraps, reason = "the shape of the proto fields")]
    fn any(v: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(v) })
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.to_owned(), value: any(v), ..KeyValue::default() }
    }

    fn s(text: &str) -> any_value::Value {
        any_value::Value::StringValue(text.to_owned())
    }

    #[expect(clippy::unnecessary_wraps, reason = "the shape of the proto field")]
    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", s("codex")), kv("pid", any_value::Value::IntValue(42))],
            ..Resource::default()
        })
    }

    fn logs_request() -> ExportLogsServiceRequest {
        let record = LogRecord {
            time_unix_nano: T0,
            observed_time_unix_nano: T0 + 5,
            body: any(s("something happened")),
            attributes: vec![
                kv("str", s("x")),
                kv("int", any_value::Value::IntValue(-9_007_199_254_740_993)),
                kv("double", any_value::Value::DoubleValue(1.5)),
                kv("bool", any_value::Value::BoolValue(true)),
                kv(
                    "array",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue { value: Some(s("a")) },
                            AnyValue { value: Some(any_value::Value::IntValue(2)) },
                        ],
                    }),
                ),
                kv("kvlist", any_value::Value::KvlistValue(KeyValueList { values: vec![kv("inner", s("y"))] })),
                kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad, 0x01])),
                KeyValue { key: "empty".to_owned(), value: None, ..KeyValue::default() },
            ],
            ..LogRecord::default()
        };
        let named = LogRecord {
            observed_time_unix_nano: T0,
            attributes: vec![kv("event.name", s("codex.tool_result"))],
            body: any(s("ignored for the name")),
            ..LogRecord::default()
        };
        let event_field = LogRecord { event_name: "field.name".to_owned(), ..LogRecord::default() };
        let long_body = LogRecord { body: any(s(&"é".repeat(300))), ..LogRecord::default() };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "codex".to_owned(), ..InstrumentationScope::default() }),
                    log_records: vec![record, named, event_field, long_body],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn check_logs(items: &[Item]) {
        assert_eq!(items.len(), 4);
        let first = &items[0];
        assert_eq!(first.signal, Signal::Logs);
        assert_eq!(first.name, "something happened");
        assert_eq!(first.time, Some(DateTime::from_timestamp_nanos(T0 as i64)));
        assert_eq!(
            Value::Object(first.attributes.clone()),
            json!({
                "str": "x",
                "int": -9_007_199_254_740_993_i64,
                "double": 1.5,
                "bool": true,
                "array": ["a", 2],
                "kvlist": {"inner": "y"},
                "bytes": "dead01",
                "empty": null,
                "body": "something happened",
            })
        );
        assert_eq!(Value::Object(first.resource.clone()), json!({"service.name": "codex", "pid": 42}));
        assert_eq!(items[1].name, "codex.tool_result");
        assert_eq!(items[1].time, Some(DateTime::from_timestamp_nanos(T0 as i64)));
        assert_eq!(items[2].name, "field.name");
        assert_eq!(items[2].time, None);
        assert!(!items[2].attributes.contains_key("body"));
        assert_eq!(items[3].name, "é".repeat(200));
    }

    fn metrics_request() -> ExportMetricsServiceRequest {
        let point = |v, attrs| NumberDataPoint {
            attributes: attrs,
            time_unix_nano: T0,
            value: Some(v),
            ..NumberDataPoint::default()
        };
        let metrics = vec![
            Metric {
                name: "claude_code.token.usage".to_owned(),
                unit: "tokens".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![
                        point(number_data_point::Value::AsInt(120), vec![kv("type", s("input"))]),
                        point(number_data_point::Value::AsInt(30), vec![kv("type", s("output"))]),
                    ],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                })),
                ..Metric::default()
            },
            Metric {
                name: "load".to_owned(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![point(number_data_point::Value::AsDouble(0.25), vec![])],
                })),
                ..Metric::default()
            },
            Metric {
                name: "latency".to_owned(),
                unit: "ms".to_owned(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: T0,
                        count: 3,
                        sum: Some(42.5),
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![10.0],
                        ..HistogramDataPoint::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Metric::default()
            },
            Metric { name: "no data".to_owned(), ..Metric::default() },
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics { metrics, ..ScopeMetrics::default() }],
                ..ResourceMetrics::default()
            }],
        }
    }

    fn check_metrics(items: &[Item]) {
        let seen: Vec<(&str, Value)> =
            items.iter().map(|i| (i.name.as_str(), Value::Object(i.attributes.clone()))).collect();
        assert_eq!(
            seen,
            vec![
                (
                    "claude_code.token.usage",
                    json!({"type": "input", "value": 120, "metric.type": "sum", "metric.unit": "tokens", "metric.temporality": "delta"})
                ),
                (
                    "claude_code.token.usage",
                    json!({"type": "output", "value": 30, "metric.type": "sum", "metric.unit": "tokens", "metric.temporality": "delta"})
                ),
                ("load", json!({"value": 0.25, "metric.type": "gauge", "metric.unit": ""})),
                (
                    "latency",
                    json!({"value": 42.5, "count": 3, "metric.type": "histogram", "metric.unit": "ms", "metric.temporality": "cumulative"})
                ),
            ]
        );
        assert!(items.iter().all(|i| i.signal == Signal::Metrics));
        assert!(items.iter().all(|i| i.time == Some(DateTime::from_timestamp_nanos(T0 as i64))));
        assert_eq!(items[0].resource.get("service.name"), Some(&json!("codex")));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("test");
        encoder.finish().expect("test")
    }

    const PB: Option<&str> = Some("application/x-protobuf");
    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn protobuf_logs_round_trip() {
        let body = logs_request().encode_to_vec();
        check_logs(&decode(Signal::Logs, PB, None, &body).expect("test"));
        // No content type: sniffed.
        check_logs(&decode(Signal::Logs, None, Some("identity"), &body).expect("test"));
    }

    #[test]
    fn json_logs_round_trip() {
        let body = serde_json::to_vec(&logs_request()).expect("test");
        check_logs(&decode(Signal::Logs, Some("application/json; charset=utf-8"), None, &body).expect("test"));
        check_logs(&decode(Signal::Logs, None, None, &body).expect("test"));
    }

    #[test]
    fn metrics_round_trips() {
        let request = metrics_request();
        check_metrics(&decode(Signal::Metrics, PB, None, &request.encode_to_vec()).expect("test"));
        check_metrics(
            &decode(Signal::Metrics, JSON, None, &serde_json::to_vec(&request).expect("test")).expect("test"),
        );
    }

    #[test]
    fn gzip_bodies() {
        let body = gzip(&logs_request().encode_to_vec());
        check_logs(&decode(Signal::Logs, PB, Some("gzip"), &body).expect("test"));
        let body = gzip(&serde_json::to_vec(&metrics_request()).expect("test"));
        check_metrics(&decode(Signal::Metrics, JSON, Some("GZIP"), &body).expect("test"));
    }

    #[test]
    fn size_limits() {
        // A gzip bomb: 4 KiB that inflates past the limit stops there.
        let bomb = gzip(&vec![0; MAX_BODY + 1]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(decode(Signal::Logs, PB, Some("gzip"), &bomb), Err(DecodeError::TooBig));
        assert_eq!(decode(Signal::Logs, PB, None, &vec![0; MAX_BODY + 1]), Err(DecodeError::TooBig));
        // Exactly the limit inflates (and is then not OTLP, being zeros).
        let full = gzip(&vec![0; MAX_BODY]);
        assert_eq!(decompress(Some("gzip"), &full).map(|d| d.len()), Ok(MAX_BODY));
    }

    #[test]
    fn malformed_bodies() {
        let err = |ct, ce, body: &[u8]| decode(Signal::Logs, ct, ce, body).expect_err("an error");
        assert!(matches!(err(PB, None, b"hello, world"), DecodeError::NotOtlp("protobuf", _)));
        assert!(matches!(err(JSON, None, b"{\"resourceLogs\": 3"), DecodeError::NotOtlp("JSON", _)));
        assert!(matches!(err(JSON, None, b"{\"foo\": 1}"), DecodeError::NotOtlp("JSON", _)));
        assert!(matches!(err(JSON, None, b"[1, 2]"), DecodeError::NotOtlp("JSON", _)));
        assert!(matches!(err(JSON, None, b"{\"resourceLogs\": 3}"), DecodeError::NotOtlp("JSON", _)));
        assert!(matches!(err(PB, Some("gzip"), b"not gzip"), DecodeError::BadGzip(_)));
        assert_eq!(err(Some("text/plain"), None, b"x"), DecodeError::UnsupportedContentType("text/plain".to_owned()));
        assert_eq!(err(PB, Some("br"), b"x"), DecodeError::UnsupportedEncoding("br".to_owned()));
        // Empty requests are valid, and empty.
        assert_eq!(decode(Signal::Logs, PB, None, b""), Ok(Vec::new()));
        assert_eq!(decode(Signal::Metrics, JSON, None, b"{}"), Ok(Vec::new()));
        // One line each.
        for e in [err(PB, None, b"hello, world"), err(JSON, None, b"{\n\"x\"\n"), DecodeError::TooBig] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn lenient_json_values() {
        let body = json!({
            "resource_logs": [{
                "resource": {"attributes": [{"key": "service.name", "value": "bare string"}, null]},
                "scope_logs": [{
                    "log_records": [{
                        "time_unix_nano": "not a number",
                        "observedTimeUnixNano": 1_760_000_000_000_000_000_u64,
                        "traceId": "zz",
                        "spanId": null,
                        "severityNumber": "loud",
                        "body": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "7"}}]}},
                        "attributes": [
                            {"key": "bad_int", "value": {"intValue": "seven"}},
                            {"key": "bad_double", "value": {"doubleValue": {"x": 1}}},
                            {"key": "bad_bool", "value": {"boolValue": "yes"}},
                            {"key": "bad_bytes", "value": {"bytesValue": "%%%"}},
                            {"key": "bare_int", "value": 5},
                            {"key": "bare_float", "value": 2.5},
                            {"value": {"stringValue": "no key"}},
                            {"key": "empty", "value": {}},
                            {"key": 12, "value": {"stringValue": "numeric key"}},
                            {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "x"}, 3]}}},
                            "not a key-value"
                        ]
                    }]
                }]
            }]
        });
        let items = decode(Signal::Logs, JSON, None, body.to_string().as_bytes()).expect("test");
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item.time, Some(DateTime::from_timestamp_nanos(1_760_000_000_000_000_000)));
        assert_eq!(item.name, r#"{"k":7}"#);
        assert_eq!(
            Value::Object(item.attributes.clone()),
            json!({
                "bad_int": "seven",
                "bad_double": "{\"x\":1}",
                "bad_bool": "yes",
                "bad_bytes": "%%%",
                "bare_int": 5,
                "bare_float": 2.5,
                "": "no key",
                "empty": null,
                "12": "numeric key",
                "arr": ["x", 3],
                "body": {"k": 7},
            })
        );
        assert_eq!(Value::Object(item.resource.clone()), json!({"service.name": "bare string"}));
    }

    /// What Claude Code exports with `OTEL_LOGS_EXPORTER=otlp` and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` (int64 as numbers or strings, as exporters do).
    const CLAUDE_CODE_LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[
      {"key":"host.arch","value":{"stringValue":"amd64"}},
      {"key":"os.type","value":{"stringValue":"linux"}},
      {"key":"os.version","value":{"stringValue":"6.12.0"}},
      {"key":"service.name","value":{"stringValue":"claude-code"}},
      {"key":"service.version","value":{"stringValue":"2.0.14"}}],"droppedAttributesCount":0},
     "scopeLogs":[{"scope":{"name":"com.anthropic.claude_code.events","version":"2.0.14"},
      "logRecords":[
       {"timeUnixNano":"1760000000123000000","observedTimeUnixNano":"1760000000123000000",
        "severityNumber":9,"severityText":"INFO",
        "body":{"stringValue":"claude_code.api_request"},
        "attributes":[
         {"key":"user.id","value":{"stringValue":"3f9a"}},
         {"key":"session.id","value":{"stringValue":"6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d"}},
         {"key":"organization.id","value":{"stringValue":"org-1"}},
         {"key":"terminal.type","value":{"stringValue":"tmux"}},
         {"key":"event.name","value":{"stringValue":"api_request"}},
         {"key":"event.timestamp","value":{"stringValue":"2025-10-09T08:53:20.123Z"}},
         {"key":"prompt.id","value":{"stringValue":"p-17"}},
         {"key":"model","value":{"stringValue":"claude-sonnet-4-5-20250929"}},
         {"key":"input_tokens","value":{"intValue":"1234"}},
         {"key":"output_tokens","value":{"intValue":56}},
         {"key":"cache_read_tokens","value":{"intValue":20000}},
         {"key":"cache_creation_tokens","value":{"intValue":0}},
         {"key":"cost_usd","value":{"doubleValue":0.0123}},
         {"key":"duration_ms","value":{"intValue":2345}}],
        "droppedAttributesCount":0},
       {"timeUnixNano":"1760000001000000000","body":{"stringValue":"claude_code.tool_result"},
        "attributes":[
         {"key":"session.id","value":{"stringValue":"6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d"}},
         {"key":"event.name","value":{"stringValue":"tool_result"}},
         {"key":"tool_name","value":{"stringValue":"Bash"}},
         {"key":"tool_use_id","value":{"stringValue":"toolu_01"}},
         {"key":"success","value":{"stringValue":"true"}},
         {"key":"duration_ms","value":{"intValue":"87"}}]},
       {"timeUnixNano":"1760000000900000000","body":{"stringValue":"claude_code.tool_decision"},
        "attributes":[
         {"key":"session.id","value":{"stringValue":"6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d"}},
         {"key":"event.name","value":{"stringValue":"tool_decision"}},
         {"key":"decision","value":{"stringValue":"accept"}},
         {"key":"source","value":{"stringValue":"config"}},
         {"key":"tool_name","value":{"stringValue":"Edit"}},
         {"key":"tool_use_id","value":{"stringValue":"toolu_02"}}]}]}]}]}"#;

    #[test]
    fn claude_code_logs() {
        let items = decode(Signal::Logs, JSON, None, CLAUDE_CODE_LOGS.as_bytes()).expect("test");
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["api_request", "tool_result", "tool_decision"]);
        let api = &items[0];
        assert_eq!(api.time, DateTime::parse_from_rfc3339("2025-10-09T08:53:20.123Z").ok().map(|t| t.to_utc()));
        let a = &api.attributes;
        assert_eq!(a["body"], json!("claude_code.api_request"));
        assert_eq!(a["session.id"], json!("6a1c2b4e-0d3f-4a5b-9c8d-7e6f5a4b3c2d"));
        assert_eq!(a["prompt.id"], json!("p-17"));
        assert_eq!(a["model"], json!("claude-sonnet-4-5-20250929"));
        assert_eq!((a["input_tokens"].as_i64(), a["output_tokens"].as_i64()), (Some(1234), Some(56)));
        assert_eq!((a["cache_read_tokens"].as_i64(), a["cache_creation_tokens"].as_i64()), (Some(20000), Some(0)));
        assert_eq!(a["cost_usd"], json!(0.0123));
        assert_eq!(a["duration_ms"], json!(2345));
        assert_eq!(a["event.timestamp"], json!("2025-10-09T08:53:20.123Z"));
        assert_eq!(api.resource["service.name"], json!("claude-code"));
        assert_eq!(api.resource["service.version"], json!("2.0.14"));
        let result = &items[1].attributes;
        assert_eq!((&result["tool_name"], &result["tool_use_id"]), (&json!("Bash"), &json!("toolu_01")));
        assert_eq!((&result["success"], &result["duration_ms"]), (&json!("true"), &json!(87)));
        let decision = &items[2].attributes;
        assert_eq!((&decision["decision"], &decision["source"]), (&json!("accept"), &json!("config")));
        assert_eq!((&decision["tool_name"], &decision["tool_use_id"]), (&json!("Edit"), &json!("toolu_02")));
        // The same records as protobuf decode the same.
        let request: ExportLogsServiceRequest = serde_json::from_str(CLAUDE_CODE_LOGS).expect("test");
        assert_eq!(decode(Signal::Logs, PB, None, &request.encode_to_vec()).expect("test"), items);
    }
}
