-- CodePipeline: pipelines (each version kept), executions (the engine's state of each, as
-- JSON), action runs (the durable queue of effects: a row is written in the transaction
-- that decided to run the action, and performed after it commits), custom-action jobs, and
-- where the trigger reader is in the event outbox.
CREATE TABLE cp_pipelines (
    region       TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    declaration  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    -- inbound transitions that are disabled: JSON {stage: {reason, by, at}}
    transitions  TEXT NOT NULL DEFAULT '{}',
    -- the execution that entered each stage last: JSON {stage: execution id}
    latest       TEXT NOT NULL DEFAULT '{}',
    -- the principal that created or last updated the pipeline: its actions act as it
    principal    TEXT NOT NULL,
    PRIMARY KEY (region, name)
);

CREATE TABLE cp_pipeline_versions (
    region       TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    declaration  TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (region, name, version),
    FOREIGN KEY (region, name) REFERENCES cp_pipelines (region, name) ON DELETE CASCADE
);

CREATE TABLE cp_executions (
    execution_id  TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    pipeline      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    status        TEXT NOT NULL,
    active        INTEGER NOT NULL,
    state         TEXT NOT NULL,
    -- trigger, resolved variables, source revisions (JSON; the engine never reads it)
    meta          TEXT NOT NULL,
    client_token  TEXT,
    started_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    FOREIGN KEY (region, pipeline) REFERENCES cp_pipelines (region, name) ON DELETE CASCADE
);
CREATE INDEX cp_executions_by_pipeline ON cp_executions (region, pipeline, seq);
CREATE INDEX cp_executions_active ON cp_executions (active, region, pipeline);
CREATE UNIQUE INDEX cp_executions_token ON cp_executions (region, pipeline, client_token);

CREATE TABLE cp_action_runs (
    action_execution_id TEXT PRIMARY KEY,
    execution_id  TEXT NOT NULL REFERENCES cp_executions (execution_id) ON DELETE CASCADE,
    region        TEXT NOT NULL,
    pipeline      TEXT NOT NULL,
    stage         TEXT NOT NULL,
    action        TEXT NOT NULL,
    -- queued (decided, not started) | running (started: external_id says where) | done
    status        TEXT NOT NULL,
    job           TEXT NOT NULL,
    external_id   TEXT,
    detail        TEXT NOT NULL,
    started_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX cp_action_runs_open ON cp_action_runs (status);
CREATE INDEX cp_action_runs_by_pipeline ON cp_action_runs (region, pipeline, started_at);

-- How far each outbox reader has read (the trigger reader: `codepipeline-triggers`).
CREATE TABLE outbox_cursors (
    reader  TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL
);

-- Custom action types (CreateCustomActionType) and the jobs their workers poll for.
CREATE TABLE cp_action_types (
    region      TEXT NOT NULL,
    category    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    version     TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (region, category, provider, version)
);

CREATE TABLE cp_jobs (
    job_id              TEXT PRIMARY KEY,
    region              TEXT NOT NULL,
    category            TEXT NOT NULL,
    provider            TEXT NOT NULL,
    version             TEXT NOT NULL,
    action_execution_id TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    -- Queued | Dispatched | InProgress | Succeeded | Failed
    status              TEXT NOT NULL,
    data                TEXT NOT NULL,
    result              TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL
);
CREATE INDEX cp_jobs_queue ON cp_jobs (region, category, provider, version, status, created_at);
