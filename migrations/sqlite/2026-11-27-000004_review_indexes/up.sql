-- A software configuration is assigned to a user or a group at most once,
-- even when two administrators assign it at the same moment.
CREATE UNIQUE INDEX software_assignments_once_per_user
    ON software_assignments(configuration_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX software_assignments_once_per_group
    ON software_assignments(configuration_id, group_id) WHERE group_id IS NOT NULL;
-- The four-hour resend scan looks for pending messages by age.
CREATE INDEX messages_by_status ON messages(status, updated_at);
