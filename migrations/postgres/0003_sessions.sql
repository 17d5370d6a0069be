-- Approver page sessions, in the database so every replica honours them.
-- Only the sha256 of the session secret is stored; the secret lives in the
-- browser's cookie. The CSRF token is derived from the secret, so nothing
-- else about a session needs keeping.

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    identity   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
