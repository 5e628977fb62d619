-- TRUNCATE skips row triggers, so block it with statement triggers too.
CREATE FUNCTION agentmon_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agentmon evidence is append-only: TRUNCATE on % is not allowed', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER sessions_no_truncate BEFORE TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER session_ends_no_truncate BEFORE TRUNCATE ON session_ends
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER actions_no_truncate BEFORE TRUNCATE ON actions
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER processes_no_truncate BEFORE TRUNCATE ON processes
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
