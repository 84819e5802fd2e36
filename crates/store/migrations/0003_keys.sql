-- Managed API keys (`peregrine keys`), and the organization owning each file and batch.
-- Portable SQL: the same migration runs on SQLite and PostgreSQL.
-- secret_hash: hex SHA-256 of the whole secret; the secret itself is never stored.
-- hint: the secret's first and last characters, for `keys list` (`gsk_ab...yz`).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    org_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
-- Rows from before keys had owners belong to the default organization, as do requests
-- served without authentication or with a static key.
ALTER TABLE files ADD COLUMN org_id TEXT NOT NULL DEFAULT 'org_default';
ALTER TABLE batches ADD COLUMN org_id TEXT NOT NULL DEFAULT 'org_default';
CREATE INDEX files_org ON files (org_id, created_at);
CREATE INDEX batches_org ON batches (org_id, id);
