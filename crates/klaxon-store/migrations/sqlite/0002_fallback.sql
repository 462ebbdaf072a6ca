-- Fallback chains (PRODUCT.md §7): a delivery handed to another channel says where it went,
-- and the new delivery says which one it replaces, so the history reads both ways.
ALTER TABLE deliveries ADD COLUMN fallback_of TEXT;
ALTER TABLE deliveries ADD COLUMN fell_back_to TEXT;
-- An operator's retry of a dead delivery gives it a fresh retry budget: attempts before it
-- no longer count against the schedule (they stay in the history).
ALTER TABLE deliveries ADD COLUMN budget_from INTEGER NOT NULL DEFAULT 0;
-- History by status (dead letters, the dashboard's filters) walks this index newest first
-- instead of scanning every notification: dead letters are rare, and a scan for them took
-- 37 ms at 100,000 notifications (a second in a debug build). The (status, channel) index
-- stays for the queue-depth count, which this order would make sort.
CREATE INDEX deliveries_status_history ON deliveries (status, notification_id, channel);
