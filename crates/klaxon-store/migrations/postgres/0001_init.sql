-- Klaxon's PostgreSQL store: the whole schema of the SQLite store's migrations 1-2 in one step.
-- Ids are native uuid (UUIDv7, which sorts by creation time; uuid compares bytewise, so newest
-- first is `ORDER BY id DESC` as in SQLite). Times are Unix milliseconds (BIGINT), exactly as in
-- SQLite, so the queue compares numbers and both backends share the trait's conversions.

CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    created_at      BIGINT NOT NULL,
    severity        TEXT NOT NULL,
    priority        TEXT NOT NULL,
    event_type      TEXT,
    source          TEXT NOT NULL,
    user_id         TEXT,
    title           TEXT,
    message         TEXT NOT NULL,
    idempotency_key TEXT,
    dedup_key       TEXT,
    -- The whole notification (data, tags, attachments, …) as JSON text: what the sender gets
    -- back, byte for byte as serde wrote it (jsonb would reorder keys).
    body            TEXT NOT NULL
);
CREATE INDEX notifications_created ON notifications (created_at);
-- Unique across every replica: two inserts racing on one key cannot both commit.
-- Partial: most notifications have no key.
CREATE UNIQUE INDEX notifications_idempotency ON notifications (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    target          TEXT,
    status          TEXT NOT NULL,
    -- Priority rank (3 = critical): claims take the highest first.
    priority        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- Attempts answered 429: they wait out retry_after but do not use up the retry budget.
    throttled       BIGINT NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL,
    expires_at      BIGINT,
    lease_until     BIGINT,
    lease_owner     TEXT,
    last_error      TEXT,
    provider_id     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    -- Fallback chains (PRODUCT.md §7): where a delivery went, and which one a delivery replaces.
    fallback_of     uuid,
    fell_back_to    TEXT,
    -- An operator's retry gives a dead delivery a fresh budget: attempts before it no longer count.
    budget_from     BIGINT NOT NULL DEFAULT 0
);
-- The queue, per channel: only live rows are indexed, so the index stays small however long
-- history grows, and a claim reads only the channels that may send.
CREATE INDEX deliveries_queue ON deliveries (channel, priority DESC, not_before)
    WHERE status IN ('pending', 'retrying', 'sending');
CREATE INDEX deliveries_notification ON deliveries (notification_id);
-- Queue depth per (status, channel).
CREATE INDEX deliveries_status ON deliveries (status, channel);
-- History by status (dead letters, the dashboard's filters) walks this newest first.
CREATE INDEX deliveries_status_history ON deliveries (status, notification_id, channel);

CREATE TABLE attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    latency_ms  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- What operators and providers changed about a channel at run time; survives restarts.
CREATE TABLE channel_state (
    channel         TEXT PRIMARY KEY,
    -- NULL: as configured.
    enabled         BOOLEAN,
    disabled_reason TEXT,
    paused_until    BIGINT,
    muted_until     BIGINT,
    last_error      TEXT,
    last_error_at   BIGINT,
    last_success_at BIGINT,
    updated_at      BIGINT NOT NULL
);
