-- Aggregation into digests (PRODUCT.md §7). A delivery that waits for a digest carries its
-- group's key and is not claimable until a flush either folds it into a digest (`aggregated`,
-- `aggregated_into` = the digest's delivery) or releases it alone (the key is cleared).
ALTER TABLE deliveries ADD COLUMN group_key TEXT;
ALTER TABLE deliveries ADD COLUMN aggregated_into uuid;
-- The queue index leaves waiting group members out, so a burst held for a digest costs the
-- claims nothing.
DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries (channel, priority DESC, not_before)
    WHERE status IN ('pending', 'retrying', 'sending') AND group_key IS NULL;
CREATE INDEX deliveries_grouped ON deliveries (group_key, not_before)
    WHERE status = 'pending' AND group_key IS NOT NULL;
-- One row per group: where its digest goes, its rules (part of the key, so they never change),
-- its `group_by` values (JSON, `[[field, value], …]`), and until when its last send holds it.
-- A flush locks this row (SKIP LOCKED), so two replicas never flush one group at once.
CREATE TABLE delivery_groups (
    group_key   TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    target      TEXT,
    wait_ms     BIGINT NOT NULL,
    interval_ms BIGINT NOT NULL,
    max_batch   BIGINT NOT NULL,
    label       TEXT NOT NULL,
    held_until  BIGINT
);
