-- Parameter Store: one row per parameter (its latest state) and one per version. Values of
-- SecureString parameters are envelope-encrypted (a data key per value, wrapped by the
-- master key); String and StringList values are stored as given.
CREATE TABLE ssm_parameters (
    name           TEXT PRIMARY KEY,
    type           TEXT NOT NULL,
    data_type      TEXT NOT NULL,
    version        BIGINT NOT NULL,
    last_modified  REAL NOT NULL,
    last_modified_user TEXT NOT NULL
);
CREATE TABLE ssm_parameter_versions (
    name           TEXT NOT NULL REFERENCES ssm_parameters(name) ON DELETE CASCADE,
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
    PRIMARY KEY (name, version)
);
