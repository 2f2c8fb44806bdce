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

-- Every admin mutation and every failed authentication. Append-only: the trigger below
-- refuses updates and deletions.
CREATE TABLE audit_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    via     TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    remote  TEXT   NOT NULL,
    outcome TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
