-- The audit-logging seed's `agent_audit_log`, as a read-only view over the trail: one row per
-- action (a command the agent ran), with the seed's column names, so the seed's queries run
-- unchanged. Token and cost columns are NULL until something supplies them (the kernel does
-- not see tokens). See "The seed's agent_audit_log view" in the README for every column.
CREATE VIEW agent_audit_log AS
SELECT
    a.id,
    a.started_at AS "timestamp",
    s.agent::varchar(100) AS agent_id,
    a.session_id,
    NULL::uuid AS conversation_id,
    'command'::varchar(50) AS action_type,
    -- The program, as the agent named it: argv[0] without its directory.
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
JOIN sessions s ON s.id = a.session_id;

ALTER VIEW agent_audit_log OWNER TO agentmon_owner;
REVOKE ALL ON agent_audit_log FROM PUBLIC;
GRANT SELECT ON agent_audit_log TO agentmon_reader, agentmon_writer;
