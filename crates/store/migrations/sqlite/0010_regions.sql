-- Every regional resource belongs to a region: the same name in two regions is two
-- resources. What existed before belongs to the server's default region, which the migration
-- runner provides as `migration_settings.default_region` (a temporary table).
--
-- Tables whose uniqueness involves a name are rebuilt (SQLite cannot change a constraint in
-- place); the runner turns foreign keys off around migrations, so dropping a parent table
-- does not cascade to its children, and checks them all before committing.

-- CodeCommit repositories: unique per region.
CREATE TABLE cc_repositories_new (
    repository_id  TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT,
    default_branch TEXT,
    kms_key_id     TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    UNIQUE (region, name)
);
INSERT INTO cc_repositories_new (repository_id, region, name, description, default_branch, kms_key_id, created_at, updated_at)
    SELECT repository_id, (SELECT default_region FROM migration_settings), name, description, default_branch, kms_key_id, created_at, updated_at
    FROM cc_repositories;
DROP TABLE cc_repositories;
ALTER TABLE cc_repositories_new RENAME TO cc_repositories;

-- CodeBuild projects: keyed by region and name.
CREATE TABLE cb_projects_new (
    region            TEXT NOT NULL,
    name              TEXT NOT NULL,
    doc               TEXT NOT NULL,
    created           REAL NOT NULL,
    next_build_number BIGINT NOT NULL DEFAULT 1,
    cache_invalidated REAL,
    PRIMARY KEY (region, name)
);
INSERT INTO cb_projects_new (region, name, doc, created, next_build_number, cache_invalidated)
    SELECT (SELECT default_region FROM migration_settings), name, doc, created, next_build_number, cache_invalidated
    FROM cb_projects;
DROP TABLE cb_projects;
ALTER TABLE cb_projects_new RENAME TO cb_projects;

-- Builds and reports keep their globally unique ids; each records its region.
ALTER TABLE cb_builds ADD COLUMN region TEXT NOT NULL DEFAULT '';
UPDATE cb_builds SET region = (SELECT default_region FROM migration_settings);
DROP INDEX cb_builds_by_project;
CREATE INDEX cb_builds_by_project ON cb_builds (region, project, seq);
CREATE INDEX cb_builds_by_region ON cb_builds (region, seq);

ALTER TABLE cb_reports ADD COLUMN region TEXT NOT NULL DEFAULT '';
UPDATE cb_reports SET region = (SELECT default_region FROM migration_settings);
CREATE INDEX cb_reports_by_region ON cb_reports (region, seq);

-- Report groups: names unique per region (their ARNs already name the region).
CREATE TABLE cb_report_groups_new (
    arn     TEXT PRIMARY KEY,
    region  TEXT NOT NULL,
    name    TEXT NOT NULL,
    doc     TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (region, name)
);
INSERT INTO cb_report_groups_new (arn, region, name, doc, created)
    SELECT arn, (SELECT default_region FROM migration_settings), name, doc, created
    FROM cb_report_groups;
DROP TABLE cb_report_groups;
ALTER TABLE cb_report_groups_new RENAME TO cb_report_groups;

-- Parameter Store: parameters and their versions keyed by region and name.
CREATE TABLE ssm_parameters_new (
    region         TEXT NOT NULL,
    name           TEXT NOT NULL,
    type           TEXT NOT NULL,
    data_type      TEXT NOT NULL,
    version        BIGINT NOT NULL,
    last_modified  REAL NOT NULL,
    last_modified_user TEXT NOT NULL,
    PRIMARY KEY (region, name)
);
INSERT INTO ssm_parameters_new (region, name, type, data_type, version, last_modified, last_modified_user)
    SELECT (SELECT default_region FROM migration_settings), name, type, data_type, version, last_modified, last_modified_user
    FROM ssm_parameters;
CREATE TABLE ssm_parameter_versions_new (
    region         TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        BIGINT NOT NULL,
    type           TEXT NOT NULL,
    data_type      TEXT NOT NULL,
    value          BLOB NOT NULL,
    description    TEXT,
    key_id         TEXT,
    allowed_pattern TEXT,
    tier           TEXT NOT NULL,
    modified       REAL NOT NULL,
    modified_user  TEXT NOT NULL,
    PRIMARY KEY (region, name, version),
    FOREIGN KEY (region, name) REFERENCES ssm_parameters (region, name) ON DELETE CASCADE
);
INSERT INTO ssm_parameter_versions_new (region, name, version, type, data_type, value, description, key_id, allowed_pattern, tier, modified, modified_user)
    SELECT (SELECT default_region FROM migration_settings), name, version, type, data_type, value, description, key_id, allowed_pattern, tier, modified, modified_user
    FROM ssm_parameter_versions;
DROP TABLE ssm_parameter_versions;
DROP TABLE ssm_parameters;
ALTER TABLE ssm_parameters_new RENAME TO ssm_parameters;
ALTER TABLE ssm_parameter_versions_new RENAME TO ssm_parameter_versions;

-- A parameter's tags are keyed by REGION:NAME (names cannot contain ':').
UPDATE resource_tags SET resource_id = (SELECT default_region FROM migration_settings) || ':' || resource_id
    WHERE resource_type = 'parameter';
