-- IT administration commands (Policy Service): stored once, tracked per
-- target device, so a command to a whole group is one row here and one
-- row per device below.
CREATE TABLE admin_commands (
    id INTEGER PRIMARY KEY NOT NULL,
    -- lock | wipe_all | wipe_work | new_key
    kind TEXT NOT NULL,
    -- JSON: the new device password for lock, delay_secs for wipe_all.
    parameters TEXT NOT NULL DEFAULT '{}',
    requested_by TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE admin_command_targets (
    command_id INTEGER NOT NULL REFERENCES admin_commands(id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    -- queued | sent | acknowledged | failed | expired
    state TEXT NOT NULL,
    ref_id TEXT,
    detail TEXT NOT NULL DEFAULT '',
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (command_id, device_id)
);
CREATE INDEX admin_command_targets_by_state ON admin_command_targets(state);
