DROP TABLE mail_outbox;
DROP TABLE mail_items;
DROP TABLE mailbox_states;
