//! `PostgreSQL`: schema migrations, batched append-only inserts (used by the daemon's store
//! stage, `daemon/store.rs`), and the CLI's queries.

pub mod export;
pub mod query;
pub mod retention;
pub mod verify;

use std::{collections::BTreeSet, time::Duration};

use chrono::NaiveDate;

use sqlx::{postgres::PgPoolOptions, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    chain::process_id,
    record::{
        ActionRecord, AlertRecord, CallRecord, ChainLink, Checkpoint, EventRecord, Output, ProcessRecord, ReportRecord,
        RetentionCut, SessionEnd, SessionStart, SigningKey,
    },
    text::hex,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database ({target}): {source}; check --database-url / DATABASE_URL and that PostgreSQL is running")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database schema needs migrating and this login may not ({0}): run `agentmon migrate --database-url <owner's URL>` once, then start again")]
    NotMigrated(String),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

pub async fn connect(url: &str) -> Result<PgPool, StoreError> {
    open_pool(url, PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(5))).await
}

/// Open a pool on `url`, with TLS as libpq does it. The TLS library is OpenSSL, as libpq's, so
/// a server certificate is accepted exactly when psql accepts it: a self-signed certificate
/// given as `sslrootcert` (`PostgreSQL`'s documented set-up), a host name in the subject's CN
/// when the certificate has no DNS names, and so on. sqlx hands OpenSSL only the first
/// certificate of `sslrootcert`, while libpq trusts every one in the file (a managed service's
/// CA bundle): each is tried in turn, and the pool keeps the one the server's chain verifies
/// with. A server can only make this fail, never pass: every attempt verifies in full.
async fn open_pool(url: &str, pool: PgPoolOptions) -> Result<PgPool, StoreError> {
    use std::str::FromStr as _;
    let err = |source| StoreError::Connect { target: redact_url(url), source };
    let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(err)?;
    let roots = root_certificates(url);
    if roots.len() <= 1 {
        return pool.connect_with(options).await.map_err(err);
    }
    let mut last = None;
    for pem in roots {
        match pool.clone().connect_with(options.clone().ssl_root_cert_from_pem(pem)).await {
            Ok(p) => return Ok(p),
            Err(e @ sqlx::Error::Tls(_)) => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(last.unwrap_or(sqlx::Error::PoolClosed)))
}

/// The PEM blocks of the certificates in the URL's `sslrootcert` file (none when unset or
/// unreadable: sqlx reports that itself).
fn root_certificates(url: &str) -> Vec<Vec<u8>> {
    let Some(path) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "sslrootcert").map(|(_, v)| v.into_owned()))
    else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(len) = rest[start..].find("-----END CERTIFICATE-----") else { break };
        let end = start + len + "-----END CERTIFICATE-----".len();
        certs.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    certs
}

/// The least-privilege roles the migrations create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// INSERT and SELECT only: the daemon.
    Writer,
    /// SELECT only: the query commands and `verify`.
    Reader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Writer => "agentmon_writer",
            Self::Reader => "agentmon_reader",
        }
    }
}

/// Connect, and act as `role` on every connection when the login may (`SET ROLE`): an admin
/// URL then writes or reads with the role's rights only. A login that is not a member keeps its
/// own rights (for example one an admin granted SELECT directly).
pub async fn connect_as(url: &str, role: Role) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(5)).after_connect(
        move |conn, _| {
            Box::pin(async move {
                let member: Option<bool> = sqlx::query_scalar(
                    "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1",
                )
                .bind(role.name())
                .fetch_optional(&mut *conn)
                .await?;
                if member == Some(true) {
                    sqlx::query(&format!("SET ROLE {}", role.name())).execute(&mut *conn).await?;
                }
                Ok(())
            })
        },
    );
    open_pool(url, pool).await
}

/// Apply the migrations this build has and the database lacks. A database already up to date
/// needs no rights beyond SELECT on `_sqlx_migrations`, so a writer-only login works.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("../migrations");
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    if migrator.iter().all(|m| applied.contains(&m.version)) {
        return Ok(());
    }
    migrator.run(pool).await.map_err(|e| match &e {
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42501") => {
            StoreError::NotMigrated(d.message().to_owned())
        }
        _ => StoreError::Migrate(e),
    })
}

/// The newest chained row of a host: where its chain continues.
pub async fn chain_head(pool: &PgPool, host: &str) -> Result<Option<crate::chain::Head>, sqlx::Error> {
    let parts: Vec<String> = crate::chain::ROW_SQL
        .iter()
        .map(|(t, _, _)| format!("(SELECT chain_seq, chain_hash FROM {t} WHERE host = $1 AND chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1)"))
        .collect();
    let sql =
        format!("SELECT chain_seq, chain_hash FROM ({}) t ORDER BY chain_seq DESC LIMIT 1", parts.join(" UNION ALL "));
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(&sql).bind(host).fetch_optional(pool).await?;
    Ok(row.and_then(|(seq, h)| Some(crate::chain::Head { seq: seq as u64, hash: h.try_into().ok()? })))
}

/// Whether `host`'s signing key `fingerprint` is registered.
pub async fn key_registered(pool: &PgPool, host: &str, fingerprint: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM signing_keys WHERE host = $1 AND fingerprint = $2")
        .bind(host)
        .bind(fingerprint)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// A session of this host with no end stored: a daemon stopped (or crashed) while it ran.
pub struct OpenSession {
    pub id: Uuid,
    pub agent: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub source: String,
    /// The highest raw-event `seq` stored for it, and its actions: where its counts go on.
    pub events_before: u64,
    pub actions_before: u64,
}

/// The sessions of `host` that have no end stored.
pub async fn open_sessions(pool: &PgPool, host: &str) -> Result<Vec<OpenSession>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT s.id, s.agent, s.cgroup, s.cgroup_id, s.source, \
           COALESCE((SELECT max(seq) FROM events e WHERE e.session_id = s.id), 0), \
           (SELECT count(*) FROM actions a WHERE a.session_id = s.id) FROM sessions s \
         WHERE s.host = $1 AND NOT EXISTS (SELECT 1 FROM session_ends e WHERE e.session_id = s.id)",
    )
    .bind(host)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, agent, cgroup, cgroup_id, source, events_before, actions_before)| OpenSession {
            id,
            agent,
            cgroup,
            cgroup_id: cgroup_id as u64,
            source,
            events_before: events_before as u64,
            actions_before: actions_before as u64,
        })
        .collect())
}

/// The UTC days that have their partitions (made by this process, or found made).
static DAYS: std::sync::Mutex<BTreeSet<NaiveDate>> = std::sync::Mutex::new(BTreeSet::new());

/// The UTC days of a batch's rows in the day-partitioned tables (see the partitioning migration).
pub fn batch_days(batch: &[Output]) -> BTreeSet<NaiveDate> {
    let mut days = BTreeSet::new();
    for o in batch {
        match o {
            Output::SessionStart(s) => days.insert(s.started_at.date_naive()),
            Output::Event(e) => days.insert(e.ts.date_naive()),
            Output::Process(p) => days.insert(p.rec.started_at.date_naive()),
            Output::Action(a) => {
                days.extend(a.processes.iter().map(|p| p.started_at.date_naive()));
                days.insert(a.started_at.date_naive())
            }
            Output::SessionEnd(e) => days.insert(e.ended_at.date_naive()),
            Output::Alert(a) => days.insert(a.first_at.date_naive()),
            Output::Report(r) => days.insert(r.received_at.date_naive()),
            Output::Call(c) => days.insert(c.started_at.date_naive()),
            Output::Checkpoint(_) | Output::SigningKey(_) | Output::RetentionCut(_) => false,
        };
    }
    days
}

/// Make the day partitions a batch needs and this process has not seen yet (one call per new
/// day; a row of a day with no partition would go to the table's default partition).
async fn ensure_days(pool: &PgPool, batch: &[Output]) -> Result<(), sqlx::Error> {
    let mut days = batch_days(batch);
    days.retain(|d| !DAYS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(d));
    for d in days {
        // One transaction per table (see the partitioning migration: no deadlock with readers).
        for (t, _) in crate::retention::TABLES {
            sqlx::query("SELECT agentmon_ensure_partition($1, $2)").bind(t).bind(d).execute(pool).await?;
        }
        DAYS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(d);
    }
    Ok(())
}

/// Retention dropped a partition of `day`: a late row of that day makes it again.
pub fn forget_day(day: NaiveDate) {
    DAYS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&day);
}

/// Rows per INSERT statement (well under Postgres's 65535 bind parameters).
const CHUNK: usize = 1000;

/// A chain position as stored: the daemon numbers from 1, so 0 means "never chained" (a record
/// spooled by a daemon older than the chain) and is stored as NULL.
fn chain_seq(c: &ChainLink) -> Option<i64> {
    (c.seq > 0).then_some(c.seq as i64)
}

fn chain_hash(c: &ChainLink) -> Option<Vec<u8>> {
    (c.seq > 0).then(|| c.hash.to_vec())
}

/// A text array in COPY's text format (rule names are plain words).
fn copy_text_array(out: &mut String, items: &[String]) {
    out.push('{');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push_str("\\\\");
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
}

/// Escape one field for COPY's text format.
fn copy_field(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Raw events go in with COPY: they are most of the volume.
async fn copy_events(conn: &mut sqlx::PgConnection, host: &str, rows: &[&EventRecord]) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let mut buf = String::with_capacity(rows.len() * 320);
    for e in rows {
        let action = e.action_id.map_or_else(|| "\\N".to_owned(), |a| a.to_string());
        let _ = write!(buf, "{}\t", e.id);
        copy_field(&mut buf, host);
        let _ = write!(buf, "\t{}\t{action}\t", e.session_id);
        copy_field(&mut buf, &e.exec_id);
        let _ = write!(buf, "\t{}\t{}\t{}\t{}\t{}\t", e.seq, e.ts.to_rfc3339(), e.kind, e.pid, e.tid);
        copy_field(&mut buf, &e.data);
        buf.push('\t');
        copy_text_array(&mut buf, &e.redacted);
        if e.chain.seq > 0 {
            let _ = writeln!(buf, "\t{}\t\\\\x{}", e.chain.seq, hex(&e.chain.hash));
        } else {
            buf.push_str("\t\\N\t\\N\n");
        }
    }
    let mut copy = conn
        .copy_in_raw("COPY events (id, host, session_id, action_id, exec_id, seq, ts, kind, pid, tid, data, redacted, chain_seq, chain_hash) FROM STDIN")
        .await?;
    copy.send(buf.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// How raw events are inserted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EventInsert {
    /// COPY: fast, but fails on a duplicate id.
    Copy,
    /// INSERT ... ON CONFLICT DO NOTHING: for retrying a batch that may have committed.
    Idempotent,
}

/// Insert one batch in a single transaction, parents before children. Every INSERT is
/// `ON CONFLICT DO NOTHING` on a daemon-assigned id; events use COPY unless `events` says
/// otherwise, so a batch whose commit was lost is retried with `EventInsert::Idempotent`.
pub async fn write_batch(pool: &PgPool, host: &str, batch: &[Output], mode: EventInsert) -> Result<(), sqlx::Error> {
    let mut starts = Vec::new();
    let mut events = Vec::new();
    let mut actions = Vec::new();
    let mut procs: Vec<(Uuid, Option<Uuid>, &ProcessRecord)> = Vec::new();
    let mut ends = Vec::new();
    let mut checkpoints = Vec::new();
    let mut keys = Vec::new();
    let mut alerts = Vec::new();
    let mut cuts = Vec::new();
    let mut reports = Vec::new();
    let mut calls = Vec::new();
    for o in batch {
        match o {
            Output::SessionStart(s) => starts.push(s),
            Output::Event(e) => events.push(e),
            Output::Action(a) => {
                actions.push(a);
                procs.extend(a.processes.iter().map(|p| (a.session_id, Some(a.id), p)));
            }
            Output::Process(p) => procs.push((p.session_id, p.action_id, &p.rec)),
            Output::SessionEnd(e) => ends.push(e),
            Output::Checkpoint(c) => checkpoints.push(c),
            Output::SigningKey(k) => keys.push(k),
            Output::Alert(a) => alerts.push(a),
            Output::RetentionCut(c) => cuts.push(c),
            Output::Report(r) => reports.push(r),
            Output::Call(c) => calls.push(c),
        }
    }
    ensure_days(pool, batch).await?;
    let mut tx = pool.begin().await?;
    for chunk in starts.chunks(CHUNK) {
        insert_sessions(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in actions.chunks(CHUNK) {
        insert_actions(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in procs.chunks(CHUNK) {
        insert_processes(host, chunk).build().execute(&mut *tx).await?;
    }
    if mode == EventInsert::Copy {
        if !events.is_empty() {
            copy_events(&mut tx, host, &events).await?;
        }
    } else {
        for chunk in events.chunks(CHUNK) {
            insert_events(host, chunk).build().execute(&mut *tx).await?;
        }
    }
    for chunk in ends.chunks(CHUNK) {
        insert_ends(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in keys.chunks(CHUNK) {
        insert_keys(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in reports.chunks(CHUNK) {
        insert_reports(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in calls.chunks(CHUNK) {
        insert_calls(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in alerts.chunks(CHUNK) {
        insert_alerts(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in checkpoints.chunks(CHUNK) {
        insert_checkpoints(host, chunk).build().execute(&mut *tx).await?;
    }
    for chunk in cuts.chunks(CHUNK) {
        insert_cuts(host, chunk).build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

fn insert_sessions<'a>(host: &'a str, rows: &'a [&'a SessionStart]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO sessions (id, host, agent, label, cgroup, cgroup_id, uid, source, started_at, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, s| {
        b.push_bind(s.id)
            .push_bind(host)
            .push_bind(&s.agent)
            .push_bind(&s.label)
            .push_bind(&s.cgroup)
            .push_bind(s.cgroup_id as i64)
            .push_bind(i64::from(s.uid))
            .push_bind(&s.source)
            .push_bind(s.started_at)
            .push_bind(&s.redacted)
            .push_bind(chain_seq(&s.chain))
            .push_bind(chain_hash(&s.chain));
    });
    q.push(" ON CONFLICT (id, started_at) DO NOTHING");
    q
}

fn insert_actions<'a>(host: &'a str, rows: &'a [&'a ActionRecord]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO actions (id, session_id, host, exec_id, pid, argv, argv_truncated, command, cwd, exe, uid, \
         started_at, ended_at, duration_ms, exit_code, signal, complete, processes_early, files, net, redacted, chain_seq, \
         chain_hash) ",
    );
    q.push_values(rows, |mut b, a| {
        b.push_bind(a.id)
            .push_bind(a.session_id)
            .push_bind(host)
            .push_bind(&a.exec_id)
            .push_bind(i64::from(a.pid))
            .push_bind(&a.argv)
            .push_bind(a.argv_truncated)
            .push_bind(&a.command)
            .push_bind(&a.cwd)
            .push_bind(&a.exe)
            .push_bind(a.uid.map(i64::from))
            .push_bind(a.started_at)
            .push_bind(a.ended_at)
            .push_bind(a.duration_ms)
            .push_bind(a.exit_code)
            .push_bind(a.signal)
            .push_bind(a.complete)
            .push_bind(a.processes_early as i64)
            .push_bind(sqlx::types::Json(&a.files))
            .push_bind(sqlx::types::Json(&a.net))
            .push_bind(&a.redacted)
            .push_bind(chain_seq(&a.chain))
            .push_bind(chain_hash(&a.chain));
    });
    q.push(" ON CONFLICT (id, started_at) DO NOTHING");
    q
}

fn insert_processes<'a>(
    host: &'a str,
    rows: &'a [(Uuid, Option<Uuid>, &'a ProcessRecord)],
) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO processes (id, session_id, action_id, host, exec_id, pid, ppid, argv, prior_argv, argv_truncated, \
         prior_argv_omitted, exe, cwd, uid, started_at, ended_at, exit_code, signal, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, (session, action, p)| {
        b.push_bind(process_id(*session, &p.exec_id))
            .push_bind(*session)
            .push_bind(*action)
            .push_bind(host)
            .push_bind(&p.exec_id)
            .push_bind(i64::from(p.pid))
            .push_bind(i64::from(p.ppid))
            .push_bind(&p.argv)
            .push_bind(sqlx::types::Json(&p.prior_argv))
            .push_bind(p.argv_truncated)
            .push_bind(p.prior_argv_omitted as i64)
            .push_bind(&p.exe)
            .push_bind(&p.cwd)
            .push_bind(p.uid.map(i64::from))
            .push_bind(p.started_at)
            .push_bind(p.ended_at)
            .push_bind(p.exit_code)
            .push_bind(p.signal)
            .push_bind(&p.redacted)
            .push_bind(chain_seq(&p.chain))
            .push_bind(chain_hash(&p.chain));
    });
    q.push(" ON CONFLICT (id, started_at) DO NOTHING");
    q
}

fn insert_events<'a>(host: &'a str, rows: &'a [&'a EventRecord]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO events (id, host, session_id, action_id, exec_id, seq, ts, kind, pid, tid, data, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, e| {
        b.push_bind(e.id)
            .push_bind(host)
            .push_bind(e.session_id)
            .push_bind(e.action_id)
            .push_bind(&e.exec_id)
            .push_bind(e.seq as i64)
            .push_bind(e.ts)
            .push_bind(&e.kind)
            .push_bind(i64::from(e.pid))
            .push_bind(i64::from(e.tid))
            .push_bind(&e.data)
            .push_unseparated("::jsonb")
            .push_bind(&e.redacted)
            .push_bind(chain_seq(&e.chain))
            .push_bind(chain_hash(&e.chain));
    });
    q.push(" ON CONFLICT (session_id, seq, ts) DO NOTHING");
    q
}

fn insert_ends<'a>(host: &'a str, rows: &'a [&'a SessionEnd]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO session_ends (session_id, host, ended_at, root_pid, root_exec_id, root_argv, actions, events, events_lost, files, net, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, e| {
        b.push_bind(e.session_id)
            .push_bind(host)
            .push_bind(e.ended_at)
            .push_bind(e.root_pid.map(i64::from))
            .push_bind(&e.root_exec_id)
            .push_bind(&e.root_argv)
            .push_bind(e.actions as i64)
            .push_bind(e.events as i64)
            .push_bind(e.events_lost as i64)
            .push_bind(sqlx::types::Json(&e.files))
            .push_bind(sqlx::types::Json(&e.net))
            .push_bind(&e.redacted)
            .push_bind(chain_seq(&e.chain))
            .push_bind(chain_hash(&e.chain));
    });
    q.push(" ON CONFLICT (session_id, ended_at) DO NOTHING");
    q
}

fn insert_checkpoints<'a>(host: &'a str, rows: &'a [&'a Checkpoint]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO checkpoints (id, host, covers_seq, head_hash, at, kind, next_within_secs, key_fingerprint, signature, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, c| {
        b.push_bind(c.id)
            .push_bind(host)
            .push_bind(c.covers_seq as i64)
            .push_bind(&c.head_hash)
            .push_bind(c.at)
            .push_bind(&c.kind)
            .push_bind(c.next_within_secs as i64)
            .push_bind(&c.key_fingerprint)
            .push_bind(&c.signature)
            .push_bind(chain_seq(&c.chain))
            .push_bind(chain_hash(&c.chain));
    });
    q.push(" ON CONFLICT (id) DO NOTHING");
    q
}

fn insert_alerts<'a>(host: &'a str, rows: &'a [&'a AlertRecord]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO alerts (id, host, session_id, action_id, agent, rule, severity, first_at, last_at, count, \
         action_ids, event_ids, summary, details, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, a| {
        b.push_bind(a.id)
            .push_bind(host)
            .push_bind(a.session_id)
            .push_bind(a.action_id)
            .push_bind(&a.agent)
            .push_bind(&a.rule)
            .push_bind(&a.severity)
            .push_bind(a.first_at)
            .push_bind(a.last_at)
            .push_bind(a.count as i64)
            .push_bind(&a.action_ids)
            .push_bind(&a.event_ids)
            .push_bind(&a.summary)
            .push_bind(sqlx::types::Json(&a.details))
            .push_bind(chain_seq(&a.chain))
            .push_bind(chain_hash(&a.chain));
    });
    q.push(" ON CONFLICT (id, first_at) DO NOTHING");
    q
}

fn insert_reports<'a>(host: &'a str, rows: &'a [&'a ReportRecord]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO agent_reports (id, host, session_id, received_at, channel, agent_kind, event, conversation_id, \
         tool_use_id, tool_name, pid, exec_id, attested, attestation, malformed, truncated, body, model, tokens_in, \
         tokens_out, cache_read, cache_creation, cost_micro_usd, cost_estimated, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.id)
            .push_bind(host)
            .push_bind(r.session_id)
            .push_bind(r.received_at)
            .push_bind(&r.channel)
            .push_bind(&r.agent_kind)
            .push_bind(&r.event)
            .push_bind(&r.conversation_id)
            .push_bind(&r.tool_use_id)
            .push_bind(&r.tool_name)
            .push_bind(i64::from(r.pid))
            .push_bind(&r.exec_id)
            .push_bind(r.attested)
            .push_bind(&r.attestation)
            .push_bind(&r.malformed)
            .push_bind(r.truncated)
            .push_bind(&r.body)
            .push_bind(&r.model)
            .push_bind(r.tokens_in)
            .push_bind(r.tokens_out)
            .push_bind(r.cache_read)
            .push_bind(r.cache_creation)
            .push_bind(r.cost_micro_usd)
            .push_bind(r.cost_estimated)
            .push_bind(&r.redacted)
            .push_bind(chain_seq(&r.chain))
            .push_bind(chain_hash(&r.chain));
    });
    q.push(" ON CONFLICT (id, received_at) DO NOTHING");
    q
}

fn insert_calls<'a>(host: &'a str, rows: &'a [&'a CallRecord]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO tool_calls (id, host, session_id, agent_kind, conversation_id, tool_use_id, tool_name, input, \
         decision, decision_source, decided_at, started_at, ended_at, duration_ms, success, output, assistant_text, \
         prompt_id, attested, verdict, reason, action_ids, event_ids, report_ids, redacted, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, c| {
        b.push_bind(c.id)
            .push_bind(host)
            .push_bind(c.session_id)
            .push_bind(&c.agent_kind)
            .push_bind(&c.conversation_id)
            .push_bind(&c.tool_use_id)
            .push_bind(&c.tool_name)
            .push_bind(&c.input)
            .push_bind(&c.decision)
            .push_bind(&c.decision_source)
            .push_bind(c.decided_at)
            .push_bind(c.started_at)
            .push_bind(c.ended_at)
            .push_bind(c.duration_ms)
            .push_bind(c.success)
            .push_bind(&c.output)
            .push_bind(&c.assistant_text)
            .push_bind(&c.prompt_id)
            .push_bind(c.attested)
            .push_bind(&c.verdict)
            .push_bind(&c.reason)
            .push_bind(&c.action_ids)
            .push_bind(&c.event_ids)
            .push_bind(&c.report_ids)
            .push_bind(&c.redacted)
            .push_bind(chain_seq(&c.chain))
            .push_bind(chain_hash(&c.chain));
    });
    q.push(" ON CONFLICT (id, started_at) DO NOTHING");
    q
}

fn insert_cuts<'a>(host: &'a str, rows: &'a [&'a RetentionCut]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO retention_cuts (id, host, table_name, partition_name, range_from, range_to, tier, rows, chained_rows, first_seq, \
         last_seq, leaves_hash, archive_file, archive_sha256, covers_seq, head_hash, at, key_fingerprint, signature, chain_seq, chain_hash, \
         hot_secs, warm_secs) ",
    );
    q.push_values(rows, |mut b, c| {
        b.push_bind(c.id)
            .push_bind(host)
            .push_bind(&c.table)
            .push_bind(&c.partition)
            .push_bind(c.range_from)
            .push_bind(c.range_to)
            .push_bind(&c.tier)
            .push_bind(c.rows as i64)
            .push_bind(c.chained_rows as i64)
            .push_bind(c.first_seq.map(|s| s as i64))
            .push_bind(c.last_seq.map(|s| s as i64))
            .push_bind(&c.leaves_hash)
            .push_bind(&c.archive_file)
            .push_bind(&c.archive_sha256)
            .push_bind(c.covers_seq as i64)
            .push_bind(&c.head_hash)
            .push_bind(c.at)
            .push_bind(&c.key_fingerprint)
            .push_bind(&c.signature)
            .push_bind(chain_seq(&c.chain))
            .push_bind(chain_hash(&c.chain))
            .push_bind(c.hot_secs)
            .push_bind(c.warm_secs);
    });
    q.push(" ON CONFLICT (id) DO NOTHING");
    q
}

fn insert_keys<'a>(host: &'a str, rows: &'a [&'a SigningKey]) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(
        "INSERT INTO signing_keys (host, fingerprint, public_key, created_at, chain_seq, chain_hash) ",
    );
    q.push_values(rows, |mut b, k| {
        b.push_bind(host)
            .push_bind(&k.fingerprint)
            .push_bind(&k.public_key)
            .push_bind(k.created_at)
            .push_bind(chain_seq(&k.chain))
            .push_bind(chain_hash(&k.chain));
    });
    q.push(" ON CONFLICT (host, fingerprint) DO NOTHING");
    q
}

/// An error the same data will always get (SQLSTATE class 22 data exception, or 23 integrity
/// violation), as opposed to the database being unreachable.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
}

/// Store a batch record by record; returns how many the database refused.
pub async fn write_each(pool: &PgPool, host: &str, batch: &[Output]) -> u64 {
    let mut rejected = 0;
    for o in batch {
        let mut delay = Duration::from_millis(200);
        loop {
            match write_batch(pool, host, std::slice::from_ref(o), EventInsert::Idempotent).await {
                Ok(()) => break,
                Err(e) if is_data_error(&e) => {
                    rejected += 1;
                    tracing::error!(error = %e, record = ?o, "the database refused a record; it was not stored");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "database write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_format_escapes_its_delimiters() {
        let mut out = String::new();
        super::copy_field(&mut out, "a\tb\nc\\d\re");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
    }

    #[test]
    fn redacts_password() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact_url("postgres://postgres@localhost/db?host=/x"),
            "postgres://postgres@localhost/db?host=/x"
        );
        assert_eq!(super::redact_url("nonsense"), "nonsense");
    }
}
