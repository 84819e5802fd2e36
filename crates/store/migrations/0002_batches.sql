-- Batches (Groq's Batch object) and their input lines, one row each, so that workers on any
-- replica can claim lines transactionally and results are written once per line.
-- Portable SQL: the same migration runs on SQLite and PostgreSQL.
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    input_file_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT,
    errors TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT,
    -- The replica working on the batch itself (validation, expiry, finalization) and until
    -- when (unix milliseconds); a lapsed lease may be taken over.
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX batches_status ON batches (status);

-- state: pending -> running -> done | failed, or pending -> expired | cancelled.
-- result: the output or error file line (JSON) of a done or failed line.
CREATE TABLE batch_lines (
    batch_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    custom_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    claimed_by TEXT,
    lease_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line_no)
);
CREATE INDEX batch_lines_state ON batch_lines (state, batch_id);
