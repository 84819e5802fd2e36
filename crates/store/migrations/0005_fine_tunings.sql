-- LoRA adapters registered through `POST /v1/fine_tunings` (Groq's fine-tuning API).
-- Portable SQL: the same migration runs on SQLite and PostgreSQL.
-- fine_tuned_model: the model id chat completions take (`ft:<base>:<org>/<name>-<hex>`).
-- The converted adapter lives beside the files, under the data directory's adapters/<id>.gguf.
CREATE TABLE fine_tunings (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    name TEXT NOT NULL,
    base_model TEXT NOT NULL,
    kind TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    fine_tuned_model TEXT NOT NULL UNIQUE
);
CREATE INDEX fine_tunings_org ON fine_tunings (org_id, created_at);
