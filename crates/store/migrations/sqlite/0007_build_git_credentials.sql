-- Git credentials of running builds whose buildspec says `git-credential-helper: yes`: the
-- build's git commands reach this server's repositories as the principal that started the
-- build, until the build ends (its row goes with it). Only a hash of the password is kept.
CREATE TABLE cb_git_credentials (
    username TEXT PRIMARY KEY,
    build_id TEXT NOT NULL,
    password_sha256 TEXT NOT NULL,
    principal_arn TEXT NOT NULL
);
CREATE INDEX cb_git_credentials_build ON cb_git_credentials (build_id);
