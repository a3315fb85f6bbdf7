//! Transport keys given to reference devices directly, without wireless
//! activation: tests, benchmarks and `bramble device provision` need a
//! device that already shares a key with the server. The server has no
//! such path of its own; this writes the device and its current key into
//! the Configuration Database through the public models, as activation
//! would leave them.

use bramble::db::models::device::Device;
use bramble::db::models::device_key::DeviceKey;
use bramble::db::{Conn, Database, DbResult, Sealer};
use bramble::ServerHandle;
use bramble_proto::envelope::TransportKey;
use bramble_proto::Pin;

/// Registers each device if needed and stores its key as the current
/// transport key, all in one transaction (benchmarks give thousands at
/// once). A server already running on `db` may have the old keys cached:
/// use [`into_server`] for that.
pub async fn into_database(db: &Database, devices: Vec<(Pin, TransportKey)>) -> DbResult<()> {
    db.run_sealed(move |conn, sealer| {
        use diesel::Connection;
        conn.transaction(|conn| {
            devices
                .iter()
                .try_for_each(|(pin, key)| provision(conn, sealer, *pin, key))
        })
    })
    .await
}

/// [`into_database`] on a running server's database, then drops those
/// devices' keys from its Dispatcher's cache so the new ones are used, and
/// registers them with the relay (if the server is linked to one), as
/// activation does.
pub async fn into_server(server: &ServerHandle, devices: Vec<(Pin, TransportKey)>) -> DbResult<()> {
    let pins: Vec<Pin> = devices.iter().map(|(pin, _)| *pin).collect();
    into_database(&server.state().db, devices).await?;
    let dispatcher = server.dispatcher();
    if pins.len() <= 16 {
        for pin in pins {
            dispatcher.keys_changed(pin).await;
        }
    } else {
        for pin in pins {
            dispatcher.keys().invalidate(pin);
        }
        dispatcher.register_all_relay_keys().await;
    }
    Ok(())
}

fn provision(conn: &mut Conn, sealer: &Sealer, pin: Pin, key: &TransportKey) -> DbResult<()> {
    let device = Device::find_or_create(conn, pin)?;
    DeviceKey::save_current(conn, sealer, device.id, key)
}
