-- IAM: users, access keys (secret encrypted with the master key), inline policies and
-- service-specific (git) credentials (password stored as a salted hash).
CREATE TABLE iam_users (
    user_name   TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL DEFAULT '/',
    created_at  REAL NOT NULL
);
CREATE TABLE iam_access_keys (
    access_key_id     TEXT PRIMARY KEY,
    user_name         TEXT NOT NULL REFERENCES iam_users(user_name) ON DELETE CASCADE,
    secret_ciphertext BLOB NOT NULL,
    status            TEXT NOT NULL,
    created_at        REAL NOT NULL
);
CREATE INDEX iam_access_keys_user ON iam_access_keys(user_name);
CREATE TABLE iam_user_policies (
    user_name   TEXT NOT NULL REFERENCES iam_users(user_name) ON DELETE CASCADE,
    policy_name TEXT NOT NULL,
    document    TEXT NOT NULL,
    PRIMARY KEY (user_name, policy_name)
);
CREATE TABLE iam_service_credentials (
    credential_id     TEXT PRIMARY KEY,
    user_name         TEXT NOT NULL REFERENCES iam_users(user_name) ON DELETE CASCADE,
    service_name      TEXT NOT NULL,
    service_user_name TEXT NOT NULL UNIQUE,
    password_salt     TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        REAL NOT NULL
);

-- CodeCommit repositories. Git data lives in DATA/repos/<repository_id>.git, so names never
-- reach the filesystem and a rename is a single row update.
CREATE TABLE cc_repositories (
    repository_id  TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT,
    default_branch TEXT,
    kms_key_id     TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
-- The last ref state recorded (and announced as events) per repository.
CREATE TABLE cc_refs (
    repository_id TEXT NOT NULL REFERENCES cc_repositories(repository_id) ON DELETE CASCADE,
    ref_name      TEXT NOT NULL,
    commit_id     TEXT NOT NULL,
    PRIMARY KEY (repository_id, ref_name)
);

-- Tags of any resource, keyed by the resource's stable id (not its ARN, which renames change).
CREATE TABLE resource_tags (
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    tag_key       TEXT NOT NULL,
    tag_value     TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, tag_key)
);

-- Transactional outbox of events in EventBridge's shape; consumers read it in seq order.
CREATE TABLE event_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    event_time  TEXT NOT NULL,
    body        TEXT NOT NULL
);
