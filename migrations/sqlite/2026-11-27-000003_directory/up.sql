-- The organization's directories the MailStore Service copies users and
-- groups from, one row per `[[directories]]` entry of the settings (matched
-- by name), with what incremental sync needs to remember.
CREATE TABLE directories (
    id INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    -- Newest modifyTimestamp seen (LDAP generalized time, e.g.
    -- 20261127031500Z); the next incremental sync reads entries changed
    -- since. NULL until the first full sync succeeded.
    high_water_mark TEXT,
    last_full_sync_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);

-- One row per sync run, written when it starts and completed when it ends.
CREATE TABLE directory_sync_runs (
    id INTEGER PRIMARY KEY NOT NULL,
    directory_id INTEGER NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    -- full | incremental
    kind TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    entries_read BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0,
    -- Entries skipped (no e-mail, no stable id, …) plus a failed run.
    errors BIGINT NOT NULL DEFAULT 0,
    -- running | succeeded | failed
    outcome TEXT NOT NULL DEFAULT 'running',
    -- The coded message of a failed run, or the first skipped entries.
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX directory_sync_runs_by_directory ON directory_sync_runs(directory_id, id);

-- Users and groups copied from a directory keep a link to their entry: the
-- directory, the entry's stable id (entryUUID, objectGUID) and its last DN.
-- A rename or move keeps the stable id, so it updates the same row.
ALTER TABLE users ADD COLUMN directory_id INTEGER;
ALTER TABLE users ADD COLUMN directory_guid TEXT;
ALTER TABLE users ADD COLUMN directory_dn TEXT;
CREATE UNIQUE INDEX users_by_directory_guid ON users(directory_id, directory_guid);

ALTER TABLE groups ADD COLUMN directory_id INTEGER;
ALTER TABLE groups ADD COLUMN directory_guid TEXT;
ALTER TABLE groups ADD COLUMN directory_dn TEXT;
CREATE UNIQUE INDEX groups_by_directory_guid ON groups(directory_id, directory_guid);
