-- CodeDeploy: applications, their revisions, deployment configs and groups, on-premises
-- instances, deployments (the orchestrator's state of each, as JSON) and host commands (the
-- durable queue agents poll: a row is written in the transaction that decided to run a
-- lifecycle event on a host).
CREATE TABLE cd_applications (
    region            TEXT NOT NULL,
    name              TEXT NOT NULL,
    application_id    TEXT NOT NULL,
    compute_platform  TEXT NOT NULL,
    created_at        REAL NOT NULL,
    PRIMARY KEY (region, name)
);

CREATE TABLE cd_revisions (
    region        TEXT NOT NULL,
    application   TEXT NOT NULL,
    -- the revision location as canonical JSON: one row per distinct revision
    revision_key  TEXT NOT NULL,
    description   TEXT,
    registered_at REAL NOT NULL,
    first_used_at REAL,
    last_used_at  REAL,
    -- JSON list of the deployment groups it was deployed to
    groups        TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (region, application, revision_key),
    FOREIGN KEY (region, application) REFERENCES cd_applications (region, name) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE cd_deployment_configs (
    region      TEXT NOT NULL,
    name        TEXT NOT NULL,
    doc         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (region, name)
);

CREATE TABLE cd_deployment_groups (
    region       TEXT NOT NULL,
    application  TEXT NOT NULL,
    name         TEXT NOT NULL,
    group_id     TEXT NOT NULL,
    doc          TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (region, application, name),
    FOREIGN KEY (region, application) REFERENCES cd_applications (region, name) ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE cd_instances (
    region      TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- the IAM user (or session) the instance's agent signs as: its host identifier
    iam_arn     TEXT NOT NULL,
    registered  INTEGER NOT NULL,
    doc         TEXT NOT NULL,
    PRIMARY KEY (region, name)
);
CREATE INDEX cd_instances_by_iam ON cd_instances (iam_arn, registered);

-- The hosts each load balancer target group sends traffic to (JSON list of instance names).
CREATE TABLE cd_traffic (
    region        TEXT NOT NULL,
    target_group  TEXT NOT NULL,
    instances     TEXT NOT NULL,
    PRIMARY KEY (region, target_group)
);

CREATE TABLE cd_deployments (
    deployment_id  TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    application    TEXT NOT NULL,
    group_name     TEXT NOT NULL,
    status         TEXT NOT NULL,
    -- 1 running, 2 succeeded and waiting to deregister its original hosts, 0 done
    active         INTEGER NOT NULL,
    state          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    -- who outside CodeDeploy asked for it (a pipeline's action execution id)
    external_id    TEXT
);
CREATE UNIQUE INDEX cd_deployments_external ON cd_deployments (region, external_id);
CREATE INDEX cd_deployments_by_group ON cd_deployments (region, application, group_name, created_at);
CREATE INDEX cd_deployments_active ON cd_deployments (active);

CREATE TABLE cd_host_commands (
    command_id      TEXT PRIMARY KEY,
    deployment_id   TEXT NOT NULL REFERENCES cd_deployments (deployment_id) ON DELETE CASCADE,
    region          TEXT NOT NULL,
    instance        TEXT NOT NULL,
    -- the host identifier the agent polls with (the instance's IAM ARN)
    host            TEXT NOT NULL,
    lifecycle_event TEXT NOT NULL,
    -- Pending (not yet taken) | Dispatched (taken) | InProgress (acknowledged) | Live
    -- (its agent heartbeats) | Succeeded | Failed
    status          TEXT NOT NULL,
    nonce           INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX cd_host_commands_by_host ON cd_host_commands (host, status, created_at);
CREATE INDEX cd_host_commands_open ON cd_host_commands (status);
