-- Expand only: API keys and the audit log, two new tables that nodes of the previous
-- release never read.

-- An API key is `tg_<id>_<secret>`. Only the SHA-256 of the whole key is stored: a leaked
-- table does not leak usable keys.
CREATE TABLE api_keys (
    id           TEXT   NOT NULL PRIMARY KEY, -- the key's public part, shown in listings
    name         TEXT   NOT NULL,
    role         TEXT   NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    domains      TEXT   NOT NULL,             -- JSON array of domain names; ["*"] is every domain
    hash         TEXT   NOT NULL,             -- hex SHA-256 of the whole key
    created_at   BIGINT NOT NULL,             -- milliseconds since the UNIX epoch
    created_by   TEXT   NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

-- Every admin mutation and every failed authentication. Append-only: the triggers below
-- refuse updates and deletions.
CREATE TABLE audit_events (
    id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    via     TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    remote  TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);

CREATE TRIGGER audit_events_append_only_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_append_only_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
