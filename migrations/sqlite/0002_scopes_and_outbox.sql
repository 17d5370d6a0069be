-- Active snapshots per policy scope (today only `system`; tenants add
-- theirs), replacing the one-row table; and the outbox, where each
-- transition writes what must be notified in its own transaction.

CREATE TABLE active_snapshots (
    scope       TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL REFERENCES snapshots (id),
    changed_at  INTEGER NOT NULL
);
INSERT INTO active_snapshots (scope, snapshot_id, changed_at)
    SELECT 'system', snapshot_id, changed_at FROM active_snapshot;
DROP TABLE active_snapshot;

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,           -- idempotency key: <job id>:<job version>:<kind>
    kind            TEXT NOT NULL,              -- pending, escalated, resolved, expired, overridden
    job_id          TEXT NOT NULL,
    job_version     INTEGER NOT NULL,
    tenant          TEXT NOT NULL,
    body            TEXT NOT NULL,              -- JSON
    created_at      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX outbox_by_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_by_created ON outbox (created_at, id);
