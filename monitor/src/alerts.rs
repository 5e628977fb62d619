//! Alert rules, evaluated by the daemon on every record as it flows (see `daemon/alerts.rs`).

/// Ids of triggering actions and events kept per alert row.
pub const MAX_IDS: usize = 32;
