-- Wireless activations waiting for the device's key confirmation, kept
-- here so that a restart of the server between its challenge and the
-- device's confirmation loses nothing. An exchange is named by the PIN and
-- the RefID of the challenge; a user may have several (a stranger's
-- requests do not replace the genuine one), at most 8, each for 10 minutes.
-- `sealed_keys` holds the session's transport key and both key
-- confirmations, sealed with the master key like device keys.
-- `attempt_counted` says a wrong confirmation already cost the activation
-- password one attempt, so more cost nothing.
CREATE TABLE activation_exchanges (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pin TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    key_id BIGINT NOT NULL,
    sealed_keys BLOB NOT NULL,
    model TEXT NOT NULL,
    os_version TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    attempt_counted BOOLEAN NOT NULL DEFAULT 0,
    UNIQUE (pin, ref_id)
);
CREATE INDEX activation_exchanges_by_user ON activation_exchanges(user_id, started_at);
CREATE INDEX activation_exchanges_by_start ON activation_exchanges(started_at);

-- Activation requests answered (SHA-256 of their etp.dat, hex), so the same
-- request e-mailed again is refused as REPLAYED. Recorded only once a
-- request passed the checks; kept as long as a password can live.
CREATE TABLE answered_activation_requests (
    digest TEXT PRIMARY KEY NOT NULL,
    answered_at TIMESTAMP NOT NULL
);
CREATE INDEX answered_activation_requests_by_time ON answered_activation_requests(answered_at);
