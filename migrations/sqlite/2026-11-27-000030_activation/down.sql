DROP TABLE domain_keys;
DROP INDEX activation_events_by_user;
DROP TABLE activation_events;
DROP TABLE activation_passwords;
