DROP INDEX users_by_directory_dn_key;
ALTER TABLE users DROP COLUMN directory_dn_key;
