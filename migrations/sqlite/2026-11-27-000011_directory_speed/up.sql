-- Incremental directory syncs resolve a changed group's members by DN
-- without loading every linked user: the DN in the form that compares
-- equal however it was spelt (lower case, no spaces around `,` and `=`),
-- indexed per directory. Syncs keep it current; existing links get it here
-- (a full sync corrects any DN spelt with more than one such space).
ALTER TABLE users ADD COLUMN directory_dn_key TEXT;
UPDATE users
   SET directory_dn_key = replace(replace(replace(replace(lower(directory_dn),
       ', ', ','), ' ,', ','), '= ', '='), ' =', '=')
 WHERE directory_dn IS NOT NULL;
CREATE INDEX users_by_directory_dn_key ON users(directory_id, directory_dn_key);
