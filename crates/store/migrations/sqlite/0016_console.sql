-- The console: IAM users' sign-in passwords (argon2 PHC strings) and signed-in sessions.
-- A session is found by the SHA-256 of its cookie's token (the token itself is never
-- stored); `user_name` NULL is the account root (signed in with the root access key).
CREATE TABLE iam_login_profiles (
    user_name     TEXT PRIMARY KEY REFERENCES iam_users(user_name) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created       REAL NOT NULL
);

CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT REFERENCES iam_users(user_name) ON DELETE CASCADE,
    arn        TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created    REAL NOT NULL,
    expires    REAL NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires);
