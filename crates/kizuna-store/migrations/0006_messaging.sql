-- Messaging: versioned templates, the outbox and delivery log (one row per message, its decisions beside it),
-- suppressions, engagement touches and attributed orders.

CREATE TABLE msg_templates (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    -- JSON: the template definition (channel, parts, purpose, topic).
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

-- The current version of each template; deleted templates keep their versions for the delivery log.
CREATE TABLE msg_template_heads (
    name        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE msg_messages (
    id               TEXT PRIMARY KEY,
    -- The caller's key (a flow step run, a campaign send): the same key never makes a second message.
    idempotency_key  TEXT UNIQUE,
    profile_id       INTEGER,
    channel          TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    template         TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    flow             TEXT,
    campaign         TEXT,
    -- JSON: the triggering event and extra variables.
    context          TEXT NOT NULL,
    -- The address it went to (set when sent), or the test address.
    recipient        TEXT,
    state            TEXT NOT NULL,
    reason           TEXT,
    due_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    provider_id      TEXT,
    test             INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    opened_at        INTEGER,
    clicked_at       INTEGER
);

-- The worker reads only what is due.
CREATE INDEX msg_messages_due ON msg_messages (due_at) WHERE state IN ('queued', 'deferred');
CREATE INDEX msg_messages_profile ON msg_messages (profile_id, channel, sent_at);
CREATE INDEX msg_messages_sending ON msg_messages (state) WHERE state = 'sending';
CREATE INDEX msg_messages_created ON msg_messages (created_at);

CREATE TABLE msg_decisions (
    message_id  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX msg_decisions_message ON msg_decisions (message_id);

CREATE TABLE msg_suppressions (
    channel     TEXT NOT NULL,
    address     TEXT NOT NULL,
    -- hard_bounce, complaint, unsubscribe, manual
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (channel, address)
);

CREATE TABLE msg_touches (
    message_id  TEXT NOT NULL,
    profile_id  INTEGER,
    -- open, click
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    machine     INTEGER NOT NULL,
    url         TEXT
);
CREATE INDEX msg_touches_profile ON msg_touches (profile_id, at);
CREATE INDEX msg_touches_message ON msg_touches (message_id);

CREATE TABLE msg_attributions (
    order_id    TEXT PRIMARY KEY,
    profile_id  INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    touch       TEXT NOT NULL,
    revenue     REAL NOT NULL,
    currency    TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX msg_attributions_message ON msg_attributions (message_id);

-- Per-store messaging settings kept with the data (the tracking secret).
CREATE TABLE msg_settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
