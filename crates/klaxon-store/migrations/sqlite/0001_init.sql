-- Klaxon's embedded store. Times are Unix milliseconds (INTEGER) so the queue compares numbers;
-- ids are UUIDv7 text, which sorts by creation time.

CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    severity        TEXT NOT NULL,
    priority        TEXT NOT NULL,
    event_type      TEXT,
    source          TEXT NOT NULL,
    user_id         TEXT,
    title           TEXT,
    message         TEXT NOT NULL,
    idempotency_key TEXT,
    dedup_key       TEXT,
    -- The whole notification (data, tags, attachments, …) as JSON: what the sender gets back.
    body            TEXT NOT NULL
);
CREATE INDEX notifications_created ON notifications (created_at);
-- Partial: most notifications have no key, and an index entry per row would cost every insert.
CREATE UNIQUE INDEX notifications_idempotency ON notifications (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    target          TEXT,
    status          TEXT NOT NULL,
    -- Priority rank (3 = critical): claims take the highest first.
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Attempts the provider answered with 429: they wait out retry_after but do not use up
    -- the retry budget, so a rate-limit storm cannot kill an alert.
    throttled       INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL,
    expires_at      INTEGER,
    lease_until     INTEGER,
    lease_owner     TEXT,
    last_error      TEXT,
    provider_id     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
-- The queue, per channel: only live rows are indexed, so the index stays small however long
-- history grows, and a claim reads only the channels that may send.
CREATE INDEX deliveries_queue ON deliveries (channel, priority DESC, not_before)
    WHERE status IN ('pending', 'retrying', 'sending');
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_status ON deliveries (status, channel);

CREATE TABLE attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- What operators and providers changed about a channel at run time; survives restarts.
CREATE TABLE channel_state (
    channel         TEXT PRIMARY KEY,
    -- NULL: as configured.
    enabled         INTEGER,
    disabled_reason TEXT,
    paused_until    INTEGER,
    muted_until     INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    last_success_at INTEGER,
    updated_at      INTEGER NOT NULL
);
