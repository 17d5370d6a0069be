-- gavel's state on PostgreSQL, shared by every replica: policy snapshots,
-- jobs with their approvals, and the append-only, hash-chained audit log
-- (one chain per replica). Times are Unix milliseconds.

CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    version         BIGINT,
    source          TEXT NOT NULL,
    canonical_json  TEXT NOT NULL,
    rule_count      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    activated_at    BIGINT,
    activated_by    TEXT,
    revoked_at      BIGINT,
    revoked_by      TEXT,
    revoke_reason   TEXT,
    UNIQUE (name, version)
);

CREATE TABLE active_snapshot (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    snapshot_id TEXT NOT NULL REFERENCES snapshots (id),
    changed_at  BIGINT NOT NULL
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
    evaluation       TEXT NOT NULL,
    state            TEXT NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    escalate_at      BIGINT,
    escalated        BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_by      TEXT,
    resolved_comment TEXT,
    resolution       TEXT,
    overridden       BOOLEAN NOT NULL DEFAULT FALSE,
    override_by      TEXT,
    override_ack_by  TEXT,
    bind_id          TEXT,
    bound_at         BIGINT,
    outcome_detail   TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, expires_at);
CREATE INDEX jobs_by_escalation ON jobs (state, escalated, escalate_at);
CREATE INDEX jobs_by_created ON jobs (created_at, job_id);

CREATE TABLE approvals (
    job_id      TEXT NOT NULL REFERENCES jobs (job_id),
    approver    TEXT NOT NULL,
    roles       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    note        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    job_hash    TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    PRIMARY KEY (job_id, approver)
);

CREATE TABLE audit (
    chain       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    entry_hash  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_by_job ON audit (job_id, at);

CREATE TABLE audit_heads (
    chain     TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    head_hash TEXT NOT NULL
);

CREATE FUNCTION gavel_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION gavel_audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION gavel_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION gavel_audit_append_only();
