-- Bounds on what an open action keeps in memory (docs/errors-and-limits.md). An action whose
-- subtree has many processes stores the ones past its in-memory share as process rows of their
-- own as they end (with its action_id, as always), before the action row, which counts them in
-- processes_early. A process that exec'd more often than the images it keeps counts the
-- earlier images it left out in prior_argv_omitted (each exec is a raw event of its own).
--
-- Both are 0 for every existing row, and the chain's row objects have the key only when it is
-- not 0 (chain::ROW_SQL), so every stored leaf stays as it was.
ALTER TABLE actions ADD COLUMN processes_early bigint NOT NULL DEFAULT 0;
ALTER TABLE processes ADD COLUMN prior_argv_omitted bigint NOT NULL DEFAULT 0;
