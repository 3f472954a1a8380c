-- CodePipeline webhooks: a definition per (region, name), reached by the random token in
-- its URL; the GITHUB_HMAC secret is kept sealed with the master key (never in plain text).
CREATE TABLE cp_webhooks (
    region          TEXT NOT NULL,
    name            TEXT NOT NULL,
    token           TEXT NOT NULL UNIQUE,
    pipeline        TEXT NOT NULL,
    -- the definition without its secret token, as JSON
    definition      TEXT NOT NULL,
    secret          BLOB,
    registered      INTEGER NOT NULL DEFAULT 0,
    last_triggered  REAL,
    created_at      REAL NOT NULL,
    PRIMARY KEY (region, name)
);
