ALTER TABLE activation_passwords DROP COLUMN sealed_secret;
