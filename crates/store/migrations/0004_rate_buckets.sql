-- Rate-limit token buckets shared by replicas (docs/decisions/0015): one row per
-- organization, model, tier and dimension. `level` is what the bucket held at `at` (Unix
-- seconds, fractional); the refill since then is computed when it is next used.
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    level DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
