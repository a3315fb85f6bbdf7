#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Dispatcher on a real Configuration Database, with the Router's link
//! replaced by a channel the test reads (the relay itself is exercised over
//! TCP in `tests/it/wireless.rs`).

use std::time::Duration;

use bramble_proto::control::{Control, ErrorReport, TransportStatus};
use bramble_proto::envelope::{self, TransportKey};
use bramble_proto::frame::{self, Frame};
use bramble_proto::{ContentType, Pin, RefId};
use tokio::sync::mpsc;

use super::*;
use crate::db::models::test_db;

const PIN: Pin = Pin(0x2A3B_4C5D);

struct Rig {
    dispatcher: Dispatcher,
    router: RouterHandle,
    link: mpsc::Receiver<Frame>,
    link_tx: mpsc::Sender<Frame>,
    key: TransportKey,
    _dir: tempfile::TempDir,
}

/// The device and its current key, as activation would leave them.
fn give_key(
    conn: &mut crate::db::Conn,
    sealer: &crate::db::Sealer,
    pin: Pin,
    key: &TransportKey,
) -> crate::db::DbResult<()> {
    use crate::db::models::device::Device;
    use crate::db::models::device_key::DeviceKey;
    let device = Device::find_or_create(conn, pin)?;
    DeviceKey::save_current(conn, sealer, device.id, key)
}

async fn rig() -> Rig {
    let (dir, db) = test_db();
    let router = RouterHandle::new();
    let keys = KeyCache::new(db.clone());
    let key = TransportKey::generate(1).unwrap();
    let stored = key.clone();
    db.run_sealed(move |conn, sealer| give_key(conn, sealer, PIN, &stored))
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        db,
        keys,
        router.clone(),
        DispatcherSettings::default(),
        Clock::new(),
    );
    let (link_tx, link) = mpsc::channel(64);
    router.set_relay(Some(link_tx.clone()));
    Rig {
        dispatcher,
        router,
        link,
        link_tx,
        key,
        _dir: dir,
    }
}

fn mail(text: &str) -> Outgoing {
    Outgoing {
        pin: PIN,
        content_type: ContentType::Cmime,
        plaintext: text.as_bytes().to_vec(),
        priority: false,
        ref_id: None,
    }
}

fn open(key: &TransportKey, frame: &Frame) -> Vec<u8> {
    envelope::open(
        |_| Some(key),
        frame.content_type,
        frame.pin,
        frame.ref_id,
        &frame.payload,
        1 << 20,
    )
    .unwrap()
}

fn confirmation(key: &TransportKey, ref_id: RefId) -> RouterEvent {
    let sealed = envelope::seal(key, ContentType::DeliveryConfirmation, PIN, ref_id, b"").unwrap();
    RouterEvent::Frame {
        frame: Frame::single(ContentType::DeliveryConfirmation, PIN, ref_id, sealed),
        via: Via::Relay,
    }
}

async fn queued(d: &Dispatcher) -> i64 {
    d.inner.db.run(OutboundPacket::count).await.unwrap()
}

#[tokio::test]
async fn sends_encrypted_and_forgets_once_confirmed() {
    let mut r = rig().await;
    let mut events = r.dispatcher.subscribe();
    let ref_id = r.dispatcher.send(mail("Lunch at noon?")).await.unwrap();
    let frame = r.link.try_recv().unwrap();
    assert_eq!(
        (frame.pin, frame.ref_id, frame.content_type),
        (PIN, ref_id, ContentType::Cmime)
    );
    assert!(
        !frame.payload.windows(5).any(|w| w == b"Lunch"),
        "encrypted on the wire"
    );
    assert_eq!(open(&r.key, &frame), b"Lunch at noon?");
    assert_eq!(queued(&r.dispatcher).await, 1);
    assert_eq!(
        events.recv().await.unwrap(),
        DeliveryEvent::Sent {
            pin: PIN,
            ref_id,
            via: Via::Relay
        }
    );

    r.dispatcher
        .handle(confirmation(&r.key, ref_id))
        .await
        .unwrap();
    assert_eq!(queued(&r.dispatcher).await, 0);
    assert_eq!(
        events.recv().await.unwrap(),
        DeliveryEvent::Confirmed { pin: PIN, ref_id }
    );
}

#[tokio::test]
async fn a_forged_confirmation_is_refused_and_the_device_told() {
    let mut r = rig().await;
    let ref_id = r.dispatcher.send(mail("hello")).await.unwrap();
    r.link.try_recv().unwrap();
    let stranger = TransportKey::generate(1).unwrap();
    r.dispatcher
        .handle(confirmation(&stranger, ref_id))
        .await
        .unwrap();
    assert_eq!(
        queued(&r.dispatcher).await,
        1,
        "still waiting for the real device"
    );
    let error = r.link.try_recv().unwrap();
    assert_eq!(
        (error.content_type, error.pin, error.ref_id),
        (ContentType::Error, PIN, ref_id)
    );
    let report = ErrorReport::from_payload(&error.payload).unwrap();
    assert_eq!(report.code, "UNDECRYPTABLE");
    assert!(r.link.try_recv().is_err(), "nothing else happens");
}

#[tokio::test]
async fn messages_from_the_device_reach_their_component() {
    let r = rig().await;
    let mut mail_in = r.dispatcher.register(ContentType::Cmime, 8);
    let ref_id = RefId(77);
    let text = "Sent from my smartphone. ".repeat(5000); // > one packet before compression
    let sealed = envelope::seal(&r.key, ContentType::Cmime, PIN, ref_id, text.as_bytes()).unwrap();
    let mut frames = frame::split(ContentType::Cmime, 0, PIN, ref_id, &sealed).unwrap();
    // Force fragmentation with incompressible padding if compression made it small.
    if frames.len() == 1 {
        let mut noise = vec![0u8; 150_000];
        openssl::rand::rand_bytes(&mut noise).unwrap();
        let sealed = envelope::seal(&r.key, ContentType::Cmime, PIN, ref_id, &noise).unwrap();
        frames = frame::split(ContentType::Cmime, 0, PIN, ref_id, &sealed).unwrap();
    }
    assert!(frames.len() > 1);
    let n = frames.len();
    for frame in frames {
        r.dispatcher
            .handle(RouterEvent::Frame {
                frame,
                via: Via::Lan,
            })
            .await
            .unwrap();
    }
    let got = mail_in.try_recv().unwrap();
    assert_eq!((got.pin, got.ref_id, got.via), (PIN, ref_id, Via::Lan));
    assert!(
        got.plaintext.len() > 100_000,
        "reassembled from {n} packets"
    );
}

#[tokio::test]
async fn an_undecryptable_message_is_ignored_and_reported() {
    let mut r = rig().await;
    let mut mail_in = r.dispatcher.register(ContentType::Cmime, 8);
    let mut events = r.dispatcher.subscribe();
    let mut sealed =
        envelope::seal(&r.key, ContentType::Cmime, PIN, RefId(5), b"tampered").unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0xFF;
    r.dispatcher
        .handle(RouterEvent::Frame {
            frame: Frame::single(ContentType::Cmime, PIN, RefId(5), sealed),
            via: Via::Relay,
        })
        .await
        .unwrap();
    assert!(mail_in.try_recv().is_err());
    let error = r.link.try_recv().unwrap();
    assert_eq!(error.content_type, ContentType::Error);
    assert_eq!(
        events.recv().await.unwrap(),
        DeliveryEvent::Undecryptable {
            pin: PIN,
            ref_id: RefId(5)
        }
    );
    // An unknown device is treated the same way.
    let other = Pin(0x1111_1111);
    let sealed = envelope::seal(&r.key, ContentType::Cmime, other, RefId(6), b"who am i").unwrap();
    r.dispatcher
        .handle(RouterEvent::Frame {
            frame: Frame::single(ContentType::Cmime, other, RefId(6), sealed),
            via: Via::Relay,
        })
        .await
        .unwrap();
    assert!(mail_in.try_recv().is_err());
}

/// The first thing on a new link: every device's relay key, after a reset.
fn expect_registration(r: &mut Rig) {
    let frame = r.link.try_recv().unwrap();
    let Ok(Control::DeviceKeys { reset, devices }) = Control::from_frame(&frame) else {
        panic!("expected device_keys first, got {frame:?}");
    };
    assert!(reset);
    let relay_key = bramble_proto::control::relay_key(r.key.secret()).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].pin, PIN);
    assert_eq!(
        devices[0]
            .keys
            .iter()
            .map(|k| (k.key_id, k.key.clone()))
            .collect::<Vec<_>>(),
        vec![(r.key.id, bramble_proto::control::hex(&relay_key))]
    );
}

#[tokio::test]
async fn queued_while_the_link_is_down_and_sent_when_it_returns() {
    let mut r = rig().await;
    r.router.set_relay(None);
    let a = r.dispatcher.send(mail("one")).await.unwrap();
    let b = r.dispatcher.send(mail("two")).await.unwrap();
    assert!(r.link.try_recv().is_err());
    assert_eq!(queued(&r.dispatcher).await, 2);
    r.router.set_relay(Some(r.link_tx.clone()));
    r.dispatcher.handle(RouterEvent::LinkUp).await.unwrap();
    expect_registration(&mut r);
    let first = r.link.try_recv().unwrap();
    let second = r.link.try_recv().unwrap();
    assert_eq!((first.ref_id, second.ref_id), (a, b), "in order");
    assert_eq!(open(&r.key, &second), b"two");
}

#[tokio::test]
async fn stored_at_the_relay_is_sent_again_when_the_link_returns() {
    let mut r = rig().await;
    let stored = r
        .dispatcher
        .send(mail("for an offline device"))
        .await
        .unwrap();
    let delivered = r
        .dispatcher
        .send(mail("already on the device"))
        .await
        .unwrap();
    r.link.try_recv().unwrap();
    r.link.try_recv().unwrap();
    let report = |ref_id, status| RouterEvent::Frame {
        frame: Control::Transport { status }.frame(PIN, ref_id),
        via: Via::Relay,
    };
    r.dispatcher
        .handle(report(stored, TransportStatus::StoredForOfflineDevice))
        .await
        .unwrap();
    r.dispatcher
        .handle(report(delivered, TransportStatus::DeliveredToDevice))
        .await
        .unwrap();
    // The relay restarts: its store is gone. Only the stored one goes again.
    r.dispatcher.handle(RouterEvent::LinkDown).await.unwrap();
    r.dispatcher.handle(RouterEvent::LinkUp).await.unwrap();
    expect_registration(&mut r);
    assert_eq!(r.link.try_recv().unwrap().ref_id, stored);
    assert!(r.link.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn resent_after_four_hours_without_confirmation() {
    let mut r = rig().await;
    let mut events = r.dispatcher.subscribe();
    let ref_id = r.dispatcher.send(mail("are you there?")).await.unwrap();
    let first = r.link.try_recv().unwrap();
    events.recv().await.unwrap();

    tokio::time::advance(Duration::from_secs(3 * 3600 + 3599)).await;
    assert_eq!(r.dispatcher.check_queue().await.unwrap(), (0, 0), "not yet");
    assert!(r.link.try_recv().is_err());

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(r.dispatcher.check_queue().await.unwrap(), (1, 0));
    let again = r.link.try_recv().unwrap();
    assert_eq!(
        again.ref_id, ref_id,
        "same RefID, so the device drops a duplicate"
    );
    assert_eq!(again.payload, first.payload, "same envelope");
    assert_eq!(
        events.recv().await.unwrap(),
        DeliveryEvent::Resent {
            pin: PIN,
            ref_id,
            reason: ResendReason::NoConfirmation
        }
    );

    // Confirmed now: never sent again, however long we wait.
    r.dispatcher
        .handle(confirmation(&r.key, ref_id))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(10 * 3600)).await;
    assert_eq!(r.dispatcher.check_queue().await.unwrap(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn expires_after_a_week() {
    let r = rig().await;
    r.router.set_relay(None);
    r.dispatcher
        .send(mail("never reaches the device"))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(7 * 24 * 3600 + 1)).await;
    assert_eq!(r.dispatcher.check_queue().await.unwrap(), (0, 1));
    assert_eq!(queued(&r.dispatcher).await, 0);
}

#[tokio::test]
async fn lan_path_preferred_and_in_flight_messages_move_back_to_the_relay() {
    let mut r = rig().await;
    let (lan_tx, mut lan) = mpsc::channel(16);
    let lan_id = r.router.attach_lan(PIN, lan_tx);
    let ref_id = r.dispatcher.send(mail("via the desktop")).await.unwrap();
    assert_eq!(lan.try_recv().unwrap().ref_id, ref_id);
    assert!(r.link.try_recv().is_err());
    assert!(r.router.detach_lan(PIN, lan_id));
    r.dispatcher
        .handle(RouterEvent::LanDetached(PIN))
        .await
        .unwrap();
    assert_eq!(
        r.link.try_recv().unwrap().ref_id,
        ref_id,
        "re-sent by the relay"
    );
}

#[tokio::test]
async fn a_message_under_the_pending_key_opens() {
    let r = rig().await;
    let mut mail_in = r.dispatcher.register(ContentType::Cmime, 8);
    let pending = TransportKey::generate(2).unwrap();
    let device = r
        .dispatcher
        .inner
        .db
        .run(|conn| crate::db::models::device::Device::find_by_pin(conn, &PIN))
        .await
        .unwrap()
        .unwrap();
    let material = crate::db::models::device_key::KeyMaterial::new(pending.secret().to_vec());
    r.dispatcher
        .inner
        .db
        .run_sealed(move |conn, sealer| {
            crate::db::models::device_key::DeviceKey::save_slot(
                conn,
                sealer,
                device.id,
                crate::db::models::device_key::KeySlot::Pending,
                2,
                &material,
            )
        })
        .await
        .unwrap();
    r.dispatcher.keys().invalidate(PIN);
    let sealed = envelope::seal(&pending, ContentType::Cmime, PIN, RefId(8), b"new key").unwrap();
    r.dispatcher
        .handle(RouterEvent::Frame {
            frame: Frame::single(ContentType::Cmime, PIN, RefId(8), sealed),
            via: Via::Relay,
        })
        .await
        .unwrap();
    assert_eq!(mail_in.try_recv().unwrap().plaintext, b"new key");
}

fn from_device(key: &TransportKey, content_type: ContentType, ref_id: RefId) -> Frame {
    let sealed = envelope::seal(key, content_type, PIN, ref_id, b"{}").unwrap();
    Frame::single(content_type, PIN, ref_id, sealed)
}

fn lan(frame: &Frame) -> RouterEvent {
    RouterEvent::Frame {
        frame: frame.clone(),
        via: Via::Lan,
    }
}

#[tokio::test]
async fn a_message_played_again_is_not_handed_over_as_new_even_after_a_restart() {
    let r = rig().await;
    let mut sync_in = r.dispatcher.register(ContentType::Sync, 8);
    let mut mail_in = r.dispatcher.register_with_repeats(ContentType::Cmime, 8);
    let mut events = r.dispatcher.subscribe();
    let sync = from_device(&r.key, ContentType::Sync, RefId(5));
    let compose = from_device(&r.key, ContentType::Cmime, RefId(6));
    // The same packets twice in one batch, then once more alone.
    r.dispatcher
        .handle_batch(vec![lan(&sync), lan(&compose), lan(&sync), lan(&compose)])
        .await
        .unwrap();
    r.dispatcher.handle(lan(&sync)).await.unwrap();
    let first = sync_in.try_recv().unwrap();
    assert!(!first.repeated);
    assert!(
        sync_in.try_recv().is_err(),
        "a repeat is not handed to sync"
    );
    let (a, b) = (mail_in.try_recv().unwrap(), mail_in.try_recv().unwrap());
    assert!(
        !a.repeated && b.repeated,
        "the Messaging Agent sees the repeat, marked"
    );
    let mut repeated = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let DeliveryEvent::Repeated { ref_id, .. } = event {
            repeated.push(ref_id);
        }
    }
    assert_eq!(repeated, vec![RefId(5), RefId(6), RefId(5)]);

    // A restarted server (a new Dispatcher on the same database) still
    // knows it; the same RefID under another content type is new.
    let again = Dispatcher::new(
        r.dispatcher.inner.db.clone(),
        KeyCache::new(r.dispatcher.inner.db.clone()),
        r.router.clone(),
        DispatcherSettings::default(),
        Clock::new(),
    );
    let mut sync_in = again.register(ContentType::Sync, 8);
    let mut lookup_in = again.register(ContentType::Lookup, 8);
    again.handle(lan(&sync)).await.unwrap();
    again
        .handle(lan(&from_device(&r.key, ContentType::Lookup, RefId(5))))
        .await
        .unwrap();
    assert!(sync_in.try_recv().is_err());
    assert!(!lookup_in.try_recv().unwrap().repeated);

    // Confirmations are not recorded: the window holds the three above.
    again.handle(confirmation(&r.key, RefId(5))).await.unwrap();
    let rows = again
        .inner
        .db
        .run(|conn| crate::db::models::replay::ReplayWindow::count_for(conn, PIN))
        .await
        .unwrap();
    assert_eq!(rows, 3);
    assert_eq!(again.prune_replays().await.unwrap(), 0, "the key is held");
}
