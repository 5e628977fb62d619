-- Evidence that holds up: every stored row gets its place in its host's hash chain
-- (chain_seq, chain_hash; see monitor/src/chain.rs and the README's "Evidence chain"), the
-- redaction rules that replaced something in it, signed checkpoints and the keys that sign
-- them; and three roles so that the daemon can append but never change or remove evidence.

ALTER TABLE sessions ADD COLUMN chain_seq bigint, ADD COLUMN chain_hash bytea,
    ADD COLUMN redacted text[] NOT NULL DEFAULT '{}';
ALTER TABLE session_ends ADD COLUMN chain_seq bigint, ADD COLUMN chain_hash bytea,
    ADD COLUMN redacted text[] NOT NULL DEFAULT '{}';
ALTER TABLE actions ADD COLUMN chain_seq bigint, ADD COLUMN chain_hash bytea,
    ADD COLUMN redacted text[] NOT NULL DEFAULT '{}';
ALTER TABLE processes ADD COLUMN chain_seq bigint, ADD COLUMN chain_hash bytea,
    ADD COLUMN redacted text[] NOT NULL DEFAULT '{}';
ALTER TABLE events ADD COLUMN chain_seq bigint, ADD COLUMN chain_hash bytea,
    ADD COLUMN redacted text[] NOT NULL DEFAULT '{}';

-- A signed statement of a host's chain head (host, the last row it covers, that row's hash,
-- time). The checkpoint row itself is the next row of the chain.
CREATE TABLE checkpoints (
    id               uuid PRIMARY KEY,
    host             text NOT NULL,
    covers_seq       bigint NOT NULL,
    head_hash        text NOT NULL,
    at               timestamptz NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('start', 'periodic', 'heartbeat', 'stop')),
    next_within_secs bigint NOT NULL,
    key_fingerprint  text NOT NULL,
    signature        text NOT NULL,
    chain_seq        bigint,
    chain_hash       bytea
);

-- The ed25519 public keys hosts sign checkpoints with.
CREATE TABLE signing_keys (
    host        text NOT NULL,
    fingerprint text NOT NULL,
    public_key  text NOT NULL,
    created_at  timestamptz NOT NULL,
    chain_seq   bigint,
    chain_hash  bytea,
    PRIMARY KEY (host, fingerprint)
);

-- verify reads each host's chain in order, merging the tables; the daemon reads the head at
-- start. Not unique: a duplicate position is something verify must be able to see and report.
CREATE INDEX sessions_chain_idx ON sessions (host, chain_seq);
CREATE INDEX session_ends_chain_idx ON session_ends (host, chain_seq);
CREATE INDEX actions_chain_idx ON actions (host, chain_seq);
CREATE INDEX processes_chain_idx ON processes (host, chain_seq);
CREATE INDEX events_chain_idx ON events (host, chain_seq);
CREATE INDEX checkpoints_chain_idx ON checkpoints (host, chain_seq);
CREATE INDEX signing_keys_chain_idx ON signing_keys (host, chain_seq);

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER signing_keys_append_only BEFORE UPDATE OR DELETE ON signing_keys
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER signing_keys_no_truncate BEFORE TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();

-- Roles are cluster-wide, so another database of the same cluster may have made them already,
-- or be making them right now (parallel migrations race on the catalog's unique index).
-- NOLOGIN: an admin gives a login role membership (see the README's "Database roles").
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['agentmon_owner', 'agentmon_writer', 'agentmon_reader'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
    IF NOT pg_has_role(current_user, 'agentmon_owner', 'MEMBER') THEN
        EXECUTE format('GRANT agentmon_owner TO %I', current_user);
    END IF;
END
$$;

-- The owner owns the schema's objects and is used only to migrate. Whoever migrates is made
-- a member of it, so the next migration can alter its tables.
ALTER TABLE sessions OWNER TO agentmon_owner;
ALTER TABLE session_ends OWNER TO agentmon_owner;
ALTER TABLE actions OWNER TO agentmon_owner;
ALTER TABLE processes OWNER TO agentmon_owner;
ALTER TABLE events OWNER TO agentmon_owner;
ALTER TABLE checkpoints OWNER TO agentmon_owner;
ALTER TABLE signing_keys OWNER TO agentmon_owner;
ALTER TABLE _sqlx_migrations OWNER TO agentmon_owner;
ALTER FUNCTION agentmon_append_only() OWNER TO agentmon_owner;
ALTER FUNCTION agentmon_no_truncate() OWNER TO agentmon_owner;
GRANT USAGE, CREATE ON SCHEMA public TO agentmon_owner;

-- The writer appends and reads back (ids, the chain head, open sessions), nothing else: not
-- the owner, so no ALTER and no trigger control; no UPDATE, DELETE or TRUNCATE.
REVOKE ALL ON sessions, session_ends, actions, processes, events, checkpoints, signing_keys FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO agentmon_writer, agentmon_reader;
GRANT SELECT, INSERT ON sessions, session_ends, actions, processes, events, checkpoints, signing_keys
    TO agentmon_writer;
GRANT SELECT ON _sqlx_migrations TO agentmon_writer, agentmon_reader;
-- The reader (query commands, verify) only reads.
GRANT SELECT ON sessions, session_ends, actions, processes, events, checkpoints, signing_keys
    TO agentmon_reader;
