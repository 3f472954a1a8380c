-- CodeBuild report groups and reports. A report's test cases (at most 500) or coverage
-- lines are one JSON array beside it: they are written once, when the build uploads them.
CREATE TABLE cb_report_groups (
    arn     TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    doc     TEXT NOT NULL,
    created REAL NOT NULL
);

CREATE TABLE cb_reports (
    seq       INTEGER PRIMARY KEY,
    arn       TEXT NOT NULL UNIQUE,
    group_arn TEXT NOT NULL,
    build_id  TEXT NOT NULL,
    status    TEXT NOT NULL,
    created   REAL NOT NULL,
    doc       TEXT NOT NULL,
    items     TEXT NOT NULL
);
CREATE INDEX cb_reports_by_group ON cb_reports (group_arn, seq);

-- When InvalidateProjectCache was last called: caches saved before then are not restored.
ALTER TABLE cb_projects ADD COLUMN cache_invalidated REAL;

-- Build logs, sealed then compressed: a chunk's lines (JSON) are sealed under the master key
-- in `packed` while the build runs; when it ends they are compressed and archived into one
-- blob in the blob store (`blob_offset`/`blob_len` into it) and `packed` is cleared. Rows
-- with neither are from before this migration and keep their lines in `data`.
ALTER TABLE cb_log_chunks ADD COLUMN packed BLOB;
ALTER TABLE cb_log_chunks ADD COLUMN blob_offset BIGINT;
ALTER TABLE cb_log_chunks ADD COLUMN blob_len BIGINT;
ALTER TABLE cb_builds ADD COLUMN logs_archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cb_builds ADD COLUMN log_blob TEXT;
ALTER TABLE cb_builds ADD COLUMN log_blob_size BIGINT;
ALTER TABLE cb_builds ADD COLUMN log_blob_sha TEXT;
ALTER TABLE cb_builds ADD COLUMN log_blob_key BLOB;
CREATE INDEX cb_builds_unarchived ON cb_builds (seq) WHERE logs_archived = 0;
