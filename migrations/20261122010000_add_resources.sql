-- Files and network endpoints each action's subtree touched, and what each session's agent
-- process touched directly. Arrays of {path, access, result, count, noise} and
-- {op, family, addr, port, host, result, count}; identical accesses are collapsed with a count
-- (every access stays in the events table).
ALTER TABLE actions ADD COLUMN files jsonb NOT NULL DEFAULT '[]';
ALTER TABLE actions ADD COLUMN net jsonb NOT NULL DEFAULT '[]';
ALTER TABLE session_ends ADD COLUMN files jsonb NOT NULL DEFAULT '[]';
ALTER TABLE session_ends ADD COLUMN net jsonb NOT NULL DEFAULT '[]';
CREATE INDEX events_kind_idx ON events (session_id, kind);
