-- Fallback chains (PRODUCT.md §7): a delivery handed to another channel says where it went,
-- and the new delivery says which one it replaces, so the history reads both ways.
ALTER TABLE deliveries ADD COLUMN fallback_of TEXT;
ALTER TABLE deliveries ADD COLUMN fell_back_to TEXT;
-- An operator's retry of a dead delivery gives it a fresh retry budget: attempts before it
-- no longer count against the schedule (they stay in the history).
ALTER TABLE deliveries ADD COLUMN budget_from INTEGER NOT NULL DEFAULT 0;
-- History by status (dead letters, the dashboard's filters) reads this index to the
-- notification ids instead of scanning every notification: dead letters are rare, and a scan
-- for them cost a second at 100,000 notifications. Same upkeep as the (status, channel) index
-- it replaces, whose prefix still serves the queue-depth count.
DROP INDEX deliveries_status;
CREATE INDEX deliveries_status ON deliveries (status, channel, notification_id);
