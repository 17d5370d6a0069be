-- Active snapshots per policy scope (today only `system`; tenants add
-- theirs), replacing the one-row table; and the outbox, where each
-- transition writes what must be notified in its own transaction. The
-- delivery worker adds the index it claims messages by with its own
-- migration: until then every row is only written.

CREATE TABLE active_snapshots (
    scope       TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL REFERENCES snapshots (id),
    changed_at  BIGINT NOT NULL
);
INSERT INTO active_snapshots (scope, snapshot_id, changed_at)
    SELECT 'system', snapshot_id, changed_at FROM active_snapshot;
DROP TABLE active_snapshot;

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    job_version     BIGINT NOT NULL,
    tenant          TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL
);
