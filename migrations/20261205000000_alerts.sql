-- Alerts raised by the daemon's alert rules as records flow (see monitor/src/alerts.rs). An
-- alert is evidence like any other row: chained, append-only, never updated. Repeats of the
-- same rule in the same session within the rule's window are grouped into one later row whose
-- `count` says how many there were (the first one is written at once).
CREATE TABLE alerts (
    id          uuid PRIMARY KEY,
    host        text NOT NULL,
    session_id  uuid,
    action_id   uuid,
    agent       text NOT NULL,
    rule        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    count       bigint NOT NULL,
    action_ids  uuid[] NOT NULL,
    event_ids   uuid[] NOT NULL,
    summary     text NOT NULL,
    details     jsonb NOT NULL,
    chain_seq   bigint,
    chain_hash  bytea
);
CREATE INDEX alerts_first_at_idx ON alerts (first_at);
CREATE INDEX alerts_session_idx ON alerts (session_id);
CREATE INDEX alerts_chain_idx ON alerts (host, chain_seq);

CREATE TRIGGER alerts_append_only BEFORE UPDATE OR DELETE ON alerts
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER alerts_no_truncate BEFORE TRUNCATE ON alerts
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();

ALTER TABLE alerts OWNER TO agentmon_owner;
REVOKE ALL ON alerts FROM PUBLIC;
GRANT SELECT, INSERT ON alerts TO agentmon_writer;
GRANT SELECT ON alerts TO agentmon_reader;
