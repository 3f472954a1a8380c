-- The S3 API: buckets, object versions, their blob segments, multipart uploads and the
-- blobs waiting to be deleted. Object bytes live in the blob store; a row here is what makes
-- an object visible, so it is written only once its blobs are complete.
CREATE TABLE s3_buckets (
    name        TEXT PRIMARY KEY,
    region      TEXT NOT NULL,
    created     REAL NOT NULL,
    -- NULL while versioning was never configured, then 'Enabled' or 'Suspended'.
    versioning  TEXT,
    tags        TEXT NOT NULL DEFAULT '[]'
);

-- One row per object version (version_id 'null' in unversioned buckets). Delete markers
-- are versions without data.
CREATE TABLE s3_objects (
    id            INTEGER PRIMARY KEY,
    bucket        TEXT NOT NULL REFERENCES s3_buckets(name),
    key           TEXT NOT NULL,
    version_id    TEXT NOT NULL,
    latest        INTEGER NOT NULL,
    delete_marker INTEGER NOT NULL,
    size          BIGINT NOT NULL,
    etag          TEXT NOT NULL,
    -- JSON: content-type and the other stored headers, user metadata, checksum.
    meta          TEXT NOT NULL,
    tags          TEXT NOT NULL,
    parts         INTEGER,
    modified      REAL NOT NULL,
    UNIQUE (bucket, key, version_id)
);
CREATE INDEX s3_objects_latest ON s3_objects (bucket, key) WHERE latest = 1;

-- The blobs an object's bytes are in, in order (one for a plain PUT, one per part for a
-- multipart upload). wrapped_key is the blob's data key under the master key. Small
-- objects are kept inline instead: blob is NULL and data holds the sealed envelope (its
-- own data key wrapped inside).
CREATE TABLE s3_segments (
    object_id   INTEGER NOT NULL REFERENCES s3_objects(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    start       BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    blob        TEXT,
    sha256      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    data        BLOB,
    PRIMARY KEY (object_id, idx)
);

CREATE TABLE s3_uploads (
    upload_id   TEXT PRIMARY KEY,
    bucket      TEXT NOT NULL REFERENCES s3_buckets(name),
    key         TEXT NOT NULL,
    initiated   REAL NOT NULL,
    meta        TEXT NOT NULL,
    tags        TEXT NOT NULL,
    initiator   TEXT NOT NULL
);

CREATE TABLE s3_parts (
    upload_id   TEXT NOT NULL REFERENCES s3_uploads(upload_id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    blob        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    modified    REAL NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

-- Blobs no row refers to any more; deleted from the blob store after the transaction that
-- queued them commits (and again at start-up, should the process stop in between).
CREATE TABLE blob_trash (
    blob        TEXT PRIMARY KEY,
    queued      REAL NOT NULL
);
