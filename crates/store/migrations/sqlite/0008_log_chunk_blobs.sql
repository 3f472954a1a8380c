-- A large log chunk (a worker's upload of at least 64 KiB, packed) is kept as a blob of its
-- own in the blob store instead of in its row: written once, never copied into the
-- database's WAL and back out, and left where it is when the build's small chunks are
-- archived. The row names the blob and holds its wrapped data key.
ALTER TABLE cb_log_chunks ADD COLUMN chunk_blob TEXT;
ALTER TABLE cb_log_chunks ADD COLUMN chunk_blob_key BLOB;
