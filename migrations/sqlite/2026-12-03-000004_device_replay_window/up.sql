-- Every message a device sent that the server acted on, by the transport
-- key it was sealed under: a message already recorded is a replay or a
-- resend and is not acted on as new (docs/protocol.md, "Delivery
-- semantics"). Rows go once their key is no longer held: a replay older
-- than that does not open at all.
CREATE TABLE device_replay_window (
    pin TEXT NOT NULL,
    key_id BIGINT NOT NULL,
    content_type INTEGER NOT NULL,
    ref_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (pin, key_id, content_type, ref_id)
) WITHOUT ROWID;
