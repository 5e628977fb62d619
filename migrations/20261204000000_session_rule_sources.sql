-- Sessions started by the config's session rules: `unit` and `cgroup` (a matching cgroup
-- appeared), `exe` (a matching program was executed; decided in the kernel at the exec).
ALTER TABLE sessions DROP CONSTRAINT sessions_source_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_source_check
    CHECK (source IN ('run', 'tag', 'adopt', 'unit', 'cgroup', 'exe'));
