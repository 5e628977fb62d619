//! Read-side queries behind `agentmon sessions`, `actions`, `calls`, `alerts`, `events` and `show`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{postgres::PgRow, PgPool, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use crate::record::{FileSummary, NetSummary, WRITE_ACCESSES};

/// One row of `agentmon sessions`.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub agent: String,
    pub label: Option<String>,
    pub host: String,
    pub cgroup: String,
    pub uid: i64,
    pub source: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub root_pid: Option<i64>,
    pub root_argv: Vec<String>,
    pub actions: i64,
    pub events: i64,
    pub events_lost: i64,
    /// Tamper and hand-off events recorded in the session.
    pub tamper_events: i64,
    /// A process of the session could not be tracked (a `track_failed` tamper event): the
    /// record may miss what it did.
    pub incomplete: bool,
    /// What the agent process itself touched (empty while the session is live).
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
    /// Redaction rules that replaced something in the session's start or end record.
    pub redacted: Vec<String>,
    /// An action of the session, or the agent process, touched a sensitive file or endpoint.
    pub sensitive_data_accessed: bool,
    /// Alert rows of the session.
    pub alerts: i64,
    /// Tokens the agent reported (attested reports only), summed; 0 when it reported none.
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cache_read: i64,
    pub cache_creation: i64,
    /// The cost the agent reported (or the price table estimated), in US dollars; `None` when
    /// no attested report carried one.
    pub cost_usd: Option<f64>,
    /// Some of `cost_usd` is an estimate from the config's price table.
    pub cost_estimated: bool,
    /// `tool_calls` rows of the session, and how many of them are `undeclared` and `mismatch`.
    pub calls: i64,
    pub undeclared: i64,
    pub mismatch: i64,
}

/// One process of an action's subtree.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ProcessView {
    pub pid: i64,
    pub ppid: i64,
    pub exec_id: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub exe: String,
    pub cwd: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub uid: Option<i64>,
    /// Earlier images when the process exec'd more than once.
    pub prior_argv: Vec<Vec<String>>,
    /// Earlier images past those `prior_argv` keeps, counted.
    #[serde(default)]
    pub prior_argv_omitted: i64,
    #[serde(default)]
    pub redacted: Vec<String>,
}

/// One row of `agentmon actions`.
#[derive(Debug, Serialize)]
pub struct ActionView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub agent: String,
    pub host: String,
    pub exec_id: String,
    pub pid: i64,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub command: String,
    pub cwd: Option<String>,
    pub exe: String,
    pub uid: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub complete: bool,
    /// Every process of the action, whether stored with it or before it.
    pub processes: Vec<ProcessView>,
    /// How many of `processes` were stored before the action, as they ended (the open action
    /// held its in-memory share already).
    pub processes_early: i64,
    pub files: Vec<FileSummary>,
    pub net: Vec<NetSummary>,
    /// Redaction rules that replaced something in the action's own row.
    pub redacted: Vec<String>,
    /// Its place in the host's hash chain.
    pub chain_seq: Option<i64>,
    /// A file or network entry of it is `sensitive`.
    pub sensitive_data_accessed: bool,
}

/// SQL: whether a row's `files`/`net` summaries hold a sensitive entry.
pub fn sensitive_sql(alias: &str) -> String {
    format!(
        "({alias}.files @> '[{{\"sensitive\": true}}]'::jsonb OR {alias}.net @> '[{{\"sensitive\": true}}]'::jsonb)"
    )
}

#[derive(Debug, Default)]
pub struct SessionFilter {
    pub agent: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub id_prefix: Option<String>,
}

#[derive(Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "the independent --failed, --writes, --denied and --sensitive filters of `agentmon actions`"
)]
pub struct ActionFilter {
    pub session_prefix: Option<String>,
    pub id_prefix: Option<String>,
    pub agent: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub grep: Option<String>,
    pub failed: bool,
    pub limit: Option<i64>,
    /// Glob over file paths (`*` any run, `?` one character).
    pub path_glob: Option<String>,
    pub writes: bool,
    pub denied: bool,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Only actions that touched a sensitive file or endpoint.
    pub sensitive: bool,
}

/// Convert a glob to a LIKE pattern, escaping LIKE's own metacharacters.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Match an id by prefix or suffix (tables print the last 8 characters).
pub fn push_id_match(q: &mut QueryBuilder<'_, Postgres>, column: &str, part: &str) {
    q.push(format!(" AND ({column}::text LIKE "))
        .push_bind(format!("{part}%"))
        .push(format!(" OR {column}::text LIKE "))
        .push_bind(format!("%{part}"))
        .push(")");
}

pub async fn sessions(pool: &PgPool, f: &SessionFilter) -> Result<Vec<SessionView>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT COALESCE({}, false) OR EXISTS (SELECT 1 FROM actions a WHERE a.session_id = s.id AND {}) AS sensitive_data_accessed, \
           (SELECT count(*) FROM alerts al WHERE al.session_id = s.id) AS alerts, s.id, s.agent, s.label, s.host, s.cgroup, s.uid, s.source, s.started_at, e.ended_at, \
           COALESCE(e.root_pid, r.pid) AS root_pid, \
           COALESCE(e.root_argv, ARRAY(SELECT jsonb_array_elements_text(r.data->'argv')), ARRAY[]::text[]) AS root_argv, \
           COALESCE(e.actions, (SELECT count(*) FROM actions a WHERE a.session_id = s.id)) AS actions, \
           COALESCE(e.events, (SELECT count(*) FROM events v WHERE v.session_id = s.id)) AS events, \
           COALESCE(e.events_lost, 0) AS events_lost, \
           (SELECT count(*) FROM events t WHERE t.session_id = s.id AND t.kind = 'tamper') AS tamper_events, \
           EXISTS (SELECT 1 FROM events t WHERE t.session_id = s.id AND t.kind = 'tamper' \
                   AND t.data->>'tamper' = 'track_failed') AS incomplete, \
           COALESCE(e.files, '[]'::jsonb) AS files, COALESCE(e.net, '[]'::jsonb) AS net, \
           ARRAY(SELECT DISTINCT x FROM unnest(s.redacted || COALESCE(e.redacted, '{{}}')) x ORDER BY 1) AS redacted, \
           COALESCE(u.tokens_in, 0) AS tokens_in, COALESCE(u.tokens_out, 0) AS tokens_out, \
           COALESCE(u.cache_read, 0) AS cache_read, COALESCE(u.cache_creation, 0) AS cache_creation, \
           u.cost_micro_usd, COALESCE(u.cost_estimated, false) AS cost_estimated, \
           c.calls, c.undeclared, c.mismatch \
         FROM sessions s LEFT JOIN session_ends e ON e.session_id = s.id \
         LEFT JOIN LATERAL (SELECT v.pid, v.data FROM events v WHERE v.session_id = s.id AND v.kind = 'exec' \
                            AND v.action_id IS NULL ORDER BY v.seq LIMIT 1) r ON TRUE \
         LEFT JOIN LATERAL (SELECT sum(ar.tokens_in)::bigint AS tokens_in, sum(ar.tokens_out)::bigint AS tokens_out, \
                            sum(ar.cache_read)::bigint AS cache_read, sum(ar.cache_creation)::bigint AS cache_creation, \
                            sum(ar.cost_micro_usd)::bigint AS cost_micro_usd, \
                            bool_or(ar.cost_estimated AND ar.cost_micro_usd IS NOT NULL) AS cost_estimated \
                            FROM agent_reports ar WHERE ar.session_id = s.id AND ar.attested \
                            AND (ar.tokens_in IS NOT NULL OR ar.tokens_out IS NOT NULL OR ar.cost_micro_usd IS NOT NULL)) u ON TRUE \
         LEFT JOIN LATERAL (SELECT count(*) AS calls, count(*) FILTER (WHERE tc.verdict = 'undeclared') AS undeclared, \
                            count(*) FILTER (WHERE tc.verdict = 'mismatch') AS mismatch \
                            FROM tool_calls tc WHERE tc.session_id = s.id) c ON TRUE WHERE TRUE",
        sensitive_sql("e"),
        sensitive_sql("a")
    ));
    if let Some(a) = &f.agent {
        q.push(" AND s.agent = ").push_bind(a.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND s.started_at >= ").push_bind(t);
    }
    if let Some(p) = &f.id_prefix {
        push_id_match(&mut q, "s.id", p);
    }
    q.push(" ORDER BY s.started_at, s.id");
    let rows = q.build().fetch_all(pool).await?;
    rows.into_iter()
        .map(|r| {
            Ok(SessionView {
                id: r.try_get("id")?,
                agent: r.try_get("agent")?,
                label: r.try_get("label")?,
                host: r.try_get("host")?,
                cgroup: r.try_get("cgroup")?,
                uid: r.try_get("uid")?,
                source: r.try_get("source")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
                root_pid: r.try_get("root_pid")?,
                root_argv: r.try_get("root_argv")?,
                actions: r.try_get("actions")?,
                events: r.try_get("events")?,
                events_lost: r.try_get("events_lost")?,
                tamper_events: r.try_get("tamper_events")?,
                incomplete: r.try_get("incomplete")?,
                files: r.try_get::<sqlx::types::Json<Vec<FileSummary>>, _>("files")?.0,
                net: r.try_get::<sqlx::types::Json<Vec<NetSummary>>, _>("net")?.0,
                redacted: r.try_get("redacted")?,
                sensitive_data_accessed: r.try_get("sensitive_data_accessed")?,
                alerts: r.try_get("alerts")?,
                tokens_in: r.try_get("tokens_in")?,
                tokens_out: r.try_get("tokens_out")?,
                cache_read: r.try_get("cache_read")?,
                cache_creation: r.try_get("cache_creation")?,
                cost_usd: r.try_get::<Option<i64>, _>("cost_micro_usd")?.map(micro_usd),
                cost_estimated: r.try_get("cost_estimated")?,
                calls: r.try_get("calls")?,
                undeclared: r.try_get("undeclared")?,
                mismatch: r.try_get("mismatch")?,
            })
        })
        .collect()
}

/// Millionths of a US dollar as dollars.
#[expect(clippy::cast_precision_loss, reason = "a cost below 2^53 millionths of a dollar is exact")]
pub fn micro_usd(micro: i64) -> f64 {
    micro as f64 / 1_000_000.0
}

pub async fn actions(pool: &PgPool, f: &ActionFilter) -> Result<Vec<ActionView>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT * FROM (SELECT {} AS sensitive_data_accessed, a.id, a.session_id, s.agent, a.host, a.exec_id, a.pid, a.argv, a.argv_truncated, \
           a.command, a.cwd, a.exe, a.uid, a.started_at, a.ended_at, a.duration_ms, a.exit_code, a.signal, a.complete, a.processes_early, a.files, a.net, a.redacted, a.chain_seq, \
           COALESCE((SELECT json_agg(json_build_object('pid', p.pid, 'ppid', p.ppid, 'exec_id', p.exec_id, \
               'argv', p.argv, 'argv_truncated', p.argv_truncated, 'exe', p.exe, 'cwd', p.cwd, \
               'started_at', p.started_at, 'ended_at', p.ended_at, 'exit_code', p.exit_code, 'signal', p.signal, 'uid', p.uid, 'prior_argv', p.prior_argv, 'prior_argv_omitted', p.prior_argv_omitted, 'redacted', p.redacted) \
               ORDER BY p.started_at, p.pid) FROM processes p WHERE p.action_id = a.id), '[]'::json) AS processes \
         FROM actions a JOIN sessions s ON s.id = a.session_id WHERE TRUE",
        sensitive_sql("a")
    ));
    if let Some(p) = &f.session_prefix {
        push_id_match(&mut q, "a.session_id", p);
    }
    if let Some(p) = &f.id_prefix {
        push_id_match(&mut q, "a.id", p);
    }
    if let Some(a) = &f.agent {
        q.push(" AND s.agent = ").push_bind(a.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND a.started_at >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        q.push(" AND a.started_at <= ").push_bind(t);
    }
    if let Some(g) = &f.grep {
        let pat = format!("%{}%", g.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        q.push(" AND (a.command ILIKE ").push_bind(pat.clone());
        q.push(
            " OR EXISTS (SELECT 1 FROM processes p WHERE p.action_id = a.id AND array_to_string(p.argv, ' ') ILIKE ",
        )
        .push_bind(pat)
        .push("))");
    }
    if f.failed {
        q.push(" AND (a.exit_code <> 0 OR a.signal IS NOT NULL)");
    }
    if let Some(g) = &f.path_glob {
        q.push(" AND EXISTS (SELECT 1 FROM jsonb_array_elements(a.files) x WHERE x->>'path' LIKE ")
            .push_bind(glob_to_like(g))
            .push(")");
    }
    if f.writes {
        // Noise (/dev/null, the terminal, ...) is not a write anyone asks about.
        q.push(" AND EXISTS (SELECT 1 FROM jsonb_array_elements(a.files) x WHERE NOT COALESCE((x->>'noise')::boolean, false) AND x->>'access' = ANY(")
            .push_bind(WRITE_ACCESSES.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .push("))");
    }
    if f.denied {
        q.push(
            " AND (EXISTS (SELECT 1 FROM jsonb_array_elements(a.files) x WHERE x->>'result' IN ('EACCES', 'EPERM')) \
             OR EXISTS (SELECT 1 FROM jsonb_array_elements(a.net) x WHERE x->>'result' IN ('EACCES', 'EPERM')))",
        );
    }
    if let Some(h) = &f.host {
        q.push(" AND EXISTS (SELECT 1 FROM jsonb_array_elements(a.net) x WHERE lower(x->>'host') = lower(")
            .push_bind(h.clone())
            .push("))");
    }
    if let Some(p) = f.port {
        q.push(" AND EXISTS (SELECT 1 FROM jsonb_array_elements(a.net) x WHERE (x->>'port')::int = ")
            .push_bind(i32::from(p))
            .push(")");
    }
    if f.sensitive {
        q.push(format!(" AND {}", sensitive_sql("a")));
    }
    q.push(" ORDER BY a.started_at DESC, a.id DESC");
    if let Some(n) = f.limit {
        q.push(" LIMIT ").push_bind(n);
    }
    q.push(") t ORDER BY started_at, id");
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(action_view).collect()
}

/// An `actions` query's row, its processes, files and network decoded from JSON.
fn action_view(r: &PgRow) -> Result<ActionView, sqlx::Error> {
    let procs: sqlx::types::Json<Vec<ProcessView>> = r.try_get("processes")?;
    Ok(ActionView {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        agent: r.try_get("agent")?,
        host: r.try_get("host")?,
        exec_id: r.try_get("exec_id")?,
        pid: r.try_get("pid")?,
        argv: r.try_get("argv")?,
        argv_truncated: r.try_get("argv_truncated")?,
        command: r.try_get("command")?,
        cwd: r.try_get("cwd")?,
        exe: r.try_get("exe")?,
        uid: r.try_get("uid")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        exit_code: r.try_get("exit_code")?,
        signal: r.try_get("signal")?,
        complete: r.try_get("complete")?,
        processes: procs.0,
        processes_early: r.try_get("processes_early")?,
        files: r.try_get::<sqlx::types::Json<Vec<FileSummary>>, _>("files")?.0,
        net: r.try_get::<sqlx::types::Json<Vec<NetSummary>>, _>("net")?.0,
        redacted: r.try_get("redacted")?,
        chain_seq: r.try_get("chain_seq")?,
        sensitive_data_accessed: r.try_get("sensitive_data_accessed")?,
    })
}

/// One row of `agentmon alerts` (the fields of the webhook payload).
#[derive(Debug, Serialize)]
pub struct AlertView {
    pub id: Uuid,
    pub host: String,
    pub session_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub agent: String,
    pub rule: String,
    pub severity: String,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub count: i64,
    pub action_ids: Vec<Uuid>,
    pub event_ids: Vec<Uuid>,
    pub summary: String,
    pub details: serde_json::Value,
    pub chain_seq: Option<i64>,
}

#[derive(Debug, Default)]
pub struct AlertFilter {
    pub since: Option<DateTime<Utc>>,
    /// This severity and above.
    pub severity: Option<String>,
    pub agent: Option<String>,
    pub session_prefix: Option<String>,
    pub rule: Option<String>,
    pub limit: Option<i64>,
}

pub async fn alerts(pool: &PgPool, f: &AlertFilter) -> Result<Vec<AlertView>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT * FROM (SELECT id, host, session_id, action_id, agent, rule, severity, first_at, last_at, count, action_ids, \
         event_ids, summary, details, chain_seq FROM alerts al WHERE TRUE",
    );
    if let Some(t) = f.since {
        q.push(" AND al.last_at >= ").push_bind(t);
    }
    if let Some(s) = &f.severity {
        let at_least: Vec<String> =
            crate::alerts::SEVERITIES.iter().skip(crate::alerts::severity_rank(s)).map(|s| (*s).to_owned()).collect();
        q.push(" AND al.severity = ANY(").push_bind(at_least).push(")");
    }
    if let Some(a) = &f.agent {
        q.push(" AND al.agent = ").push_bind(a.clone());
    }
    if let Some(r) = &f.rule {
        q.push(" AND al.rule = ").push_bind(r.clone());
    }
    if let Some(p) = &f.session_prefix {
        push_id_match(&mut q, "al.session_id", p);
    }
    q.push(" ORDER BY al.first_at DESC, al.id DESC");
    if let Some(n) = f.limit {
        q.push(" LIMIT ").push_bind(n);
    }
    q.push(") t ORDER BY first_at, id");
    let rows = q.build().fetch_all(pool).await?;
    rows.into_iter()
        .map(|r| {
            Ok(AlertView {
                id: r.try_get("id")?,
                host: r.try_get("host")?,
                session_id: r.try_get("session_id")?,
                action_id: r.try_get("action_id")?,
                agent: r.try_get("agent")?,
                rule: r.try_get("rule")?,
                severity: r.try_get("severity")?,
                first_at: r.try_get("first_at")?,
                last_at: r.try_get("last_at")?,
                count: r.try_get("count")?,
                action_ids: r.try_get("action_ids")?,
                event_ids: r.try_get("event_ids")?,
                summary: r.try_get("summary")?,
                details: r.try_get("details")?,
                chain_seq: r.try_get("chain_seq")?,
            })
        })
        .collect()
}

/// One row of `agentmon calls`: a `tool_calls` row (the agent's declared call and its verdict,
/// or an action no call declared), with its session's agent.
#[derive(Debug, Serialize)]
pub struct CallView {
    pub id: Uuid,
    pub host: String,
    pub session_id: Uuid,
    pub agent: String,
    pub agent_kind: String,
    pub conversation_id: Option<String>,
    pub tool_use_id: Option<String>,
    pub tool_name: Option<String>,
    pub input: Option<String>,
    pub decision: Option<String>,
    pub decision_source: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub success: Option<bool>,
    pub output: Option<String>,
    pub assistant_text: Option<String>,
    pub prompt_id: Option<String>,
    pub attested: bool,
    pub verdict: String,
    pub reason: String,
    pub action_ids: Vec<Uuid>,
    pub event_ids: Vec<Uuid>,
    pub report_ids: Vec<Uuid>,
    pub redacted: Vec<String>,
    pub chain_seq: Option<i64>,
}

#[derive(Debug, Default)]
pub struct CallFilter {
    pub session_prefix: Option<String>,
    pub agent: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// One of `record::VERDICTS`.
    pub verdict: Option<String>,
    pub tool: Option<String>,
    pub limit: Option<i64>,
    /// Only calls of this session that list this action (`show`).
    pub action: Option<(Uuid, Uuid)>,
}

pub async fn calls(pool: &PgPool, f: &CallFilter) -> Result<Vec<CallView>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT * FROM (SELECT c.id, c.host, c.session_id, s.agent, c.agent_kind, c.conversation_id, c.tool_use_id, \
         c.tool_name, c.input, c.decision, c.decision_source, c.decided_at, c.started_at, c.ended_at, c.duration_ms, \
         c.success, c.output, c.assistant_text, c.prompt_id, c.attested, c.verdict, c.reason, c.action_ids, \
         c.event_ids, c.report_ids, c.redacted, c.chain_seq FROM tool_calls c JOIN sessions s ON s.id = c.session_id \
         WHERE TRUE",
    );
    if let Some(p) = &f.session_prefix {
        push_id_match(&mut q, "c.session_id", p);
    }
    if let Some(a) = &f.agent {
        q.push(" AND s.agent = ").push_bind(a.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND c.started_at >= ").push_bind(t);
    }
    if let Some(v) = &f.verdict {
        q.push(" AND c.verdict = ").push_bind(v.clone());
    }
    if let Some(t) = &f.tool {
        q.push(" AND c.tool_name = ").push_bind(t.clone());
    }
    if let Some((session, action)) = f.action {
        q.push(" AND c.session_id = ").push_bind(session).push(" AND ").push_bind(action).push(" = ANY(c.action_ids)");
    }
    q.push(" ORDER BY c.started_at DESC, c.id DESC");
    if let Some(n) = f.limit {
        q.push(" LIMIT ").push_bind(n);
    }
    q.push(") t ORDER BY started_at, id");
    let rows = q.build().fetch_all(pool).await?;
    rows.into_iter()
        .map(|r| {
            Ok(CallView {
                id: r.try_get("id")?,
                host: r.try_get("host")?,
                session_id: r.try_get("session_id")?,
                agent: r.try_get("agent")?,
                agent_kind: r.try_get("agent_kind")?,
                conversation_id: r.try_get("conversation_id")?,
                tool_use_id: r.try_get("tool_use_id")?,
                tool_name: r.try_get("tool_name")?,
                input: r.try_get("input")?,
                decision: r.try_get("decision")?,
                decision_source: r.try_get("decision_source")?,
                decided_at: r.try_get("decided_at")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
                duration_ms: r.try_get("duration_ms")?,
                success: r.try_get("success")?,
                output: r.try_get("output")?,
                assistant_text: r.try_get("assistant_text")?,
                prompt_id: r.try_get("prompt_id")?,
                attested: r.try_get("attested")?,
                verdict: r.try_get("verdict")?,
                reason: r.try_get("reason")?,
                action_ids: r.try_get("action_ids")?,
                event_ids: r.try_get("event_ids")?,
                report_ids: r.try_get("report_ids")?,
                redacted: r.try_get("redacted")?,
                chain_seq: r.try_get("chain_seq")?,
            })
        })
        .collect()
}

/// One row of `agentmon events`.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub action_id: Option<Uuid>,
    pub exec_id: String,
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub pid: i64,
    pub tid: i64,
    pub data: serde_json::Value,
    pub redacted: Vec<String>,
    pub chain_seq: Option<i64>,
}

/// Event kinds in each `--kind` group.
pub fn kinds_of(group: &str) -> &'static [&'static str] {
    match group {
        "exec" => &["exec", "exec_failed", "fork", "clone_thread", "exit", "exit_thread"],
        "file" => &["file"],
        "net" => &["net"],
        "tamper" => &["tamper"],
        "io_uring" => &["io_uring"],
        _ => &[],
    }
}

pub async fn events(
    pool: &PgPool,
    session_prefix: &str,
    kind: Option<&str>,
    limit: Option<i64>,
) -> Result<Vec<EventView>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, session_id, action_id, exec_id, seq, ts, kind, pid, tid, data, redacted, chain_seq FROM events e WHERE TRUE",
    );
    push_id_match(&mut q, "e.session_id", session_prefix);
    if let Some(k) = kind {
        q.push(" AND e.kind = ANY(")
            .push_bind(kinds_of(k).iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .push(")");
    }
    q.push(" ORDER BY e.session_id, e.seq");
    if let Some(n) = limit {
        q.push(" LIMIT ").push_bind(n);
    }
    let rows = q.build().fetch_all(pool).await?;
    rows.into_iter()
        .map(|r| {
            Ok(EventView {
                id: r.try_get("id")?,
                session_id: r.try_get("session_id")?,
                action_id: r.try_get("action_id")?,
                exec_id: r.try_get("exec_id")?,
                seq: r.try_get("seq")?,
                ts: r.try_get("ts")?,
                kind: r.try_get("kind")?,
                pid: r.try_get("pid")?,
                tid: r.try_get("tid")?,
                data: r.try_get("data")?,
                redacted: r.try_get("redacted")?,
                chain_seq: r.try_get("chain_seq")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(super::glob_to_like("/etc/*"), "/etc/%");
        assert_eq!(super::glob_to_like("/tmp/a?c_%"), "/tmp/a_c\\_\\%");
    }
}
