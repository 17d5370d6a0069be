-- gavel's state: policy snapshots, jobs with their approvals, and the
-- append-only, hash-chained audit log. Times are Unix milliseconds.

CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,          -- cfg:<name>:policy#sha256:<hex>
    name            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    version         INTEGER,                   -- 1, 2, 3 ... per name, at first activation
    source          TEXT NOT NULL,
    canonical_json  TEXT NOT NULL,
    rule_count      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    activated_at    INTEGER,
    activated_by    TEXT,
    revoked_at      INTEGER,
    revoked_by      TEXT,
    revoke_reason   TEXT,
    UNIQUE (name, version)
);

-- The one active snapshot.
CREATE TABLE active_snapshot (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    snapshot_id TEXT NOT NULL REFERENCES snapshots (id),
    changed_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
    job_id           TEXT PRIMARY KEY,
    job_hash         TEXT NOT NULL,
    canonical_job    TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    requester        TEXT NOT NULL,
    snapshot_id      TEXT NOT NULL REFERENCES snapshots (id),
    decision_id      TEXT NOT NULL,
    decision         TEXT NOT NULL,
    evaluation       TEXT NOT NULL,            -- JSON of the policy evaluation
    state            TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    escalate_at      INTEGER,
    escalated        INTEGER NOT NULL DEFAULT 0,
    resolved_by      TEXT,
    resolved_comment TEXT,
    resolution       TEXT,
    overridden       INTEGER NOT NULL DEFAULT 0,
    override_by      TEXT,
    override_ack_by  TEXT,
    bind_id          TEXT,
    bound_at         INTEGER,
    outcome_detail   TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, expires_at);
CREATE INDEX jobs_by_escalation ON jobs (state, escalated, escalate_at);
CREATE INDEX jobs_by_created ON jobs (created_at);

CREATE TABLE approvals (
    job_id      TEXT NOT NULL REFERENCES jobs (job_id),
    approver    TEXT NOT NULL,
    roles       TEXT NOT NULL,                 -- JSON list
    reason      TEXT NOT NULL,
    note        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    job_hash    TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    PRIMARY KEY (job_id, approver)             -- one person, one approval
);

CREATE TABLE audit (
    chain       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    prev_hash   TEXT NOT NULL,
    entry_hash  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,                 -- RFC 8785 JSON
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_by_job ON audit (job_id, at);

-- Each chain's head, so appends serialise on one row per chain.
CREATE TABLE audit_heads (
    chain     TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
