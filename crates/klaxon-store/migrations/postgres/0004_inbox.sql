-- The inbox (PRODUCT.md §2, "outbox table"): a trading backend INSERTs a row here inside its own
-- transaction — with the trade it records — and Klaxon turns each committed row into a
-- notification exactly once: a replica takes rows with FOR UPDATE SKIP LOCKED and, in one
-- transaction, inserts their notifications and deletes them. A rolled-back trade leaves no row,
-- so no alert for a trade that did not happen.
--
--   INSERT INTO klaxon_inbox (payload) VALUES ('{"title": "Filled", "message": "BUY 2 MNQ @ 23488.75"}');
--   INSERT INTO klaxon_inbox (payload) VALUES ('{"event_type": "trade.executed", "data": {"symbol": "MNQ"}}');

CREATE TABLE klaxon_inbox (
    id          BIGSERIAL PRIMARY KEY,
    -- A notification as POST /api/v1/notifications takes it (it has `message`), or an event
    -- envelope as POST /api/v1/events takes it (no `message`).
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when the payload cannot become a notification (the reason, naming the field). Such
    -- rows are kept for the operator to read, fix or delete, and never taken again.
    error       TEXT,
    failed_at   TIMESTAMPTZ
);
-- What is waiting, oldest first; rows with an error are left out.
CREATE INDEX klaxon_inbox_waiting ON klaxon_inbox (id) WHERE error IS NULL;

COMMENT ON TABLE klaxon_inbox IS
    'Klaxon inbox: INSERT a notification or event envelope (payload jsonb) in your own transaction; Klaxon turns each row into a notification once and deletes it. Rows with error set could not be parsed and are kept.';

-- Wakes every listening replica when the inserting transaction commits (one per statement,
-- however many rows), so rows are taken within milliseconds rather than at the next poll.
CREATE FUNCTION klaxon_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('klaxon_inbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER klaxon_inbox_notify AFTER INSERT ON klaxon_inbox
    FOR EACH STATEMENT EXECUTE FUNCTION klaxon_inbox_notify();
