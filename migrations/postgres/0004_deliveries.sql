-- Outbox delivery. The worker on every replica routes each new outbox row
-- to its channels (one delivery per channel, keyed `<outbox id>@<channel>`)
-- and marks the row routed in the same transaction; deliveries are then
-- claimed with a lease, so one replica sends a message at a time and
-- another takes it over when a lease runs out (a crash mid-send).

CREATE INDEX outbox_unrouted ON outbox (state, created_at);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    outbox_id       TEXT NOT NULL REFERENCES outbox (id),
    channel         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
