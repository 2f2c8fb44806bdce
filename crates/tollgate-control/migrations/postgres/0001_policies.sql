-- Domains and policies managed through the admin API, their change history, and the
-- store's revision (bumped by every change; nodes compare it to know they are current).
-- Domains that come from policy files are not stored here.

CREATE TABLE domains (
    name        TEXT   NOT NULL PRIMARY KEY,
    description TEXT   NOT NULL DEFAULT '',
    revision    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL, -- milliseconds since the UNIX epoch
    updated_at  BIGINT NOT NULL
);

CREATE TABLE policies (
    domain      TEXT   NOT NULL REFERENCES domains (name),
    name        TEXT   NOT NULL,
    spec        TEXT   NOT NULL, -- the policy as JSON (descriptor, rate_limit, ...)
    revision    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT   NOT NULL,
    PRIMARY KEY (domain, name)
);

CREATE TABLE policy_changes (
    revision BIGINT NOT NULL PRIMARY KEY,
    domain   TEXT   NOT NULL,
    policy   TEXT   NOT NULL,
    action   TEXT   NOT NULL CHECK (action IN ('created', 'updated', 'deleted')),
    actor    TEXT   NOT NULL,
    at       BIGINT NOT NULL,
    after    TEXT,             -- the policy after the change; NULL for a deletion
    before   TEXT              -- the policy before the change; NULL for a creation
);

CREATE INDEX policy_changes_by_policy ON policy_changes (domain, policy, revision);

CREATE TABLE store_revision (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value BIGINT  NOT NULL
);

INSERT INTO store_revision (id, value) VALUES (1, 0);
