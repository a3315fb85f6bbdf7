-- The Messaging Agent's state in each user's mailbox: how far it has read
-- (IMAP UIDVALIDITY and the last UID forwarded), whether it can reach the
-- mailbox, and the user's mail settings.
CREATE TABLE mailbox_states (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uid_validity BIGINT,
    last_uid BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'starting' CHECK (state IN ('starting', 'watching', 'error')),
    error TEXT,
    error_at TIMESTAMP,
    save_sent BOOLEAN NOT NULL DEFAULT 1,
    updated_at TIMESTAMP NOT NULL
);

-- Where each message forwarded from a mailbox lives there (for "More",
-- attachments, replies and read/deleted reconciliation).
CREATE TABLE mail_items (
    message_id INTEGER PRIMARY KEY NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uid_validity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    message_id_header TEXT NOT NULL DEFAULT '',
    seen BOOLEAN NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    UNIQUE (user_id, uid_validity, uid)
);

-- Mail written on devices, kept until the mail server accepted it.
CREATE TABLE mail_outbox (
    id INTEGER PRIMARY KEY NOT NULL,
    ref_id TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pin TEXT NOT NULL,
    compose TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox(next_attempt_at);
