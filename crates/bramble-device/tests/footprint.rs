//! Resident memory per linked device, for the 10 000-device benchmark's
//! budget of 16 KiB per device. Ignored by default (it opens thousands of
//! sockets and wants a quiet process); run it with
//!
//! ```text
//! cargo test -p bramble-device --release --test footprint -- --ignored --nocapture
//! ```
//!
//! `BRAMBLE_FOOTPRINT_DEVICES` sets how many devices (default 2000; each
//! takes two file descriptors). The far side of every link is a plain
//! blocking socket on a separate thread, so it adds an fd and nothing
//! else; kernel socket buffers are not part of a process's RSS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use bramble_device::{Connection, Device, DeviceConfig, KeyStore, Path};
use bramble_proto::control::Control;
use bramble_proto::envelope::{self, TransportKey};
use bramble_proto::frame::{Frame, LENGTH_LEN};
use bramble_proto::{ContentType, Pin, RefId};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn read_frame(stream: &mut TcpStream) -> Frame {
    let mut prefix = [0u8; LENGTH_LEN];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; Frame::declared_length(prefix).unwrap()];
    stream.read_exact(&mut body).unwrap();
    Frame::decode_body(&body).unwrap()
}

/// Accepts links forever: reads the hello, welcomes, hands the socket over.
fn relay(listener: TcpListener, links: mpsc::Sender<TcpStream>) {
    let welcome = Control::Welcome.frame(Pin(0), RefId(0)).encode().unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let hello = read_frame(&mut stream);
        assert!(matches!(
            Control::from_frame(&hello),
            Ok(Control::DeviceHello { .. })
        ));
        stream.write_all(&welcome).unwrap();
        if links.send(stream).is_err() {
            return;
        }
    }
}

struct Linked {
    _device: Device,
    connection: Connection,
    far: TcpStream,
    key: TransportKey,
    pin: Pin,
}

fn link_devices(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    links: &mpsc::Receiver<TcpStream>,
    first_pin: u32,
    count: u32,
) -> Vec<Linked> {
    (first_pin..first_pin + count)
        .map(|n| {
            let pin = Pin(n);
            let key = TransportKey::generate(1).unwrap();
            let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key.clone()));
            let connection = rt.block_on(device.connect(Path::Relay(addr))).unwrap();
            let far = links.recv().unwrap();
            Linked {
                _device: device,
                connection,
                far,
                key,
                pin,
            }
        })
        .collect()
}

/// One message to every device, read by its user and confirmed.
fn one_message_each(rt: &tokio::runtime::Runtime, linked: &mut [Linked]) {
    let text = "Subject: hello\r\n\r\nA short note to every device. ".repeat(8);
    for l in linked.iter_mut() {
        let ref_id = RefId::random();
        let sealed =
            envelope::seal(&l.key, ContentType::Cmime, l.pin, ref_id, text.as_bytes()).unwrap();
        l.far
            .write_all(
                &Frame::single(ContentType::Cmime, l.pin, ref_id, sealed)
                    .encode()
                    .unwrap(),
            )
            .unwrap();
    }
    for l in linked.iter_mut() {
        let got = rt.block_on(l.connection.recv()).unwrap();
        assert_eq!(got.plaintext, text.as_bytes());
        let confirmation = read_frame(&mut l.far);
        assert_eq!(confirmation.content_type, ContentType::DeliveryConfirmation);
    }
}

#[test]
#[ignore = "opens thousands of sockets; run on purpose (see the file's docs)"]
fn resident_memory_per_device() {
    let devices: u32 = std::env::var("BRAMBLE_FOOTPRINT_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, links) = mpsc::channel();
    std::thread::spawn(move || relay(listener, tx));

    // Warm up: runtime, allocator arenas, openssl tables.
    let mut warm = link_devices(&rt, addr, &links, 1, 200);
    one_message_each(&rt, &mut warm);
    let base = rss_kib();

    let mut linked = link_devices(&rt, addr, &links, 0x1000_0000, devices);
    let idle = rss_kib();
    one_message_each(&rt, &mut linked);
    let after = rss_kib();

    let per = |kib: u64| kib as f64 * 1024.0 / devices as f64;
    println!(
        "{devices} devices: linked and idle {:.0} B/device; after one message each {:.0} B/device (RSS {base} -> {idle} -> {after} KiB)",
        per(idle.saturating_sub(base)),
        per(after.saturating_sub(base)),
    );
    assert!(per(after.saturating_sub(base)) < 16.0 * 1024.0);
    let open = linked.iter().filter(|l| !l.connection.is_closed()).count();
    assert_eq!(open, devices as usize);
    drop(warm);
}
