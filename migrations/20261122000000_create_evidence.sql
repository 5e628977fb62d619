-- Evidence tables. Rows are inserted once and never updated or deleted (enforced by trigger).
-- Every row carries the host so many machines can share one database.

CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    host        text NOT NULL,
    agent       text NOT NULL,
    label       text,
    cgroup      text NOT NULL,
    cgroup_id   bigint NOT NULL,
    uid         bigint NOT NULL,
    source      text NOT NULL CHECK (source IN ('run', 'tag', 'adopt')),
    started_at  timestamptz NOT NULL
);
CREATE INDEX sessions_started_idx ON sessions (started_at);

-- Written once when a session's last process exits: a live session has no row here.
CREATE TABLE session_ends (
    session_id   uuid PRIMARY KEY REFERENCES sessions (id),
    host         text NOT NULL,
    ended_at     timestamptz NOT NULL,
    root_pid     bigint,
    root_exec_id text,
    root_argv    text[] NOT NULL,
    actions      bigint NOT NULL,
    events       bigint NOT NULL,
    events_lost  bigint NOT NULL
);

CREATE TABLE actions (
    id             uuid PRIMARY KEY,
    session_id     uuid NOT NULL REFERENCES sessions (id),
    host           text NOT NULL,
    exec_id        text NOT NULL,
    pid            bigint NOT NULL,
    argv           text[] NOT NULL,
    argv_truncated boolean NOT NULL,
    command        text NOT NULL,
    cwd            text,
    exe            text NOT NULL,
    uid            bigint,
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    duration_ms    bigint,
    exit_code      integer,
    signal         integer,
    complete       boolean NOT NULL
);
CREATE INDEX actions_session_idx ON actions (session_id, started_at);
CREATE INDEX actions_started_idx ON actions (started_at);

-- Every process of every action's subtree, plus each session's agent process (action_id NULL).
CREATE TABLE processes (
    id             uuid PRIMARY KEY,
    session_id     uuid NOT NULL REFERENCES sessions (id),
    action_id      uuid REFERENCES actions (id),
    host           text NOT NULL,
    exec_id        text NOT NULL,
    pid            bigint NOT NULL,
    ppid           bigint NOT NULL,
    argv           text[] NOT NULL,
    prior_argv     jsonb NOT NULL,
    argv_truncated boolean NOT NULL,
    exe            text NOT NULL,
    cwd            text,
    uid            bigint,
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    exit_code      integer,
    signal         integer
);
CREATE INDEX processes_action_idx ON processes (action_id);
CREATE INDEX processes_session_idx ON processes (session_id);

-- Raw kernel events, in per-session order (seq).
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    host        text NOT NULL,
    session_id  uuid NOT NULL REFERENCES sessions (id),
    action_id   uuid,
    exec_id     text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    kind        text NOT NULL,
    pid         bigint NOT NULL,
    tid         bigint NOT NULL,
    data        jsonb NOT NULL
);
CREATE INDEX events_session_idx ON events (session_id, seq);
CREATE INDEX events_action_idx ON events (action_id);

CREATE FUNCTION agentmon_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agentmon evidence is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER sessions_append_only BEFORE UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER session_ends_append_only BEFORE UPDATE OR DELETE ON session_ends
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER actions_append_only BEFORE UPDATE OR DELETE ON actions
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER processes_append_only BEFORE UPDATE OR DELETE ON processes
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION agentmon_append_only();
