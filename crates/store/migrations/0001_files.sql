-- Uploaded files (purpose `batch`) and files the server writes (`batch_output`).
-- Portable SQL: the same migration runs on SQLite and PostgreSQL.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL
);
CREATE INDEX files_created ON files (created_at);
