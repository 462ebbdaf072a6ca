-- Dedup (PRODUCT.md §5, §7): a repeat of a dedup key inside its window is stored with a pointer
-- to the original, and its deliveries as `suppressed`. The original's repeat count is counted
-- from these pointers when read, so suppressing a repeat never rewrites the original's row.
ALTER TABLE notifications ADD COLUMN duplicate_of TEXT;
-- The insert's lookup: the newest original with this key inside the window. Partial: only
-- originals with a key are candidates, and most notifications have none.
CREATE INDEX notifications_dedup ON notifications (dedup_key, created_at)
    WHERE dedup_key IS NOT NULL AND duplicate_of IS NULL;
-- The repeat count of a notification (detail view and history).
CREATE INDEX notifications_duplicate_of ON notifications (duplicate_of)
    WHERE duplicate_of IS NOT NULL;
