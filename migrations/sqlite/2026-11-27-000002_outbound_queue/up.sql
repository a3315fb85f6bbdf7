-- Packets on their way to devices, kept until the device confirms delivery
-- so that nothing is lost across a relay outage or a server restart. The
-- envelope is already encrypted for the device.
CREATE TABLE outbound_queue (
    id INTEGER PRIMARY KEY NOT NULL,
    ref_id TEXT NOT NULL UNIQUE,
    pin TEXT NOT NULL,
    content_type INTEGER NOT NULL,
    priority BOOLEAN NOT NULL DEFAULT 0,
    envelope BLOB NOT NULL,
    -- queued | at_relay | stored_at_relay | delivered_to_device | sent_lan
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    last_sent_at TIMESTAMP
);
CREATE INDEX outbound_queue_by_pin ON outbound_queue(pin, id);
CREATE INDEX outbound_queue_by_state ON outbound_queue(state, last_sent_at);
