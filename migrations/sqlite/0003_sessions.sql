-- Approver page sessions, in the database so every replica honours them.
-- Only the sha256 of the session secret is stored; the secret lives in the
-- browser's cookie. The CSRF token is derived from the secret, so nothing
-- else about a session needs keeping.

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,                -- sha256 hex of the cookie's secret
    identity   TEXT NOT NULL,                   -- the person, by name
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions (expires_at);
