-- A retention cut records the tiers in force when it was made (hot and warm, in seconds), so
-- `agentmon verify` can report a cut that removed rows younger than those tiers allow. Cuts
-- made before this migration have neither (NULL) and are checked against the one-day minimum.
-- Adding nullable columns rewrites no row: every existing cut keeps its chain leaf.
ALTER TABLE retention_cuts ADD COLUMN hot_secs bigint, ADD COLUMN warm_secs bigint;
