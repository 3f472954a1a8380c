-- Workers number their log lines and may have several uploads in flight, so chunks can
-- arrive out of order. `log_seq` is the last line of the build's log up to which every
-- line is stored (no gap before it): while the build runs, readers see no further, so a
-- reader's next token never passes a chunk still on its way.
ALTER TABLE cb_builds ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;
UPDATE cb_builds SET log_seq = (SELECT COALESCE(MAX(first_seq + count), 1) - 1 FROM cb_log_chunks WHERE build_id = cb_builds.id);
