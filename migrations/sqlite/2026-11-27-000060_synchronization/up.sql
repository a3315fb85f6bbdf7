-- The Synchronization Service (organizer data, backup, diagnostics).

-- How each organizer database is synchronized: on or off, which way, and
-- who wins when both sides changed a record. One row per database.
CREATE TABLE sync_settings (
    database TEXT PRIMARY KEY NOT NULL
        CHECK (database IN ('contacts', 'calendar', 'tasks', 'memos')),
    enabled BOOLEAN NOT NULL DEFAULT 1,
    direction TEXT NOT NULL DEFAULT 'bidirectional'
        CHECK (direction IN ('server_to_device', 'device_to_server', 'bidirectional')),
    conflict TEXT NOT NULL DEFAULT 'server_wins'
        CHECK (conflict IN ('server_wins', 'device_wins')),
    updated_at TIMESTAMP NOT NULL
);
INSERT INTO sync_settings (database, updated_at) VALUES
    ('contacts', CURRENT_TIMESTAMP),
    ('calendar', CURRENT_TIMESTAMP),
    ('tasks', CURRENT_TIMESTAMP),
    ('memos', CURRENT_TIMESTAMP);

-- Per user and database: where synchronization stands (slow sync running,
-- in sync, or an error in words), and the organizer server's change marker
-- (WebDAV sync token, else the collection's CTag).
CREATE TABLE sync_states (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    database TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('slow_sync', 'in_sync', 'error')),
    sync_token TEXT,
    ctag TEXT,
    error TEXT,
    error_at TIMESTAMP,
    last_sync_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, database)
);

-- Every record the user's device holds, as the organizer server knows it:
-- its UID (the identity on both sides), where it lives (href), the
-- server's ETag, and a digest of what the device was last given, so an
-- echo of our own write is recognised and never sent back.
CREATE TABLE sync_items (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    database TEXT NOT NULL,
    uid TEXT NOT NULL,
    href TEXT NOT NULL,
    etag TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (user_id, database, uid)
);
CREATE INDEX sync_items_by_href ON sync_items(user_id, database, href);

-- Records that could not be synchronized (unreadable on the server,
-- refused by it), for the administrator; newest kept per item.
CREATE TABLE sync_item_errors (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    database TEXT NOT NULL,
    item TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('server', 'device')),
    message TEXT NOT NULL,
    at TIMESTAMP NOT NULL,
    UNIQUE (user_id, database, item, side)
);

-- Wireless backups of a device's settings and organizer data, restored
-- onto a replacement device during its activation.
CREATE TABLE device_backups (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pin TEXT NOT NULL,
    taken_at TIMESTAMP NOT NULL,
    settings TEXT NOT NULL,
    items TEXT NOT NULL,
    item_count INTEGER NOT NULL
);
CREATE INDEX device_backups_by_user ON device_backups(user_id, taken_at);
