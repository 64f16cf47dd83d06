-- Dictionaries that event bodies are compressed against (kizuna-store/src/codec.rs), trained on the store's own
-- first events. A body names its dictionary by id (a hash of the dictionary's bytes); a dictionary is never
-- deleted while a body may need it.
CREATE TABLE body_dictionaries (
    id          INTEGER PRIMARY KEY,
    dictionary  BLOB NOT NULL,
    samples     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
