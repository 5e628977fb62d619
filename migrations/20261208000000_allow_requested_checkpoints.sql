-- A checkpoint signed at a client's request (`agentmon export` right after an incident) is
-- of kind 'requested'. Only the check constraint changes; no row is touched.
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_kind_check;
ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_kind_check CHECK (kind IN ('start', 'periodic', 'heartbeat', 'stop', 'requested'));
