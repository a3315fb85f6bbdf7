-- The audit log is keyed (HMAC-SHA-256) from entry `keyed_from` on, with a
-- key kept in a file beside the master key (never here). This row only
-- says that such a key exists, so that a lost key file is reported instead
-- of replaced; the boundary that counts is the one in the key file.
CREATE TABLE audit_keying (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    keyed_from BIGINT NOT NULL
);
