//! Wireless activation against a stranger (see [`super`]): requests e-mailed
//! by someone who knows only the user's address, key confirmations and
//! `mismatch` packets forged under the genuine device's PIN, a server
//! restart in the middle, and a wrong password confirmed twice. The genuine
//! device uses the reference device library over the real relay; the
//! server, the relay, Postfix and Dovecot are real.

use bramble::db::models::activation_exchange::ActivationExchange;
use bramble::db::models::activation_password::ActivationEvent;
use bramble::db::models::device::Device as DeviceRow;
use bramble::db::models::device_key::DeviceKey;
use bramble::db::models::user::ActivationStatus;
use bramble::router::{RouterEvent, Via};
use bramble_device::{Device, DeviceError, Path, Plain};
use bramble_proto::activation::{ActivationMessage, DeviceExchange};
use bramble_proto::control::hex;
use bramble_proto::{Pin, RefId};

use crate::activation::{phone, Bed, PATIENCE};

const PASSWORD: &str = "kx7m2qpa";

/// A confirmation nobody derived: 32 random bytes.
fn random_confirmation() -> String {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    hex(&bytes)
}

/// Runs the genuine device up to the server's challenge.
async fn challenged(
    bed: &Bed,
    device: &Device,
    password: &str,
) -> bramble_device::activation::Challenged {
    let prepared = device
        .prepare_activation(bed.relay_addr(), &bed.email(0), password)
        .await
        .unwrap();
    device
        .request_activation(prepared, PATIENCE, |_| {})
        .await
        .unwrap()
}

/// The device's current key is the one the server stored for it, and the
/// activation password is used up.
async fn assert_activated(bed: &Bed, device: &Device) {
    let current = device
        .keys()
        .current()
        .cloned()
        .expect("the device has no key");
    let pin = device.pin();
    let stored = bed
        .db()
        .run(move |conn| {
            let d = DeviceRow::find_by_pin(conn, &pin)?.expect("no device row");
            DeviceKey::find_all_for_device(conn, d.id)
        })
        .await
        .unwrap();
    let ids: Vec<i64> = stored.iter().map(|k| k.key_id).collect();
    assert_eq!(ids, [i64::from(current.id)]);
    assert_eq!(
        bed.failed_attempts(0).await,
        None,
        "the password is used up"
    );
    let user = bed.users[0];
    let steps = bed
        .db()
        .run(move |conn| ActivationEvent::find_for_user(conn, user))
        .await
        .unwrap();
    assert!(
        steps
            .iter()
            .any(|e| e.status == ActivationStatus::EncryptionVerified),
        "{steps:?}"
    );
}

/// Waits until the user's activation password shows `want` failed attempts.
async fn wait_attempts(bed: &Bed, want: i32) {
    tokio::time::timeout(PATIENCE, async {
        while bed.failed_attempts(0).await != Some(want) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the password never showed {want} failed attempts"));
}

/// Before: every answered request counted an attempt, so five requests
/// mailed by a stranger used the password up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_requests_mailed_to_the_user_leave_the_password_usable() {
    let bed = Bed::start(1).await;
    bed.set_password(0, PASSWORD).await;
    let genuine = phone(0x3100_0001);
    // Valid requests for the user's address, each made with a guessed
    // password; the last names the genuine device's PIN, so its challenge
    // waits at the relay for the genuine device, which must ignore it.
    for n in 0..5u32 {
        let pin = if n == 4 {
            genuine.pin()
        } else {
            Pin(0x3100_0100 + n)
        };
        let forged = DeviceExchange::start(
            &format!("guess-{n}"),
            &bed.email(0),
            pin,
            "relay.example.net:3102",
            "9700",
            "5.0",
        )
        .unwrap();
        bed.mail_request(0, "stranger@example.net", &forged.etp)
            .await;
    }
    // All five are answered (and removed from the mailbox); none is ever
    // confirmed.
    tokio::time::timeout(PATIENCE, async {
        while bed.inbox_len(0).await != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the requests were never answered");
    let user = bed.users[0];
    let waiting = bed
        .db()
        .run(move |conn| ActivationExchange::count_for_user(conn, user, bramble::db::now()))
        .await
        .unwrap();
    assert_eq!(waiting, 5, "each request was answered with a challenge");
    assert_eq!(
        bed.failed_attempts(0).await,
        Some(0),
        "answering cost nothing"
    );

    let conn = genuine
        .activate(bed.relay_addr(), &bed.email(0), PASSWORD, PATIENCE, |_| {})
        .await
        .unwrap();
    assert_activated(&bed, &genuine).await;
    conn.close().await;
    bed.stop().await;
}

/// Before: the server dropped the waiting exchange on any `confirm` or
/// `mismatch` under the PIN, so a stranger aborted the genuine activation.
///
/// The forged packets are handed to the server's Dispatcher exactly as the
/// Router hands over what the relay forwards. A second device connection
/// at the relay would be the stranger's real route, but the relay lets the
/// newest connection for a PIN take over its traffic (and with device
/// authentication only the newest unauthenticated one receives activation
/// packets), which would cut the genuine device off for reasons that are
/// not the server's; the server cannot tell a forged packet from the
/// device's either way, which is what this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_confirmations_do_not_abort_the_genuine_activation() {
    let bed = Bed::start(1).await;
    bed.set_password(0, PASSWORD).await;
    let device = phone(0x3100_0201);
    let challenged = challenged(&bed, &device, PASSWORD).await;
    let ref_id = challenged.ref_id();
    for forged in [
        ActivationMessage::Mismatch,
        ActivationMessage::Confirm {
            confirm: random_confirmation(),
        },
    ] {
        bed.server
            .dispatcher()
            .handle(RouterEvent::Frame {
                frame: forged.frame(device.pin(), ref_id),
                via: Via::Relay,
            })
            .await
            .unwrap();
    }
    // The forged confirmation was checked: a wrong guess, counted once.
    wait_attempts(&bed, 1).await;
    // Its refusal reached the genuine device too; it names the forged
    // confirmation, so the device does not take it for its own.
    let conn = device.confirm_activation(challenged, |_| {}).await.unwrap();
    assert_activated(&bed, &device).await;
    conn.close().await;
    bed.stop().await;
}

/// Before: exchanges were kept in memory, so a restart between challenge
/// and confirmation answered the device `NO_EXCHANGE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activation_completes_across_a_server_restart() {
    let bed = Bed::start(1).await;
    bed.set_password(0, PASSWORD).await;
    let device = phone(0x3100_0301);
    let challenged = challenged(&bed, &device, PASSWORD).await;
    let bed = bed.restart_server().await;
    let conn = device.confirm_activation(challenged, |_| {}).await.unwrap();
    assert_activated(&bed, &device).await;
    conn.close().await;
    bed.stop().await;
}

/// A wrong password costs exactly one attempt per exchange: confirming the
/// same exchange wrong again (the device retrying, or a stranger who saw
/// its RefID) is answered but not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_costs_one_attempt_per_exchange() {
    let bed = Bed::start(1).await;
    bed.set_password(0, PASSWORD).await;
    let device = phone(0x3100_0401);
    let challenged = challenged(&bed, &device, "not-the-password").await;
    let ref_id: RefId = challenged.ref_id();
    let err = device
        .confirm_activation(challenged, |_| {})
        .await
        .unwrap_err();
    match err {
        DeviceError::Activation { code, message } => {
            assert_eq!(code, "WRONG_PASSWORD");
            assert!(message.contains("4 attempt(s) left"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(device.keys().is_empty(), "the device kept no key");
    assert_eq!(bed.failed_attempts(0).await, Some(1));

    let conn = device.connect(Path::Relay(bed.relay_addr())).await.unwrap();
    let again = random_confirmation();
    conn.send_plain(
        ActivationMessage::Confirm {
            confirm: again.clone(),
        }
        .frame(device.pin(), ref_id),
    )
    .await
    .unwrap();
    let answer = tokio::time::timeout(PATIENCE, async {
        loop {
            match conn.next_plain().await {
                Some((_, Plain::Activation(m @ ActivationMessage::Refused { .. }))) => return m,
                Some(_) => {}
                None => panic!("the link closed"),
            }
        }
    })
    .await
    .expect("the second confirmation was never answered");
    let ActivationMessage::Refused {
        code,
        message,
        confirm,
        ..
    } = answer
    else {
        unreachable!()
    };
    assert_eq!(code, "WRONG_PASSWORD");
    assert_eq!(confirm, Some(again), "the refusal names what it refuses");
    assert!(message.contains("4 attempt(s) left"), "{message}");
    assert_eq!(bed.failed_attempts(0).await, Some(1), "not counted again");
    assert_eq!(bed.status(0).await, ActivationStatus::Initializing);
    conn.close().await;
    bed.stop().await;
}
