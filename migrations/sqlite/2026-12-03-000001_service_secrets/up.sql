-- Passwords of the accounts Bramble signs in with (IMAP, SMTP, LDAP, DAV),
-- sealed with the master key (`bramble secret set NAME`). Read only when
-- neither the environment nor the settings file gives the password.
CREATE TABLE service_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    sealed_value BLOB NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
