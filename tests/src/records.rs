//! Reading what a test's daemon stored: a session's raw events, and finding entries by field.

use serde_json::Value;

use crate::Daemon;

/// The raw events (`data`) of a session of one kind, in order.
pub async fn session_events(d: &Daemon, session: &str, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE session_id = $1::text::uuid AND kind = $2 ORDER BY seq")
        .bind(session)
        .bind(kind)
        .fetch_all(&d.pool)
        .await
        .expect("events")
}

/// The first item whose fields equal every `(key, value)` of `want`.
pub fn has<'a>(items: &'a [Value], want: &[(&str, Value)]) -> Option<&'a Value> {
    items.iter().find(|e| want.iter().all(|(k, v)| &e[*k] == v))
}

/// Like [`has`], and panics with the items when none matches.
pub fn find<'a>(items: &'a [Value], want: &[(&str, Value)]) -> &'a Value {
    has(items, want).unwrap_or_else(|| panic!("nothing matches {want:?} in {items:#?}"))
}

/// A JSON string.
pub fn s(v: &str) -> Value {
    Value::from(v)
}

/// Every summary entry under `key` (`files`, `net`) of every action.
pub fn entries(actions: &[Value], key: &str) -> Vec<Value> {
    actions.iter().flat_map(|a| a[key].as_array().cloned().unwrap_or_default()).collect()
}
