-- Activation passwords: one per user, kept only as an argon2 hash, with an
-- expiry and a count of failed attempts (invalid after 5; deleted once used).
CREATE TABLE activation_passwords (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0)
);

-- Every step of a user's activation (Initializing … Completed) with its time.
CREATE TABLE activation_events (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX activation_events_by_user ON activation_events(user_id, id);

-- The domain signing key (Ed25519) that signs IT policies and IT admin
-- commands: one row, the private key sealed with the master key.
CREATE TABLE domain_keys (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    public_key BLOB NOT NULL,
    sealed_private_key BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
