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
