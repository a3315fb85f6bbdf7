ALTER TABLE admin_commands DROP COLUMN sealed_password;
