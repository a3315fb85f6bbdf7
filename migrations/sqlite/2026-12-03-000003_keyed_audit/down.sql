DROP TABLE audit_keying;
