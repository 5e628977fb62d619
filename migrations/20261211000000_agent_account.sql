-- The agent's own account (README "The agent's account"): every report an agent made about
-- itself (hooks through `agentmon hook`, OpenTelemetry logs and metrics), bound to its session by
-- the kernel; and every declared tool call with its verdict against what the kernel saw. Both are
-- evidence like any other row: chained, append-only, day-partitioned, never updated. A verdict is
-- a row of its own, written once both sides are final.

CREATE TABLE agent_reports (
    id              uuid NOT NULL,
    host            text NOT NULL,
    session_id      uuid NOT NULL,
    received_at     timestamptz NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('hook', 'otlp')),
    agent_kind      text NOT NULL,
    event           text NOT NULL,
    conversation_id text,
    tool_use_id     text,
    tool_name       text,
    pid             bigint NOT NULL,
    exec_id         text,
    attested        boolean NOT NULL,
    attestation     text NOT NULL,
    malformed       text,
    truncated       boolean NOT NULL,
    body            text NOT NULL,
    model           text,
    tokens_in       bigint,
    tokens_out      bigint,
    cache_read      bigint,
    cache_creation  bigint,
    cost_micro_usd  bigint,
    cost_estimated  boolean NOT NULL,
    redacted        text[] NOT NULL DEFAULT '{}',
    chain_seq       bigint,
    chain_hash      bytea,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX agent_reports_session_idx ON agent_reports (session_id, received_at);
CREATE INDEX agent_reports_tool_use_idx ON agent_reports (tool_use_id);
CREATE INDEX agent_reports_chain_idx ON agent_reports (host, chain_seq);

CREATE TABLE tool_calls (
    id              uuid NOT NULL,
    host            text NOT NULL,
    session_id      uuid NOT NULL,
    agent_kind      text NOT NULL,
    conversation_id text,
    tool_use_id     text,
    tool_name       text,
    input           text,
    decision        text,
    decision_source text,
    decided_at      timestamptz,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    duration_ms     bigint,
    success         boolean,
    output          text,
    assistant_text  text,
    prompt_id       text,
    attested        boolean NOT NULL,
    verdict         text NOT NULL CHECK (verdict IN ('matched', 'mismatch', 'denied', 'unobserved', 'undeclared')),
    reason          text NOT NULL,
    action_ids      uuid[] NOT NULL,
    event_ids       uuid[] NOT NULL,
    report_ids      uuid[] NOT NULL,
    redacted        text[] NOT NULL DEFAULT '{}',
    chain_seq       bigint,
    chain_hash      bytea,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX tool_calls_session_idx ON tool_calls (session_id, started_at);
CREATE INDEX tool_calls_verdict_idx ON tool_calls (verdict);
CREATE INDEX tool_calls_chain_idx ON tool_calls (host, chain_seq);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_reports', 'tool_calls'] LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate()', t || '_default_no_truncate', t || '_default');
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION agentmon_append_only()', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate()', t || '_no_truncate', t);
        EXECUTE format('ALTER TABLE %I OWNER TO agentmon_owner', t);
        EXECUTE format('ALTER TABLE %I OWNER TO agentmon_owner', t || '_default');
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT ON %I TO agentmon_writer', t);
        EXECUTE format('GRANT SELECT ON %I TO agentmon_reader', t);
    END LOOP;
END
$$;

-- Retention drops their day partitions like the others' (cold tier: archived first).
CREATE OR REPLACE FUNCTION agentmon_partition_tables() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['sessions', 'session_ends', 'actions', 'processes', 'events', 'alerts', 'agent_reports', 'tool_calls']
$$;

-- The seed's view gains the agent's account: one row per declared tool call (`tool`), per model
-- request the agent reported (`model_request`, with its tokens and cost) and per permission
-- decision it reported (`approval`). Command rows (the kernel's actions) are unchanged.
CREATE OR REPLACE FUNCTION agentmon_uuid_or_null(t text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN t::uuid END
$$;
ALTER FUNCTION agentmon_uuid_or_null(text) OWNER TO agentmon_owner;

DROP VIEW agent_audit_log;
CREATE VIEW agent_audit_log AS
SELECT
    a.id,
    a.started_at AS "timestamp",
    s.agent::varchar(100) AS agent_id,
    a.session_id,
    NULL::uuid AS conversation_id,
    'command'::varchar(50) AS action_type,
    left(regexp_replace(coalesce(nullif(a.argv[1], ''), a.exe), '^.*/', ''), 100)::varchar(100) AS action_name,
    jsonb_build_object(
        'command', a.command, 'argv', to_jsonb(a.argv), 'argv_truncated', a.argv_truncated,
        'exe', a.exe, 'cwd', a.cwd, 'pid', a.pid, 'uid', a.uid, 'host', a.host,
        'label', s.label, 'ended_at', a.ended_at
    ) AS action_details,
    (CASE
        WHEN a.ended_at IS NULL THEN 'running'
        WHEN a.exit_code = 0 AND a.signal IS NULL THEN 'success'
        WHEN a.exit_code IS NULL AND a.signal IS NULL THEN 'unknown'
        ELSE 'failure'
    END)::varchar(20) AS outcome_status,
    jsonb_build_object('exit_code', a.exit_code, 'signal', a.signal, 'complete', a.complete) AS outcome_result,
    (CASE
        WHEN a.signal IS NOT NULL THEN jsonb_build_object('signal', a.signal, 'message', format('killed by signal %s', a.signal))
        WHEN a.exit_code IS NOT NULL AND a.exit_code <> 0 THEN jsonb_build_object('exit_code', a.exit_code, 'message', format('exit status %s', a.exit_code))
    END) AS outcome_error,
    NULL::int AS tokens_input,
    NULL::int AS tokens_output,
    least(a.duration_ms, 2147483647)::int AS duration_ms,
    NULL::numeric(10, 6) AS cost_usd,
    (CASE WHEN a.uid = 0 THEN 'root' WHEN a.uid IS NOT NULL THEN 'user' END)::varchar(20) AS permission_level,
    jsonb_build_object('files', a.files, 'net', a.net) AS resources_accessed,
    (a.files @> '[{"sensitive": true}]'::jsonb OR a.net @> '[{"sensitive": true}]'::jsonb) AS sensitive_data_accessed
FROM actions a
JOIN sessions s ON s.id = a.session_id
UNION ALL
SELECT
    c.id,
    c.started_at,
    s.agent::varchar(100),
    c.session_id,
    agentmon_uuid_or_null(c.conversation_id),
    'tool'::varchar(50),
    left(coalesce(c.tool_name, '(undeclared)'), 100)::varchar(100),
    jsonb_build_object(
        'tool_use_id', c.tool_use_id, 'input', c.input, 'verdict', c.verdict, 'reason', c.reason,
        'decision', c.decision, 'decision_source', c.decision_source, 'attested', c.attested,
        'action_ids', to_jsonb(c.action_ids), 'ended_at', c.ended_at
    ),
    (CASE
        WHEN c.verdict = 'denied' THEN 'denied'
        WHEN c.success THEN 'success'
        WHEN NOT c.success THEN 'failure'
        ELSE 'unknown'
    END)::varchar(20),
    jsonb_build_object('success', c.success, 'verdict', c.verdict, 'output', c.output),
    (CASE WHEN c.success = false THEN jsonb_build_object('message', left(coalesce(c.output, ''), 200)) END),
    NULL::int,
    NULL::int,
    least(c.duration_ms, 2147483647)::int,
    NULL::numeric(10, 6),
    NULL::varchar(20),
    jsonb_build_object('action_ids', to_jsonb(c.action_ids), 'event_ids', to_jsonb(c.event_ids)),
    false
FROM tool_calls c
JOIN sessions s ON s.id = c.session_id
UNION ALL
SELECT
    r.id,
    r.received_at,
    s.agent::varchar(100),
    r.session_id,
    agentmon_uuid_or_null(r.conversation_id),
    (CASE WHEN r.tokens_in IS NOT NULL OR r.cost_micro_usd IS NOT NULL THEN 'model_request' ELSE 'approval' END)::varchar(50),
    left(coalesce(r.model, r.tool_name, r.event), 100)::varchar(100),
    jsonb_build_object('event', r.event, 'channel', r.channel, 'attested', r.attested, 'tool_use_id', r.tool_use_id,
        'cache_read', r.cache_read, 'cache_creation', r.cache_creation, 'cost_estimated', r.cost_estimated),
    'success'::varchar(20),
    NULL::jsonb,
    NULL::jsonb,
    least(r.tokens_in, 2147483647)::int,
    least(r.tokens_out, 2147483647)::int,
    NULL::int,
    (r.cost_micro_usd / 1000000.0)::numeric(10, 6),
    NULL::varchar(20),
    NULL::jsonb,
    false
FROM agent_reports r
JOIN sessions s ON s.id = r.session_id
WHERE r.attested
  AND (r.tokens_in IS NOT NULL OR r.cost_micro_usd IS NOT NULL OR r.event IN ('tool_decision', 'codex.tool_decision'));

ALTER VIEW agent_audit_log OWNER TO agentmon_owner;
REVOKE ALL ON agent_audit_log FROM PUBLIC;
GRANT SELECT ON agent_audit_log TO agentmon_reader, agentmon_writer;
