-- Active snapshots per policy scope (today only `system`; tenants add
-- theirs), replacing the one-row table; and the outbox, where each
-- transition writes what must be notified in its own transaction. The
-- delivery worker adds the index it claims messages by with its own
-- migration: until then every row is only written.

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
    body            TEXT NOT NULL,              -- JSON: the state the change left, and who made it
    created_at      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL
) WITHOUT ROWID;                                -- one B-tree, keyed by the idempotency key
