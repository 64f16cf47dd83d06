-- Kizuna core schema. Portable SQL: integer milliseconds for times, TEXT JSON documents, no SQLite-only types,
-- so the PostgreSQL backend can apply the same migration with BIGINT/JSONB substitutions.

CREATE TABLE sources (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    write_key   TEXT NOT NULL UNIQUE,
    trusted     INTEGER NOT NULL,
    data_kind   TEXT NOT NULL,
    dedup_forever INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE profiles (
    id          INTEGER PRIMARY KEY,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE identities (
    identifier  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    profile_id  INTEGER
);
CREATE INDEX identities_by_profile ON identities(profile_id);

CREATE TABLE identity_links (
    signature   TEXT PRIMARY KEY,
    identifiers TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    trusted     INTEGER NOT NULL
);

CREATE TABLE merges (
    id          INTEGER PRIMARY KEY,
    into_profile INTEGER NOT NULL,
    from_profile INTEGER NOT NULL,
    identifier  TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    replayed    INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX merges_into ON merges(into_profile);
CREATE INDEX merges_from ON merges(from_profile);

CREATE TABLE identity_conflicts (
    id          INTEGER PRIMARY KEY,
    profile_id  INTEGER,
    identifier  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX identity_conflicts_by_profile ON identity_conflicts(profile_id);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    profile_id  INTEGER NOT NULL,
    source_id   INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    name        TEXT,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    primary_identifier TEXT NOT NULL,
    -- The message JSON, compressed (see kizuna-store/src/codec.rs): events are most of the bytes a brand stores.
    body        BLOB NOT NULL
);
CREATE INDEX events_by_profile ON events(profile_id, ts);

-- Replay protection on (source, messageId). Rows outlive the events they guard (erasure keeps them).
CREATE TABLE dedup (
    source_id   INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    expires_at  INTEGER,
    PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;

CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE erasures (
    profile_id  INTEGER NOT NULL,
    identifiers INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    erased_at   INTEGER NOT NULL
);
