-- StartBuild's idempotencyToken: a repeat of a request with the same token (within five
-- minutes) answers the build it started; `request_sha256` tells a repeat from a changed
-- request.
ALTER TABLE cb_builds ADD COLUMN idempotency_token TEXT;
ALTER TABLE cb_builds ADD COLUMN request_sha256 TEXT;
CREATE INDEX cb_builds_by_token ON cb_builds (region, idempotency_token) WHERE idempotency_token IS NOT NULL;
