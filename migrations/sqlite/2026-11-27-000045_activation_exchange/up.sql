-- The secret an activation password stands for in the key exchange
-- (argon2id of the password, salted by the user's address), sealed with
-- the master key. Passwords set before this column existed have none and
-- must be set again.
ALTER TABLE activation_passwords ADD COLUMN sealed_secret BLOB;
