-- How a build's archived log blob holds its chunks: 0 = each chunk deflated (the JSON or
-- binary batch inside), 1 = each chunk as the live chunk held it (a binary batch,
-- LZ4-compressed as the worker sent it), read without inflating.
ALTER TABLE cb_builds ADD COLUMN log_blob_format INTEGER NOT NULL DEFAULT 0;
