-- Sessions of the console. Only the SHA-256 of a session token is kept, so
-- a copy of the database file does not let anyone sign in.
CREATE TABLE admin_sessions (
    id INTEGER PRIMARY KEY NOT NULL,
    administrator_id INTEGER NOT NULL REFERENCES administrators(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL
);
CREATE INDEX admin_sessions_by_administrator ON admin_sessions(administrator_id);
CREATE INDEX admin_sessions_by_expiry ON admin_sessions(expires_at);

-- Administrator groups: roles given to a group apply to every member (an
-- administrator holds the union of their own roles and their groups').
CREATE TABLE administrator_groups (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE administrator_group_members (
    group_id INTEGER NOT NULL REFERENCES administrator_groups(id) ON DELETE CASCADE,
    administrator_id INTEGER NOT NULL REFERENCES administrators(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, administrator_id)
);
CREATE INDEX administrator_group_members_by_administrator ON administrator_group_members(administrator_id);

CREATE TABLE administrator_group_roles (
    group_id INTEGER NOT NULL REFERENCES administrator_groups(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, role_id)
);

-- The console's users list pages through users sorted by name (or e-mail,
-- or creation) and searches name and e-mail with LIKE: this index serves
-- the name order and holds both searched columns, so a search reads the
-- index rather than the whole table.
CREATE INDEX users_by_display_name ON users(display_name, email, id);
CREATE INDEX users_by_created ON users(created_at, id);

-- Enterprise Administrators may read the administrators list and the audit
-- log; only Security Administrators change administrators and roles.
UPDATE roles
   SET permissions = '["users.*","groups.*","policies.*","software.*","servers.*","devices.*","filters.*","administrators.read","audit.read"]'
 WHERE name = 'Enterprise Administrator' AND builtin = 1;
