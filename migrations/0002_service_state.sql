-- What clients asked of each service, so that the services running when streamd stopped
-- run again when it starts. Overrides are kept as JSON text.
CREATE TABLE service_state (
    name TEXT PRIMARY KEY,
    running BOOLEAN NOT NULL,
    interval_ms BIGINT,
    params TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One-time facts about this database, e.g. that the seed users were inserted.
CREATE TABLE streamd_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
