//! Strangers on the relay's device port, against a real server linked to
//! a real relay: they know a device's PIN (PINs are not secret), but not
//! its transport key.

use std::time::Duration;

use bramble::dispatcher::DeliveryEvent;
use bramble_device::{Device, DeviceConfig, KeyStore, Path};
use bramble_proto::control::{Control, TransportStatus};
use bramble_proto::envelope::TransportKey;
use bramble_proto::io::read_frame;
use bramble_proto::{Pin, RefId};
use tokio::net::TcpSocket;

use crate::wireless::{linked, mail, online, wait_link, Bed, PATIENCE};

fn stranger(pin: u32, keys: KeyStore) -> Device {
    let mut config = DeviceConfig::new(Pin(pin));
    // Naming another server in the hello changes nothing either.
    config.srp_id = Some("S-ELSEWHERE".into());
    Device::new(config, keys)
}

/// Waits for the relay's report on `ref_id`.
async fn relay_report(
    events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>,
    ref_id: RefId,
) -> TransportStatus {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(DeliveryEvent::Relay {
                ref_id: r, status, ..
            }) = events.recv().await
            {
                if r == ref_id {
                    return status;
                }
            }
        }
    })
    .await
    .expect("no report from the relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_for_another_devices_pin_gets_nothing_and_displaces_no_one() {
    let (_bed, relay, server) = linked().await;
    let pin = 0x0A77_AC01;
    let (genuine, conn) = online(&server, &relay, pin).await;
    let mut events = server.dispatcher().subscribe();

    // A stranger with some key of its own: refused, in words.
    let keyed = stranger(pin, KeyStore::new(TransportKey::generate(1).unwrap()));
    let refused = keyed
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("could not verify"),
        "{refused}"
    );

    // A stranger with no key: an activation-only link, which takes nothing
    // from the genuine device.
    let unkeyed = stranger(pin, KeyStore::default());
    let sconn = unkeyed
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap();
    let one = server
        .dispatcher()
        .send(mail(pin, "one".into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.ref_id, got.plaintext.as_slice()), (one, &b"one"[..]));

    // The genuine device goes offline: its mail is stored for it, not
    // handed to the stranger (whom the server would then count as the
    // device, "delivered").
    conn.close().await;
    let two = server
        .dispatcher()
        .send(mail(pin, "two".into()))
        .await
        .unwrap();
    assert_eq!(
        relay_report(&mut events, two).await,
        TransportStatus::StoredForOfflineDevice
    );
    assert_eq!(sconn.stats().received + sconn.stats().undecryptable, 0);

    // The genuine device comes back and gets it.
    let conn = genuine
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.ref_id, two);
    assert_eq!(
        relay_report(&mut events, two).await,
        TransportStatus::DeliveredToDevice
    );
    assert_eq!(sconn.stats().received + sconn.stats().undecryptable, 0);
    assert!(relay.stats().device_auth_failures >= 1);
    sconn.close().await;
    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

/// Connections the flood opens.
const FLOOD: usize = 10_000;
/// What the relay admits on its device port during the flood.
const FLOOD_CAP: usize = 1_000;

/// The many-connections side of
/// [`ten_thousand_idle_connections_are_capped_and_closed`], in a child
/// process so that neither process nears the open-file limit: opens
/// `FLOOD` idle connections to `BRAMBLE_FLOOD_TARGET` from 200 loopback
/// addresses, never says hello, and prints how each ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by ten_thousand_idle_connections_are_capped_and_closed as a child process"]
async fn flood_child() {
    let Ok(target) = std::env::var("BRAMBLE_FLOOD_TARGET") else {
        return;
    };
    let target: std::net::SocketAddr = target.parse().unwrap();
    let mut ends = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let socket = TcpSocket::new_v4().unwrap();
        let from = std::net::Ipv4Addr::new(127, 0, 1, (i % 200) as u8 + 1);
        socket.bind((from, 0).into()).unwrap();
        let mut tcp = socket.connect(target).await.unwrap();
        ends.spawn(async move {
            // Refused at once (with a reason), or closed for silence.
            match tokio::time::timeout(Duration::from_secs(120), read_frame(&mut tcp)).await {
                Ok(Ok(Some(frame))) => match Control::from_frame(&frame) {
                    Ok(Control::Refused { .. }) => "refused",
                    _ => "other",
                },
                Ok(Ok(None)) | Ok(Err(_)) => "closed",
                Err(_) => "still open",
            }
        });
    }
    let (mut refused, mut closed, mut other) = (0, 0, 0);
    while let Some(end) = ends.join_next().await {
        match end.unwrap() {
            "refused" => refused += 1,
            "closed" => closed += 1,
            _ => other += 1,
        }
    }
    println!("FLOOD refused={refused} closed={closed} other={other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_capped_and_closed() {
    let mut bed = Bed::new();
    bed.relay_config.max_device_connections = FLOOD_CAP;
    bed.relay_config.max_connections_per_address = FLOOD;
    bed.relay_config.handshake_timeout = Duration::from_secs(2);
    let relay = bed.relay().await;
    let server = bed.server("server").await;
    wait_link(&server, true).await;
    let pin = 0x0A77_AC02;
    let (_phone, conn) = online(&server, &relay, pin).await;

    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "attacker::relay::flood_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("BRAMBLE_FLOOD_TARGET", relay.device_addr().to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // While the flood runs, the device already connected keeps its mail.
    let during = server
        .dispatcher()
        .send(mail(pin, "during the flood".into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.ref_id, during);

    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("the flood did not end")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("FLOOD "))
        .unwrap_or_else(|| panic!("the flood child said nothing: {text}"));
    let count = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    // Every connection ended: refused at once beyond the cap, or closed
    // for saying nothing; none stayed open, none got anything else; and
    // the relay never held more than its cap (plus the one device) open.
    assert_eq!(count("other"), 0, "{line}");
    assert_eq!(count("refused") + count("closed"), FLOOD, "{line}");
    assert!(count("refused") > 0, "{line}");
    let stats = relay.stats();
    assert_eq!(stats.connections_refused as usize, count("refused"));
    assert!(stats.device_connections_peak <= FLOOD_CAP, "{stats:?}");
    assert_eq!(
        stats.device_connections_peak, FLOOD_CAP,
        "the cap was reached: {stats:?}"
    );

    // Afterwards a device gets in as before.
    let (_phone2, conn2) = online(&server, &relay, 0x0A77_AC03).await;
    let after = server
        .dispatcher()
        .send(mail(0x0A77_AC03, "after".into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.ref_id, after);
    conn.close().await;
    conn2.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}
