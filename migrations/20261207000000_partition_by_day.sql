-- Retention with proof (README "Retention"). The evidence tables that grow with capture become
-- native RANGE partitions of one UTC day each, so retention removes a whole day by dropping a
-- partition, never by DELETE (the append-only triggers stay on every partition). Existing rows
-- are moved into the day partitions they belong to.
--
-- A partition leaves only through `agentmon_retention_drop`, and only after a signed, chained
-- `retention_cuts` record names it and `retained_leaves` holds the chain leaf of every chained
-- row in it, in the same transaction: `verify` then chains across the removed rows and accepts
-- the cut as policy. A partition dropped any other way leaves a gap that `verify` reports as
-- `missing`.
--
-- checkpoints, signing_keys, retention_cuts and retained_leaves are small and are kept forever.

-- Partitions are named <table>_pYYYYMMDD and hold [day 00:00 UTC, next day 00:00 UTC).
-- Rows of a day with no partition go to <table>_default (never dropped by retention).
CREATE FUNCTION agentmon_partition_tables() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['sessions', 'session_ends', 'actions', 'processes', 'events', 'alerts']
$$;

-- Make table t's partition for one day (the daemon calls it for each table before writing a
-- day's first rows, each call its own transaction: creating a partition locks its parent, and
-- holding one parent while waiting for the next could deadlock with a reader that locks them in
-- another order). SECURITY DEFINER: the partitions belong to agentmon_owner, and the writer
-- needs no DDL rights of its own. Returns whether it made the partition.
CREATE FUNCTION agentmon_ensure_partition(t text, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    p text := format('%s_p%s', t, to_char(day, 'YYYYMMDD'));
BEGIN
    IF NOT t = ANY (agentmon_partition_tables()) THEN
        RAISE EXCEPTION 'agentmon: % is not a day-partitioned evidence table', t;
    END IF;
    IF to_regclass(p) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', p, t,
        day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    -- A statement trigger on the parent does not fire for TRUNCATE of a partition.
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate()', p || '_no_truncate', p);
    RETURN true;
EXCEPTION
    -- Another daemon made it first.
    WHEN duplicate_table THEN RETURN false;
    -- The default partition already holds rows of that day: they stay there.
    WHEN check_violation THEN
        RAISE WARNING 'agentmon: % holds rows of %; its partition is not made', t || '_default', day;
        RETURN false;
END;
$$;

-- Turn one table into a partitioned table of the same columns, keyed by `primary_key` (which
-- must hold the time column), and move its rows.
CREATE FUNCTION agentmon_partition_table(t text, col text, primary_key text, indexes text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    ix text;
BEGIN
    EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_unpartitioned');
    -- Index and constraint names are schema-wide: free them for the new table.
    FOR ix IN SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = (t || '_unpartitioned')::regclass LOOP
        EXECUTE format('ALTER INDEX %s RENAME TO %I', ix, ix || '_unpartitioned');
    END LOOP;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (%I)', t, t || '_unpartitioned', col);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', t, primary_key);
    FOREACH ix IN ARRAY indexes LOOP
        EXECUTE format('CREATE INDEX %I ON %I (%s)', t || '_' || split_part(ix, ':', 1) || '_idx', t, split_part(ix, ':', 2));
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate()', t || '_default_no_truncate', t || '_default');
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION agentmon_append_only()', t || '_append_only', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate()', t || '_no_truncate', t);
    EXECUTE format('ALTER TABLE %I OWNER TO agentmon_owner', t);
    EXECUTE format('ALTER TABLE %I OWNER TO agentmon_owner', t || '_default');
    EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
    EXECUTE format('GRANT SELECT, INSERT ON %I TO agentmon_writer', t);
    EXECUTE format('GRANT SELECT ON %I TO agentmon_reader', t);
END;
$$;

-- The view reads sessions and actions: made again over the new tables, unchanged.
CREATE TEMP TABLE agentmon_saved_view AS SELECT pg_get_viewdef('agent_audit_log'::regclass) AS def;
DROP VIEW agent_audit_log;

SELECT agentmon_partition_table('sessions', 'started_at', 'id, started_at', ARRAY['started:started_at', 'chain:host, chain_seq']);
SELECT agentmon_partition_table('session_ends', 'ended_at', 'session_id, ended_at', ARRAY['chain:host, chain_seq']);
SELECT agentmon_partition_table('actions', 'started_at', 'id, started_at',
    ARRAY['session:session_id, started_at', 'started:started_at', 'chain:host, chain_seq']);
SELECT agentmon_partition_table('processes', 'started_at', 'id, started_at',
    ARRAY['action:action_id', 'session:session_id', 'chain:host, chain_seq']);
SELECT agentmon_partition_table('events', 'ts', 'session_id, seq, ts', ARRAY['chain:host, chain_seq']);
SELECT agentmon_partition_table('alerts', 'first_at', 'id, first_at',
    ARRAY['first_at:first_at', 'session:session_id', 'chain:host, chain_seq']);

ALTER FUNCTION agentmon_ensure_partition(text, date) OWNER TO agentmon_owner;
ALTER FUNCTION agentmon_partition_tables() OWNER TO agentmon_owner;
REVOKE ALL ON FUNCTION agentmon_ensure_partition(text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentmon_ensure_partition(text, date) TO agentmon_writer;

-- A day partition for every day that has rows, then the rows (oldest table first).
SELECT agentmon_ensure_partition(t, d) FROM unnest(agentmon_partition_tables()) tables(t), (
    SELECT (started_at AT TIME ZONE 'UTC')::date FROM sessions_unpartitioned
    UNION SELECT (ended_at AT TIME ZONE 'UTC')::date FROM session_ends_unpartitioned
    UNION SELECT (started_at AT TIME ZONE 'UTC')::date FROM actions_unpartitioned
    UNION SELECT (started_at AT TIME ZONE 'UTC')::date FROM processes_unpartitioned
    UNION SELECT (ts AT TIME ZONE 'UTC')::date FROM events_unpartitioned
    UNION SELECT (first_at AT TIME ZONE 'UTC')::date FROM alerts_unpartitioned
) days(d);
INSERT INTO sessions SELECT * FROM sessions_unpartitioned;
INSERT INTO session_ends SELECT * FROM session_ends_unpartitioned;
INSERT INTO actions SELECT * FROM actions_unpartitioned;
INSERT INTO processes SELECT * FROM processes_unpartitioned;
INSERT INTO events SELECT * FROM events_unpartitioned;
INSERT INTO alerts SELECT * FROM alerts_unpartitioned;
-- The foreign keys to sessions and actions go with the old tables: a unique key of a
-- partitioned table must hold the time column. The daemon writes parents before children.
DROP TABLE events_unpartitioned, processes_unpartitioned, alerts_unpartitioned, session_ends_unpartitioned,
    actions_unpartitioned, sessions_unpartitioned CASCADE;
DROP FUNCTION agentmon_partition_table(text, text, text, text[]);

DO $$
BEGIN
    EXECUTE 'CREATE VIEW agent_audit_log AS ' || (SELECT def FROM agentmon_saved_view);
END
$$;
DROP TABLE agentmon_saved_view;
ALTER VIEW agent_audit_log OWNER TO agentmon_owner;
REVOKE ALL ON agent_audit_log FROM PUBLIC;
GRANT SELECT ON agent_audit_log TO agentmon_reader, agentmon_writer;

-- One signed record per removed partition: which rows left, under which tier, the chain head
-- when it was signed, and the archive's hash (cold). A row of the chain, like checkpoints.
CREATE TABLE retention_cuts (
    id               uuid PRIMARY KEY,
    host             text NOT NULL,
    table_name       text NOT NULL,
    partition_name   text NOT NULL,
    range_from       timestamptz NOT NULL,
    range_to         timestamptz NOT NULL,
    tier             text NOT NULL CHECK (tier IN ('warm', 'cold')),
    rows             bigint NOT NULL,
    chained_rows     bigint NOT NULL,
    first_seq        bigint,
    last_seq         bigint,
    leaves_hash      text NOT NULL,
    archive_file     text,
    archive_sha256   text,
    covers_seq       bigint NOT NULL,
    head_hash        text NOT NULL,
    at               timestamptz NOT NULL,
    key_fingerprint  text NOT NULL,
    signature        text NOT NULL,
    chain_seq        bigint,
    chain_hash       bytea
);
CREATE INDEX retention_cuts_chain_idx ON retention_cuts (host, chain_seq);

-- The chain leaf and hash of every chained row a cut removed: verify links through them.
CREATE TABLE retained_leaves (
    cut_id      uuid NOT NULL,
    host        text NOT NULL,
    chain_seq   bigint NOT NULL,
    table_name  text NOT NULL,
    leaf        bytea NOT NULL,
    chain_hash  bytea,
    PRIMARY KEY (cut_id, host, chain_seq)
);
CREATE INDEX retained_leaves_chain_idx ON retained_leaves (host, chain_seq);

CREATE TRIGGER retention_cuts_append_only BEFORE UPDATE OR DELETE ON retention_cuts
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER retention_cuts_no_truncate BEFORE TRUNCATE ON retention_cuts
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
CREATE TRIGGER retained_leaves_append_only BEFORE UPDATE OR DELETE ON retained_leaves
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER retained_leaves_no_truncate BEFORE TRUNCATE ON retained_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION agentmon_no_truncate();
ALTER TABLE retention_cuts OWNER TO agentmon_owner;
ALTER TABLE retained_leaves OWNER TO agentmon_owner;
REVOKE ALL ON retention_cuts, retained_leaves FROM PUBLIC;
GRANT SELECT, INSERT ON retention_cuts, retained_leaves TO agentmon_writer;
GRANT SELECT ON retention_cuts, retained_leaves TO agentmon_reader;

-- Drop one day partition, only as the cut `cut` says: the cut is stored and chained, names this
-- partition, counts exactly its rows, and every chained row in it has its leaf (with the same
-- chain hash) under the cut. The caller inserts the leaves in the same transaction, so the
-- leaves and the drop commit together or not at all. Returns the rows dropped.
CREATE FUNCTION agentmon_retention_drop(t text, day date, cut uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    p text := format('%s_p%s', t, to_char(day, 'YYYYMMDD'));
    c retention_cuts%ROWTYPE;
    n bigint;
    unrecorded bigint;
BEGIN
    IF NOT t = ANY (agentmon_partition_tables()) THEN
        RAISE EXCEPTION 'agentmon retention: % is not a partitioned evidence table', t;
    END IF;
    SELECT * INTO c FROM retention_cuts WHERE id = cut;
    IF NOT FOUND OR c.chain_seq IS NULL THEN
        RAISE EXCEPTION 'agentmon retention: no stored, chained retention cut %', cut;
    END IF;
    IF c.table_name <> t OR c.partition_name <> p THEN
        RAISE EXCEPTION 'agentmon retention: cut % is for %, not %', cut, c.partition_name, p;
    END IF;
    -- The parent first, as queries lock it, so a reader never deadlocks with the drop.
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', t);
    IF to_regclass(p) IS NULL THEN
        RAISE EXCEPTION 'agentmon retention: partition % does not exist', p;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', p) INTO n;
    IF n <> c.rows THEN
        RAISE EXCEPTION 'agentmon retention: % holds % rows, the cut counted %', p, n, c.rows;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I r WHERE r.chain_seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM retained_leaves l '
        'WHERE l.cut_id = $1 AND l.host = r.host AND l.chain_seq = r.chain_seq AND l.chain_hash IS NOT DISTINCT FROM r.chain_hash)', p)
        USING cut INTO unrecorded;
    IF unrecorded > 0 THEN
        RAISE EXCEPTION 'agentmon retention: % rows of % have no leaf under cut %', unrecorded, p, cut;
    END IF;
    EXECUTE format('DROP TABLE %I', p);
    RETURN n;
END;
$$;
ALTER FUNCTION agentmon_retention_drop(text, date, uuid) OWNER TO agentmon_owner;
REVOKE ALL ON FUNCTION agentmon_retention_drop(text, date, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agentmon_retention_drop(text, date, uuid) TO agentmon_writer;
