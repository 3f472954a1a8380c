-- CodeBuild: projects (their definition kept as the API's Project document), builds (the
-- Build document plus the columns the queue and leases need) and build logs.
CREATE TABLE cb_projects (
    name              TEXT PRIMARY KEY,
    doc               TEXT NOT NULL,
    created           REAL NOT NULL,
    next_build_number BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE cb_builds (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    project        TEXT NOT NULL,
    number         BIGINT NOT NULL,
    -- IN_PROGRESS until the build ends; then SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED.
    status         TEXT NOT NULL,
    queued         REAL NOT NULL,
    -- When a worker took it (NULL while it waits in the queue).
    started        REAL,
    doc            TEXT NOT NULL,
    -- What a worker needs to run it (JSON); secrets in it are sealed under the master key.
    job            BLOB NOT NULL,
    worker         TEXT,
    lease_token    TEXT,
    lease_expires  REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cb_builds_by_project ON cb_builds (project, seq);
CREATE INDEX cb_builds_waiting ON cb_builds (status, started, seq);

-- A build's log in chunks of consecutive lines (one per upload from its worker): `data` is
-- a JSON array of [timestamp ms, line]; lines are numbered from 1 across chunks.
CREATE TABLE cb_log_chunks (
    build_id  TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    count     BIGINT NOT NULL,
    first_ts  BIGINT NOT NULL,
    last_ts   BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (build_id, first_seq)
);
