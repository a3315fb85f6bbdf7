-- The BlackBerry Configuration Database (seed): configuration and state
-- used by every component. Timestamps are UTC.

-- Marks the file as Bramble's, so a foreign SQLite file is never migrated.
PRAGMA application_id = 1112689986;

-- Connection from this server to the wireless network (SRP, CAL).
CREATE TABLE srp_connections (
    id INTEGER PRIMARY KEY NOT NULL,
    srp_id TEXT NOT NULL UNIQUE,
    -- SRP authentication key, sealed with the local master key.
    srp_key_sealed BLOB NOT NULL,
    relay_host TEXT NOT NULL,
    relay_port INTEGER NOT NULL DEFAULT 3101,
    cal_licences INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL
);

-- Server instances of the BlackBerry Domain and their Messaging Agents.
CREATE TABLE servers (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE messaging_agents (
    id INTEGER PRIMARY KEY NOT NULL,
    server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    max_users INTEGER NOT NULL DEFAULT 500,
    UNIQUE (server_id, name)
);

-- Smartphone user list, with mailbox information (seed).
CREATE TABLE users (
    id INTEGER PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    mailbox_login TEXT NOT NULL,
    account_status TEXT NOT NULL DEFAULT 'active',
    activation_status TEXT NOT NULL DEFAULT 'not_activated',
    messaging_agent_id INTEGER REFERENCES messaging_agents(id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE groups (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members(user_id);

-- Administrators of the console and their roles.
CREATE TABLE administrators (
    id INTEGER PRIMARY KEY NOT NULL,
    login TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE roles (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    builtin BOOLEAN NOT NULL DEFAULT 0,
    -- JSON array of permission names.
    permissions TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE administrator_roles (
    administrator_id INTEGER NOT NULL REFERENCES administrators(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (administrator_id, role_id)
);

INSERT INTO roles (name, builtin, permissions) VALUES
    ('Security Administrator', 1, '["*"]'),
    ('Enterprise Administrator', 1, '["users.*","groups.*","policies.*","software.*","servers.*","devices.*","filters.*"]'),
    ('Senior Helpdesk', 1, '["users.read","users.write","users.activation","devices.*","groups.read","policies.read"]'),
    ('Junior Helpdesk', 1, '["users.read","users.activation","devices.read"]'),
    ('Server Only', 1, '["servers.*"]'),
    ('User Only', 1, '["users.*","devices.*"]');

-- IT policies: typed rules, assigned to users or groups with a rank.
CREATE TABLE it_policies (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    is_default BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX it_policies_one_default ON it_policies(is_default) WHERE is_default = 1;

CREATE TABLE it_policy_rules (
    policy_id INTEGER NOT NULL REFERENCES it_policies(id) ON DELETE CASCADE,
    rule TEXT NOT NULL,
    -- JSON value, checked against the rule catalog by the Policy Service.
    value TEXT NOT NULL,
    PRIMARY KEY (policy_id, rule)
);

CREATE TABLE it_policy_assignments (
    id INTEGER PRIMARY KEY NOT NULL,
    policy_id INTEGER NOT NULL REFERENCES it_policies(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    rank INTEGER NOT NULL DEFAULT 0,
    CHECK ((user_id IS NULL) <> (group_id IS NULL)),
    UNIQUE (user_id),
    UNIQUE (group_id)
);

-- Software configurations: applications required / optional / disallowed.
CREATE TABLE software_configurations (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE software_applications (
    id INTEGER PRIMARY KEY NOT NULL,
    configuration_id INTEGER NOT NULL REFERENCES software_configurations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    disposition TEXT NOT NULL CHECK (disposition IN ('required', 'optional', 'disallowed')),
    UNIQUE (configuration_id, name)
);

CREATE TABLE software_assignments (
    id INTEGER PRIMARY KEY NOT NULL,
    configuration_id INTEGER NOT NULL REFERENCES software_configurations(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);

-- Smartphones (PIN), their diagnostics and their transport keys.
CREATE TABLE devices (
    id INTEGER PRIMARY KEY NOT NULL,
    pin TEXT NOT NULL UNIQUE,
    user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    model TEXT NOT NULL DEFAULT '',
    os_version TEXT NOT NULL DEFAULT '',
    carrier TEXT NOT NULL DEFAULT '',
    applied_policy_id INTEGER REFERENCES it_policies(id) ON DELETE SET NULL,
    policy_applied_at TIMESTAMP,
    last_contact_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX devices_by_user ON devices(user_id);

CREATE TABLE device_diagnostics (
    id INTEGER PRIMARY KEY NOT NULL,
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    reported_at TIMESTAMP NOT NULL,
    -- JSON document as reported by the device.
    report TEXT NOT NULL
);
CREATE INDEX device_diagnostics_by_device ON device_diagnostics(device_id, reported_at);

-- Device transport keys, sealed with the local master key: never in clear.
CREATE TABLE device_keys (
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    slot TEXT NOT NULL CHECK (slot IN ('current', 'pending', 'previous')),
    key_id INTEGER NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (device_id, slot)
);

-- Service book records sent to devices (CMIME, SYNC, IPPP, …).
CREATE TABLE service_books (
    id INTEGER PRIMARY KEY NOT NULL,
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    uid TEXT NOT NULL,
    -- JSON record content.
    content TEXT NOT NULL,
    sent_at TIMESTAMP,
    UNIQUE (device_id, kind, uid)
);

-- Message filters: global ones (user_id NULL) apply before a user's own.
CREATE TABLE message_filters (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    -- JSON list of conditions on from, to/cc/bcc, subject, importance.
    conditions TEXT NOT NULL DEFAULT '[]',
    action TEXT NOT NULL CHECK (action IN ('forward', 'forward_priority', 'do_not_forward'))
);
CREATE INDEX message_filters_by_user ON message_filters(user_id, position);

-- Message state by RefID, and the time it passed each hop.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    ref_id TEXT NOT NULL UNIQUE,
    user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    device_id INTEGER REFERENCES devices(id) ON DELETE SET NULL,
    direction TEXT NOT NULL CHECK (direction IN ('to_device', 'from_device')),
    status TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX messages_by_user ON messages(user_id, created_at);

CREATE TABLE message_hops (
    id INTEGER PRIMARY KEY NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    hop TEXT NOT NULL,
    at TIMESTAMP NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX message_hops_by_message ON message_hops(message_id, at);

-- Individual and global statistics (seed). user_id NULL is the global row.
CREATE TABLE statistics (
    id INTEGER PRIMARY KEY NOT NULL,
    user_id INTEGER UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    forwarded BIGINT NOT NULL DEFAULT 0,
    filtered BIGINT NOT NULL DEFAULT 0,
    pending BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    sent BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX statistics_one_global ON statistics((user_id IS NULL)) WHERE user_id IS NULL;

-- Audit log: every change, hash-chained so tampering is detectable.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY NOT NULL,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_state TEXT,
    after_state TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE
);
