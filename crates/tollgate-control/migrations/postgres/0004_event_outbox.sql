-- Expand only: the transactional outbox. Every change and every audit entry writes its
-- event here in the change's own transaction; a relay publishes each row to NATS
-- JetStream (Nats-Msg-Id = id), then sets sent_at. Nodes of the previous release never
-- read it.
CREATE TABLE event_outbox (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type    TEXT   NOT NULL CHECK (type IN ('audit', 'change')),
    domain  TEXT,                 -- NULL: about no domain (API keys, failed sign-ins)
    data    TEXT   NOT NULL,      -- the event's data, JSON
    at      BIGINT NOT NULL,      -- milliseconds since the UNIX epoch
    sent_at BIGINT                -- NULL until JetStream acknowledged it
);

-- What relays read: the unsent rows, oldest first.
CREATE INDEX event_outbox_unsent ON event_outbox (id) WHERE sent_at IS NULL;
